#include "scheduler/lowering/pipeline_planner.h"

#include "scheduler/lowering/liveness.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <boost/container/small_vector.hpp>
#include <bit>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"
#include "scheduler/analysis/backward_seeds.h"
#include "scheduler/lowering/batch_split.h"
#include "scheduler/lowering/deferred_loss_division.h"
#include "scheduler/lowering/memory_model.h"
#include "scheduler/lowering/optimizer_sharding.h"
#include "scheduler/lowering/pipeline_schedule.h"
#include "scheduler/lowering/stage_cut.h"
#include "scheduler/lowering/tensor_parallel_planner.h"

namespace moreh::scheduler {

using runtime::BufferOrigin;
using runtime::ByteRange;
using runtime::Instruction;
using runtime::LocalLaunch;
using runtime::Placement;
using runtime::PlacementKind;
using runtime::RowRange;
using Kind = Instruction::Kind;

namespace {

// A device's block of a slot that holds only a few micro-batches' rows at a time (1F1B: a stage holds
// at most stages − j micro-batches' activations): micro-batch k's rows go to `position[k]` of `positions`
// places of `rows` rows each, a place taken again once the micro-batch it held is done with.
struct Ring {
  int positions = 0;
  int64_t rows = 0;
  std::vector<int> position;  // per micro-batch
};
using Rings = std::map<std::pair<int, uint32_t>, Ring>;  // (device, slot)

// How one device uses one slot: whole, or micro-batch by micro-batch from a first instruction to a last
// (twice, when the micro-batch's rows are made again for the backward pass: recomputation.h).
struct SlotUse {
  bool whole = false;
  int pieces_used = 0;  // micro-batches with spans
  std::vector<std::vector<std::pair<size_t, size_t>>> pieces;  // per micro-batch (empty until one is noted)
};

// The lanes whose programs are emitted: replicas × tensor ranks; representative, two lanes stand for all
// (device 0's and the next one's).
std::pair<int, int> emitted_lanes(int dp, int tp, bool representative) {
  if (!representative) return {dp, tp};
  return tp > 1 ? std::pair<int, int>{1, 2} : std::pair<int, int>{std::min(dp, 2), 1};
}

class PipelineEmission {
 public:
  // `pieces`: piece i × micro + k is micro-batch k of replica i (batch_split's pieces).
  // With tensor parallelism (split.tensor_ranks t > 1), each replica of a stage is t devices, and launch
  // (piece × t + rank) of a split step runs on its rank.
  PipelineEmission(const runtime::StepGraph& graph, const runtime::CanonicalGraph& cg, const BatchSplit& split,
                   const StageCut& cut, int stages, int dp, int micro, int64_t rows, std::vector<RowRange> pieces,
                   PipelineSchedule schedule, Rings rings = {}, bool representative = false)
      : graph_(graph), cg_(cg), split_(split), cut_(cut), pp_(stages), dp_(dp), m_(micro),
        t_(std::max(split.tensor_ranks, 1)), rows_(rows),
        schedule_(schedule), rings_(std::move(rings)),
        piece_rows_(std::move(pieces)),
        at_(cg.buffers.size(), std::vector<uint32_t>(micro, 0)), home_(cg.buffers.size(), false),
        everywhere_(cg.buffers.size(), false), by_rows_(cg.buffers.size(), false),
        owner_(cg.buffers.size(), -1) {
    for (int i = 0; i < dp_; ++i) device_rows_.push_back(runtime::split_rows(rows_, dp_, i));
    std::tie(emit_dp_, emit_t_) = emitted_lanes(dp_, t_, representative);
    index_.assign(static_cast<size_t>(dp_ * pp_ * t_), -1);
    for (int d = 0; d < dp_ * pp_ * t_; ++d)
      if (d / (pp_ * t_) < emit_dp_ && d % t_ < emit_t_) {
        index_[static_cast<size_t>(d)] = static_cast<int>(programs_.size());
        programs_.emplace_back().device = d;
      }
    if (representative)
      for (int d = 0; d < dp_ * pp_ * t_; ++d) {
        const int j = d / t_ % pp_;  // a lane other than device 0's: replica 0's rank 1, else replica 1
        stand_ins_.push_back(index_[static_cast<size_t>(d)] >= 0 ? d : t_ > 1 ? device(0, j, 1) : device(1, j, 0));
      }
    for (int j = 0; j < pp_; ++j) {
      uint64_t mask = 0;
      for (int i = 0; i < dp_; ++i)
        for (int r = 0; r < t_; ++r) mask |= uint64_t{1} << device(i, j, r);
      stage_mask_.push_back(mask);
    }
    // The groups collectives span: a stage's replicas (of one rank), a replica's ranks, a stage's devices.
    layout_.num_devices = dp_ * pp_ * t_;
    layout_.slots = split_.slots;
    auto add_group = [&](auto&& member, int size) {
      std::vector<int> g;
      for (int q = 0; q < size; ++q) g.push_back(member(q));
      layout_.groups.push_back(std::move(g));
    };
    if (dp_ > 1)
      for (int j = 0; j < pp_; ++j)
        for (int r = 0; r < t_; ++r) add_group([&](int i) { return device(i, j, r); }, dp_);
    if (t_ > 1)
      for (int i = 0; i < dp_; ++i)
        for (int j = 0; j < pp_; ++j) add_group([&](int r) { return device(i, j, r); }, t_);
    if (dp_ > 1 && t_ > 1)
      for (int j = 0; j < pp_; ++j) add_group([&](int q) { return device(q / t_, j, q % t_); }, dp_ * t_);
    for (const auto& prog : programs_) memory_.emplace_back(layout_, prog.device, &graph_, cg_);
    // Per device, per slot: its use and its ring (flat tables: the planner asks for them at every instruction).
    uses_.assign(programs_.size(), std::vector<SlotUse>(cg.buffers.size()));
    if (!rings_.empty()) {
      ring_of_.assign(programs_.size(), std::vector<const Ring*>(cg.buffers.size(), nullptr));
      for (const auto& [key, r] : rings_)  // rings() keys emitted devices only
        ring_of_[at(key.first)].at(key.second) = &r;
    }
    applied_.assign(programs_.size(), 0);
    for (size_t s = 0; s < cg.buffers.size(); ++s) {
      if (cg.buffers[s].origin != BufferOrigin::kMaterialized) continue;
      const Placement& p = cg.bindings[s]->placement();
      if (p.kind == PlacementKind::kHome) {
        home_[s] = true;
      } else if (p.devices == 0 && p.kind == PlacementKind::kReplicate) {
        everywhere_[s] = true;
      } else {
        // One stage is every device: batch splitting's placements (0, every device) are that stage's.
        const uint64_t devices = p.devices == 0 && pp_ == 1 ? stage_mask_[0] : p.devices;
        const auto j = std::find(stage_mask_.begin(), stage_mask_.end(), devices);
        if (j == stage_mask_.end())
          throw runtime::Error(fmt::format("buffer {} lies on devices {:#x}, which are no stage of this layout; "
                                           "bring it home before planning", cg.bindings[s]->id(), p.devices));
        set_whole(static_cast<uint32_t>(s), static_cast<int>(j - stage_mask_.begin()));
        // Rows of the batch (not of the slot's own first dim, as a sharded optimizer leaves its state; not a
        // tensor-parallel part, along a replica's ranks).
        const bool ranks = t_ > 1 && (dp_ == 1 || (p.ranks == t_ && p.stride == 1));
        by_rows_[s] = p.kind == PlacementKind::kShard && !ranks && p.rows == rows_;
      }
    }
  }

  // After a run: the blocks of micro-batch rows that a device can hold as rings (each micro-batch's rows
  // used only between two of its instructions, the value gone after the step, fewer micro-batches alive at
  // once than there are), for a second run to lay out so.
  Rings rings() const {
    Rings out;
    for (size_t cell = 0; cell < uses_.size() * cg_.buffers.size(); ++cell) {
      const int d = programs_[cell / cg_.buffers.size()].device;
      const auto s = static_cast<uint32_t>(cell % cg_.buffers.size());
      const SlotUse& use = uses_[at(d)][s];
      const auto& buffer = cg_.buffers[s];
      // (Beside TP a block's parts are its bytes over the micro-batches, not rows of the batch.)
      if (use.whole || use.pieces_used != m_ || buffer.live_after || buffer.origin == BufferOrigin::kMaterialized ||
          (row_bytes(s) == 0 && t_ == 1))
        continue;
      std::vector<std::pair<size_t, int>> by_start;  // (first instruction, micro-batch)
      for (int k = 0; k < m_; ++k) by_start.push_back({use.pieces[static_cast<size_t>(k)].front().first, k});
      std::sort(by_start.begin(), by_start.end());
      Ring r;
      r.position.assign(static_cast<size_t>(m_), -1);
      std::vector<std::vector<std::pair<size_t, size_t>>> taken;  // per position: the spans of its micro-batches
      auto overlaps = [](const std::vector<std::pair<size_t, size_t>>& a, const std::vector<std::pair<size_t, size_t>>& b) {
        for (const auto& x : a)
          for (const auto& y : b)
            if (x.first <= y.second && y.first <= x.second) return true;
        return false;
      };
      for (const auto& [first, k] : by_start) {
        const auto& spans = use.pieces.at(static_cast<size_t>(k));
        int place = -1;
        for (size_t q = 0; q < taken.size() && place < 0; ++q)
          if (!overlaps(taken[q], spans)) place = static_cast<int>(q);
        if (place < 0) {
          place = static_cast<int>(taken.size());
          taken.emplace_back();
        }
        taken[place].insert(taken[place].end(), spans.begin(), spans.end());
        r.position[k] = place;
      }
      r.positions = static_cast<int>(taken.size());
      if (r.positions >= m_) continue;  // every micro-batch alive at once: the block as it is
      const int i = d / (pp_ * t_);
      for (int k = 0; k < m_; ++k) r.rows = std::max(r.rows, piece(i, k).count);
      out.emplace(std::pair<int, uint32_t>{d, s}, std::move(r));
    }
    return out;
  }

  // Emits every device's instructions (finish() then adds the releases and makes the plan).
  void run() {
    // Phases: the steps between two that must wait for every micro-batch (a sum of the micro-batches'
    // partial values, a gather of their rows, a whole-value op that reads what they wrote or writes what
    // they read). Within a phase each micro-batch runs every per-micro-batch step, and the others run once,
    // in the first micro-batch.
    // A step that must wait for every micro-batch (a gradient's division by the loss's weight, its all-reduce,
    // its copy into .grad) is put off to the phase's end while the steps after it leave its slots alone; a
    // micro-batch's step that needs what a put-off step makes ends the phase. A backward pass whose gradients
    // finish layer by layer is then one phase whose micro-batches each run their forward and backward passes
    // in turn (gradient accumulation holding one micro-batch's activations), not a phase per gradient holding
    // every micro-batch's activations until the last.
    std::vector<const SplitStep*> phase, postponed;
    std::set<uint32_t> postponed_slots;
    // Put-off steps that let a value made in the step go back to rows (distribute_low_prec_param's copies
    // after the forward pass): slot -> its place in `postponed`. The gather that makes it whole again for the backward
    // pass cancels both: every micro-batch's forward and backward passes read the whole value in between.
    std::map<uint32_t, size_t> back_to_rows;
    std::set<uint32_t> piece_written, piece_touched;
    std::vector<uint32_t> reads, writes;
    int last_piece_stage = 0;
    bool backward = false;
    // 1F1B: where the phase's backward half begins (its first step of the backward pass after per-micro-batch
    // steps of the forward pass; 0: the phase has no two halves).
    const bool interleave = schedule_ == PipelineSchedule::k1F1B && m_ > 1;
    bool forward_pieces = false;
    size_t turn = 0;
    // (1F1B with micro-batches: a mean loss's division waits for every micro-batch, its gradient going as a
    // sum: compile_pipeline_plan rewrote the steps so, deferred_loss_division.h.)
    const std::vector<SplitStep>* steps = &split_.steps;
    auto end_phase = [&] {
      // A step that runs once and that no later step of the phase needs (AdamW's state made in the first
      // step, a fill of a buffer only the optimizer reads) runs after every micro-batch, not in the first
      // one's turn, so that what it makes is not held through the micro-batches.
      std::vector<const SplitStep*> after = postponed;
      if (m_ > 1 && !phase.empty()) {
        std::vector<bool> later(phase.size(), false);
        std::set<uint32_t> kept_reads, kept_writes;  // by the steps after the one looked at that stay
        std::vector<uint32_t> r, w;
        for (size_t q = phase.size(); q-- > 0;) {
          const SplitStep& st = *phase[q];
          slots_of(st, r, w);
          auto any_in = [](const std::vector<uint32_t>& xs, const std::set<uint32_t>& set) {
            return std::any_of(xs.begin(), xs.end(), [&](uint32_t x) { return set.count(x) > 0; });
          };
          later[q] = !scheduler::per_piece(st) && (st.kind == Kind::kLaunch || st.kind == Kind::kAllocate) &&
                     !any_in(w, kept_reads) && !any_in(w, kept_writes) && !any_in(r, kept_writes);
          if (later[q]) continue;
          kept_reads.insert(r.begin(), r.end());
          kept_writes.insert(w.begin(), w.end());
        }
        std::vector<const SplitStep*> kept;
        size_t kept_turn = 0;
        for (size_t q = 0; q < phase.size(); ++q) {
          if (q == turn && turn > 0) kept_turn = kept.size();
          (later[q] ? after : kept).push_back(phase[q]);
        }
        if (kept_turn == 0 || kept_turn >= kept.size()) kept_turn = 0;  // no backward half left to interleave
        phase = std::move(kept);
        turn = kept_turn;
        moved_after_micro_batches_ += static_cast<int>(after.size() - postponed.size());
        // In the step's order (the pointers are into one vector of steps); put-off steps cancelled are null.
        after.erase(std::remove(after.begin(), after.end(), nullptr), after.end());
        std::stable_sort(after.begin(), after.end(), std::less<const SplitStep*>());
      }
      emit_phase(phase, turn);
      for (const SplitStep* p : after)
        if (p) emit_once(*p);
      postponed.clear();
      postponed_slots.clear();
      back_to_rows.clear();
      phase.clear();
      turn = 0;
      forward_pieces = false;
      piece_written.clear();
      piece_touched.clear();
      last_piece_stage = 0;
      backward = false;
    };
    for (const SplitStep& st : *steps) {
      slots_of(st, reads, writes);
      if (const auto kept = back_to_rows.find(st.index); st.kind == Kind::kAllGather && kept != back_to_rows.end()) {
        postponed[kept->second] = nullptr;  // the value stays whole: neither runs
        back_to_rows.erase(kept);
        ++copies_kept_whole_;
        postponed_slots.clear();
        std::vector<uint32_t> r, w;
        for (const SplitStep* p : postponed) {
          if (!p) continue;
          slots_of(*p, r, w);
          postponed_slots.insert(r.begin(), r.end());
          postponed_slots.insert(w.begin(), w.end());
        }
        continue;
      }
      const bool per_piece = scheduler::per_piece(st);
      const bool folded = st.kind == Kind::kScale || st.kind == Kind::kMultiply;  // into the launches
      bool touches_postponed = false;
      for (uint32_t s : reads) touches_postponed = touches_postponed || postponed_slots.count(s);
      for (uint32_t s : writes) touches_postponed = touches_postponed || postponed_slots.count(s);
      if (!per_piece && !folded) {
        bool barrier = touches_postponed;
        for (uint32_t s : reads) barrier = barrier || piece_written.count(s);
        for (uint32_t s : writes) barrier = barrier || piece_touched.count(s);
        if (barrier && m_ > 1) {
          // (Not a value from before the step: a parameter resting in rows is updated on its rows after the
          // backward pass, which a whole block would not lay out so.)
          if (st.kind == Kind::kKeepRows && keeps_copies_whole_ &&
              cg_.buffers[st.index].origin != BufferOrigin::kMaterialized)
            back_to_rows[st.index] = postponed.size();
          postponed.push_back(&st);
          for (uint32_t s : reads) postponed_slots.insert(s);
          for (uint32_t s : writes) postponed_slots.insert(s);
          continue;
        }
        if (barrier) end_phase();
      } else if (touches_postponed) {
        end_phase();  // a micro-batch's step that needs a put-off result: the phase ends before it
      } else if (!interleave) {
        // The backward pass begins (a micro-batch's ops go back to an earlier stage): every micro-batch's
        // forward ops come first, so that stage 0 runs its next micro-batch while the later stages work.
        if (stage_of(st) < last_piece_stage && !backward) {
          emit_phase(phase);
          phase.clear();
          piece_written.clear();
          piece_touched.clear();
          backward = true;  // once: the backward pass itself pipelines, stage after stage
        }
        last_piece_stage = stage_of(st);
      }
      if (per_piece) {
        for (uint32_t s : writes) piece_written.insert(s), piece_touched.insert(s);
        for (uint32_t s : reads) piece_touched.insert(s);
      }
      if (interleave) {
        const bool in_backward = st.node >= cut_.forward_end;
        if (per_piece && !in_backward) forward_pieces = true;
        if (in_backward && forward_pieces && turn == 0) turn = phase.size();
      }
      phase.push_back(&st);
    }
    end_phase();
  }
  // The plan of what run() emitted: the releases added, each program's peak measured.
  PlannedStep plan() { return finish(); }

 private:
  // The launch of a step run once per replica (not per micro-batch) on replica i's rank r: the sharded
  // optimizer's are per replica and rank, a split's per piece and rank (the replica's first piece: TP's parts
  // alone are alike in every piece).
  size_t launch_index(const SplitStep& st, int i, int r) const {
    return static_cast<size_t>(st.own_rows ? i * t_ + r : i * m_ * t_ + r);
  }
  // ezpz's layout: replicas slowest, then stages, tensor ranks fastest.
  int device(int replica, int stage, int rank = 0) const { return (replica * pp_ + stage) * t_ + rank; }
  // Group ids (Instruction::group) of the groups the constructor made.
  uint16_t replicas_group(int stage, int rank) const { return static_cast<uint16_t>(1 + stage * t_ + rank); }
  uint16_t ranks_group(int replica, int stage) const {
    return static_cast<uint16_t>(1 + (dp_ > 1 ? pp_ * t_ : 0) + replica * pp_ + stage);
  }
  uint16_t stage_group(int stage) const { return static_cast<uint16_t>(1 + pp_ * t_ + dp_ * pp_ + stage); }
  // The bytes device d holds of slot s now (its block as the instructions so far bound it).
  uint64_t held(int d, uint32_t s) {
    const auto& prog = programs_[at(d)];
    for (size_t& pc = applied_[at(d)]; pc < prog.code.size(); ++pc) memory_[at(d)].apply(prog, prog.code[pc]);
    return memory_[at(d)].held(s);
  }
  uint32_t bit(int stage) const { return uint32_t{1} << stage; }
  uint64_t bytes(uint32_t s) const { return cg_.buffers[s].bytes; }
  uint64_t row_bytes(uint32_t s) const { return split_.slots[s].row_bytes; }
  // The bytes of the slot's block on replica i: its rows, or the whole value.
  uint64_t block_bytes(uint32_t s, int i) const {
    return by_rows_[s] && row_bytes(s) ? row_bytes(s) * static_cast<uint64_t>(device_rows_[i].count) : bytes(s);
  }
  // The bytes of the slot's block on device d (replica i): a ring of a few micro-batches' rows, or as above.
  uint64_t block_bytes_on(uint32_t s, int i, int d) const {
    const Ring* r = ring(d, s);
    return r ? row_bytes(s) * static_cast<uint64_t>(r->positions * r->rows) : block_bytes(s, i);
  }
  const Ring* ring(int d, uint32_t s) const { return ring_of_.empty() ? nullptr : ring_of_[at(d)][s]; }
  // Whether device d's block of the slot holds one micro-batch's rows at a time (a ring of one place).
  bool one_at_a_time(int d, uint32_t s) const {
    const Ring* r = ring(d, s);
    return r && r->positions == 1;
  }
  // Beside TP, a rank's block of micro-batch rows is equal parts, the batch's rows leading: one per micro-batch, or
  // one per place of its ring. How many, which one micro-batch k takes, and the bytes of each.
  uint64_t places(int d, uint32_t s) const {
    const Ring* r = ring(d, s);
    return static_cast<uint64_t>(r ? r->positions : m_);
  }
  uint64_t place(int d, uint32_t s, int k) const {
    const Ring* r = ring(d, s);
    return static_cast<uint64_t>(r ? r->position.at(static_cast<size_t>(k)) : k);
  }
  uint64_t part_bytes(int d, uint32_t s) { return held(d, s) / places(d, s); }
  // Rows before micro-batch k's in replica i's block of the slot on device d.
  int64_t rows_before(uint32_t s, int i, int k, int d) const {
    const Ring* r = ring(d, s);
    return r ? static_cast<int64_t>(r->position.at(static_cast<size_t>(k))) * r->rows
             : piece(i, k).begin - device_rows_[i].begin;
  }
  // Pass one: how each device uses each slot (a micro-batch's rows of it, from its first instruction to its
  // last; or the whole value).
  // `makes`: the instruction makes the micro-batch's rows afresh (a node's output, or an input it gives a
  // first value): a second time, the rows were dropped in between (recomputation.h) and a new span begins.
  void note(int d, uint32_t s, int k, bool makes = false) {
    SlotUse& u = uses_[at(d)][s];
    const size_t pc = programs_[at(d)].code.size() - 1;
    if (k < 0) {
      u.whole = true;
      return;
    }
    if (u.pieces.empty()) u.pieces.resize(static_cast<size_t>(m_));
    auto& spans = u.pieces[static_cast<size_t>(k)];
    if (spans.empty()) ++u.pieces_used;
    if (spans.empty() || (makes && recomputes_)) spans.emplace_back(pc, pc);
    else spans.back().second = pc;
  }
  RowRange piece(int i, int k) const { return piece_rows_[static_cast<size_t>(i * m_ + k)]; }

  void set_whole(uint32_t s, int stage) {
    std::fill(at_[s].begin(), at_[s].end(), bit(stage));
    home_[s] = false;
    everywhere_[s] = false;
    owner_[s] = stage;
  }

  void slots_of(const SplitStep& st, std::vector<uint32_t>& reads, std::vector<uint32_t>& writes) const {
    step_slots(graph_, cg_, st, reads, writes);
  }

  Instruction& push(int d, Kind kind, uint32_t index, uint32_t aux = 0) {
    auto& code = programs_[at(d)].code;
    code.push_back({kind, index, aux});
    return code.back();
  }

  // Device a sends bytes of slot s to device b: `range` of a's block into `to` of b's (micro-batch k's rows,
  // or -1: the whole block).
  void send(uint32_t s, int a, int b, const ByteRange& range, const ByteRange& to, int k = -1) {
    const uint32_t tag = ++tag_;
    for (int d : {a, b}) {
      auto& prog = programs_[at(d)];
      prog.ranges.push_back(d == a ? range : to);
      Instruction& ins = push(d, d == a ? Kind::kSend : Kind::kRecv, s, static_cast<uint32_t>(d == a ? b : a));
      ins.tag = tag;
      ins.range = static_cast<uint32_t>(prog.ranges.size());
      note(d, s, k);
    }
    sent_[a] += range.bytes;
    ++messages_;
    transfer_bytes_ += range.bytes;
  }

  // Brings the slot's whole value (every micro-batch's rows) to stage j's replicas.
  void bring_whole(uint32_t s, int j) {
    if (everywhere_[s]) return;
    if (home_[s]) {  // written by the host or an eager op: device 0 sends it to the stage
      for (int i = 0; i < emit_dp_; ++i)
        for (int r = 0; r < emit_t_; ++r)
          if (device(i, j, r) != 0) send(s, 0, device(i, j, r), {0, bytes(s), bytes(s)}, {0, bytes(s), bytes(s)});
      set_whole(s, j);
      return;
    }
    const auto& at = at_[s];
    const bool same = std::all_of(at.begin(), at.end(), [&](uint32_t x) { return x == at[0]; });
    if (!same) {
      for (int k = 0; k < m_; ++k) bring_piece(s, j, k);
      return;
    }
    if (at[0] == 0 || (at[0] & bit(j))) return;
    const int from = std::countr_zero(at[0]);
    for (int i = 0; i < emit_dp_; ++i)
      for (int r = 0; r < emit_t_; ++r) {  // replica i's block (rank r's part) goes to replica i (rank r), as it lies
        const int src = device(i, from, r);
        const uint64_t b = held(src, s);
        if (b == 0 && bytes(s) > 0)
          throw std::logic_error(fmt::format("the pipeline planner sends slot {} from device {}, which holds none of it", s, src));
        const ByteRange whole{0, b, b};
        send(s, src, device(i, j, r), whole, whole);
      }
    for (auto& x : at_[s]) x |= bit(j);
  }

  // Brings micro-batch k's rows of the slot to stage j's replicas.
  void bring_piece(uint32_t s, int j, int k) {
    if (everywhere_[s] || home_[s] || !by_rows_[s] || m_ == 1) return bring_whole(s, j);
    const uint32_t at = at_[s][k];
    if (at == 0 || (at & bit(j))) return;
    const int from = std::countr_zero(at);
    for (int i = 0; i < emit_dp_; ++i)
      for (int rank = 0; rank < emit_t_; ++rank) {
        const int src = device(i, from, rank), dst = device(i, j, rank);
        if (t_ > 1) {  // the rank's block holds m equal pieces of its part
          const uint64_t each = part_bytes(src, s);
          send(s, src, dst, {each * place(src, s, k), each, held(src, s)},
               {each * place(dst, s, k), each, each * places(dst, s)}, k);
          continue;
        }
        const RowRange p = piece(i, k);
        const uint64_t row = row_bytes(s);
        auto range_on = [&](int d) {
          return ByteRange{static_cast<uint64_t>(rows_before(s, i, k, d)) * row, static_cast<uint64_t>(p.count) * row,
                           block_bytes_on(s, i, d)};
        };
        send(s, src, dst, range_on(src), range_on(dst), k);
      }
    at_[s][k] |= bit(j);
  }

  void emit_phase(const std::vector<const SplitStep*>& phase, size_t turn = 0) {
    if (phase.empty()) return;
    if (turn > 0) {
      if (emit_one_f_one_b(phase, turn)) return;
      // The step's data allows no 1F1B order here: GPipe's, forward half then backward half.
      ++gpipe_fallbacks_;
      emit_phase({phase.begin(), phase.begin() + static_cast<std::ptrdiff_t>(turn)});
      emit_phase({phase.begin() + static_cast<std::ptrdiff_t>(turn), phase.end()});
      return;
    }
    ++phases_;
    for (int k = 0; k < m_; ++k)
      for (const SplitStep* st : phase) {
        const bool per_piece = scheduler::per_piece(*st);
        if (per_piece) emit_piece(*st, k);
        else if (k == 0) emit_once(*st);
      }
  }

  // What a step run on micro-batch k reads and writes: (slot, micro-batch or -1 for the whole value).
  struct Access {
    uint32_t slot;
    int piece;
    bool write;
  };
  // `same_per_piece`: slots that per-micro-batch steps write whole, each micro-batch its own value (a
  // replicated output, the same each time; a per-device one, such as attention's RNG state without dropout,
  // which its backward reads as it is): micro-batch k's readers count as reading micro-batch k's. The
  // device holds one copy, the latest, as under GPipe, whose backward reads the last micro-batch's.
  void accesses(const SplitStep& st, int k, const std::set<uint32_t>& same_per_piece, std::vector<Access>& out) const {
    out.clear();
    const bool per_piece = scheduler::per_piece(st);
    if (per_piece && st.kind != Kind::kLaunch) {  // TP's sum of micro-batch k's rows, in place
      out.push_back({st.index, k, false});
      out.push_back({st.index, k, true});
      return;
    }
    if (!per_piece) {
      std::vector<uint32_t> reads, writes;
      slots_of(st, reads, writes);
      for (uint32_t s : reads) out.push_back({s, -1, false});
      for (uint32_t s : writes) out.push_back({s, -1, true});
      return;
    }
    const auto& node = graph_.nodes()[st.index];
    const auto& in = cg_.node_inputs[st.index];
    const auto& outs = cg_.node_outputs[st.index];
    for (size_t x = 0; x < in.size(); ++x) {
      if (std::find(st.unused_inputs.begin(), st.unused_inputs.end(), static_cast<int>(x)) != st.unused_inputs.end())
        continue;
      const bool written = std::find(node.written.begin(), node.written.end(), x) != node.written.end();
      const bool mine = (x < st.aligned.size() && st.aligned[x] >= 0) || (!written && same_per_piece.count(in[x]));
      out.push_back({in[x], mine ? k : -1, written});
    }
    for (size_t o = 0; o < outs.size(); ++o) {
      // Rows, or a replicated value: micro-batch k's. A partial sum: every micro-batch adds to the whole.
      const bool mine = o < st.outputs.size() && (st.outputs[o].kind == OutputSpec::Kind::kShard ||
                                                  st.outputs[o].kind == OutputSpec::Kind::kReplicate ||
                                                  st.outputs[o].kind == OutputSpec::Kind::kLocal);
      out.push_back({outs[o], mine ? k : -1, true});
    }
  }

  // A phase with a forward half ([0, turn)) and a backward half, in 1F1B order: each stage's work on a
  // micro-batch in one half is a task; a task waits for the tasks whose data it reads or overwrites in the
  // GPipe order (the order the step's semantics are checked against); each stage runs its tasks in 1F1B
  // order. False (nothing emitted) when no such order exists.
  bool emit_one_f_one_b(const std::vector<const SplitStep*>& phase, size_t turn) {
    std::vector<PipelineTask> tasks;
    std::vector<std::vector<const SplitStep*>> steps;
    std::vector<std::vector<size_t>> preds;
    std::map<std::tuple<int, bool, int>, size_t> index;
    struct Seen {
      size_t task;
      int piece;
    };
    // Per slot, the tasks that wrote and that read it so far: a write waits for both, a read for the writes
    // only (reads in any order: a weight every micro-batch reads orders nothing).
    struct Accessed {
      std::vector<Seen> writes, reads;
    };
    std::unordered_map<uint32_t, Accessed> seen;
    std::vector<Access> acc;
    std::set<uint32_t> same_per_piece;
    for (const SplitStep* st : phase)
      if (scheduler::per_piece(*st))
        for (size_t o = 0; o < st->outputs.size() && o < cg_.node_outputs[st->index].size(); ++o)
          if (st->outputs[o].kind == OutputSpec::Kind::kReplicate || st->outputs[o].kind == OutputSpec::Kind::kLocal)
            same_per_piece.insert(cg_.node_outputs[st->index][o]);
    for (int half = 0; half < 2; ++half) {
      const size_t from = half ? turn : 0, to = half ? phase.size() : turn;
      for (int k = 0; k < m_; ++k)
        for (size_t q = from; q < to; ++q) {
          const SplitStep& st = *phase[q];
          const bool per_piece = scheduler::per_piece(st);
          if (!per_piece && k > 0) continue;
          if (st.kind == Kind::kScale || st.kind == Kind::kMultiply) continue;  // folded into the launches
          if (!per_piece && st.kind == Kind::kLaunch && !cut_.element_stage[st.index].empty()) return false;
          const int j = stage_of(st);
          auto [it, fresh] = index.try_emplace({j, half == 1, k}, tasks.size());
          if (fresh) {
            tasks.push_back({j, half == 1, k});
            steps.emplace_back();
            preds.emplace_back();
          }
          const size_t t = it->second;
          steps[t].push_back(&st);
          if (st.kind == Kind::kLaunch)  // the clock's cost: a micro-batch's share of the node's
            tasks[t].cost += cost_of(st.index) * (per_piece ? 1.0 / m_ : 1.0);
          accesses(st, per_piece ? k : 0, same_per_piece, acc);
          if (!per_piece)
            for (Access& a : acc) a.piece = -1;
          for (const Access& a : acc) {
            Accessed& slot = seen[a.slot];
            auto wait_for = [&](const std::vector<Seen>& list) {
              for (const Seen& s : list)
                if (s.task != t && (s.piece < 0 || a.piece < 0 || s.piece == a.piece)) preds[t].push_back(s.task);
            };
            wait_for(slot.writes);
            if (a.write) wait_for(slot.reads);
            (a.write ? slot.writes : slot.reads).push_back({t, a.piece});
          }
        }
    }
    for (auto& p : preds) {
      std::sort(p.begin(), p.end());
      p.erase(std::unique(p.begin(), p.end()), p.end());
    }
    const std::optional<std::vector<size_t>> order = merge_stage_orders(tasks, preds, pp_, m_);
    if (!order) return false;
    ++phases_;
    ++one_f_one_b_phases_;
    // Each stage's tasks in the order they are emitted, and the next one not yet emitted.
    std::vector<std::vector<size_t>> mine(static_cast<size_t>(pp_));
    for (size_t t : *order) mine[static_cast<size_t>(tasks[t].stage)].push_back(t);
    std::vector<size_t> next(mine.size(), 0);
    for (size_t t : *order) {
      for (const SplitStep* st : steps[t]) {
        const bool per_piece = scheduler::per_piece(*st);
        if (per_piece) emit_piece(*st, tasks[t].micro);
        else emit_once(*st);
      }
      const int from = tasks[t].stage;
      ++next[static_cast<size_t>(from)];
      // What another stage's next task reads of this task's results goes now, right after the work that made
      // it: a receiver emitted later would find the send after whatever this stage does next.
      for (size_t j = 0; j < mine.size(); ++j) {
        if (static_cast<int>(j) == from || next[j] >= mine[j].size()) continue;
        const size_t u = mine[j][next[j]];
        if (!std::binary_search(preds[u].begin(), preds[u].end(), t)) continue;
        for (const SplitStep* st : steps[u])
          if (scheduler::per_piece(*st) && st->kind == Kind::kLaunch) send_ahead(*st, tasks[u].micro, from);
      }
    }
    return true;
  }

  // Brings stage `from`'s values that a launch of micro-batch k reads to the launch's stage, as emit_piece will.
  void send_ahead(const SplitStep& st, int k, int from) {
    const int j = stage_of(st);
    const auto& in = cg_.node_inputs[st.index];
    for (size_t x = 0; x < in.size(); ++x) {
      const uint32_t s = in[x];
      if (everywhere_[s] || home_[s]) continue;
      const bool piece = x < st.aligned.size() && st.aligned[x] >= 0 && by_rows_[s] && m_ > 1;
      const auto& at = at_[s];
      const uint32_t where = piece ? at[static_cast<size_t>(k)] : at[0];
      if (!(where & bit(from)) || (where & bit(j))) continue;
      if (!piece && !std::all_of(at.begin(), at.end(), [&](uint32_t w) { return w == at[0]; })) continue;
      if (piece) bring_piece(s, j, k);
      else bring_whole(s, j);
    }
  }

  int stage_of(const SplitStep& st) const {
    const auto& elements = cut_.element_stage[st.node];
    if (elements.empty() || st.kind == Kind::kLaunch) return cut_.node_stage[st.node];
    // A step that readies an input of an op split by list element: that element's stage.
    const runtime::ListElements lists = runtime::list_elements(graph_.nodes()[st.node]);
    const auto& in = cg_.node_inputs[st.node];
    for (size_t x = 0; x < in.size(); ++x)
      if (in[x] == st.index && lists.inputs[x] >= 0) return elements[lists.inputs[x]];
    return cut_.node_stage[st.node];
  }

  // An op over lists whose elements lie on several stages: each stage runs it over its own elements.
  void emit_by_element(const SplitStep& st) {
    const auto& node = graph_.nodes()[st.index];
    const auto& in = cg_.node_inputs[st.index];
    const auto& out = cg_.node_outputs[st.index];
    const runtime::ListElements lists = runtime::list_elements(node);
    std::map<int, std::vector<uint32_t>> by_stage;
    const auto& stages = cut_.element_stage[st.index];
    for (size_t e = 0; e < stages.size(); ++e) by_stage[stages[e]].push_back(static_cast<uint32_t>(e));
    for (const auto& [j, elements] : by_stage) {
      auto mine = [&](int e) { return std::binary_search(elements.begin(), elements.end(), static_cast<uint32_t>(e)); };
      for (size_t x = 0; x < in.size(); ++x)
        if (lists.inputs[x] < 0 || mine(lists.inputs[x])) bring_whole(in[x], j);
      for (int i = 0; i < emit_dp_; ++i)
        for (int r = 0; r < emit_t_; ++r) {
          // A rank's views of its parts (tensor parallelism), of the elements it keeps; else as recorded.
          LocalLaunch l;
          if (!st.launches.empty()) {
            const LocalLaunch& all = st.launches.at(launch_index(st, i, r));
            for (size_t x = 0; x < all.inputs.size() && x < in.size(); ++x)
              if (lists.inputs[x] < 0 || mine(lists.inputs[x])) l.inputs.push_back(all.inputs[x]);
            for (size_t k = 0; k < all.outputs.size() && k < out.size(); ++k)
              if (lists.outputs[k] < 0 || mine(lists.outputs[k])) l.outputs.push_back(all.outputs[k]);
            l.rows = all.rows;
            l.batch_rows = all.batch_rows;
          }
          l.elements = elements;
          const int d = device(i, j, r);
          auto& prog = programs_[at(d)];
          prog.launches.push_back(std::move(l));
          push(d, Kind::kLaunch, st.index, static_cast<uint32_t>(prog.launches.size()));
          for (uint32_t s : in) note(d, s, -1);
          for (uint32_t s : out) note(d, s, -1);
        }
      for (size_t k = 0; k < out.size(); ++k)
        if (mine(lists.outputs[k])) {
          set_whole(out[k], j);
          by_rows_[out[k]] = false;
        }
      for (uint16_t w : node.written)
        if (mine(lists.inputs[w])) set_whole(in[w], j);
    }
  }

  void emit_once(const SplitStep& st) {
    int j = stage_of(st);
    // A sharded optimizer's collectives run where the value lies (optimizer_sharding.h does not know the
    // stages; a parameter it gathers lies on its own stage).
    if (st.own_rows && st.kind != Kind::kLaunch && st.kind != Kind::kAllocate && !home_[st.index] &&
        !everywhere_[st.index] && at_[st.index][0] != 0 && !(at_[st.index][0] & bit(j)))
      j = std::countr_zero(at_[st.index][0]);
    const uint32_t s = st.index;
    switch (st.kind) {
      case Kind::kAllocate:
        by_rows_[s] = st.split_allocation && !st.own_rows;
        for (int i = 0; i < emit_dp_; ++i)
          for (int r = 0; r < emit_t_; ++r) {
            const int d = device(i, j, r);
            // The split's own sizes where they are a device's: the sharded optimizer's per replica and rank,
            // TP's per piece and rank (a replica's micro-batches' rows: m equal pieces); else micro-batches' rows
            // (rings) as laid out here.
            uint64_t b = 0;
            if (st.own_rows) b = st.bytes.at(static_cast<size_t>(i * t_ + r));
            else if (t_ > 1) b = st.bytes.at(static_cast<size_t>(i * m_ * t_ + r)) * (st.batch_rows ? places(d, s) : 1);
            else b = block_bytes_on(s, i, d);
            allocate(d, s, b);
          }
        set_whole(s, j);
        return;
      case Kind::kLaunch: {
        if (!cut_.element_stage[st.index].empty()) return emit_by_element(st);
        const auto& node = graph_.nodes()[st.index];
        for (uint32_t in : cg_.node_inputs[st.index]) bring_whole(in, j);
        for (int i = 0; i < emit_dp_; ++i)
          for (int r = 0; r < emit_t_; ++r) {
            const int d = device(i, j, r);
            if (!st.launches.empty()) {  // replica i's rows of every tensor (optimizer_sharding.h), or TP's parts
              auto& prog = programs_[at(d)];
              prog.launches.push_back(st.launches.at(launch_index(st, i, r)));
              push(d, Kind::kLaunch, st.index, static_cast<uint32_t>(prog.launches.size()));
            } else {
              push(d, Kind::kLaunch, st.index);
            }
            for (uint32_t s : cg_.node_inputs[st.index]) note(d, s, -1);
            for (uint32_t s : cg_.node_outputs[st.index]) note(d, s, -1);
          }
        for (size_t k = 0; k < cg_.node_outputs[st.index].size(); ++k) {
          const uint32_t out = cg_.node_outputs[st.index][k];
          set_whole(out, j);
          by_rows_[out] = false;
        }
        for (uint16_t w : node.written) set_whole(cg_.node_inputs[st.index][w], j);
        return;
      }
      case Kind::kScale:
      case Kind::kMultiply:
        return;  // folded into the launches (LocalLaunch::factors, weighted)
      case Kind::kBroadcast:
        if (home_[s]) {
          bring_whole(s, j);  // every replica gets it from device 0
          return;
        }
        bring_whole(s, j);
        collective(j, st, Kind::kBroadcast);
        set_whole(s, j);
        by_rows_[s] = false;
        return;
      case Kind::kAllReduce:
      case Kind::kAllGather:
      case Kind::kKeepRows:
      case Kind::kReduceScatter:
        bring_whole(s, j);
        collective(j, st, st.kind);
        set_whole(s, j);
        // The batch's rows, or (own_rows) the slot's own: then the block is not a block of batch rows.
        if (st.kind == Kind::kAllGather || st.own_rows) by_rows_[s] = false;
        else if (st.kind == Kind::kKeepRows) by_rows_[s] = true;
        return;
      case Kind::kDivide:
        bring_whole(s, j);
        bring_whole(st.aux, j);
        for (int i = 0; i < emit_dp_; ++i)
          for (int r = 0; r < emit_t_; ++r) {
            const int d = device(i, j, r);
            push(d, Kind::kDivide, s, st.aux);
            note(d, s, -1);
            note(d, st.aux, -1);
          }
        set_whole(s, j);
        return;
      default:
        throw runtime::Error(fmt::format("the pipeline planner met an unexpected step kind {}",
                                         static_cast<int>(st.kind)));
    }
  }

  void allocate(int d, uint32_t s, uint64_t b) {
    auto& prog = programs_[at(d)];
    prog.sizes.push_back(b);
    push(d, Kind::kAllocate, s, static_cast<uint32_t>(prog.sizes.size() - 1));
  }

  // A split step's collective on stage j, along its axis: over each rank's replicas (the batch's; with one
  // axis, the only one there is), each replica's ranks (tensor parallelism's), or the stage's devices.
  void collective(int j, const SplitStep& st, Kind kind) {
    using Axis = SplitStep::Axis;
    Axis axis = st.axis;
    if (axis == Axis::kAll && (t_ == 1 || dp_ == 1)) axis = t_ > 1 ? Axis::kTensor : Axis::kBatch;
    const int members = axis == Axis::kBatch ? dp_ : axis == Axis::kTensor ? t_ : dp_ * t_;
    if (members == 1) return;
    const uint32_t s = st.index;
    std::optional<runtime::SlotInfo> geometry = st.geometry;
    // Along TP's axis on one piece's rows of the batch: the rank's block holds its micro-batches' rows, m pieces
    // (the batch's rows lead, so m times the outer blocks, or the bytes of a sum).
    if (geometry && m_ > 1 && axis == Axis::kTensor && runtime::whole_bytes(*geometry, bytes(s)) * dp_ * m_ == bytes(s)) {
      if (geometry->outer > 1 || geometry->rows > 1) geometry->outer = std::max<uint64_t>(geometry->outer, 1) * m_;
      else geometry->row_bytes *= static_cast<uint64_t>(m_);
    }
    const uint64_t whole = geometry ? runtime::whole_bytes(*geometry, bytes(s)) : bytes(s);
    const double share = static_cast<double>(members - 1) / members;
    const double b = static_cast<double>(whole) * (kind == Kind::kAllReduce ? 2 * share : share);
    for (int i = 0; i < emit_dp_; ++i)
      for (int r = 0; r < emit_t_; ++r) {
        const int d = device(i, j, r);
        Instruction& ins = push(d, kind, s);
        ins.group = axis == Axis::kBatch ? replicas_group(j, r) : axis == Axis::kTensor ? ranks_group(i, j) : stage_group(j);
        if (geometry) {
          programs_[at(d)].geometries.push_back(*geometry);
          ins.aux = static_cast<uint32_t>(programs_[at(d)].geometries.size());
        }
        note(d, s, -1);
        sent_[d] += static_cast<uint64_t>(b);
      }
  }

  // TP's sum over a replica's ranks of micro-batch k's rows of a value (a second layer's partial output): the
  // rank's block holds m equal pieces of its part, and the all-reduce sums piece k's bytes in place.
  void emit_piece_sum(const SplitStep& st, int k) {
    const uint32_t s = st.index;
    if (m_ == 1) return emit_once(st);
    const int j = stage_of(st);
    if (!by_rows_[s] || !st.geometry)
      throw std::logic_error(fmt::format("the pipeline planner sums micro-batch {}'s rows of slot {}, which is not "
                                         "held by micro-batches' rows", k, s));
    bring_piece(s, j, k);
    const auto members = static_cast<double>(t_);
    for (int i = 0; i < emit_dp_; ++i)
      for (int r = 0; r < emit_t_; ++r) {
        const int d = device(i, j, r);
        const uint64_t b = held(d, s), each = part_bytes(d, s);
        if (each != runtime::whole_bytes(*st.geometry, bytes(s)))
          throw std::logic_error(fmt::format("the pipeline planner sums {} bytes of slot {}'s micro-batch {} on device "
                                             "{}, whose block holds {} for each", runtime::whole_bytes(*st.geometry, bytes(s)),
                                             s, k, d, each));
        auto& prog = programs_[at(d)];
        prog.ranges.push_back({each * place(d, s, k), each, b});
        Instruction& ins = push(d, Kind::kAllReduce, s);
        ins.group = ranks_group(i, j);
        ins.range = static_cast<uint32_t>(prog.ranges.size());
        note(d, s, k);
        sent_[d] += static_cast<uint64_t>(static_cast<double>(each) * 2 * (members - 1) / members);
      }
    at_[s][k] = bit(j);
  }

  void emit_piece(const SplitStep& st, int k) {
    if (st.kind != Kind::kLaunch) return emit_piece_sum(st, k);
    const int j = stage_of(st);
    const auto& node = graph_.nodes()[st.index];
    const auto& in = cg_.node_inputs[st.index];
    const auto& out = cg_.node_outputs[st.index];
    for (size_t x = 0; x < in.size(); ++x) {
      if (x < st.aligned.size() && st.aligned[x] >= 0) bring_piece(in[x], j, k);
      else bring_whole(in[x], j);
    }
    // A micro-batch's rows go into the replica's block of an output split by rows: it exists first. A block
    // that holds one micro-batch at a time is made for each micro-batch and let go after its last use, so
    // that between two micro-batches' uses it takes no memory.
    if (m_ > 1)
      for (size_t o = 0; o < out.size() && o < st.outputs.size(); ++o)
        if (st.outputs[o].kind == OutputSpec::Kind::kShard) {
          by_rows_[out[o]] = true;
          for (int i = 0; i < emit_dp_; ++i)
            for (int rank = 0; rank < emit_t_; ++rank) {
              const int d = device(i, j, rank);
              if (k > 0 && !one_at_a_time(d, out[o])) continue;
              // Beside TP: m equal pieces of the rank's view of one (the batch's rows lead).
              const LocalLaunch& l = st.launches.at(static_cast<size_t>((i * m_ + k) * t_ + rank));
              allocate(d, out[o], t_ > 1 && o < l.outputs.size() ? view_end(node.outputs[o], l.outputs[o]) * places(d, out[o])
                                                                 : block_bytes_on(out[o], i, d));
            }
        }
    // Per input and output: micro-batch k's rows of a block split by rows (else the whole value).
    boost::container::small_vector<char, 8> piece_in(in.size(), 0), piece_out(out.size(), 0);
    for (size_t x = 0; x < in.size(); ++x)
      piece_in[x] = x < st.aligned.size() && st.aligned[x] >= 0 && by_rows_[in[x]] && m_ > 1;
    for (size_t o = 0; o < out.size() && o < st.outputs.size(); ++o)
      piece_out[o] = st.outputs[o].kind == OutputSpec::Kind::kShard && m_ > 1;
    // Whether the launch's results join what the blocks hold (or are scaled first): the same for every device.
    bool joined = st.loss_out >= 0;
    for (size_t o = 0; o < out.size() && o < st.outputs.size(); ++o) {
      const OutputSpec& spec = st.outputs[o];
      joined = joined || spec.scale_by_share ||
               (m_ > 1 && (spec.kind == OutputSpec::Kind::kShard || spec.kind == OutputSpec::Kind::kPartial));
    }
    for (int q = 0; q < emit_dp_ * emit_t_; ++q) {  // replica i's tensor rank `rank`
      const int i = q / emit_t_, rank = q % emit_t_;
      const int d = device(i, j, rank);
      const RowRange p = piece(i, k);
      LocalLaunch l = st.launches.at(static_cast<size_t>((i * m_ + k) * t_ + rank));
      for (size_t x = 0; x < l.inputs.size() && x < st.aligned.size() && m_ > 1; ++x) {  // micro-batch k's rows
        if (st.aligned[x] < 0) continue;
        const auto& r = node.inputs[x];
        const int dim = st.aligned[x];
        if (t_ > 1)  // the rank's block is equal pieces of its part, the batch's rows leading
          l.inputs[x].offset += static_cast<int64_t>(place(d, in[x], k) * part_bytes(d, in[x]) / r.itemsize);
        else
          l.inputs[x].offset += rows_before(in[x], i, k, d) * (r.sizes[dim] / rows_) * r.strides[dim];
      }
      if (joined) {
        l.joins.assign(out.size(), LocalLaunch::Join::kFresh);
        l.into.assign(out.size(), 0);
        l.factors.assign(out.size(), 1.0);
        for (size_t o = 0; o < out.size() && o < st.outputs.size(); ++o) {
          const OutputSpec& spec = st.outputs[o];
          if (spec.scale_by_share) l.factors[o] = static_cast<double>(p.count) / static_cast<double>(rows_);
          if (m_ == 1) continue;
          if (spec.kind == OutputSpec::Kind::kShard) {
            const auto& r = node.outputs[o];
            l.joins[o] = LocalLaunch::Join::kInto;
            l.into[o] = t_ > 1 ? static_cast<int64_t>(place(d, out[o], k) * part_bytes(d, out[o]) / r.itemsize)
                               : rows_before(out[o], i, k, d) * (r.sizes[spec.dim] / rows_) * r.strides[spec.dim];
          } else if (spec.kind == OutputSpec::Kind::kPartial) {
            l.joins[o] = LocalLaunch::Join::kAccumulate;
          }
        }
        l.weighted = st.loss_out;
        l.weight = st.loss_weight;
      }
      auto& prog = programs_[at(d)];
      prog.launches.push_back(std::move(l));
      push(d, Kind::kLaunch, st.index, static_cast<uint32_t>(prog.launches.size()));
      for (size_t x = 0; x < in.size(); ++x)
        note(d, in[x], piece_in[x] ? k : -1,
             std::find(node.initializes.begin(), node.initializes.end(), x) != node.initializes.end());
      for (size_t o = 0; o < out.size(); ++o) note(d, out[o], piece_out[o] ? k : -1, /*makes=*/true);
    }
    for (size_t x = 0; x < in.size(); ++x)
      if (std::find(node.written.begin(), node.written.end(), x) != node.written.end()) {
        if (x < st.aligned.size() && st.aligned[x] >= 0 && m_ > 1) at_[in[x]][k] = bit(j), home_[in[x]] = false, owner_[in[x]] = j;
        else set_whole(in[x], j);
      }
    for (size_t o = 0; o < out.size(); ++o) {
      const bool rows = o < st.outputs.size() && st.outputs[o].kind == OutputSpec::Kind::kShard;
      by_rows_[out[o]] = rows;
      if (rows && m_ > 1) at_[out[o]][k] = bit(j), owner_[out[o]] = j;
      else set_whole(out[o], j);
    }
  }

  // The slots an instruction touches (for releases).
  void touched(const runtime::DeviceProgram& prog, const Instruction& ins, std::vector<uint32_t>& out) const {
    out.clear();
    if (ins.kind == Kind::kLaunch) {
      const std::vector<uint32_t>* elements = ins.aux ? &prog.launches.at(ins.aux - 1).elements : nullptr;
      if (elements && !elements->empty()) {  // its own elements only
        const runtime::ListElements lists = runtime::list_elements(graph_.nodes()[ins.index]);
        auto mine = [&](int e) {
          return e < 0 || std::binary_search(elements->begin(), elements->end(), static_cast<uint32_t>(e));
        };
        for (size_t x = 0; x < cg_.node_inputs[ins.index].size(); ++x)
          if (mine(lists.inputs[x])) out.push_back(cg_.node_inputs[ins.index][x]);
        for (size_t k = 0; k < cg_.node_outputs[ins.index].size(); ++k)
          if (mine(lists.outputs[k])) out.push_back(cg_.node_outputs[ins.index][k]);
        return;
      }
      for (uint32_t s : cg_.node_inputs[ins.index]) out.push_back(s);
      for (uint32_t s : cg_.node_outputs[ins.index]) out.push_back(s);
      return;
    }
    out.push_back(ins.index);
    if (ins.kind == Kind::kMultiply || ins.kind == Kind::kDivide) out.push_back(ins.aux);
  }

  PlannedStep finish() {
    const size_t num_slots = cg_.buffers.size();
    PlannedStep plan;
    plan.graph_hash = cg_.hash;
    plan.num_nodes = graph_.size();
    plan.num_devices = layout_.num_devices;
    plan.groups = layout_.groups;
    // Where each slot lies after the step: the stages that hold it (one, for a split or partial value).
    plan.final_placements.resize(num_slots);
    std::vector<uint64_t> holders(num_slots, 0);
    for (size_t s = 0; s < num_slots; ++s) {
      Placement p = split_.final_placements[s];
      if (home_[s]) {
        p = {PlacementKind::kHome};
        holders[s] = 1;
      } else if (everywhere_[s]) {
        holders[s] = ~uint64_t{0};
      } else if (owner_[s] >= 0) {
        holders[s] = stage_mask_[owner_[s]];
        p.devices = holders[s];
        if (p.kind == PlacementKind::kHome) p.kind = PlacementKind::kReplicate;
        // Along the replicas' axis of the stage's mesh: its replicas lie pp × t devices apart.
        if (p.ranks > 0 && p.stride != 1) {  // the replicas (the split's pieces are replicas × micro-batches)
          p.stride = pp_ * t_;
          p.ranks = dp_;
          // One replica holds every micro-batch's rows, and their sum: the whole value.
          if (dp_ == 1) p = {PlacementKind::kReplicate, 0, p.type, p.devices};
        }
        if (p.ranks > 0 && p.stride == 1 && dp_ == 1) p.ranks = 0;  // TP's parts: every device of the stage a rank
        if (p.inner_ranks > 0) {  // a TP part's rows over the replicas
          p.inner_stride = pp_ * t_;
          p.inner_ranks = dp_;
        }
        // One stage is every device: said as batch splitting says it, so that the next step, under this layout
        // or batch splitting, starts from it (rather than bringing it home).
        if (pp_ == 1) {
          p.devices = 0;
          if (t_ == 1 && p.ranks == dp_ && p.stride == 1) p.ranks = 0;
        }
      } else {
        holders[s] = ~uint64_t{0};  // never placed (a slot the step does not touch)
      }
      plan.final_placements[s] = p;
    }
    plan.slots = split_.slots;
    // Releases: after a slot's last use on a device, unless it lives on after the step and the device
    // holds it then.
    std::vector<uint32_t> t;
    for (auto& prog : programs_) {
      const int d = prog.device;
      // A block that holds one micro-batch at a time is made anew for each (an allocation before a
      // micro-batch's launch, or a receive of its rows that binds memory): what it held before is dead. (Any
      // other allocation keeps a block that exists: the executor binds memory only to a slot without.)
      std::set<std::pair<size_t, uint32_t>> received_anew;
      for (uint32_t s = 0; s < uses_[at(d)].size(); ++s) {
        if (!one_at_a_time(d, s)) continue;
        for (const auto& spans : uses_[at(d)][s].pieces)
          for (const auto& span : spans)
            if (prog.code[span.first].kind == Kind::kRecv) received_anew.insert({span.first, s});
      }
      // A launch whose outputs are fresh blocks (no micro-batch's rows joined into them) makes them anew: what
      // they held is dead before it (a recomputed activation, released between the forward and the backward
      // pass).
      std::vector<std::vector<uint32_t>> after = dead_after(
          prog.code.size(), num_slots, [&](size_t pc, std::vector<uint32_t>& touched_here, std::vector<uint32_t>& fresh) {
            touched(prog, prog.code[pc], touched_here);
            const Instruction& ins = prog.code[pc];
            if ((ins.kind == Kind::kAllocate && one_at_a_time(d, ins.index)) ||
                (ins.kind == Kind::kRecv && received_anew.count({pc, ins.index})))
              fresh.push_back(ins.index);
            if (!recomputes_ || ins.kind != Kind::kLaunch) return;
            const runtime::LocalLaunch* local = ins.aux ? &prog.launches.at(ins.aux - 1) : nullptr;
            if (local && !local->elements.empty()) return;
            const auto& outs = cg_.node_outputs[ins.index];
            for (size_t k = 0; k < outs.size(); ++k)
              if (!local || local->joins.empty() || local->joins[k] == runtime::LocalLaunch::Join::kFresh)
                fresh.push_back(outs[k]);
          });
      for (auto& slots : after)
        slots.erase(std::remove_if(slots.begin(), slots.end(),
                                   [&](uint32_t s) { return cg_.buffers[s].live_after && ((holders[s] >> d) & 1u); }),
                    slots.end());
      std::vector<Instruction> code;
      code.reserve(prog.code.size() * 2);
      // Values an earlier layout left on this device (replicated by batch splitting) that this step neither
      // uses here nor leaves here: their copies go at once.
      std::vector<bool> used_here(num_slots, false);
      {
        std::vector<uint32_t> slots;
        for (const Instruction& ins : prog.code) {
          slots.clear();
          touched(prog, ins, slots);
          for (uint32_t s : slots) used_here[s] = true;
        }
      }
      for (size_t s = 0; s < num_slots; ++s) {
        if (cg_.buffers[s].origin != runtime::BufferOrigin::kMaterialized || used_here[s] || ((holders[s] >> d) & 1u))
          continue;
        const std::vector<int> on = runtime::placement_devices(cg_.bindings[s]->placement(), layout_.num_devices);
        if (std::find(on.begin(), on.end(), d) != on.end()) code.push_back({Kind::kRelease, static_cast<uint32_t>(s)});
      }
      for (size_t pc = 0; pc < prog.code.size(); ++pc) {
        code.push_back(prog.code[pc]);
        for (uint32_t s : after[pc]) code.push_back({Kind::kRelease, s});
      }
      prog.code = std::move(code);
      prog.peak_bytes = program_peak(plan, prog, &graph_, cg_);
      plan.programs.push_back(std::move(prog));
    }
    plan.report.replicated_fallbacks = split_.replicated_fallbacks;
    plan.report.fallback_ops = split_.fallback_ops;
    plan.report.fallback_details = split_.fallback_details;
    uint64_t most = 0;
    for (const auto& [d, b] : sent_) most = std::max(most, b);
    plan.report.collective_bytes_per_device = most;
    plan.report.split_rows = rows_;
    return plan;
  }

  const runtime::StepGraph& graph_;
  const runtime::CanonicalGraph& cg_;
  const BatchSplit& split_;
  const StageCut& cut_;
  const int pp_, dp_;
  const int m_, t_;
  // The programs emitted: replicas [0, emit_dp_) × ranks [0, emit_t_) of every stage (all, or two lanes
  // that stand for all: representative); index_: device -> its program in programs_ (-1: not emitted).
  int emit_dp_ = 0, emit_t_ = 0;
  // node_cost per node, as first asked (1F1B's clock asks for each micro-batch's task).
  std::vector<double> cost_;
  double cost_of(uint32_t node) {
    if (cost_.empty()) cost_.assign(graph_.size(), -1.0);
    if (cost_[node] < 0) cost_[node] = node_cost(graph_.nodes()[node]);
    return cost_[node];
  }
  std::vector<int> index_;
  size_t at(int d) const { return static_cast<size_t>(index_[static_cast<size_t>(d)]); }
  const int64_t rows_;
  const PipelineSchedule schedule_;
  const Rings rings_;
  std::vector<std::vector<const Ring*>> ring_of_;  // per device, per slot: its ring in rings_ (empty: none)
  std::vector<std::vector<SlotUse>> uses_;          // per device, per slot
  const std::vector<RowRange> piece_rows_;
  std::vector<RowRange> device_rows_;
  std::vector<uint64_t> stage_mask_;
  std::vector<runtime::DeviceProgram> programs_;
  // The devices and groups of the plan, and each device's blocks as its program so far binds them.
  runtime::Plan layout_;
  std::vector<DeviceMemory> memory_;
  std::vector<size_t> applied_;  // per device: the instructions memory_ has seen
  // Where each slot's value is: per micro-batch, a bit per stage whose replicas hold it (a value not split
  // by micro-batch has the same bits for all); on device 0 only (home); on every device.
  std::vector<std::vector<uint32_t>> at_;
  std::vector<bool> home_, everywhere_;
  std::vector<bool> by_rows_;  // replicas hold their rows of it (else the whole value, or a partial one)
  // The stage that keeps the slot after the step: the last to write it, else the first it went to (copies
  // elsewhere are released; a parameter read by another stage is sent again next step, after its update).
  std::vector<int> owner_;
  uint32_t tag_ = 0;
  std::map<int, uint64_t> sent_;

 public:
  std::vector<int> stand_ins_;  // representative: per device, the emitted device it runs alike
  uint64_t messages_ = 0, transfer_bytes_ = 0;
  int phases_ = 0, one_f_one_b_phases_ = 0, gpipe_fallbacks_ = 0;
  bool recomputes_ = false;  // some nodes run twice (recomputation.h)
  // Whether values a pass lets go back to rows and the next gathers whole again stay whole through a phase's
  // micro-batches (one phase, each micro-batch's forward and backward in turn), rather than ending the phase
  // there; and how many did.
  bool keeps_copies_whole_ = true;
  int copies_kept_whole_ = 0;
  int moved_after_micro_batches_ = 0;  // steps run once that waited for every micro-batch (run(), end_phase)
};

std::string schedule_summary(PipelineSchedule asked, int micro, int one_f_one_b, int fallbacks,
                             const DeferredDivision& d) {
  if (asked == PipelineSchedule::kGPipe || micro == 1) return std::string(name_of(asked));  // alike for one
  if (!d.refused.empty()) return fmt::format("GPipe: 1F1B cannot defer the mean loss's division ({})", d.refused);
  const std::string deferred =
      d.sum_gradients ? fmt::format(" (the loss's gradient as a sum, {} gradients divided by its weight after)",
                                    d.divisions)
                      : "";
  if (one_f_one_b > 0 && fallbacks == 0) return "1F1B" + deferred;
  if (one_f_one_b > 0) return fmt::format("1F1B, GPipe in {} phase(s) whose data allow no 1F1B order", fallbacks);
  if (fallbacks > 0) return "GPipe: the step's data allow no 1F1B order";
  return "1F1B asked; no phase has both a forward and a backward half, so GPipe's order";
}

}  // namespace

std::vector<int> placed_stages(const runtime::CanonicalGraph& canonical, int pp, int tp) {
  std::vector<int> placed(canonical.buffers.size(), -1);
  for (size_t s = 0; s < placed.size(); ++s) {
    if (canonical.buffers[s].origin != BufferOrigin::kMaterialized) continue;
    const uint64_t devices = canonical.bindings[s]->placement().devices;
    for (int j = 0; j < pp && devices != 0; ++j)
      if (devices & (uint64_t{1} << (j * tp))) placed[s] = j;  // replica 0's rank 0 of stage j is device j × tp
  }
  return placed;
}

PlannedStep compile_pipeline_plan(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                    const PipelineOptions& options, const std::vector<int64_t>& candidate_rows) {
  const auto started = std::chrono::steady_clock::now();
  const int dp = options.dp, pp = options.stages, tp = std::max(options.tp, 1);
  if (dp * pp * tp > 64) throw runtime::ConfigError("pipeline parallelism: at most 64 devices in this build");
  if (pp > 32) throw runtime::ConfigError(fmt::format("num_stages : {}: at most 32 stages in this build", pp));
  // Values an earlier step left on one stage's replicas stay there: the step's ops follow them.
  const StageCut cut = cut_stages(graph, canonical, pp, placed_stages(canonical, pp, tp));
  // The batch: of the step's batch sizes with a row for every replica (and not splitting), the one whose
  // split leaves the fewest ops without a sharding rule, the most frequent first; micro-batches as many as
  // asked, at most one per row of the smallest replica.
  auto pieces_of = [&](int64_t rows, int micro) {
    std::vector<RowRange> pieces;
    for (int i = 0; i < dp; ++i) {
      const RowRange mine = runtime::split_rows(rows, dp, i);
      for (int k = 0; k < micro; ++k) {
        RowRange p = runtime::split_rows(mine.count, micro, k);
        p.begin += mine.begin;
        pieces.push_back(p);
      }
    }
    return pieces;
  };
  std::optional<BatchSplit> split;
  std::vector<RowRange> pieces;
  int64_t rows = 0;
  int micro = 1;
  // Tensor parallelism: each stage's replicas are groups of tp ranks that split the linear pairs
  // (tensor_parallel_planner.h); beside replicas, the batch splits into equal pieces only (one replica: whole).
  int pairs = 0;
  const SplitSeeds seeds = tp > 1 ? tensor_parallel_seeds(graph, canonical, tp, &pairs, options.linear_pairs) : SplitSeeds{};
  const TensorSplit tensor{tp > 1 ? &seeds : nullptr, tp};
  // Beside TP the pieces (replicas × micro-batches) are equal: as many micro-batches as asked that divide the batch.
  auto micro_for = [&](int64_t r) {
    int m = r > 0 ? static_cast<int>(std::min<int64_t>(options.micro_batches, r / dp)) : 1;
    if (tp > 1)
      while (m > 1 && r % (static_cast<int64_t>(dp) * m) != 0) --m;
    return m;
  };
  std::vector<int64_t> candidates;
  for (int64_t r : candidate_rows)
    if (r >= dp && (tp == 1 || (r % dp == 0 && (dp > 1 || micro_for(r) > 1)))) candidates.push_back(r);
  candidates.push_back(0);
  // Lanes (a replica's tensor rank) alike, every piece of rows as many: two lanes' programs stand for all
  // when asked (PipelineOptions::representative), and only their launches get views.
  auto representative_for = [&](int64_t r, int m) {
    return options.representative && dp * tp > 2 && (r == 0 || r % (int64_t{dp} * m) == 0);
  };
  for (int64_t r : candidates) {
    if (split && split->replicated_fallbacks == 0) break;  // nothing later can have fewer
    const int m = micro_for(r);
    std::vector<RowRange> p = pieces_of(r, m);
    std::vector<char> viewed;  // per device of the split (piece × rank): one of the lanes emitted
    if (representative_for(r, m)) {
      const auto [lanes_dp, lanes_tp] = emitted_lanes(dp, tp, true);
      viewed.assign(p.size() * static_cast<size_t>(tp), 0);
      for (size_t d = 0; d < viewed.size(); ++d)
        viewed[d] = static_cast<int>(d / static_cast<size_t>(tp)) / m < lanes_dp &&
                    static_cast<int>(d % static_cast<size_t>(tp)) < lanes_tp;
    }
    BatchSplit b = split_batch(graph, canonical, p, r, options.order, /*reallocate=*/false, tensor,
                               viewed.empty() ? nullptr : &viewed);
    if (!split || b.replicated_fallbacks < split->replicated_fallbacks) {
      split = std::move(b);
      pieces = std::move(p);
      rows = r;
      micro = m;
    }
  }
  OptimizerSharding sharding;
  const bool sharded = options.distribute_param || options.distribute_low_prec_param;
  if (sharded) {
    std::vector<bool> by_element(graph.size(), false);  // run on each stage over its elements, whole
    for (size_t i = 0; i < graph.size(); ++i) by_element[i] = !cut.element_stage[i].empty();
    sharding = shard_optimizer(graph, canonical, *split, dp * tp, by_element,
                               {.optimizer = options.distribute_param, .low_precision = options.distribute_low_prec_param});
  }
  struct Lowered {
    std::unique_ptr<PipelineEmission> emission;
    PlannedStep plan;
    size_t ring_blocks = 0;
    int ring_depth = 0;
  };
  const bool representative = representative_for(rows, micro);
  // 1F1B with micro-batches: a mean loss's division waits for every micro-batch, so its gradient goes as a
  // sum; the same for every emission below.
  DeferredDivision deferred;
  if (options.schedule == PipelineSchedule::k1F1B && micro > 1)
    deferred = defer_loss_division(graph, canonical, split->steps, cut.forward_end);
  auto lower = [&](bool keep_copies_whole) {
    Lowered l;
    auto make = [&](Rings r) {
      l.emission = std::make_unique<PipelineEmission>(graph, canonical, *split, cut, pp, dp, micro, rows, pieces,
                                                      options.schedule, std::move(r), representative);
      l.emission->recomputes_ = options.order != nullptr;
      l.emission->keeps_copies_whole_ = keep_copies_whole;
      l.emission->run();
    };
    make({});
    // Blocks whose micro-batches are not all alive at once (1F1B's activations) take the rows of a few only:
    // the same programs again, laid out so.
    Rings rings = l.emission->rings();
    l.ring_blocks = rings.size();
    for (const auto& [key, r] : rings) l.ring_depth = std::max(l.ring_depth, r.positions);
    if (!rings.empty()) make(std::move(rings));
    l.plan = l.emission->plan();
    return l;
  };
  Lowered lowered = lower(true);
  // Copies kept whole through the micro-batches (one phase) hold them all along; letting them go after each
  // pass ends the phase there (every micro-batch's activations held until the backward pass): the memory
  // model keeps the lower peak.
  if (lowered.emission->copies_kept_whole_ > 0) {
    Lowered other = lower(false);
    if (max_peak_bytes(other.plan) < max_peak_bytes(lowered.plan)) lowered = std::move(other);
  }
  std::unique_ptr<PipelineEmission>& emission = lowered.emission;
  PlannedStep plan = std::move(lowered.plan);
  const size_t ring_blocks = lowered.ring_blocks;
  const int ring_depth = lowered.ring_depth;
  plan.report.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  plan.report.stand_ins = emission->stand_ins_;
  uint64_t peak = 0;
  for (const auto& p : plan.programs) peak = std::max(peak, p.peak_bytes);
  std::vector<std::string> costs;
  for (double c : cut.stage_cost) costs.push_back(fmt::format("{:.0f}", c));
  plan.report.summary = fmt::format(
      "{} ops on {} devices: {} pipeline stages (forward ops from #{}; costs {}; {} bytes cross the cuts) × {} "
      "replica(s){}, {}, {} micro-batch(es) per replica ({}, {} phases), {} messages of {} bytes between stages, "
      "{} bytes sent by the busiest device, {} replicated fallback op(s), peak +{} bytes per device",
      plan.num_nodes, dp * pp * tp, pp, fmt::join(cut.starts, ", #"), fmt::join(costs, " / "),
      fmt::format("{}", fmt::join(cut.cut_bytes, " + ")), dp,
      tp > 1 ? fmt::format(" × {} ranks (tensor parallel: {} linear pair(s) split over {} ranks, first weight by output "
                           "features, second by input features)", tp, pairs, tp)
             : std::string(),
      rows ? fmt::format("batch {} split by rows", rows) : std::string("batch not split"),
      micro == options.micro_batches ? fmt::format("{}", micro)
                                     : fmt::format("{} (of {} asked: a micro-batch needs a row)", micro,
                                                   options.micro_batches),
      schedule_summary(options.schedule, micro, emission->one_f_one_b_phases_, emission->gpipe_fallbacks_,
                       deferred),
      emission->phases_,
      emission->messages_, emission->transfer_bytes_, plan.report.collective_bytes_per_device, plan.report.replicated_fallbacks, peak);
  if (representative)
    plan.report.summary += fmt::format("; {} of {} devices' programs only, standing for the rest", plan.programs.size(),
                                       dp * pp * tp);
  if (ring_blocks > 0)
    plan.report.summary += fmt::format("; {} blocks of micro-batch rows hold at most {} micro-batch(es) at a time",
                                       ring_blocks, ring_depth);
  if (emission->moved_after_micro_batches_ > 0)
    plan.report.summary += fmt::format("; {} step(s) run once after every micro-batch (nothing in the phase needs "
                                       "them sooner)", emission->moved_after_micro_batches_);
  if (emission->copies_kept_whole_ > 0)
    plan.report.summary += fmt::format("; {} value(s) a pass would let go back to rows kept whole through the "
                                       "micro-batches", emission->copies_kept_whole_);
  if (sharded && dp > 1) plan.report.summary += describe(sharding, dp);
  if (sharded && dp == 1)
    plan.report.summary += "; distribute_param / distribute_low_prec_param: no data-parallel replicas to shard over";
  for (const auto& line : plan.report.fallback_details) runtime::log().debug("{}", line);
  return plan;
}

bool wants_pipeline_stages(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical, int stages,
                           int tp) {
  if (!backward_seeds(graph, canonical).empty()) return true;
  const std::vector<int> placed = placed_stages(canonical, stages, std::max(tp, 1));
  return std::any_of(placed.begin(), placed.end(), [](int j) { return j >= 0; });
}

}  // namespace moreh::scheduler
