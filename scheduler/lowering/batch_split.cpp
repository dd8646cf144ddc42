#include "scheduler/lowering/batch_split.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>

#include "runtime/base/spdlog_logger.h"

namespace moreh::scheduler {

using runtime::BufferOrigin;
using runtime::Instruction;
using runtime::LocalLaunch;
using runtime::LocalRef;
using runtime::Node;
using runtime::Placement;
using runtime::PlacementKind;
using runtime::RowRange;
using runtime::TensorRef;
using Kind = Instruction::Kind;
using Step = SplitStep;

// The dim of `ref` along which a buffer split into `rows` contiguous rows of `row_elems` elements is
// split, if the view walks the rows in order: one dim spans every row (k indices per row), and
// everything else the view reaches stays inside one stride of that dim.
std::optional<int> row_dim(const TensorRef& ref, uint64_t buffer_bytes, int64_t rows) {
  if (rows <= 0 || ref.itemsize == 0 || buffer_bytes % (static_cast<uint64_t>(rows) * ref.itemsize) != 0)
    return std::nullopt;
  const int64_t row_elems = static_cast<int64_t>(buffer_bytes / ref.itemsize) / rows;
  for (size_t d = 0; d < ref.sizes.size(); ++d) {
    const int64_t size = ref.sizes[d], stride = ref.strides[d];
    if (stride <= 0 || size % rows != 0 || (size / rows) * stride != row_elems) continue;
    int64_t reach = ref.offset;
    bool empty = false;
    for (size_t e = 0; e < ref.sizes.size(); ++e) {
      if (e == d) continue;
      if (ref.sizes[e] == 0) empty = true;
      else if (ref.strides[e] < 0) reach = INT64_MAX;
      else reach += ref.strides[e] * (ref.sizes[e] - 1);
    }
    if (!empty && reach < stride) return static_cast<int>(d);
  }
  return std::nullopt;
}

namespace {

class Lowering {
 public:
  Lowering(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
           const std::vector<RowRange>& pieces, int64_t rows)
      : graph_(graph), cg_(canonical), pieces_(pieces), n_(static_cast<int>(pieces.size())), rows_(rows),
        state_(canonical.buffers.size()),
        known_(canonical.buffers.size(), false), slots_(canonical.buffers.size()) {
    for (size_t s = 0; s < cg_.buffers.size(); ++s) {
      if (cg_.buffers[s].origin == BufferOrigin::kMaterialized) {
        state_[s] = cg_.bindings[s]->placement();
        known_[s] = true;
      }
    }
  }

  BatchSplit run(const std::vector<uint32_t>* order, bool reallocate) {
    const auto& nodes = graph_.nodes();
    const size_t positions = order ? order->size() : nodes.size();
    std::vector<bool> ran(nodes.size(), false);
    for (size_t p = 0; p < positions; ++p) {
      const uint32_t i = order ? (*order)[p] : static_cast<uint32_t>(p);
      if (ran[i] && reallocate)  // it runs again: what it gives a first value to gets memory again
        for (uint16_t w : nodes[i].initializes) known_[cg_.node_inputs[i][w]] = false;
      ran[i] = true;
      const size_t first = steps_.size();
      lower_node(i, nodes[i]);
      for (size_t k = first; k < steps_.size(); ++k) steps_[k].node = i;
    }
    BatchSplit out;
    out.steps = std::move(steps_);
    out.final_placements.resize(cg_.buffers.size());
    for (size_t s = 0; s < cg_.buffers.size(); ++s)
      out.final_placements[s] = known_[s] ? state_[s] : Placement{PlacementKind::kReplicate};
    out.known = known_;
    out.slots = std::move(slots_);
    out.replicated_fallbacks = fallbacks_;
    for (const auto& [name, count] : fallback_ops_) out.fallback_ops.push_back(fmt::format("{} ×{}", name, count));
    out.fallback_details = std::move(fallback_details_);
    return out;
  }

 private:
  uint64_t bytes(uint32_t s) const { return cg_.buffers[s].bytes; }

  void note_type(uint32_t s, const TensorRef& r) {
    if (!slots_[s].type) slots_[s].type = runtime::data_type_of(r.dtype);
  }

  RowRange range(int d) const { return pieces_[d]; }

  // Brings a slot to kReplicate, emitting the collective it needs.
  void replicate(uint32_t s) {
    if (!known_[s]) {  // never written: give every device the whole buffer
      Step a{Kind::kAllocate, s};
      a.bytes.assign(n_, bytes(s));
      steps_.push_back(std::move(a));
      known_[s] = true;
      state_[s] = {PlacementKind::kReplicate};
      return;
    }
    switch (state_[s].kind) {
      case PlacementKind::kReplicate: return;
      case PlacementKind::kHome:
      case PlacementKind::kLocal: steps_.push_back({Kind::kBroadcast, s}); break;
      case PlacementKind::kShard:  // by leading rows, or along a later dimension (re-laid once gathered)
        slots_[s].outer = static_cast<uint64_t>(std::max<int64_t>(state_[s].outer, 1));
        slots_[s].row_bytes = bytes(s) / (static_cast<uint64_t>(state_[s].rows) * slots_[s].outer);
        steps_.push_back({Kind::kAllGather, s});
        break;
      case PlacementKind::kPartial: steps_.push_back({Kind::kAllReduce, s}); break;
    }
    state_[s] = {PlacementKind::kReplicate};
  }

  std::optional<int> batch_dim(uint32_t s, const TensorRef& r) const {
    if (!known_[s] || state_[s].kind != PlacementKind::kShard || state_[s].rows != rows_ || state_[s].outer != 1)
      return std::nullopt;
    return row_dim(r, bytes(s), rows_);
  }

  void lower_node(uint32_t index, const Node& node) {
    const auto& in_slots = cg_.node_inputs[index];
    const auto& out_slots = cg_.node_outputs[index];
    for (size_t i = 0; i < node.inputs.size(); ++i) note_type(in_slots[i], node.inputs[i]);
    for (size_t k = 0; k < node.outputs.size(); ++k) note_type(out_slots[k], node.outputs[k]);
    if (rows_ >= n_ && node.host_input && try_split_upload(index, node)) return;

    BatchDims dims(node.inputs.size());
    bool any = false;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      dims[i] = batch_dim(in_slots[i], node.inputs[i]);
      any = any || dims[i].has_value();
    }
    if (!any && sums_partials(index, node)) return;
    if (any) {
      auto d = shard_rule(node, dims);
      std::string why = d ? invalid(node, index, *d) : std::string("no rule for this layout");
      if (why.empty()) {
        emit_split(index, node, *d, dims);
        return;
      }
      ++fallbacks_;
      fallback_ops_[runtime::op_name(node.op)]++;
      if (runtime::log().should_log(spdlog::level::debug)) {
        std::string where;
        for (size_t i = 0; i < dims.size(); ++i) where += dims[i] ? fmt::format(" {}", *dims[i]) : std::string(" -");
        fallback_details_.push_back(
            fmt::format("  #{} {} with inputs split at [{} ]: {}; runs replicated", index, runtime::op_name(node.op), where, why));
      }
    }
    emit_replicated(index, node);
  }

  // A sum of partial sums is a partial sum: the gradients of a weight used twice (tied embedding and LM head)
  // are added on each device and all-reduced once, not once per use. add/sub (any alpha) of two partial values
  // of one shape run as recorded on every device; the result (or the written input) stays partial.
  bool sums_partials(uint32_t index, const Node& node) {
    static const std::array<runtime::OpId, 4> kLinear = {
        runtime::intern_op("aten::add.Tensor"), runtime::intern_op("aten::add_.Tensor"),
        runtime::intern_op("aten::sub.Tensor"), runtime::intern_op("aten::sub_.Tensor")};
    if (std::find(kLinear.begin(), kLinear.end(), node.op) == kLinear.end() || node.inputs.size() != 2) return false;
    const auto& in_slots = cg_.node_inputs[index];
    for (size_t i = 0; i < 2; ++i) {
      const uint32_t s = in_slots[i];
      if (!known_[s] || state_[s].kind != PlacementKind::kPartial) return false;
      if (node.inputs[i].sizes != node.inputs[0].sizes || node.inputs[i].dtype != node.inputs[0].dtype) return false;
    }
    for (const auto& o : node.outputs)
      if (o.sizes != node.inputs[0].sizes || o.dtype != node.inputs[0].dtype) return false;
    steps_.push_back({Kind::kLaunch, index});
    for (uint32_t s : cg_.node_outputs[index]) {
      known_[s] = true;
      state_[s] = state_[in_slots[0]];
    }
    return true;
  }

  bool is_written(const Node& node, size_t i) const {
    return std::find(node.written.begin(), node.written.end(), i) != node.written.end();
  }

  // Why the decision cannot run split ("" when it can).
  std::string invalid(const Node& node, uint32_t index, const ShardDecision& d) const {
    const auto& in_slots = cg_.node_inputs[index];
    const auto& out_slots = cg_.node_outputs[index];
    if (d.inputs.size() != node.inputs.size() || d.outputs.size() != node.outputs.size()) return "rule arity";
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const auto& u = d.inputs[i];
      const uint32_t s = in_slots[i];
      bool local = std::find(d.written_local.begin(), d.written_local.end(), static_cast<int>(i)) != d.written_local.end();
      if (!u.batch) {
        if (is_written(node, i) && !local) return fmt::format("input {} is written whole", i);
        continue;
      }
      if (u.dim < 0 || u.dim >= static_cast<int>(node.inputs[i].sizes.size())) return fmt::format("input {} dim", i);
      const int64_t size = node.inputs[i].sizes[u.dim];
      if (size % rows_ != 0 || size < rows_) return fmt::format("input {} has {} rows along dim {}", i, size, u.dim);
      if (is_written(node, i)) {
        // Written by rows: it must already be split that way, or be new in this step.
        // Written by rows: split that way already, or new in this step, or laid out by rows so that each
        // device can keep its rows of the whole value first.
        bool aligned = batch_dim(s, node.inputs[i]) == u.dim;
        bool rows = row_dim(node.inputs[i], bytes(s), rows_) == u.dim && (bytes(s) / rows_) % 2 == 0;
        if (!aligned && !rows) return fmt::format("written input {} is not split along dim {}", i, u.dim);
      }
    }
    for (size_t k = 0; k < node.outputs.size(); ++k) {
      const auto& o = d.outputs[k];
      if (o.kind == OutputSpec::Kind::kShard) {
        if (row_dim(node.outputs[k], bytes(out_slots[k]), rows_) != o.dim) return fmt::format("output {} is not laid out by rows along dim {}", k, o.dim);
        if ((bytes(out_slots[k]) / rows_) % 2 != 0) return fmt::format("output {} has odd-sized rows", k);
      }
      if (o.kind == OutputSpec::Kind::kPartial || o.scale_by_share) {
        auto t = runtime::data_type_of(node.outputs[k].dtype);
        if (!t || *t == runtime::DataType::kInt64 || *t == runtime::DataType::kInt32) return fmt::format("output {} cannot be summed", k);
      }
    }
    if (d.loss_mean) {
      int out = node.output_of_ret(0), tw = node.output_of_ret(1);
      if (out < 0 || tw < 0) return "loss outputs";
    }
    return {};
  }

  // x.to("moreh") of a batch: each device copies its rows of the host tensor.
  bool try_split_upload(uint32_t index, const Node& node) {
    if (node.inputs.size() != 1 || node.written.size() != 1) return false;
    const uint32_t s = cg_.node_inputs[index][0];
    const TensorRef& r = node.inputs[0];
    if (known_[s] || r.sizes.empty() || r.sizes[0] != rows_ || row_dim(r, bytes(s), rows_) != 0) return false;
    if ((bytes(s) / rows_) % 2 != 0) return false;
    allocate_split(s);
    Step launch{Kind::kLaunch, index};
    for (int d = 0; d < n_; ++d) {
      LocalLaunch l;
      l.rows = range(d);
      l.batch_rows = rows_;
      LocalRef lr{r.offset, r.sizes};
      lr.sizes[0] = l.rows.count;
      l.inputs.push_back(std::move(lr));
      launch.launches.push_back(std::move(l));
    }
    launch.aligned = {0};
    launch.outputs.clear();
    steps_.push_back(std::move(launch));
    state_[s] = {PlacementKind::kShard, rows_};
    return true;
  }

  void allocate_split(uint32_t s) {
    Step a{Kind::kAllocate, s};
    a.split_allocation = true;
    const uint64_t row_bytes = bytes(s) / static_cast<uint64_t>(rows_);
    for (int d = 0; d < n_; ++d) a.bytes.push_back(row_bytes * static_cast<uint64_t>(range(d).count));
    slots_[s].row_bytes = row_bytes;
    steps_.push_back(std::move(a));
    known_[s] = true;
  }

  void emit_replicated(uint32_t index, const Node& node) {
    for (uint32_t s : cg_.node_inputs[index]) replicate(s);
    steps_.push_back({Kind::kLaunch, index});
    for (uint32_t s : cg_.node_outputs[index]) {
      known_[s] = true;
      state_[s] = {PlacementKind::kReplicate};
    }
  }

  void emit_split(uint32_t index, const Node& node, const ShardDecision& d, const BatchDims& dims) {
    const auto& in_slots = cg_.node_inputs[index];
    const auto& out_slots = cg_.node_outputs[index];
    // Inputs: whole ones replicated; split ones local (aligned shards as they are, others sliced from a
    // replicated copy); per-device ones as they are.
    std::vector<bool> sliced(node.inputs.size(), false);
    std::vector<int8_t> aligned(node.inputs.size(), -1);
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const uint32_t s = in_slots[i];
      const auto& u = d.inputs[i];
      if (!u.batch) {
        if (u.dim == -1 && known_[s] && state_[s].kind == PlacementKind::kLocal) continue;
        replicate(s);
        continue;
      }
      aligned[i] = static_cast<int8_t>(u.dim);
      if (dims[i] == u.dim) continue;
      if (!known_[s] && is_written(node, i)) {
        allocate_split(s);
        state_[s] = {PlacementKind::kShard, rows_};
        continue;
      }
      if (is_written(node, i)) {  // R -> S locally: each device keeps its rows
        replicate(s);
        slots_[s].row_bytes = bytes(s) / static_cast<uint64_t>(rows_);
        steps_.push_back({Kind::kKeepRows, s});
        state_[s] = {PlacementKind::kShard, rows_};
        continue;
      }
      replicate(s);
      sliced[i] = true;
      aligned[i] = -1;
    }
    Step launch{Kind::kLaunch, index};
    launch.aligned = std::move(aligned);
    launch.outputs = d.outputs;
    if (d.loss_mean) {
      launch.loss_out = node.output_of_ret(0);
      launch.loss_weight = node.output_of_ret(1);
    }
    for (int dev = 0; dev < n_; ++dev) {
      const RowRange rr = range(dev);
      LocalLaunch l;
      l.rows = rr;
      l.batch_rows = rows_;
      if (!d.inputs.empty() && d.inputs[0].batch) l.input0_dim = d.inputs[0].dim;
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        const TensorRef& r = node.inputs[i];
        LocalRef lr{r.offset, r.sizes};
        const auto& u = d.inputs[i];
        if (u.batch) {
          const int64_t per_row = r.sizes[u.dim] / rows_;
          lr.sizes[u.dim] = rr.count * per_row;
          if (sliced[i]) lr.offset += rr.begin * per_row * r.strides[u.dim];
        }
        l.inputs.push_back(std::move(lr));
      }
      for (size_t k = 0; k < node.outputs.size(); ++k) {
        const TensorRef& r = node.outputs[k];
        LocalRef lr{r.offset, r.sizes};
        if (d.outputs[k].kind == OutputSpec::Kind::kShard) {
          const int dim = d.outputs[k].dim;
          lr.sizes[dim] = rr.count * (r.sizes[dim] / rows_);
        }
        l.outputs.push_back(std::move(lr));
      }
      launch.launches.push_back(std::move(l));
    }
    steps_.push_back(std::move(launch));

    for (size_t k = 0; k < node.outputs.size(); ++k) {
      const uint32_t s = out_slots[k];
      const auto& o = d.outputs[k];
      known_[s] = true;
      switch (o.kind) {
        case OutputSpec::Kind::kShard:
          state_[s] = {PlacementKind::kShard, rows_};
          slots_[s].row_bytes = bytes(s) / static_cast<uint64_t>(rows_);
          break;
        case OutputSpec::Kind::kPartial:
          state_[s] = {PlacementKind::kPartial, 0, slots_[s].type.value_or(runtime::DataType::kFloat32)};
          break;
        case OutputSpec::Kind::kLocal: state_[s] = {PlacementKind::kLocal}; break;
        case OutputSpec::Kind::kReplicate: state_[s] = {PlacementKind::kReplicate}; break;
      }
      if (o.scale_by_share) {
        Step scale{Kind::kScale, s};
        for (int dev = 0; dev < n_; ++dev)
          scale.factors.push_back(static_cast<double>(range(dev).count) / static_cast<double>(rows_));
        steps_.push_back(std::move(scale));
      }
    }
    for (int i : d.written_local) state_[in_slots[i]] = {PlacementKind::kLocal};
    if (d.loss_mean) {
      // mean = sum over devices of (local mean × local weight) / sum over devices of local weight
      const uint32_t out = out_slots[node.output_of_ret(0)], tw = out_slots[node.output_of_ret(1)];
      steps_.push_back({Kind::kMultiply, out, tw});
      steps_.push_back({Kind::kAllReduce, out});
      steps_.push_back({Kind::kAllReduce, tw});
      steps_.push_back({Kind::kDivide, out, tw});
      state_[out] = {PlacementKind::kReplicate};
      state_[tw] = {PlacementKind::kReplicate};
    }
  }

  const runtime::StepGraph& graph_;
  const runtime::CanonicalGraph& cg_;
  const std::vector<RowRange>& pieces_;
  const int n_;
  const int64_t rows_;
  std::vector<Placement> state_;
  std::vector<bool> known_;
  std::vector<runtime::SlotInfo> slots_;
  std::vector<Step> steps_;
  uint64_t fallbacks_ = 0;
  std::map<std::string, uint64_t> fallback_ops_;
  std::vector<std::string> fallback_details_;
};

}  // namespace

void step_slots(const runtime::StepGraph& graph, const runtime::CanonicalGraph& cg, const SplitStep& st,
                std::vector<uint32_t>& reads, std::vector<uint32_t>& writes) {
  reads.clear();
  writes.clear();
  switch (st.kind) {
    case Kind::kLaunch: {
      const auto& node = graph.nodes()[st.index];
      const auto& in = cg.node_inputs[st.index];
      for (size_t i = 0; i < in.size(); ++i) {
        reads.push_back(in[i]);
        if (std::find(node.written.begin(), node.written.end(), i) != node.written.end()) writes.push_back(in[i]);
      }
      for (uint32_t s : cg.node_outputs[st.index]) writes.push_back(s);
      break;
    }
    case Kind::kAllocate: writes.push_back(st.index); break;
    case Kind::kMultiply:
    case Kind::kDivide:
      reads.push_back(st.index);
      reads.push_back(st.aux);
      writes.push_back(st.index);
      break;
    default:
      reads.push_back(st.index);
      writes.push_back(st.index);
      break;
  }
}

BatchSplit split_batch(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                       const std::vector<RowRange>& pieces, int64_t rows, const std::vector<uint32_t>* order,
                       bool reallocate) {
  return Lowering(graph, canonical, pieces, rows).run(order, reallocate);
}

}  // namespace moreh::scheduler
