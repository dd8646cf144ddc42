#include "scheduler/analysis/peak_explanation.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
#include <vector>

#include "scheduler/lowering/memory_model.h"

namespace moreh::scheduler {
namespace {

// What an instruction does, for the line: a launch names its op.
std::string instruction_name(const runtime::Instruction& ins, const runtime::StepGraph& graph) {
  using Kind = runtime::Instruction::Kind;
  switch (ins.kind) {
    case Kind::kLaunch: return fmt::format("{} #{}", runtime::op_name(graph.nodes().at(ins.index).op), ins.index);
    case Kind::kAllocate: return fmt::format("allocate slot {}", ins.index);
    case Kind::kRecv: return fmt::format("receive slot {} from device {}", ins.index, ins.aux);
    case Kind::kAllGather: return fmt::format("all-gather slot {}", ins.index);
    case Kind::kKeepRows: return fmt::format("keep rows of slot {}", ins.index);
    case Kind::kReduceScatter: return fmt::format("reduce-scatter slot {}", ins.index);
    case Kind::kFused: return fmt::format("fused kernel {}", ins.index);
    default: return fmt::format("instruction kind {} on slot {}", static_cast<int>(ins.kind), ins.index);
  }
}

}  // namespace

std::string explain_peak(const runtime::Plan& plan, const runtime::DeviceProgram& program,
                         const runtime::StepGraph& graph, const runtime::CanonicalGraph& cg, size_t top) {
  const PeakMoment m = peak_moment(plan, program, &graph, cg);
  if (program.code.empty()) return fmt::format("device {} runs nothing", program.device);
  // The node that made each slot (its first writer in the step), -1: it existed before the step.
  std::vector<int64_t> maker(cg.buffers.size(), -1);
  std::vector<bool> in_place(cg.buffers.size(), false);  // made by an op that writes its input (copy_, zero_)
  for (size_t i = 0; i < cg.node_outputs.size(); ++i) {
    for (uint32_t s : cg.node_outputs[i])
      if (maker[s] < 0) maker[s] = static_cast<int64_t>(i);
    for (uint16_t w : graph.nodes()[i].written) {
      const uint32_t s = cg.node_inputs[i].at(w);
      if (maker[s] < 0 && cg.buffers[s].origin != runtime::BufferOrigin::kMaterialized) {
        maker[s] = static_cast<int64_t>(i);
        in_place[s] = true;
      }
    }
  }
  std::vector<std::string> parts;
  uint64_t rest = 0, before = 0;
  size_t rest_count = 0;
  std::map<std::string, std::pair<uint64_t, size_t>> by_maker;  // what made them: bytes, slots
  for (const auto& [slot, bytes] : m.held) {
    const bool old = cg.buffers[slot].origin == runtime::BufferOrigin::kMaterialized;
    if (old) before += bytes;
    const std::string maker_op =
        maker[slot] >= 0 ? runtime::op_name(graph.nodes()[maker[slot]].op) + (in_place[slot] ? " (in place)" : "")
        : old            ? std::string("from before the step")
                         : std::string("allocated");
    auto& group = by_maker[maker_op];
    group.first += bytes;
    ++group.second;
    if (parts.size() < top) {
      parts.push_back(maker[slot] >= 0 ? fmt::format("slot {} ({} #{}): {}", slot, maker_op, maker[slot], bytes)
                                       : fmt::format("slot {} ({}): {}", slot, maker_op, bytes));
    } else {
      rest += bytes;
      ++rest_count;
    }
  }
  std::vector<std::pair<std::string, std::pair<uint64_t, size_t>>> groups(by_maker.begin(), by_maker.end());
  std::stable_sort(groups.begin(), groups.end(),
                   [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  std::vector<std::string> sums;
  for (size_t g = 0; g < groups.size() && g < 8; ++g)
    sums.push_back(fmt::format("{} × {}: {}", groups[g].first, groups[g].second.second, groups[g].second.first));
  return fmt::format(
      "device {} peaks at +{} bytes after instruction {} of {} ({}{}); held then: {}{}; {} bytes of them from before "
      "the step; by what made them: {}",
      program.device, m.bytes, m.instruction, program.code.size(), instruction_name(program.code.at(m.instruction), graph),
      m.transient ? fmt::format(", {} bytes only during it", m.transient) : std::string(), fmt::join(parts, ", "),
      rest_count ? fmt::format(" and {} more slot(s) of {} bytes", rest_count, rest) : std::string(), before,
      fmt::join(sums, ", "));
}

}  // namespace moreh::scheduler
