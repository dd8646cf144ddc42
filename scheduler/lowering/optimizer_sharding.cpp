#include "scheduler/lowering/optimizer_sharding.h"

#include <boost/container/small_vector.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "scheduler/analysis/backward_seeds.h"

namespace moreh::scheduler {
namespace {

using runtime::BufferOrigin;
using runtime::Instruction;
using runtime::LocalLaunch;
using runtime::LocalRef;
using runtime::Node;
using runtime::Placement;
using runtime::PlacementKind;
using runtime::TensorRef;
using Kind = Instruction::Kind;

// The whole buffer, contiguous from its start.
bool full_view(const TensorRef& r, uint64_t bytes) {
  if (r.sizes.empty() || r.offset != 0) return false;
  int64_t expect = 1;
  for (size_t d = r.sizes.size(); d-- > 0;) {
    if (r.sizes[d] != 1 && r.strides[d] != expect) return false;
    expect *= r.sizes[d];
  }
  return static_cast<uint64_t>(expect) * r.itemsize == bytes;
}

// An op that computes each element of its outputs from the same element of its inputs (per list element
// for torch's foreach ops), so that it runs on any rows of them.
bool elementwise(const Node& n) {
  if (runtime::op_facts(n.op).seeded || n.host_input) return false;  // random numbers; a host tensor's copy
  const std::string& name = runtime::op_name(n.op);
  if (name.rfind("aten::_foreach_", 0) == 0)
    return name.find("norm") == std::string::npos && name.find("_foreach_max") == std::string::npos;
  // Untagged but elementwise over tensors of one shape (the shape check sees to that): the state's zeros
  // (zeros_like is empty_like + zero_), a momentum buffer's clone of the gradient.
  static const std::set<std::string> kElementwise = {"aten::zero_", "aten::fill_.Scalar", "aten::fill_.Tensor",
                                                     "aten::copy_", "aten::clone"};
  return runtime::op_facts(n.op).pointwise || kElementwise.count(name) > 0;
}

enum class State : uint8_t { kWhole, kRows, kPartial };

class Sharding {
 public:
  Sharding(const runtime::StepGraph& graph, const runtime::CanonicalGraph& cg, BatchSplit& split, int devices,
           const std::vector<bool>& whole_nodes, const ShardingOptions& options)
      : graph_(graph), cg_(cg), split_(split), t_(std::max(split.tensor_ranks, 1)), n_(devices / t_),
        whole_nodes_(whole_nodes), options_(options),
        seeds_(backward_seeds(graph, cg)), rows_(cg.buffers.size(), 0), part_(cg.buffers.size(), 0),
        candidate_(cg.buffers.size(), false), state_(cg.buffers.size(), State::kWhole),
        whole_use_(cg.buffers.size(), false), last_node_(cg.buffers.size(), 0) {}

  OptimizerSharding run() {
    r_.optimizer = options_.optimizer;
    r_.params_in_rows = options_.params_in_rows;
    r_.low_precision = options_.low_precision;
    choose();
    if (std::none_of(shardable_.begin(), shardable_.end(), [](bool b) { return b; })) return r_;
    for (size_t s = 0; s < cg_.buffers.size(); ++s) {
      if (!candidate_[s] || cg_.buffers[s].origin != BufferOrigin::kMaterialized) continue;
      const Placement& p = cg_.bindings[s]->placement();  // where an earlier step left it
      const bool ranks_axis = t_ > 1 && p.ranks == t_ && p.stride == 1;  // TP's parts
      if (p.kind == PlacementKind::kShard && !ranks_axis && p.rows == rows_[s] && p.outer == 1) state_[s] = State::kRows;
      if (p.kind == PlacementKind::kShard && ranks_axis && p.inner_rows == rows_[s] && p.inner_ranks == n_)
        state_[s] = State::kRows;  // TP's parts, each in rows over the replicas
      if (p.kind == PlacementKind::kPartial) state_[s] = State::kPartial;  // gradients of a backward pass
    }
    uses_.assign(cg_.buffers.size(), {});
    std::vector<uint32_t> reads, writes;
    for (size_t i = 0; i < split_.steps.size(); ++i) {
      touched(split_.steps[i], reads, writes);
      for (uint32_t s : reads) uses_[s].push_back(i);
      for (uint32_t s : writes) uses_[s].push_back(i);
    }
    for (auto& u : uses_) u.erase(std::unique(u.begin(), u.end()), u.end());
    for (size_t i = 0; i < split_.steps.size(); ++i) lower(i);
    finish();
    split_.steps = std::move(out_);
    return r_;
  }

 private:
  uint64_t bytes(uint32_t s) const { return cg_.buffers[s].bytes; }
  // What a device holds of slot s where updates run on it: the whole value, or (tensor parallelism) its part.
  uint64_t part(uint32_t s) const { return part_[s] ? part_[s] : bytes(s); }
  bool tensor_part(uint32_t s) const { return part(s) != bytes(s); }
  uint64_t row_bytes(uint32_t s) const { return part(s) / static_cast<uint64_t>(rows_[s]); }
  // The plan's own geometry of a whole slot (a TP part's collectives carry theirs: on_replicas).
  void note_rows(uint32_t s) {
    if (!tensor_part(s)) split_.slots[s].row_bytes = row_bytes(s);
  }

  void touched(const SplitStep& st, std::vector<uint32_t>& reads, std::vector<uint32_t>& writes) const {
    step_slots(graph_, cg_, st, reads, writes);
  }

  // Which launches run on rows, and which slots they shard: elementwise ops over whole tensors of at least
  // `devices` rows, that update state the step leaves behind (in place) or make what only such ops read.
  void choose() {
    const auto& steps = split_.steps;
    shardable_.assign(steps.size(), false);
    std::vector<bool> shape_ok(steps.size(), false);
    std::vector<bool> no_rows(cg_.buffers.size(), false);  // split by the batch, or seen at other shapes
    std::vector<uint32_t> reads, writes;
    for (size_t i = 0; i < steps.size(); ++i) {
      const SplitStep& st = steps[i];
      if (st.kind != Kind::kLaunch) continue;
      const Node& n = graph_.nodes()[st.index];
      const auto& in = cg_.node_inputs[st.index];
      const auto& out = cg_.node_outputs[st.index];
      if (!st.launches.empty() && st.tensor_only && t_ > 1) {  // tensor parallelism's parts: rows of each
        if (elementwise(n) && !(st.index < whole_nodes_.size() && whole_nodes_[st.index]))
          shape_ok[i] = visit_parts(st, no_rows);
        continue;
      }
      if (!st.launches.empty()) {  // a launch on the batch's rows: what it takes by rows is not ours
        for (size_t x = 0; x < in.size() && x < st.aligned.size(); ++x)
          if (st.aligned[x] >= 0) no_rows[in[x]] = true;
        for (size_t o = 0; o < out.size() && o < st.outputs.size(); ++o)
          if (st.outputs[o].kind == OutputSpec::Kind::kShard) no_rows[out[o]] = true;
        continue;
      }
      if (!elementwise(n) || (st.index < whole_nodes_.size() && whole_nodes_[st.index])) continue;
      const runtime::ListElements lists = runtime::list_elements(n);
      std::map<int, runtime::Dims> shape;  // per list element (0 for a plain op)
      bool ok = true;
      auto visit = [&](const TensorRef& r, uint32_t s, int element) {
        if (r.sizes.empty()) return;  // a scalar: every replica reads it whole
        if (element < 0 || !full_view(r, bytes(s)) || r.sizes[0] < n_ || bytes(s) % static_cast<uint64_t>(r.sizes[0]) != 0 ||
            (bytes(s) / static_cast<uint64_t>(r.sizes[0])) % 2 != 0) {
          ok = false;
          return;
        }
        auto [it, fresh] = shape.try_emplace(element, r.sizes);
        if (!fresh && it->second != r.sizes) ok = false;
        if (rows_[s] != 0 && rows_[s] != r.sizes[0]) no_rows[s] = true;
        if (part_[s] != 0 && part_[s] != bytes(s)) no_rows[s] = true;
        rows_[s] = r.sizes[0];
        part_[s] = bytes(s);
      };
      for (size_t x = 0; x < in.size(); ++x) visit(n.inputs[x], in[x], lists.length ? lists.inputs[x] : 0);
      for (size_t k = 0; k < out.size(); ++k) visit(n.outputs[k], out[k], lists.length ? lists.outputs[k] : 0);
      shape_ok[i] = ok && !shape.empty();  // and some tensor with rows
    }
    // Updates: elementwise launches that write state the step leaves behind, then (backwards) those whose
    // every result only updates read.
    std::vector<std::vector<size_t>> readers(cg_.buffers.size());
    for (size_t i = 0; i < steps.size(); ++i) {
      touched(steps[i], reads, writes);
      for (uint32_t s : reads) readers[s].push_back(i);
    }
    auto rank_slots = [&](size_t i, bool outputs_only, auto&& f) {
      const SplitStep& st = steps[i];
      const Node& n = graph_.nodes()[st.index];
      const auto& in = cg_.node_inputs[st.index];
      const auto& out = cg_.node_outputs[st.index];
      if (!outputs_only)
        for (size_t x = 0; x < in.size(); ++x)
          if (!n.inputs[x].sizes.empty()) f(in[x]);
      for (size_t k = 0; k < out.size(); ++k)
        if (!n.outputs[k].sizes.empty()) f(out[k]);
    };
    low_copy_.assign(cg_.buffers.size(), false);
    if (options_.low_precision)
      for (size_t i = 0; i < steps.size(); ++i)
        if (shape_ok[i] && low_precision_cast(steps[i])) {
          shardable_[i] = true;
          low_copy_[cg_.node_inputs[steps[i].index][0]] = true;
        }
    for (bool changed = options_.optimizer; changed;) {
      changed = false;
      for (size_t i = steps.size(); i-- > 0;) {
        if (!shape_ok[i] || shardable_[i]) continue;
        const SplitStep& st = steps[i];
        const Node& n = graph_.nodes()[st.index];
        bool ok = true;
        rank_slots(i, false, [&](uint32_t s) { ok = ok && !no_rows[s]; });
        if (!ok) continue;
        // What it makes (outputs, inputs written in place) is read, from here on, only by updates.
        bool updates = false, feeds = false;
        auto fed = [&](uint32_t s) {
          feeds = true;
          for (size_t r : readers[s]) feeds = feeds && (r <= i || shardable_[r]);
          return feeds;
        };
        bool all = true;
        for (uint16_t w : n.written) {
          const uint32_t s = cg_.node_inputs[st.index][w];
          if (n.inputs[w].sizes.empty()) continue;
          if (cg_.buffers[s].live_after) updates = true;
          else all = all && fed(s);
        }
        rank_slots(i, true, [&](uint32_t s) { all = all && !cg_.buffers[s].live_after && fed(s); });
        feeds = all && (!n.written.empty() || !cg_.node_outputs[st.index].empty());
        if (updates || feeds) {
          shardable_[i] = true;
          changed = true;
        }
      }
    }
    for (size_t i = 0; i < steps.size(); ++i)
      if (shardable_[i]) rank_slots(i, false, [&](uint32_t s) { candidate_[s] = true; });
  }

  // autocast's cast of a parameter, run whole.
  bool low_precision_cast(const SplitStep& st) const {
    if (st.kind != Kind::kLaunch || !st.launches.empty()) return false;
    return casts_a_parameter(graph_.nodes()[st.index], cg_.node_inputs[st.index], cg_);
  }

  // The next step after i that touches s (steps_.size() when none).
  size_t next_use(uint32_t s, size_t i) const {
    const auto& u = uses_[s];
    const auto it = std::upper_bound(u.begin(), u.end(), i);
    return it == u.end() ? split_.steps.size() : *it;
  }
  bool next_is_sharded(uint32_t s, size_t i) const {
    const size_t j = next_use(s, i);
    return j < split_.steps.size() && shardable_[j];
  }

  // Tensor parallelism beside the replicas: a collective of rows runs over a tensor rank's replicas, with the
  // slot's own rows.
  void on_replicas(SplitStep& st) const {
    if (t_ == 1) return;
    st.axis = SplitStep::Axis::kBatch;
    runtime::SlotInfo g = split_.slots[st.index];
    g.row_bytes = row_bytes(st.index);
    g.outer = 1;
    g.rows = static_cast<uint64_t>(rows_[st.index]);
    st.geometry = g;
  }

  void gather(uint32_t s) {
    note_rows(s);
    out_.push_back({Kind::kAllGather, s});
    out_.back().node = last_node_[s];  // on the stage that holds it (pipeline stages)
    out_.back().own_rows = true;
    on_replicas(out_.back());
    state_[s] = State::kWhole;
    ++r_.gathers;
  }

  // Step i goes into the new sequence moved, not copied (it holds a launch per piece), once nothing here reads
  // it again; the later steps are untouched until their turn.
  void lower(size_t i) {
    SplitStep& st = split_.steps[i];
    node_ = st.node;
    std::vector<uint32_t> reads, writes;
    touched(st, reads, writes);
    // Collectives batch_split placed for whole ops: a sharded update wants rows instead.
    if ((st.kind == Kind::kAllReduce || st.kind == Kind::kAllGather || st.kind == Kind::kBroadcast) &&
        candidate_[st.index] && st.axis != SplitStep::Axis::kTensor) {
      const uint32_t s = st.index;
      if (st.kind == Kind::kAllReduce && state_[s] == State::kPartial && next_is_sharded(s, i)) {
        note_rows(s);
        out_.push_back({Kind::kReduceScatter, s});
        out_.back().node = st.node;
        out_.back().own_rows = true;
        on_replicas(out_.back());
        last_node_[s] = st.node;
        state_[s] = State::kRows;
        ++r_.reduce_scatters;
        return;
      }
      if (st.kind == Kind::kAllGather && state_[s] == State::kRows) {
        if (next_is_sharded(s, i)) return;  // stays in rows
        gather(s);
        return;
      }
      state_[s] = State::kWhole;
      last_node_[s] = st.node;
      out_.push_back(std::move(st));
      return;
    }
    if (st.kind == Kind::kAllocate && candidate_[st.index] && next_is_sharded(st.index, i)) {
      const uint32_t s = st.index;
      SplitStep a = std::move(st);
      a.bytes.clear();
      for (int d = 0; d < n_ * t_; ++d)  // device d: replica d / t_
        a.bytes.push_back(row_bytes(s) * static_cast<uint64_t>(runtime::split_rows(rows_[s], n_, d / t_).count));
      note_rows(s);
      a.own_rows = true;
      out_.push_back(std::move(a));
      state_[s] = State::kRows;
      return;
    }
    if (st.kind == Kind::kRelease) {
      out_.push_back(std::move(st));
      return;
    }
    if (st.kind == Kind::kLaunch && shardable_[i] && launch_on_rows(st)) return;
    // Anything else reads whole values: rows are gathered first.
    for (uint32_t s : reads)
      if (candidate_[s] && state_[s] == State::kRows) gather(s);
    for (uint32_t s : writes)
      if (candidate_[s] && state_[s] == State::kRows) gather(s);
    // What it makes (set after the pass's drops below): a per-device partial sum (a launch on the batch's rows),
    // else whole.
    boost::container::small_vector<std::pair<uint32_t, State>, 4> made;
    if (st.kind == Kind::kLaunch) {
      const auto& out = cg_.node_outputs[st.index];
      for (size_t k = 0; k < out.size(); ++k) {
        const bool partial = !st.launches.empty() && k < st.outputs.size() &&
                             st.outputs[k].kind == OutputSpec::Kind::kPartial;
        made.push_back({out[k], partial ? State::kPartial : State::kWhole});
      }
      const Node& n = graph_.nodes()[st.index];
      for (uint16_t w : n.written)
        if (st.launches.empty()) made.push_back({cg_.node_inputs[st.index][w], State::kWhole});
    }
    const uint32_t node = st.node;
    out_.push_back(std::move(st));
    for (uint32_t s : reads) whole_use_[s] = true, last_node_[s] = node;
    for (uint32_t s : writes) last_node_[s] = node;
    if (options_.params_in_rows || options_.low_precision) drop_after_pass(i, reads, writes);
    for (const auto& [s, state] : made) state_[s] = state;
  }

  // The pass a node belongs to: a forward pass, or a backward pass with what follows it up to the next
  // forward pass's end (the count of backward seeds at or before it).
  size_t pass_of(uint32_t node) const {
    return static_cast<size_t>(std::upper_bound(seeds_.begin(), seeds_.end(), node) - seeds_.begin());
  }

  // Each replica keeps its rows of whole value s (no traffic) and lets go of the rest.
  void keep_rows(uint32_t s, uint32_t node) {
    note_rows(s);
    out_.push_back({Kind::kKeepRows, s});
    out_.back().node = node;
    out_.back().own_rows = true;
    on_replicas(out_.back());
    last_node_[s] = node;
    state_[s] = State::kRows;
  }

  // ZeRO-3 (and autocast's copies of parameters, distribute_low_prec_param): a parameter read whole by step i
  // and next touched in a later pass goes back to rows: each replica keeps its rows (no traffic) and releases
  // the rest; the next whole use gathers it again.
  void drop_after_pass(size_t i, const std::vector<uint32_t>& reads, const std::vector<uint32_t>& writes) {
    const uint32_t node = split_.steps[i].node;
    for (uint32_t s : reads) {
      const bool param = options_.params_in_rows && cg_.buffers[s].origin == BufferOrigin::kMaterialized;
      if (!candidate_[s] || state_[s] != State::kWhole || !(param || low_copy_[s]) ||
          std::find(writes.begin(), writes.end(), s) != writes.end())
        continue;
      const size_t next = next_use(s, i);
      if (next >= split_.steps.size() || pass_of(split_.steps[next].node) <= pass_of(node)) continue;
      keep_rows(s, node);
      ++r_.dropped;
    }
  }

  // A launch tensor parallelism split (no batch rows): each of its tensors is read whole, or as the device's
  // part (aligned with its split, or an output split so), a contiguous view of the device's block from its start
  // and the same on every device. Notes each tensor's rows and part; false when some tensor is not so.
  bool visit_parts(const SplitStep& st, std::vector<bool>& no_rows) {
    const Node& n = graph_.nodes()[st.index];
    const auto& in = cg_.node_inputs[st.index];
    const auto& out = cg_.node_outputs[st.index];
    const runtime::ListElements lists = runtime::list_elements(n);
    std::map<int, runtime::Dims> shape;
    bool ok = true;
    auto visit = [&](const TensorRef& r, uint32_t s, int element, bool split, auto&& local) {
      if (r.sizes.empty() || !ok) return;
      const LocalRef* first = local(0);
      const runtime::Dims& sizes = first ? first->sizes : r.sizes;
      for (int d = 0; d < n_ * t_ && ok; ++d) {
        const LocalRef* l = local(d);
        const runtime::Dims& strides = l && !l->strides.empty() ? l->strides : r.strides;
        TensorRef v = r;
        v.offset = l ? l->offset : r.offset;
        v.sizes = l ? l->sizes : r.sizes;
        v.strides = strides;
        uint64_t numel = 1;
        for (int64_t x : v.sizes) numel *= static_cast<uint64_t>(x);
        const uint64_t part = numel * r.itemsize;
        ok = v.sizes == sizes && full_view(v, part) && (split ? part * static_cast<uint64_t>(t_) == bytes(s) : part == bytes(s));
      }
      uint64_t numel = 1;
      for (int64_t x : sizes) numel *= static_cast<uint64_t>(x);
      const uint64_t part = numel * r.itemsize;
      if (!ok || element < 0 || sizes[0] < n_ || part % static_cast<uint64_t>(sizes[0]) != 0 ||
          (part / static_cast<uint64_t>(sizes[0])) % 2 != 0) {
        ok = false;
        return;
      }
      auto [it, fresh] = shape.try_emplace(element, sizes);
      if (!fresh && it->second != sizes) ok = false;
      if ((rows_[s] != 0 && rows_[s] != sizes[0]) || (part_[s] != 0 && part_[s] != part)) no_rows[s] = true;
      rows_[s] = sizes[0];
      part_[s] = part;
    };
    for (size_t x = 0; x < in.size(); ++x) {
      const bool split = x < st.aligned.size() && st.aligned[x] >= 0;
      visit(n.inputs[x], in[x], lists.length ? lists.inputs[x] : 0, split, [&](int d) -> const LocalRef* {
        const auto& refs = st.launches.at(static_cast<size_t>(d)).inputs;
        return x < refs.size() ? &refs[x] : nullptr;
      });
    }
    for (size_t k = 0; k < out.size(); ++k) {
      const bool split = k < st.outputs.size() && st.outputs[k].kind == OutputSpec::Kind::kShard;
      visit(n.outputs[k], out[k], lists.length ? lists.outputs[k] : 0, split, [&](int d) -> const LocalRef* {
        const auto& refs = st.launches.at(static_cast<size_t>(d)).outputs;
        return k < refs.size() ? &refs[k] : nullptr;
      });
    }
    return ok && !shape.empty();
  }

  // Each replica runs the launch on its rows of every tensor. False when an input is a partial sum (the
  // launch then runs as batch_split placed it).
  bool launch_on_rows(const SplitStep& st) {
    const Node& n = graph_.nodes()[st.index];
    const auto& in = cg_.node_inputs[st.index];
    const auto& out = cg_.node_outputs[st.index];
    for (size_t x = 0; x < in.size(); ++x)
      if (!n.inputs[x].sizes.empty() && state_[in[x]] == State::kPartial) return false;
    // A cast of a parameter reads each replica's rows of it where they lie, whole or in rows.
    const bool cast = options_.low_precision && low_precision_cast(st);
    std::vector<bool> whole_in(in.size(), false);
    for (size_t x = 0; x < in.size(); ++x) {
      const uint32_t s = in[x];
      if (n.inputs[x].sizes.empty() || state_[s] == State::kRows) continue;
      if (cast && x == 1) {
        whole_in[x] = true;
        continue;
      }
      keep_rows(s, st.node);  // a whole value every replica holds: each keeps its rows
    }
    SplitStep l{Kind::kLaunch, st.index};
    l.node = st.node;
    l.own_rows = true;
    for (uint32_t s : in) last_node_[s] = st.node;
    for (uint32_t s : out) last_node_[s] = st.node;
    for (int d = 0; d < n_ * t_; ++d) {  // device d: replica d / t_
      // Its rows of each tensor as the device sees it: the recorded view, or its TP part's (tensor_only).
      const LocalLaunch* tensor = st.launches.empty() ? nullptr : &st.launches[static_cast<size_t>(d)];
      LocalLaunch local;
      if (tensor) {
        local = *tensor;
        local.inputs.clear();
        local.outputs.clear();
      }
      auto mine = [&](const TensorRef& r, const std::vector<LocalRef>* refs, size_t x, uint32_t s, bool whole = false) {
        LocalRef lr{r.offset, r.sizes};
        if (refs && x < refs->size()) lr = (*refs)[x];
        if (r.sizes.empty()) return lr;
        const runtime::RowRange rows = runtime::split_rows(rows_[s], n_, d / t_);
        lr.sizes[0] = rows.count;
        const int64_t stride0 = lr.strides.empty() ? r.strides[0] : lr.strides[0];
        if (whole) lr.offset += rows.begin * stride0;  // its rows of the whole block
        return lr;
      };
      for (size_t x = 0; x < in.size(); ++x)
        local.inputs.push_back(mine(n.inputs[x], tensor ? &tensor->inputs : nullptr, x, in[x], whole_in[x]));
      for (size_t k = 0; k < out.size(); ++k)
        local.outputs.push_back(mine(n.outputs[k], tensor ? &tensor->outputs : nullptr, k, out[k]));
      l.launches.push_back(std::move(local));
    }
    out_.push_back(std::move(l));
    for (size_t k = 0; k < out.size(); ++k) {
      state_[out[k]] = n.outputs[k].sizes.empty() ? State::kWhole : State::kRows;
      if (!n.outputs[k].sizes.empty()) note_rows(out[k]);
    }
    ++r_.sharded_ops;
    if (cast) ++r_.low_precision_casts;
    return true;
  }

  // After the step: parameters (values from before the step that it also read whole: the forward pass) are
  // gathered; optimizer state, and gradients the step made, stay in rows (the next step that reads them
  // whole gathers them first).
  void finish() {
    node_ = static_cast<uint32_t>(graph_.size() ? graph_.size() - 1 : 0);
    for (size_t s = 0; s < cg_.buffers.size(); ++s) {
      if (!candidate_[s] || state_[s] != State::kRows) continue;
      const uint32_t slot = static_cast<uint32_t>(s);
      if (!cg_.buffers[s].live_after) continue;
      if (whole_use_[s] && cg_.buffers[s].origin == BufferOrigin::kMaterialized && !options_.params_in_rows) {
        gather(slot);
        // Whole, or in TP's parts as tensor parallelism left it.
        if (!tensor_part(slot)) split_.final_placements[s] = {PlacementKind::kReplicate};
      } else if (tensor_part(slot)) {  // TP's parts (along a replica's ranks), each in rows over the replicas
        Placement& p = split_.final_placements[s];
        p.inner_rows = rows_[s];
        p.inner_ranks = n_;
        p.inner_stride = t_;
        ++r_.sharded_state;
        r_.sharded_bytes += bytes(slot);
      } else {
        split_.final_placements[s] = {PlacementKind::kShard, rows_[s]};
        if (t_ > 1) {  // over the replicas, the same rows on each of a replica's tensor ranks
          split_.final_placements[s].ranks = n_;
          split_.final_placements[s].stride = t_;
        }
        ++r_.sharded_state;
        r_.sharded_bytes += bytes(slot);
      }
    }
  }

  const runtime::StepGraph& graph_;
  const runtime::CanonicalGraph& cg_;
  BatchSplit& split_;
  const int t_;  // tensor ranks per replica (device d is replica d / t_)
  const int n_;  // replicas
  const std::vector<bool>& whole_nodes_;
  const ShardingOptions options_;
  std::vector<bool> low_copy_;      // per slot: autocast's copy of a parameter, made on rows
  const std::vector<size_t> seeds_;  // the backward passes' seeds (backward_seeds.h)
  std::vector<int64_t> rows_;       // per slot: its first dim, the rows a replica takes a share of
  std::vector<uint64_t> part_;      // per slot: the bytes a device's updates see of it (0: not seen yet)
  std::vector<bool> candidate_;     // a slot sharded updates touch
  std::vector<State> state_;
  std::vector<bool> whole_use_;     // read whole by some op of the step
  std::vector<bool> shardable_;     // per step
  std::vector<std::vector<size_t>> uses_;
  std::vector<SplitStep> out_;
  uint32_t node_ = 0;
  std::vector<uint32_t> last_node_;  // per slot: the node of the last step that touched it
  OptimizerSharding r_;
};

}  // namespace

std::string describe(const OptimizerSharding& r, int replicas) {
  std::string out;
  if (r.optimizer)
    out = fmt::format(
        "; optimizer sharded over the {} replicas (distribute_param, {}): {} updates on each replica's rows, {} "
        "gradients reduce-scattered, {} all-gathers, {} slots ({} bytes) left in rows after the step",
        replicas, r.params_in_rows ? "ZeRO-3" : "ZeRO-2", r.sharded_ops, r.reduce_scatters, r.gathers,
        r.sharded_state, r.sharded_bytes);
  if (r.params_in_rows)
    out += fmt::format(", parameters resting in rows and gathered for each pass ({} let go of after a pass)",
                       r.dropped);
  if (r.low_precision)
    out += r.low_precision_casts
               ? fmt::format("; {} low-precision copies of parameters made on each of the {} replicas' rows and "
                             "gathered for each pass (distribute_low_prec_param)",
                             r.low_precision_casts, replicas)
               : std::string("; no low-precision copies of parameters to shard (distribute_low_prec_param: the step "
                             "casts none, as without autocast)");
  return out;
}

OptimizerSharding shard_optimizer(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                  BatchSplit& split, int devices, const std::vector<bool>& whole_nodes,
                                  const ShardingOptions& options) {
  if (devices / std::max(split.tensor_ranks, 1) < 2) return {};
  return Sharding(graph, canonical, split, devices, whole_nodes, options).run();
}

bool casts_a_parameter(const Node& n, const std::vector<uint32_t>& in, const runtime::CanonicalGraph& cg) {
  static const runtime::OpId copy = runtime::intern_op("aten::copy_");
  if (n.op != copy || n.inputs.size() < 2 || in.size() < 2 || n.written.size() != 1 || n.written[0] != 0 ||
      n.initializes.size() != 1)
    return false;
  return n.inputs[0].itemsize < n.inputs[1].itemsize && n.inputs[0].sizes == n.inputs[1].sizes &&
         cg.buffers[in[1]].origin == BufferOrigin::kMaterialized && cg.buffers[in[1]].live_after &&
         !cg.buffers[in[0]].live_after;
}

}  // namespace moreh::scheduler
