#include "scheduler/lowering/memory_model.h"

#include <algorithm>

#include "runtime/plan/placement.h"
#include <vector>

namespace moreh::scheduler {

using runtime::Instruction;
using Kind = Instruction::Kind;

uint64_t view_end(const runtime::TensorRef& ref, const runtime::LocalRef& local) {
  const runtime::Dims& sizes = local.sizes;
  const runtime::Dims& strides = local.strides.empty() ? ref.strides : local.strides;
  const int64_t offset = local.offset;
  int64_t extent = 1;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 0) return 0;
    extent += (sizes[d] - 1) * strides[d];
  }
  return static_cast<uint64_t>(offset + extent) * ref.itemsize;
}

uint64_t max_peak_bytes(const runtime::Plan& plan) {
  uint64_t peak = 0;
  for (const auto& p : plan.programs) peak = std::max(peak, p.peak_bytes);
  return peak;
}

DeviceMemory::DeviceMemory(const runtime::Plan& plan, int device, const runtime::StepGraph* graph,
                           const runtime::CanonicalGraph& cg)
    : plan_(plan), device_(device), graph_(graph), cg_(cg), held_(cg.buffers.size(), 0) {
  // What the device holds of the values from before the step, as their placements say: releasing one lowers
  // the count below where the step began.
  const int devices = std::max(plan.num_devices, 1);
  for (size_t s = 0; s < cg.buffers.size(); ++s) {
    if (cg.buffers[s].origin != runtime::BufferOrigin::kMaterialized) continue;
    const runtime::Placement p =
        s < cg.bindings.size() && cg.bindings[s] ? cg.bindings[s]->placement() : runtime::Placement{};
    const int64_t b = static_cast<int64_t>(runtime::placement_bytes(p, cg.buffers[s].bytes, devices, device));
    held_[s] = b;
    total_ += b;
  }
  start_ = peak_ = total_;
}

void DeviceMemory::set(uint32_t s, int64_t b) {
  if (apart_slots_ && (*apart_slots_)[s]) apart_ += b - held_[s];
  total_ += b - held_[s];
  held_[s] = b;
  peak_ = std::max(peak_, total_);
}

void DeviceMemory::apply(const runtime::DeviceProgram& program, const Instruction& ins) {
  const uint32_t s = ins.index;
  switch (ins.kind) {
    case Kind::kAllocate:
      set(s, static_cast<int64_t>(program.sizes.empty() ? cg_.buffers[s].bytes : program.sizes.at(ins.aux)));
      break;
    case Kind::kRecv:
      if (held_[s] == 0)
        set(s, static_cast<int64_t>(ins.range ? program.ranges.at(ins.range - 1).block_bytes : cg_.buffers[s].bytes));
      break;
    case Kind::kBroadcast:
      if (held_[s] == 0) set(s, static_cast<int64_t>(cg_.buffers[s].bytes));
      break;
    case Kind::kAllGather: {  // the whole value beside the device's part (and, split along a later
      // dimension, the parts as they arrive, before they are laid into its blocks)
      const bool geometry = ins.aux || s < plan_.slots.size();
      const runtime::SlotInfo info = geometry ? runtime::geometry_of(plan_, program, ins) : runtime::SlotInfo{};
      const int64_t whole = static_cast<int64_t>(runtime::whole_bytes(info, cg_.buffers[s].bytes));
      transient(info.outer > 1 ? 2 * whole : whole);
      set(s, whole);
      break;
    }
    case Kind::kRelease: set(s, 0); break;
    case Kind::kKeepRows:         // the device's rows of the whole value, copied out of it
    case Kind::kReduceScatter: {  // or of the sum of everyone's
      const runtime::SlotInfo& info = runtime::geometry_of(plan_, program, ins);
      const uint64_t row = info.row_bytes;
      if (row == 0) break;
      int ranks = plan_.num_devices, rank = device_;
      if (ins.group) {
        const auto& members = plan_.groups.at(ins.group - 1);
        ranks = static_cast<int>(members.size());
        rank = static_cast<int>(std::find(members.begin(), members.end(), device_) - members.begin());
      }
      const uint64_t outer = std::max<uint64_t>(info.outer, 1), whole = runtime::whole_bytes(info, cg_.buffers[s].bytes);
      const auto rows = runtime::split_rows(static_cast<int64_t>(whole / (row * outer)), ranks, rank);
      const int64_t mine = static_cast<int64_t>(row * outer) * rows.count;
      // A sum split along a later dimension is laid rank after rank in a copy of its own first.
      transient(ins.kind == Kind::kReduceScatter && outer > 1 ? mine + static_cast<int64_t>(whole) : mine);
      set(s, mine);
      break;
    }
    case Kind::kFused:  // the results it stores (the values only the kernel reads take nothing)
      for (const auto& out : program.fused.at(ins.index).outputs)
        if (out.fresh) set(cg_.node_outputs.at(out.node).at(out.index), static_cast<int64_t>(cg_.buffers[cg_.node_outputs.at(out.node).at(out.index)].bytes));
      break;
    case Kind::kLaunch: {
      const runtime::LocalLaunch* local = ins.aux ? &program.launches.at(ins.aux - 1) : nullptr;
      if (!local) {  // as recorded: every output whole
        for (uint32_t o : cg_.node_outputs[ins.index]) set(o, static_cast<int64_t>(cg_.buffers[o].bytes));
        break;
      }
      const auto& node = graph_->nodes()[ins.index];
      const auto& outs = cg_.node_outputs[ins.index];
      int64_t fresh_joined = 0;
      std::vector<std::pair<uint32_t, int64_t>> bound;
      const bool by_element = local && !local->elements.empty();
      const runtime::ListElements lists = by_element ? runtime::list_elements(node) : runtime::ListElements{};
      size_t kept = 0;  // the output's index among those the launch keeps (its refs', by list element)
      for (size_t k = 0; k < outs.size(); ++k) {
        const uint32_t o = outs[k];
        int64_t b = static_cast<int64_t>(cg_.buffers[o].bytes);
        if (by_element && lists.outputs[k] >= 0 &&
            !std::binary_search(local->elements.begin(), local->elements.end(), static_cast<uint32_t>(lists.outputs[k])))
          continue;  // the outputs of its own list elements only
        const size_t at = kept++;
        if (at < local->outputs.size())
          b = std::min<int64_t>(b, static_cast<int64_t>(view_end(node.outputs[k], local->outputs[at])));
        const bool joins = !local->joins.empty() &&
                           local->joins[at] != runtime::LocalLaunch::Join::kFresh && held_[o] > 0;
        if (joins) fresh_joined += b;  // beside the block it joins, until it is added or copied in
        else bound.emplace_back(o, b);
      }
      for (const auto& [o, b] : bound) set(o, b);
      transient(fresh_joined);
      break;
    }
    default: break;
  }
}

uint64_t program_peak(const runtime::Plan& plan, const runtime::DeviceProgram& program,
                      const runtime::StepGraph* graph, const runtime::CanonicalGraph& cg) {
  DeviceMemory memory(plan, program.device, graph, cg);
  for (const Instruction& ins : program.code) memory.apply(program, ins);
  return memory.peak();
}

PeakMoment peak_moment(const runtime::Plan& plan, const runtime::DeviceProgram& program,
                       const runtime::StepGraph* graph, const runtime::CanonicalGraph& cg) {
  PeakMoment m;
  {
    DeviceMemory memory(plan, program.device, graph, cg);
    for (size_t i = 0; i < program.code.size(); ++i) {
      const uint64_t before = memory.peak();
      memory.apply(program, program.code[i]);
      if (memory.peak() > before) m.instruction = i;
    }
    m.bytes = memory.peak();
  }
  DeviceMemory memory(plan, program.device, graph, cg);  // again, to the peak's instruction
  for (size_t i = 0; i <= m.instruction && i < program.code.size(); ++i) memory.apply(program, program.code[i]);
  m.transient = m.bytes > static_cast<uint64_t>(std::max<int64_t>(memory.now(), 0))
                    ? m.bytes - static_cast<uint64_t>(std::max<int64_t>(memory.now(), 0))
                    : 0;
  for (uint32_t s = 0; s < cg.buffers.size(); ++s)
    if (memory.held(s) > 0) m.held.emplace_back(s, memory.held(s));
  std::stable_sort(m.held.begin(), m.held.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return m;
}

HeldMoment peak_without(const runtime::Plan& plan, const runtime::DeviceProgram& program,
                        const runtime::StepGraph* graph, const runtime::CanonicalGraph& cg,
                        const std::vector<char>& apart) {
  HeldMoment m;
  DeviceMemory memory(plan, program.device, graph, cg);
  memory.count_apart(&apart);
  for (size_t i = 0; i < program.code.size(); ++i) {
    memory.apply(program, program.code[i]);
    const int64_t kept = memory.now() - memory.apart();
    if (kept > 0 && static_cast<uint64_t>(kept) > m.bytes) m.bytes = static_cast<uint64_t>(kept), m.instruction = i;
  }
  return m;
}

}  // namespace moreh::scheduler
