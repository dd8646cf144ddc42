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

namespace {

using Axis = SplitStep::Axis;
constexpr int kB = 0, kT = 1;  // state_ index: the batch's rows, tensor parallelism's splits

// How one input of a node is read along one axis.
enum class Read : uint8_t {
  kWhole,    // the whole value (replicated along the axis)
  kAligned,  // split as the value already is
  kKept,     // each device keeps its part first (written by parts, or a split through several blocks)
  kSliced,   // cut from the whole value at the device's rows
};

// A node as one piece of the batch sees it: its tensors cut to the piece's rows where the batch split cuts
// them, and the bytes of the memory each view lies in.
struct View {
  const Node* node = nullptr;
  Node local;  // when cut
  std::vector<uint64_t> in_bytes, out_bytes;
  const Node& get() const { return node ? *node : local; }
};

// One axis's decision for a node.
struct AxisCut {
  bool split = false;
  ShardDecision d;
  int64_t rows = 0, blocks = 1;
  std::vector<Read> reads;
  std::vector<SplitLayout> in_layout, out_layout;
  std::vector<int64_t> in_blocks, out_blocks;
};

class Lowering {
 public:
  Lowering(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
           const std::vector<RowRange>& pieces, int64_t rows, const TensorSplit& tensor,
           const std::vector<char>* viewed)
      : graph_(graph), cg_(canonical), pieces_(pieces), p_(static_cast<int>(pieces.size())),
        t_(tensor.seeds ? std::max(tensor.ranks, 1) : 1), n_(p_ * t_), rows_(rows), seeds_(tensor.seeds),
        known_(canonical.buffers.size(), false), inner_rows_(canonical.buffers.size(), 0),
        slots_(canonical.buffers.size()), viewed_(viewed) {
    if (mesh() && rows_ % p_ != 0)
      throw std::logic_error("tensor parallelism beside a batch split needs equal pieces of the batch");
    for (auto& st : state_) st.assign(canonical.buffers.size(), Placement{PlacementKind::kReplicate});
    for (size_t s = 0; s < cg_.buffers.size(); ++s) {
      if (cg_.buffers[s].origin == BufferOrigin::kMaterialized) {
        place(static_cast<uint32_t>(s), cg_.bindings[s]->placement());
        known_[s] = true;
      }
    }
  }

  BatchSplit run(const std::vector<uint32_t>* order, bool reallocate) {
    const auto& nodes = graph_.nodes();
    const size_t positions = order ? order->size() : nodes.size();
    std::vector<bool> ran(nodes.size(), false);
    std::vector<int64_t> last_writer(cg_.buffers.size(), -1);
    uint32_t last = 0;
    for (size_t p = 0; p < positions; ++p) {
      const uint32_t i = order ? (*order)[p] : static_cast<uint32_t>(p);
      if (ran[i] && reallocate)  // it runs again: what it gives a first value to gets memory again
        for (uint16_t w : nodes[i].initializes) known_[cg_.node_inputs[i][w]] = false;
      ran[i] = true;
      const size_t first = steps_.size();
      lower_node(i, nodes[i]);
      for (size_t k = first; k < steps_.size(); ++k) steps_[k].node = i;
      for (uint32_t s : cg_.node_outputs[i]) last_writer[s] = i;
      for (uint16_t w : nodes[i].written) last_writer[cg_.node_inputs[i][w]] = i;
      last = i;
    }
    // On a mesh, a value that outlives the step rests split (or partial) along one axis at most: placements
    // speak of one. A gradient split by tensor parallelism and partial over the batch's pieces is summed over
    // them (it rests in its parts, as the optimizer reads it); anything else is gathered along the tensor axis.
    // The collective belongs to the value's last writer (a pipeline runs it on that node's stage).
    if (mesh()) {
      for (size_t s = 0; s < cg_.buffers.size(); ++s)
        if (known_[s] && cg_.buffers[s].live_after && state_[kB][s].kind != PlacementKind::kReplicate &&
            state_[kT][s].kind != PlacementKind::kReplicate) {
          const size_t first = steps_.size();
          replicate(static_cast<uint32_t>(s), state_[kB][s].kind == PlacementKind::kPartial ? kB : kT);
          for (size_t k = first; k < steps_.size(); ++k) steps_[k].node = last_writer[s] >= 0 ? static_cast<uint32_t>(last_writer[s]) : last;
        }
    }
    BatchSplit out;
    out.steps = std::move(steps_);
    out.final_placements.resize(cg_.buffers.size());
    for (size_t s = 0; s < cg_.buffers.size(); ++s)
      out.final_placements[s] = known_[s] ? final_placement(static_cast<uint32_t>(s)) : Placement{PlacementKind::kReplicate};
    out.known = known_;
    out.slots = std::move(slots_);
    out.tensor_ranks = t_;
    out.replicated_fallbacks = fallbacks_;
    for (const auto& [name, count] : fallback_ops_) out.fallback_ops.push_back(fmt::format("{} ×{}", name, count));
    out.fallback_details = std::move(fallback_details_);
    return out;
  }

 private:
  bool mesh() const { return p_ > 1 && t_ > 1; }
  uint64_t bytes(uint32_t s) const { return cg_.buffers[s].bytes; }
  // The bytes of slot s a tensor rank's part is cut from: its piece's rows when the batch split cuts it.
  uint64_t piece_bytes(uint32_t s) const {
    return mesh() && known_[s] && state_[kB][s].kind == PlacementKind::kShard ? bytes(s) / p_ : bytes(s);
  }

  void note_type(uint32_t s, const TensorRef& r) {
    if (!slots_[s].type) slots_[s].type = runtime::data_type_of(r.dtype);
  }

  // Device d's part of `rows` rows along axis a: its piece of the batch, or split_rows' part among the
  // tensor ranks.
  RowRange range(int a, int64_t rows, int d) const {
    return a == kB ? pieces_[d / t_] : runtime::split_rows(rows, t_, d % t_);
  }
  Axis axis_of(int a) const { return !mesh() ? Axis::kAll : a == kB ? Axis::kBatch : Axis::kTensor; }

  // Where an earlier step left a value: along the one axis its placement speaks of.
  void place(uint32_t s, const Placement& p) {
    if (p.kind == PlacementKind::kReplicate) return;
    if (p.kind == PlacementKind::kHome || p.kind == PlacementKind::kLocal) {
      state_[kB][s] = p;
      return;
    }
    // Every device a rank of its own: TP's parts when there are TP ranks (a graph without pieces placed them:
    // a pipeline step's optimizer, or one replica's), else the batch's rows.
    int a = t_ > 1 ? kT : kB;
    Placement q = p;
    if (p.ranks > 0) {
      if (p.ranks == t_ && p.stride == 1 && t_ > 1) a = kT;
      // t_ apart, or a stage's replicas (pp × t_ apart; each holds its micro-batches' rows, several pieces)
      else if (p.stride % t_ == 0 && p_ % p.ranks == 0) a = kB;
      else throw std::logic_error("a value placed on another mesh was not brought home before planning");
      q.ranks = 0;
      q.stride = 1;
    }
    if (p.inner_rows > 0) {  // TP's part, in rows over the replicas
      if (a != kT || !mesh() || p.inner_ranks < 1 || p_ % p.inner_ranks != 0)
        throw std::logic_error("a value placed on another mesh was not brought home before planning");
      inner_rows_[s] = p.inner_rows;
      q.inner_rows = 0;
      q.inner_ranks = 0;
      q.inner_stride = 1;
    }
    state_[a][s] = q;
  }
  // A TP part resting in rows over the replicas is gathered whole (over its rank's replicas) before its first use.
  void join_part(uint32_t s) {
    const int64_t rows = inner_rows_[s];
    if (rows == 0) return;
    inner_rows_[s] = 0;
    runtime::SlotInfo g = slots_[s];
    g.outer = 1;
    g.rows = static_cast<uint64_t>(rows);
    g.row_bytes = tensor_part_bytes(s) / static_cast<uint64_t>(rows);
    collective(Kind::kAllGather, s, kB, g);
  }

  Placement final_placement(uint32_t s) const {
    const Placement &b = state_[kB][s], &t = state_[kT][s];
    if (inner_rows_[s] > 0) {  // untouched: where it rested
      Placement p = t;
      p.ranks = t_;
      p.inner_rows = inner_rows_[s];
      p.inner_ranks = p_;
      p.inner_stride = t_;
      return p;
    }
    if (t.kind != PlacementKind::kReplicate) {
      Placement p = t;
      if (mesh()) p.ranks = t_;
      return p;
    }
    Placement p = b;
    if (mesh() && (b.kind == PlacementKind::kShard || b.kind == PlacementKind::kPartial)) {
      p.ranks = p_;
      p.stride = t_;
    }
    return p;
  }

  static Placement shard_state(const SplitLayout& l) {
    Placement p{PlacementKind::kShard, l.rows};
    p.outer = l.outer;
    return p;
  }
  static SplitLayout layout_of(const Placement& p) { return {p.rows, p.outer}; }
  // The rows a collective moves: `layout` of `whole` bytes (explicit on a mesh, where a group's value may be
  // its piece of the batch).
  runtime::SlotInfo geometry(uint32_t s, const SplitLayout& layout, uint64_t whole) {
    runtime::SlotInfo g = slots_[s];
    g.outer = static_cast<uint64_t>(std::max<int64_t>(layout.outer, 1));
    g.row_bytes = whole / (static_cast<uint64_t>(layout.rows) * g.outer);
    g.rows = mesh() ? static_cast<uint64_t>(layout.rows) : 0;
    if (!mesh()) {  // one axis: the slot's own geometry, as the plan's slots carry it
      slots_[s].outer = g.outer;
      slots_[s].row_bytes = g.row_bytes;
    }
    return g;
  }
  // An all-reduce's: `whole` bytes, summed element by element (its slot's geometry untouched).
  runtime::SlotInfo sum_geometry(uint32_t s, uint64_t whole) const {
    runtime::SlotInfo g;
    g.type = slots_[s].type;
    g.row_bytes = whole;
    g.rows = 1;
    return g;
  }
  // The bytes a device holds of slot s where it is split along the tensor axis (even parts on a mesh).
  uint64_t tensor_part_bytes(uint32_t s) const {
    const Placement& t = state_[kT][s];
    return t.kind == PlacementKind::kShard ? piece_bytes(s) / static_cast<uint64_t>(t_) : piece_bytes(s);
  }
  void collective(Kind kind, uint32_t s, int a, std::optional<runtime::SlotInfo> geo = std::nullopt) {
    Step c{kind, s};
    c.axis = axis_of(a);
    if (mesh()) c.geometry = std::move(geo);
    steps_.push_back(std::move(c));
  }

  // How slot s would lie if view `r` of it (in `buffer` bytes) were split at `dim` into `rows` rows along axis
  // a: nullopt when its layout does not allow it (the batch: by leading rows only; every device's rows an even
  // number of bytes).
  std::optional<SplitLayout> layout_for(int a, const TensorRef& r, uint64_t buffer, int dim, int64_t rows,
                                        int64_t blocks = 1) const {
    auto l = split_layout(r, buffer, dim, rows, blocks);
    if (!l || (a == kB && l->outer != 1) || (buffer / static_cast<uint64_t>(l->rows * l->outer)) % 2 != 0)
      return std::nullopt;
    return l;
  }

  // Brings slot s to kReplicate along axis a (both: replicate(s)), emitting the collective it needs.
  void replicate(uint32_t s) {
    // A sum over the pieces of a tensor-parallel part (a gradient) is summed in its parts first, then gathered.
    if (known_[s] && state_[kB][s].kind == PlacementKind::kPartial) replicate(s, kB);
    replicate(s, kT);
    replicate(s, kB);
  }
  void replicate(uint32_t s, int a) {
    if (!known_[s]) {  // never written: give every device the whole buffer
      Step al{Kind::kAllocate, s};
      al.bytes.assign(n_, bytes(s));
      steps_.push_back(std::move(al));
      known_[s] = true;
      state_[kB][s] = state_[kT][s] = {PlacementKind::kReplicate};
      return;
    }
    Placement& p = state_[a][s];
    if (p.kind == PlacementKind::kReplicate) return;
    // Gathering the batch's rows of a value split by tensor parallelism too: the tensor split first (its layout
    // is the piece's). A partial sum is summed in its tensor parts as they are.
    if (a == kB && p.kind != PlacementKind::kPartial && state_[kT][s].kind != PlacementKind::kReplicate) replicate(s, kT);
    const uint64_t whole = a == kT ? piece_bytes(s) : bytes(s);
    switch (p.kind) {
      case PlacementKind::kReplicate: return;
      case PlacementKind::kHome:
      case PlacementKind::kLocal: collective(Kind::kBroadcast, s, kB); steps_.back().axis = Axis::kAll; break;
      case PlacementKind::kShard:  // by leading rows, or along a later dimension (re-laid once gathered)
        collective(Kind::kAllGather, s, a, geometry(s, layout_of(p), whole));
        break;
      case PlacementKind::kPartial:
        collective(Kind::kAllReduce, s, a, sum_geometry(s, a == kB ? tensor_part_bytes(s) : whole));
        steps_.back().piece_sum = a == kT && state_[kB][s].kind == PlacementKind::kShard;
        break;
    }
    p = {PlacementKind::kReplicate};
  }

  // Where view `r` (in `buffer` bytes) of slot s is split along axis a.
  std::optional<int> split_at(int a, uint32_t s, const TensorRef& r, uint64_t buffer) const {
    if (!known_[s] || state_[a][s].kind != PlacementKind::kShard) return std::nullopt;
    if (a == kB && (state_[a][s].rows != rows_ || state_[a][s].outer != 1)) return std::nullopt;
    return split_dim(r, buffer, state_[a][s].rows, state_[a][s].outer);
  }
  // How many of its blocks view `r` of split slot s runs through along its split dim (1: within one).
  int64_t blocks_of(int a, uint32_t s, const TensorRef& r, uint64_t buffer) const {
    if (!known_[s] || state_[a][s].kind != PlacementKind::kShard) return 1;
    auto v = view_split(r, buffer, state_[a][s].rows, state_[a][s].outer);
    return v ? v->blocks : 1;
  }

  // Whether splits of r1 and r2 rows give every device the same share: equal rows, or (tensor parallelism)
  // both even over the ranks (grouped-query attention's query and key heads: each rank its part of each).
  bool same_parts(int a, int64_t r1, int64_t r2) const {
    return r1 == r2 || (a == kT && r1 > 0 && r2 > 0 && r1 % t_ == 0 && r2 % t_ == 0);
  }

  // A weight tensor parallelism splits that is still whole from before the step (the first step after the
  // model was made, or after another layout): its parts are kept at its first read and the whole let go of,
  // not held through the step beside them (they are where it rests after the step anyway).
  bool rests_in_parts(int a, uint32_t s) const {
    return a == kT && seeds_ && seeds_->count(s) && known_[s] && cg_.buffers[s].origin == BufferOrigin::kMaterialized &&
           state_[kT][s].kind == PlacementKind::kReplicate && state_[kB][s].kind == PlacementKind::kReplicate;
  }
  bool is_written(const Node& node, size_t i) const {
    return std::find(node.written.begin(), node.written.end(), i) != node.written.end();
  }

  void fallback(uint32_t index, const Node& node, const BatchDims& dims, const std::string& why) {
    ++fallbacks_;
    fallback_ops_[runtime::op_name(node.op)]++;
    if (runtime::log().should_log(spdlog::level::debug)) {
      std::string where;
      for (const auto& d : dims) where += d ? fmt::format(" {}", *d) : std::string(" -");
      fallback_details_.push_back(
          fmt::format("  #{} {} with inputs split at [{} ]: {}; runs replicated", index, runtime::op_name(node.op), where, why));
    }
  }

  void lower_node(uint32_t index, const Node& node) {
    const auto& in_slots = cg_.node_inputs[index];
    for (uint32_t s : in_slots) join_part(s);
    for (size_t i = 0; i < node.inputs.size(); ++i) note_type(in_slots[i], node.inputs[i]);
    for (size_t k = 0; k < node.outputs.size(); ++k) note_type(cg_.node_outputs[index][k], node.outputs[k]);
    if (rows_ > 0 && rows_ >= p_ && node.host_input && try_split_upload(index, node)) return;

    // The batch: inputs split by its rows.
    View whole{&node, {}, {}, {}};
    for (uint32_t s : in_slots) whole.in_bytes.push_back(bytes(s));
    for (uint32_t s : cg_.node_outputs[index]) whole.out_bytes.push_back(bytes(s));
    BatchDims bdims(node.inputs.size());
    bool any_b = false, any_t = false;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      bdims[i] = split_at(kB, in_slots[i], node.inputs[i], bytes(in_slots[i]));
      any_b = any_b || bdims[i].has_value();
      any_t = any_t || (known_[in_slots[i]] && state_[kT][in_slots[i]].kind == PlacementKind::kShard);
    }
    if (!any_b && !any_t && sums_partials(index, node)) return;
    AxisCut b;
    if (any_b) {
      auto d = shard_rule(node, bdims);
      std::string why = d ? invalid(kB, whole, index, *d, rows_, 1, {}) : std::string("no rule for this layout");
      if (!why.empty()) {
        fallback(index, node, bdims, why);
        emit_replicated(index, node);
        return;
      }
      b = plan_cut(kB, whole, index, *d, rows_, 1, {});
    }
    // Tensor parallelism, on the node as a piece of the batch sees it.
    AxisCut t;
    if (seeds_) {
      View view = b.split ? piece_view(index, node, b) : whole;
      const Node& vn = view.get();
      BatchDims tdims(node.inputs.size());
      bool any = false;
      int64_t rows = 0, blocks = 0;
      bool mixed = false;  // splits of different rows into the same parts: the node's rows are the parts
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        if (b.split && (b.reads[i] == Read::kKept || b.reads[i] == Read::kSliced)) continue;  // whole along it
        tdims[i] = split_at(kT, in_slots[i], vn.inputs[i], view.in_bytes[i]);
        if (tdims[i]) {  // splits into other parts than the first one's are read whole
          const int64_t r = state_[kT][in_slots[i]].rows;
          if (rows == 0) rows = r;
          else if (r != rows && same_parts(kT, r, rows)) mixed = true;
          else if (r != rows) tdims[i].reset();
        }
        if (tdims[i] && blocks == 0) blocks = blocks_of(kT, in_slots[i], vn.inputs[i], view.in_bytes[i]);
        any = any || tdims[i].has_value();
      }
      // A value to split (a weight of a linear pair) that is still whole is read split here.
      bool seeded = false;
      if (!node.host_input)
        for (size_t i = 0; i < node.inputs.size(); ++i) {
          const uint32_t s = in_slots[i];
          auto seed = seeds_->find(s);
          if (tdims[i] || seed == seeds_->end() || (rows != 0 && !same_parts(kT, seed->second.rows, rows))) continue;
          if (known_[s] && (state_[kT][s].kind != PlacementKind::kReplicate ||
                            (state_[kB][s].kind != PlacementKind::kReplicate && state_[kB][s].kind != PlacementKind::kHome)))
            continue;
          if (auto v = view_split(vn.inputs[i], view.in_bytes[i], seed->second.rows, seed->second.outer)) {
            tdims[i] = v->dim;
            mixed = mixed || (rows != 0 && rows != seed->second.rows);
            rows = seed->second.rows;
            if (blocks == 0) blocks = v->blocks;
            seeded = true;
          }
        }
      if (mixed) rows = t_;
      if (any || seeded) {
        auto d = shard_rule(vn, tdims);
        if (blocks == 0) blocks = 1;
        std::string why = d ? invalid(kT, view, index, *d, rows, blocks, b) : std::string("no rule for this layout");
        // Dropout draws its mask for the whole of the one dim it is split along (LocalLaunch::input0_dim), not two.
        static const runtime::OpId kDropout = runtime::intern_op("aten::native_dropout");
        if (why.empty() && b.split && node.op == kDropout) why = "dropout split by the batch and by tensor parallelism";
        if (why.empty()) t = plan_cut(kT, view, index, *d, rows, blocks, b);
        else if (any) fallback(index, node, tdims, why);
      }
      if (!b.split && !t.split) {
        emit_replicated(index, node);
        return;
      }
      emit_split(index, node, b, t, view);
      return;
    }
    if (!b.split) {
      emit_replicated(index, node);
      return;
    }
    emit_split(index, node, b, t, whole);
  }

  // The node as piece 0 of the batch sees it (the pieces are equal: every piece sees the same shapes).
  View piece_view(uint32_t index, const Node& node, const AxisCut& b) const {
    View v;
    v.local = node;
    const auto& in_slots = cg_.node_inputs[index];
    const auto& out_slots = cg_.node_outputs[index];
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const uint32_t s = in_slots[i];
      uint64_t buffer = bytes(s);
      if (b.reads[i] != Read::kWhole) {
        const bool sliced = b.reads[i] == Read::kSliced;
        const LocalRef lr = local_part(node.inputs[i], bytes(s), b.d.inputs[i].dim, {rows_, 1}, pieces_[0], !sliced);
        v.local.inputs[i].offset = lr.offset;
        v.local.inputs[i].sizes = lr.sizes;
        if (!sliced) buffer = bytes(s) / p_;
      }
      v.in_bytes.push_back(buffer);
    }
    for (size_t k = 0; k < node.outputs.size(); ++k) {
      const uint32_t s = out_slots[k];
      uint64_t buffer = bytes(s);
      if (b.d.outputs[k].kind == OutputSpec::Kind::kShard) {
        const LocalRef lr = local_part(node.outputs[k], bytes(s), b.d.outputs[k].dim, {rows_, 1}, pieces_[0], true);
        v.local.outputs[k].offset = lr.offset;
        v.local.outputs[k].sizes = lr.sizes;
        buffer = bytes(s) / p_;
      }
      v.out_bytes.push_back(buffer);
    }
    return v;
  }

  // How each input is read along axis a, and how split inputs and outputs lie.
  AxisCut plan_cut(int a, const View& view, uint32_t index, const ShardDecision& d, int64_t rows, int64_t blocks,
                   const AxisCut& b) const {
    const Node& node = view.get();
    const auto& in_slots = cg_.node_inputs[index];
    AxisCut c;
    c.split = true;
    c.d = d;
    c.rows = rows;
    c.blocks = blocks;
    c.reads.assign(node.inputs.size(), Read::kWhole);
    c.in_layout.resize(node.inputs.size());
    c.in_blocks.assign(node.inputs.size(), 1);
    c.out_layout.resize(node.outputs.size());
    c.out_blocks.assign(node.outputs.size(), 1);
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const uint32_t s = in_slots[i];
      if (!d.inputs[i].batch) continue;
      const bool whole_below = b.split && (b.reads[i] == Read::kKept || b.reads[i] == Read::kSliced);
      if (!whole_below && split_at(a, s, node.inputs[i], view.in_bytes[i]) == d.inputs[i].dim &&
          same_parts(a, state_[a][s].rows, rows)) {
        c.reads[i] = Read::kAligned;
        c.in_layout[i] = layout_of(state_[a][s]);
        c.in_blocks[i] = blocks_of(a, s, node.inputs[i], view.in_bytes[i]);
      } else if (is_written(node, i) || blocks > 1 || rests_in_parts(a, s)) {
        c.reads[i] = Read::kKept;
        const auto kept = layout_for(a, node.inputs[i], view.in_bytes[i], d.inputs[i].dim, rows, blocks);
        if (!kept) throw std::logic_error("tensor parallelism: an input cannot be kept in its parts");
        c.in_layout[i] = *kept;  // invalid() checked it
        c.in_blocks[i] = blocks;
      } else {
        c.reads[i] = Read::kSliced;
      }
    }
    // What a written input keeps in parts, another input reading the same value along the same dim reads as
    // kept (written inputs are brought to their parts first).
    for (size_t i = 0; i < node.inputs.size(); ++i)
      for (size_t j = 0; j < node.inputs.size(); ++j)
        if (c.reads[i] == Read::kSliced && c.reads[j] == Read::kKept && is_written(node, j) &&
            in_slots[i] == in_slots[j] &&
            split_dim(node.inputs[i], view.in_bytes[i], c.in_layout[j].rows, c.in_layout[j].outer) == d.inputs[i].dim) {
          c.reads[i] = Read::kAligned;
          c.in_layout[i] = c.in_layout[j];
          auto v = view_split(node.inputs[i], view.in_bytes[i], c.in_layout[j].rows, c.in_layout[j].outer);
          c.in_blocks[i] = v ? v->blocks : 1;
        }
    for (size_t k = 0; k < node.outputs.size(); ++k)
      if (d.outputs[k].kind == OutputSpec::Kind::kShard) {
        c.out_blocks[k] = output_blocks(a, view, index, d, k, blocks);
        c.out_layout[k] = *layout_for(a, node.outputs[k], view.out_bytes[k], d.outputs[k].dim, rows, c.out_blocks[k]);
      }
    return c;
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
    const uint32_t s0 = in_slots[0];
    if (!known_[s0]) return false;
    // Partial along one axis, whole along the other (the launch runs as recorded).
    const bool partial_b = state_[kB][s0].kind == PlacementKind::kPartial, partial_t = state_[kT][s0].kind == PlacementKind::kPartial;
    if (partial_b == partial_t) return false;
    if (state_[partial_b ? kT : kB][s0].kind != PlacementKind::kReplicate) return false;
    for (size_t i = 0; i < 2; ++i) {
      const uint32_t s = in_slots[i];
      if (!known_[s] || state_[kB][s] != state_[kB][s0] || state_[kT][s] != state_[kT][s0]) return false;
      if (node.inputs[i].sizes != node.inputs[0].sizes || node.inputs[i].dtype != node.inputs[0].dtype) return false;
    }
    for (const auto& o : node.outputs)
      if (o.sizes != node.inputs[0].sizes || o.dtype != node.inputs[0].dtype) return false;
    steps_.push_back({Kind::kLaunch, index});
    for (uint32_t s : cg_.node_outputs[index]) {
      known_[s] = true;
      state_[kB][s] = state_[kB][s0];
      state_[kT][s] = state_[kT][s0];
    }
    return true;
  }

  // The blocks output k's split dim runs through: the node's, or (cat along the split dim) its inputs' together.
  int64_t output_blocks(int a, const View& view, uint32_t index, const ShardDecision& d, size_t k, int64_t blocks) const {
    if (!d.outputs[k].concat_blocks) return blocks;
    const Node& node = view.get();
    int64_t sum = 0;
    for (size_t i = 0; i < node.inputs.size(); ++i)
      if (d.inputs[i].batch) sum += blocks_of(a, cg_.node_inputs[index][i], node.inputs[i], view.in_bytes[i]);
    return std::max<int64_t>(sum, 1);
  }

  // Why the decision cannot run split along axis a ("" when it can). `b`: the batch's cut, when a is the tensor
  // axis beside it.
  std::string invalid(int a, const View& view, uint32_t index, const ShardDecision& d, int64_t rows, int64_t blocks,
                      const AxisCut& b) const {
    const Node& node = view.get();
    const auto& in_slots = cg_.node_inputs[index];
    if (d.inputs.size() != node.inputs.size() || d.outputs.size() != node.outputs.size()) return "rule arity";
    if (a == kT && (d.loss_mean || !d.written_local.empty())) return "a per-device value under tensor parallelism";
    if (a == kT && mesh() && rows % t_ != 0) return fmt::format("{} rows do not split evenly over {} ranks", rows, t_);
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
      const bool batch_whole = b.split && (b.reads[i] == Read::kKept || b.reads[i] == Read::kSliced);
      const bool aligned = !batch_whole && split_at(a, s, node.inputs[i], view.in_bytes[i]) == u.dim &&
                           same_parts(a, state_[a][s].rows, rows);
      const int64_t mine = aligned ? state_[a][s].rows : rows;  // an aligned input keeps its own rows
      if (rows <= 0 || size % mine != 0 || size < mine)
        return fmt::format("input {} has {} rows along dim {}", i, size, u.dim);
      if (b.split && b.reads[i] == Read::kSliced && (is_written(node, i) || blocks > 1))
        return fmt::format("input {} is cut from its whole value by the batch and cannot be kept in parts", i);
      if (is_written(node, i)) {
        // Written by rows: split that way already, or new in this step, or laid out by rows so that each
        // device can keep its rows of the whole value first.
        if (!aligned && !layout_for(a, node.inputs[i], view.in_bytes[i], u.dim, rows, blocks))
          return fmt::format("written input {} is not split along dim {}", i, u.dim);
      } else if (blocks > 1 && !aligned &&
                 (!known_[s] || !layout_for(a, node.inputs[i], view.in_bytes[i], u.dim, rows, blocks))) {
        return fmt::format("input {} would be cut from its whole value through several blocks", i);
      }
    }
    for (size_t k = 0; k < node.outputs.size(); ++k) {
      const auto& o = d.outputs[k];
      if (o.kind == OutputSpec::Kind::kShard &&
          !layout_for(a, node.outputs[k], view.out_bytes[k], o.dim, rows, output_blocks(a, view, index, d, k, blocks)))
        return fmt::format("output {} is not laid out by rows along dim {} (or has odd-sized rows)", k, o.dim);
      if (o.kind == OutputSpec::Kind::kPartial || o.scale_by_share) {
        auto t = runtime::data_type_of(node.outputs[k].dtype);
        if (!t || *t == runtime::DataType::kInt64 || *t == runtime::DataType::kInt32) return fmt::format("output {} cannot be summed", k);
      }
      if (a == kT && b.split) {  // split one way and partial (or per device) the other cannot rest anywhere
        const auto bk = b.d.outputs[k].kind;
        const bool local = o.kind == OutputSpec::Kind::kLocal, b_local = bk == OutputSpec::Kind::kLocal;
        if ((o.kind == OutputSpec::Kind::kPartial && bk == OutputSpec::Kind::kPartial) ||
            (local != b_local && (local ? bk : o.kind) != OutputSpec::Kind::kReplicate))
          return fmt::format("output {} would be partial along both axes", k);
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
    allocate_split(s, kB, {rows_, 1}, bytes(s));
    Step launch{Kind::kLaunch, index};
    for (int d = 0; d < n_; ++d) {
      LocalLaunch l;
      l.rows = range(kB, rows_, d);
      l.batch_rows = rows_;
      if (!viewed(d)) {  // its rows only
        launch.launches.push_back(std::move(l));
        continue;
      }
      LocalRef lr{r.offset, r.sizes};
      lr.sizes[0] = l.rows.count;
      l.inputs.push_back(std::move(lr));
      launch.launches.push_back(std::move(l));
    }
    launch.aligned = {0};
    launch.outputs.clear();
    steps_.push_back(std::move(launch));
    state_[kB][s] = {PlacementKind::kShard, rows_};
    return true;
  }

  // Memory for a value first written by parts along axis a: each device its part of `whole` bytes.
  void allocate_split(uint32_t s, int a, const SplitLayout& layout, uint64_t whole) {
    Step al{Kind::kAllocate, s};
    al.split_allocation = true;
    al.batch_rows = a == kB;
    const runtime::SlotInfo g = geometry(s, layout, whole);
    const uint64_t part_row = g.row_bytes * g.outer;
    for (int d = 0; d < n_; ++d) al.bytes.push_back(part_row * static_cast<uint64_t>(range(a, layout.rows, d).count));
    steps_.push_back(std::move(al));
    known_[s] = true;
    state_[a == kB ? kT : kB][s] = {PlacementKind::kReplicate};
  }

  void emit_replicated(uint32_t index, const Node& node) {
    // Tensor parallelism: values split along their own dims that this node reads whole are gathered for it and
    // kept in their parts again after it (clip_grad_norm_'s norms read every gradient; the optimizer's update
    // that follows then runs on the parts, and its state rests split).
    std::vector<std::pair<uint32_t, Placement>> regather;
    const auto& in_slots = cg_.node_inputs[index];
    for (size_t i = 0; i < in_slots.size(); ++i) {  // a gradient summed over the pieces first, in its parts
      const uint32_t s = in_slots[i];
      if (seeds_ && known_[s] && state_[kT][s].kind == PlacementKind::kShard &&
          state_[kB][s].kind == PlacementKind::kPartial)
        replicate(s, kB);
    }
    for (size_t i = 0; i < in_slots.size(); ++i) {
      const uint32_t s = in_slots[i];
      if (seeds_ && known_[s] && state_[kT][s].kind == PlacementKind::kShard &&
          state_[kB][s].kind == PlacementKind::kReplicate && !is_written(node, i) &&
          std::none_of(regather.begin(), regather.end(), [&](const auto& r) { return r.first == s; }))
        regather.emplace_back(s, state_[kT][s]);
    }
    for (uint32_t s : in_slots) replicate(s);
    steps_.push_back({Kind::kLaunch, index});
    for (uint32_t s : cg_.node_outputs[index]) {
      known_[s] = true;
      state_[kB][s] = state_[kT][s] = {PlacementKind::kReplicate};
    }
    for (const auto& [s, was] : regather) {
      bool written = false;
      for (size_t i = 0; i < in_slots.size(); ++i) written = written || (in_slots[i] == s && is_written(node, i));
      if (written) continue;
      collective(Kind::kKeepRows, s, kT, geometry(s, layout_of(was), bytes(s)));
      state_[kT][s] = was;
    }
  }

  // Brings input i to how axis a reads it (`buffer`: the bytes its part is cut from along a).
  void prepare_input(int a, uint32_t s, const AxisCut& c, size_t i, uint64_t buffer) {
    const auto& u = c.d.inputs[i];
    if (!c.split || !u.batch) {
      if (a == kB && c.split && u.dim == -1 && state_[kB][s].kind == PlacementKind::kLocal) return;
      replicate(s, a);
      return;
    }
    switch (c.reads[i]) {
      case Read::kWhole:
      case Read::kAligned: return;
      case Read::kSliced:
        if (a == kB) replicate(s);
        else replicate(s, kT);
        return;
      case Read::kKept:
        if (!known_[s]) {
          allocate_split(s, a, c.in_layout[i], buffer);
        } else {  // R -> S locally: each device keeps its rows
          if (a == kB) replicate(s);
          else replicate(s, kT);
          collective(Kind::kKeepRows, s, a, geometry(s, c.in_layout[i], a == kB ? bytes(s) : piece_bytes(s)));
        }
        state_[a][s] = shard_state(c.in_layout[i]);
        return;
    }
  }

  void emit_split(uint32_t index, const Node& node, const AxisCut& b, const AxisCut& t, const View& view) {
    const auto& in_slots = cg_.node_inputs[index];
    const auto& out_slots = cg_.node_outputs[index];
    // Written inputs first: a value the node also reads (x.mul_(y) recorded as mul.out(x, y, out=x)) is then
    // read from the device's rows it keeps, not cut from the whole value it no longer holds.
    std::vector<size_t> inputs_order;
    for (size_t i = 0; i < node.inputs.size(); ++i)
      if (is_written(node, i)) inputs_order.push_back(i);
    for (size_t i = 0; i < node.inputs.size(); ++i)
      if (!is_written(node, i)) inputs_order.push_back(i);
    for (size_t i : inputs_order) {
      // A value first written here by tensor parallelism's parts only gets its parts, not the whole first.
      const bool tensor_first = !known_[in_slots[i]] && t.split && t.d.inputs[i].batch && !(b.split && b.d.inputs[i].batch);
      if (!tensor_first) prepare_input(kB, in_slots[i], b, i, bytes(in_slots[i]));
      if (seeds_) prepare_input(kT, in_slots[i], t, i, view.in_bytes[i]);
    }
    Step launch{Kind::kLaunch, index};
    const AxisCut& first = b.split ? b : t;  // the aligned dims and outputs the launch records
    launch.aligned.assign(node.inputs.size(), -1);
    for (size_t i = 0; i < node.inputs.size(); ++i)
      if (first.d.inputs[i].batch && first.reads[i] != Read::kSliced) launch.aligned[i] = static_cast<int8_t>(first.d.inputs[i].dim);
    launch.outputs = first.d.outputs;
    launch.tensor_only = !b.split && t.split;
    if (first.d.loss_mean) {
      launch.loss_out = node.output_of_ret(0);
      launch.loss_weight = node.output_of_ret(1);
    }
    launch.launches.reserve(static_cast<size_t>(n_));
    for (int dev = 0; dev < n_; ++dev) {
      LocalLaunch l;
      const int a = b.split ? kB : kT;
      l.rows = range(a, first.rows, dev);
      l.batch_rows = first.rows;
      if (!first.d.inputs.empty() && first.d.inputs[0].batch) l.input0_dim = first.d.inputs[0].dim;
      if (b.split && b.d.first_device_beta >= 0 && dev / t_ > 0) l.int_args.emplace_back(b.d.first_device_beta, 0);
      else if (t.split && t.d.first_device_beta >= 0 && dev % t_ > 0) l.int_args.emplace_back(t.d.first_device_beta, 0);
      if (b.split && !viewed(dev)) {  // its rows only
        launch.launches.push_back(std::move(l));
        continue;
      }
      l.inputs.reserve(node.inputs.size());
      l.outputs.reserve(node.outputs.size());
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        const uint32_t s = in_slots[i];
        l.inputs.push_back(part_of(node.inputs[i], bytes(s), b, t, b.split ? b.d.inputs[i] : InputUse{},
                                   t.split ? t.d.inputs[i] : InputUse{}, i, dev, view.in_bytes[i], false));
      }
      for (size_t k = 0; k < node.outputs.size(); ++k) {
        const uint32_t s = out_slots[k];
        const bool bs = b.split && b.d.outputs[k].kind == OutputSpec::Kind::kShard;
        const bool ts = t.split && t.d.outputs[k].kind == OutputSpec::Kind::kShard;
        l.outputs.push_back(part_of(node.outputs[k], bytes(s), b, t, InputUse{bs, bs ? b.d.outputs[k].dim : 0},
                                    InputUse{ts, ts ? t.d.outputs[k].dim : 0}, k, dev, view.out_bytes[k], true));
      }
      launch.launches.push_back(std::move(l));
    }
    steps_.push_back(std::move(launch));

    for (size_t k = 0; k < node.outputs.size(); ++k) {
      const uint32_t s = out_slots[k];
      known_[s] = true;
      state_[kB][s] = state_[kT][s] = {PlacementKind::kReplicate};
    }
    for (int a : {kB, kT}) {
      const AxisCut& c = a == kB ? b : t;
      if (!c.split) continue;
      for (size_t k = 0; k < node.outputs.size(); ++k) {
        const uint32_t s = out_slots[k];
        const auto& o = c.d.outputs[k];
        switch (o.kind) {
          case OutputSpec::Kind::kShard:
            state_[a][s] = shard_state(c.out_layout[k]);
            geometry(s, c.out_layout[k], a == kB ? bytes(s) : view.out_bytes[k]);
            break;
          case OutputSpec::Kind::kPartial:
            state_[a][s] = {PlacementKind::kPartial, 0, slots_[s].type.value_or(runtime::DataType::kFloat32)};
            break;
          case OutputSpec::Kind::kLocal: state_[kB][s] = {PlacementKind::kLocal}; break;  // per device: either axis
          case OutputSpec::Kind::kReplicate: break;
        }
        if (o.scale_by_share) {
          Step scale{Kind::kScale, s};
          for (int dev = 0; dev < n_; ++dev)
            scale.factors.push_back(static_cast<double>(range(a, c.rows, dev).count) / static_cast<double>(c.rows));
          steps_.push_back(std::move(scale));
        }
      }
      for (int i : c.d.written_local) state_[a][in_slots[i]] = {PlacementKind::kLocal};
      if (c.d.loss_mean) {
        // mean = sum over devices of (local mean × local weight) / sum over devices of local weight
        const uint32_t out = out_slots[node.output_of_ret(0)], tw = out_slots[node.output_of_ret(1)];
        steps_.push_back({Kind::kMultiply, out, tw});
        collective(Kind::kAllReduce, out, a, sum_geometry(out, a == kB ? tensor_part_bytes(out) : piece_bytes(out)));
        collective(Kind::kAllReduce, tw, a, sum_geometry(tw, a == kB ? tensor_part_bytes(tw) : piece_bytes(tw)));
        steps_.push_back({Kind::kDivide, out, tw});
        state_[a][out] = {PlacementKind::kReplicate};
        state_[a][tw] = {PlacementKind::kReplicate};
      }
    }
  }

  // Device dev's view of `ref` (in `buffer` bytes): cut by the batch's rows as `ub` says, then by tensor
  // parallelism's as `ut` says, in the piece's block (`piece_buffer` bytes) where the batch cut it.
  LocalRef part_of(const TensorRef& ref, uint64_t buffer, const AxisCut& b, const AxisCut& t, const InputUse& ub,
                   const InputUse& ut, size_t i, int dev, uint64_t piece_buffer, bool output) const {
    LocalRef lr{ref.offset, ref.sizes, {}};
    TensorRef cur = ref;
    if (ub.batch) {
      const bool sliced = !output && b.reads[i] == Read::kSliced;
      lr = local_part(ref, buffer, ub.dim, output ? b.out_layout[i] : sliced ? SplitLayout{rows_, 1} : b.in_layout[i],
                      range(kB, rows_, dev), !sliced);
      cur.offset = lr.offset;
      cur.sizes = lr.sizes;
      if (!sliced) buffer = piece_buffer;
    }
    if (ut.batch) {
      // The tensor split's layout is the piece's: the same for every piece, at the device's own offset.
      const bool sliced = !output && t.reads[i] == Read::kSliced;
      const SplitLayout layout = sliced ? SplitLayout{t.rows, 1} : output ? t.out_layout[i] : t.in_layout[i];
      const RowRange part = range(kT, layout.rows, dev);  // its own rows' part (the same share as the node's)
      if (sliced) lr = local_part(cur, buffer, ut.dim, layout, part, false);
      else lr = local_part(cur, buffer, ut.dim, layout, part, true, output ? t.out_blocks[i] : t.in_blocks[i]);
    }
    return lr;
  }

  const runtime::StepGraph& graph_;
  const runtime::CanonicalGraph& cg_;
  const std::vector<RowRange>& pieces_;
  const int p_, t_, n_;  // pieces of the batch, tensor ranks per piece, devices
  const int64_t rows_;
  const SplitSeeds* seeds_;
  std::array<std::vector<Placement>, 2> state_;  // per axis: the batch's rows, tensor parallelism's splits
  std::vector<bool> known_;
  // Per slot: TP's part left in rows over the replicas by an earlier step's sharded optimizer (Placement::
  // inner_rows), until the part is gathered for its first use (0: none).
  std::vector<int64_t> inner_rows_;
  std::vector<runtime::SlotInfo> slots_;
  std::vector<Step> steps_;
  uint64_t fallbacks_ = 0;
  const std::vector<char>* viewed_;  // split_batch's `viewed`
  // Whether device d's launches of a step split by the batch get views (a device some program is emitted for).
  bool viewed(int d) const { return !viewed_ || (*viewed_)[static_cast<size_t>(d)]; }
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

void gather_all_reduces(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                        std::vector<SplitStep>& steps) {
  auto gathered = [](const SplitStep& st) { return st.kind == Kind::kAllReduce && !st.piece_sum; };
  std::vector<std::vector<uint32_t>> touched(steps.size());  // the slots each step reads or writes
  std::vector<uint32_t> reads, writes;
  for (size_t i = 0; i < steps.size(); ++i) {
    step_slots(graph, canonical, steps[i], reads, writes);
    touched[i] = reads;
    touched[i].insert(touched[i].end(), writes.begin(), writes.end());
  }
  std::optional<size_t> last;  // the run's last all-reduce
  for (size_t i = 0; i < steps.size(); ++i) {
    if (!gathered(steps[i])) continue;
    if (last && steps[*last].axis == steps[i].axis && *last + 1 < i) {
      const uint32_t s = steps[i].index;
      bool free = true;
      for (size_t k = *last + 1; k < i && free; ++k)
        free = std::find(touched[k].begin(), touched[k].end(), s) == touched[k].end();
      if (free) {
        std::rotate(steps.begin() + static_cast<std::ptrdiff_t>(*last + 1), steps.begin() + static_cast<std::ptrdiff_t>(i),
                    steps.begin() + static_cast<std::ptrdiff_t>(i + 1));
        std::rotate(touched.begin() + static_cast<std::ptrdiff_t>(*last + 1),
                    touched.begin() + static_cast<std::ptrdiff_t>(i), touched.begin() + static_cast<std::ptrdiff_t>(i + 1));
        last = *last + 1;
        continue;
      }
    }
    last = i;
  }
}

BatchSplit split_batch(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                       const std::vector<RowRange>& pieces, int64_t rows, const std::vector<uint32_t>* order,
                       bool reallocate, const TensorSplit& tensor, const std::vector<char>* viewed) {
  return Lowering(graph, canonical, pieces, rows, tensor, viewed).run(order, reallocate);
}

}  // namespace moreh::scheduler
