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

std::optional<ViewSplit> view_split(const TensorRef& ref, uint64_t buffer_bytes, int64_t rows, int64_t outer) {
  if (outer <= 1) {
    if (auto d = row_dim(ref, buffer_bytes, rows)) return ViewSplit{*d, 1};
    return std::nullopt;
  }
  if (rows <= 0 || ref.itemsize == 0) return std::nullopt;
  const int64_t elems = static_cast<int64_t>(buffer_bytes / ref.itemsize);
  if (elems % (rows * outer) != 0) return std::nullopt;
  const int64_t row_elems = elems / (rows * outer), block = rows * row_elems;
  for (size_t d = 0; d < ref.sizes.size(); ++d) {
    const int64_t size = ref.sizes[d], stride = ref.strides[d];
    // Each index of the dim steps `stride` elements: `per` indices to a row, rows * per to a block, and the dim
    // may run on through `blocks` blocks (a fused [3C, C] weight split by heads: 3 blocks of heads).
    if (stride <= 0 || row_elems % stride != 0) continue;
    const int64_t per = row_elems / stride;
    if (size % (rows * per) != 0) continue;
    const int64_t blocks = size / (rows * per);
    if (outer % blocks != 0) continue;
    int64_t reach = ref.offset % block;  // where the view starts inside its block
    bool empty = false, ok = true;
    for (size_t e = 0; e < ref.sizes.size(); ++e) {
      if (e == d || ref.sizes[e] == 1) continue;
      if (ref.sizes[e] == 0) empty = true;
      else if (ref.strides[e] < 0) ok = false;
      else if (ref.strides[e] % block != 0) reach += ref.strides[e] * (ref.sizes[e] - 1);  // else: block to block
    }
    if (ok && !empty && reach < stride) return ViewSplit{static_cast<int>(d), blocks};
  }
  return std::nullopt;
}

std::optional<int> split_dim(const TensorRef& ref, uint64_t buffer_bytes, int64_t rows, int64_t outer) {
  if (auto v = view_split(ref, buffer_bytes, rows, outer)) return v->dim;
  return std::nullopt;
}

std::optional<SplitLayout> split_layout(const TensorRef& ref, uint64_t buffer_bytes, int dim, int64_t rows,
                                        int64_t blocks) {
  if (dim < 0 || dim >= static_cast<int>(ref.sizes.size()) || rows <= 0 || blocks <= 0 || ref.itemsize == 0)
    return std::nullopt;
  const int64_t size = ref.sizes[dim], stride = ref.strides[dim];
  if (stride <= 0 || size % (rows * blocks) != 0) return std::nullopt;
  const int64_t row_elems = (size / (rows * blocks)) * stride, elems = static_cast<int64_t>(buffer_bytes / ref.itemsize);
  if (elems % (rows * row_elems) != 0) return std::nullopt;
  const SplitLayout layout{rows, elems / (rows * row_elems)};
  const auto v = view_split(ref, buffer_bytes, layout.rows, layout.outer);
  if (!v || v->dim != dim || v->blocks != blocks) return std::nullopt;
  return layout;
}

LocalRef local_part(const TensorRef& ref, uint64_t buffer_bytes, int dim, const SplitLayout& layout,
                    const RowRange& part, bool in_block, int64_t blocks) {
  LocalRef lr{ref.offset, ref.sizes, {}};
  const int64_t per = ref.sizes[dim] / (layout.rows * blocks);
  lr.sizes[dim] = blocks * part.count * per;  // in each block the dim runs through, the device's rows
  if (!in_block) {  // cut from the whole value (one block: a range of the dim)
    lr.offset += part.begin * per * ref.strides[dim];
    return lr;
  }
  if (layout.outer <= 1) return lr;  // the device's rows start its block, as the value's first rows start it
  const int64_t elems = static_cast<int64_t>(buffer_bytes / ref.itemsize);
  const int64_t row_elems = elems / (layout.rows * layout.outer), block = layout.rows * row_elems;
  const int64_t mine = part.count * row_elems;  // the device's block holds its rows of each block
  lr.strides = ref.strides;
  for (size_t e = 0; e < ref.sizes.size(); ++e)
    if (static_cast<int>(e) != dim && ref.strides[e] > 0 && ref.strides[e] % block == 0)
      lr.strides[e] = ref.strides[e] / block * mine;
  lr.offset = ref.offset / block * mine + ref.offset % block;
  return lr;
}

namespace {

class Lowering {
 public:
  Lowering(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
           const std::vector<RowRange>& pieces, int64_t rows, const SplitSeeds* seeds)
      : graph_(graph), cg_(canonical), pieces_(pieces), n_(static_cast<int>(pieces.size())), rows_(rows), seeds_(seeds),
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
  // Device d's part of `rows` rows: its piece of the batch, or (tensor parallelism) split_rows' part.
  RowRange range(int64_t rows, int d) const {
    return rows == rows_ && rows_ > 0 ? pieces_[d] : runtime::split_rows(rows, n_, d);
  }
  static Placement shard_state(const SplitLayout& l) {
    Placement p{PlacementKind::kShard, l.rows};
    p.outer = l.outer;
    return p;
  }
  static SplitLayout layout_of(const Placement& p) { return {p.rows, p.outer}; }
  void note_split(uint32_t s, const SplitLayout& l) {
    slots_[s].outer = static_cast<uint64_t>(l.outer);
    slots_[s].row_bytes = bytes(s) / static_cast<uint64_t>(l.rows * l.outer);
  }
  // How slot s would lie if view `r` of it were split at `dim` into `rows` rows: nullopt when its layout does
  // not allow it (batch splitting: by leading rows only; every device's rows an even number of bytes).
  std::optional<SplitLayout> layout_for(uint32_t s, const TensorRef& r, int dim, int64_t rows,
                                        int64_t blocks = 1) const {
    auto l = split_layout(r, bytes(s), dim, rows, blocks);
    if (!l || (!seeds_ && l->outer != 1) || (bytes(s) / static_cast<uint64_t>(l->rows * l->outer)) % 2 != 0)
      return std::nullopt;
    return l;
  }

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

  // Where view `r` of slot s is split: batch splitting's rows, or (tensor parallelism) any split.
  std::optional<int> batch_dim(uint32_t s, const TensorRef& r) const {
    if (!known_[s] || state_[s].kind != PlacementKind::kShard) return std::nullopt;
    if (!seeds_ && (state_[s].rows != rows_ || state_[s].outer != 1)) return std::nullopt;
    return split_dim(r, bytes(s), state_[s].rows, state_[s].outer);
  }
  // How many of its blocks view `r` of split slot s runs through along its split dim (1: within one).
  int64_t blocks_of(uint32_t s, const TensorRef& r) const {
    if (!known_[s] || state_[s].kind != PlacementKind::kShard) return 1;
    auto v = view_split(r, bytes(s), state_[s].rows, state_[s].outer);
    return v ? v->blocks : 1;
  }

  void lower_node(uint32_t index, const Node& node) {
    const auto& in_slots = cg_.node_inputs[index];
    const auto& out_slots = cg_.node_outputs[index];
    for (size_t i = 0; i < node.inputs.size(); ++i) note_type(in_slots[i], node.inputs[i]);
    for (size_t k = 0; k < node.outputs.size(); ++k) note_type(out_slots[k], node.outputs[k]);
    if (rows_ >= n_ && node.host_input && try_split_upload(index, node)) return;

    BatchDims dims(node.inputs.size());
    bool any = false;
    int64_t rows = rows_;  // the rows this node's split inputs share
    int64_t blocks = 0;    // and the blocks their split dims run through (0: not known yet)
    if (seeds_) rows = 0;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      dims[i] = batch_dim(in_slots[i], node.inputs[i]);
      if (dims[i] && seeds_) {  // splits of other rows than the first one's are read whole
        if (rows == 0) rows = state_[in_slots[i]].rows;
        else if (state_[in_slots[i]].rows != rows) dims[i].reset();
      }
      if (dims[i] && blocks == 0) blocks = blocks_of(in_slots[i], node.inputs[i]);
      any = any || dims[i].has_value();
    }
    if (!any && sums_partials(index, node)) return;
    // Tensor parallelism: a value to split (a weight of a linear pair) that is still whole is read split here.
    bool seeded = false;
    if (seeds_ && !node.host_input)
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        const uint32_t s = in_slots[i];
        auto seed = seeds_->find(s);
        if (dims[i] || seed == seeds_->end() || (rows != 0 && seed->second.rows != rows)) continue;
        if (known_[s] && state_[s].kind != PlacementKind::kReplicate && state_[s].kind != PlacementKind::kHome) continue;
        if (auto v = view_split(node.inputs[i], bytes(s), seed->second.rows, seed->second.outer)) {
          dims[i] = v->dim;
          rows = seed->second.rows;
          if (blocks == 0) blocks = v->blocks;
          seeded = true;
        }
      }
    if (any || seeded) {
      auto d = shard_rule(node, dims);
      if (blocks == 0) blocks = 1;
      std::string why = d ? invalid(node, index, *d, rows, blocks) : std::string("no rule for this layout");
      if (why.empty()) {
        emit_split(index, node, *d, rows, blocks);
        return;
      }
      if (!any) {  // only a value to split was read: it is read whole here, no fallback
        emit_replicated(index, node);
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
  // The blocks output k's split dim runs through: the node's, or (cat along the split dim) its inputs' together.
  int64_t output_blocks(const Node& node, uint32_t index, const ShardDecision& d, size_t k, int64_t blocks) const {
    if (!d.outputs[k].concat_blocks) return blocks;
    int64_t sum = 0;
    for (size_t i = 0; i < node.inputs.size(); ++i)
      if (d.inputs[i].batch) sum += blocks_of(cg_.node_inputs[index][i], node.inputs[i]);
    return std::max<int64_t>(sum, 1);
  }

  std::string invalid(const Node& node, uint32_t index, const ShardDecision& d, int64_t rows, int64_t blocks) const {
    const auto& in_slots = cg_.node_inputs[index];
    const auto& out_slots = cg_.node_outputs[index];
    if (d.inputs.size() != node.inputs.size() || d.outputs.size() != node.outputs.size()) return "rule arity";
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const auto& u = d.inputs[i];
      const uint32_t s = in_slots[i];
      bool local = std::find(d.written_local.begin(), d.written_local.end(), static_cast<int>(i)) != d.written_local.end();
      if (!u.batch) {
        if (is_written(node, i) && !local) return fmt::format("input {} is written whole", i);
        for (size_t j = 0; j < node.inputs.size(); ++j)
          if (in_slots[j] == s && d.inputs[j].batch && is_written(node, j))
            return fmt::format("input {} reads whole what input {} writes by rows", i, j);
        continue;
      }
      if (u.dim < 0 || u.dim >= static_cast<int>(node.inputs[i].sizes.size())) return fmt::format("input {} dim", i);
      const int64_t size = node.inputs[i].sizes[u.dim];
      if (rows <= 0 || size % rows != 0 || size < rows)
        return fmt::format("input {} has {} rows along dim {}", i, size, u.dim);
      if (is_written(node, i)) {
        // Written by rows: split that way already, or new in this step, or laid out by rows so that each
        // device can keep its rows of the whole value first.
        bool aligned = batch_dim(s, node.inputs[i]) == u.dim && state_[s].rows == rows;
        if (!aligned && !layout_for(s, node.inputs[i], u.dim, rows, blocks))
          return fmt::format("written input {} is not split along dim {}", i, u.dim);
      } else if (blocks > 1 && !(batch_dim(s, node.inputs[i]) == u.dim && state_[s].rows == rows) &&
                 (!known_[s] || !layout_for(s, node.inputs[i], u.dim, rows, blocks))) {
        return fmt::format("input {} would be cut from its whole value through several blocks", i);
      }
    }
    for (size_t k = 0; k < node.outputs.size(); ++k) {
      const auto& o = d.outputs[k];
      if (o.kind == OutputSpec::Kind::kShard &&
          !layout_for(out_slots[k], node.outputs[k], o.dim, rows, output_blocks(node, index, d, k, blocks)))
        return fmt::format("output {} is not laid out by rows along dim {} (or has odd-sized rows)", k, o.dim);
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
    allocate_split(s, {rows_, 1});
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

  void allocate_split(uint32_t s, const SplitLayout& layout) {
    Step a{Kind::kAllocate, s};
    a.split_allocation = true;
    note_split(s, layout);
    const uint64_t part_row = slots_[s].row_bytes * static_cast<uint64_t>(layout.outer);
    for (int d = 0; d < n_; ++d) a.bytes.push_back(part_row * static_cast<uint64_t>(range(layout.rows, d).count));
    steps_.push_back(std::move(a));
    known_[s] = true;
  }

  void emit_replicated(uint32_t index, const Node& node) {
    // Tensor parallelism: values split along their own dims that this node reads whole are gathered for it and
    // kept in their parts again after it (clip_grad_norm_'s norms read every gradient; the optimizer's update
    // that follows then runs on the parts, and its state rests split).
    std::vector<std::pair<uint32_t, Placement>> regather;
    const auto& in_slots = cg_.node_inputs[index];
    for (size_t i = 0; i < in_slots.size(); ++i) {
      const uint32_t s = in_slots[i];
      if (seeds_ && known_[s] && state_[s].kind == PlacementKind::kShard && !is_written(node, i) &&
          std::none_of(regather.begin(), regather.end(), [&](const auto& r) { return r.first == s; }))
        regather.emplace_back(s, state_[s]);
    }
    for (uint32_t s : in_slots) replicate(s);
    steps_.push_back({Kind::kLaunch, index});
    for (uint32_t s : cg_.node_outputs[index]) {
      known_[s] = true;
      state_[s] = {PlacementKind::kReplicate};
    }
    for (const auto& [s, was] : regather) {
      bool written = false;
      for (size_t i = 0; i < in_slots.size(); ++i) written = written || (in_slots[i] == s && is_written(node, i));
      if (written) continue;
      note_split(s, layout_of(was));
      steps_.push_back({Kind::kKeepRows, s});
      state_[s] = was;
    }
  }

  void emit_split(uint32_t index, const Node& node, const ShardDecision& d, int64_t rows, int64_t blocks) {
    const auto& in_slots = cg_.node_inputs[index];
    const auto& out_slots = cg_.node_outputs[index];
    // Inputs: whole ones replicated; split ones local (aligned shards as they are, others sliced from a
    // replicated copy); per-device ones as they are.
    std::vector<bool> sliced(node.inputs.size(), false);
    std::vector<int8_t> aligned(node.inputs.size(), -1);
    // Written inputs first: a value the node also reads (x.mul_(y) recorded as mul.out(x, y, out=x)) is then
    // read from the device's rows it keeps, not cut from the whole value it no longer holds.
    std::vector<size_t> inputs_order;
    for (size_t i = 0; i < node.inputs.size(); ++i)
      if (is_written(node, i)) inputs_order.push_back(i);
    for (size_t i = 0; i < node.inputs.size(); ++i)
      if (!is_written(node, i)) inputs_order.push_back(i);
    for (size_t i : inputs_order) {
      const uint32_t s = in_slots[i];
      const auto& u = d.inputs[i];
      if (!u.batch) {
        if (u.dim == -1 && known_[s] && state_[s].kind == PlacementKind::kLocal) continue;
        replicate(s);
        continue;
      }
      aligned[i] = static_cast<int8_t>(u.dim);
      if (batch_dim(s, node.inputs[i]) == u.dim && state_[s].rows == rows) continue;  // in its blocks already
      // Written, or (tensor parallelism) a split dim running through several blocks, which no cut of the whole
      // value gives: each device keeps its part first.
      if (is_written(node, i) || blocks > 1) {
        const auto kept = layout_for(s, node.inputs[i], u.dim, rows, blocks);
        if (!kept) throw std::logic_error("tensor parallelism: an input cannot be kept in its parts");
        const SplitLayout layout = *kept;  // invalid() checked it for written inputs
        if (!known_[s]) {
          allocate_split(s, layout);
        } else {  // R -> S locally: each device keeps its rows
          replicate(s);
          note_split(s, layout);
          steps_.push_back({Kind::kKeepRows, s});
        }
        state_[s] = shard_state(layout);
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
    // How each split input (in its blocks) and output lies.
    std::vector<SplitLayout> in_layout(node.inputs.size()), out_layout(node.outputs.size());
    std::vector<int64_t> in_blocks(node.inputs.size(), 1), out_blocks(node.outputs.size(), 1);
    for (size_t i = 0; i < node.inputs.size(); ++i)
      if (d.inputs[i].batch && !sliced[i]) {
        in_layout[i] = layout_of(state_[in_slots[i]]);
        in_blocks[i] = blocks_of(in_slots[i], node.inputs[i]);
      }
    for (size_t k = 0; k < node.outputs.size(); ++k)
      if (d.outputs[k].kind == OutputSpec::Kind::kShard) {
        out_blocks[k] = output_blocks(node, index, d, k, blocks);
        out_layout[k] = *layout_for(out_slots[k], node.outputs[k], d.outputs[k].dim, rows, out_blocks[k]);
      }
    for (int dev = 0; dev < n_; ++dev) {
      const RowRange rr = range(rows, dev);
      LocalLaunch l;
      l.rows = rr;
      l.batch_rows = rows;
      if (!d.inputs.empty() && d.inputs[0].batch) l.input0_dim = d.inputs[0].dim;
      if (d.first_device_beta >= 0 && dev > 0) l.int_args.emplace_back(d.first_device_beta, 0);
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        const TensorRef& r = node.inputs[i];
        const auto& u = d.inputs[i];
        if (!u.batch) l.inputs.push_back(LocalRef{r.offset, r.sizes, {}});
        else if (sliced[i]) l.inputs.push_back(local_part(r, bytes(in_slots[i]), u.dim, {rows, 1}, rr, false));
        else l.inputs.push_back(local_part(r, bytes(in_slots[i]), u.dim, in_layout[i], rr, true, in_blocks[i]));
      }
      for (size_t k = 0; k < node.outputs.size(); ++k) {
        const TensorRef& r = node.outputs[k];
        if (d.outputs[k].kind == OutputSpec::Kind::kShard)
          l.outputs.push_back(
              local_part(r, bytes(out_slots[k]), d.outputs[k].dim, out_layout[k], rr, true, out_blocks[k]));
        else l.outputs.push_back(LocalRef{r.offset, r.sizes, {}});
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
          state_[s] = shard_state(out_layout[k]);
          note_split(s, out_layout[k]);
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
          scale.factors.push_back(static_cast<double>(range(rows, dev).count) / static_cast<double>(rows));
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
  const SplitSeeds* seeds_;
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
                       bool reallocate, const SplitSeeds* seeds) {
  return Lowering(graph, canonical, pieces, rows, seeds).run(order, reallocate);
}

}  // namespace moreh::scheduler
