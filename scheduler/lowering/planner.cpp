#include "scheduler/lowering/planner.h"

#include "scheduler/lowering/memory_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace moreh::scheduler {

using runtime::BufferOrigin;
using runtime::Instruction;

PlannedStep compile_plan(const runtime::CanonicalGraph& graph, const PlannerOptions& options,
                           const FusionResult* fusion) {
  if (options.num_devices != 1)
    throw std::invalid_argument("compile_plan: only one physical device is supported in this build");
  auto start = std::chrono::steady_clock::now();
  const size_t num_nodes = graph.node_inputs.size();
  const size_t num_slots = graph.buffers.size();

  if (fusion && (fusion->runs_at.size() != num_nodes || fusion->unstored.size() != num_slots))
    throw std::invalid_argument("compile_plan: the fusion result is for another graph");
  // Where each node runs: a fused node where its group's last node stood (an early group's: its first).
  auto runs_at = [&](size_t n) -> int64_t { return fusion ? fusion->runs_at[n] : static_cast<int64_t>(n); };
  auto stored = [&](uint32_t s) { return !fusion || !fusion->unstored[s]; };
  // Last position that touches each slot.
  std::vector<int64_t> last_use(num_slots, -1);
  for (size_t n = 0; n < num_nodes; ++n) {
    for (uint32_t s : graph.node_inputs[n]) last_use[s] = std::max(last_use[s], runs_at(n));
    for (uint32_t s : graph.node_outputs[n]) last_use[s] = std::max(last_use[s], runs_at(n));
  }
  // Slots to release after each position.
  std::vector<std::vector<uint32_t>> release_after(num_nodes);
  for (size_t s = 0; s < num_slots; ++s)
    if (!graph.buffers[s].live_after && last_use[s] >= 0 && stored(static_cast<uint32_t>(s)))
      release_after[last_use[s]].push_back(static_cast<uint32_t>(s));

  PlannedStep plan;
  plan.graph_hash = graph.hash;
  plan.num_nodes = num_nodes;
  runtime::DeviceProgram program;
  program.device = 0;
  program.code.reserve(num_nodes * 2);
  // The nodes whose inputs are allocated at each position: a node's own, or an early group's first (which
  // runs nodes from later on).
  std::vector<std::vector<uint32_t>> starting_at(num_nodes);
  for (size_t n = 0; n < num_nodes; ++n)
    starting_at[static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(n), runs_at(n)))].push_back(
        static_cast<uint32_t>(n));
  std::vector<bool> allocated(num_slots, false);
  uint64_t releases = 0, allocations = 0;
  for (size_t n = 0; n < num_nodes; ++n) {
    for (uint32_t k : starting_at[n])
      for (uint32_t s : graph.node_inputs[k]) {
        if (graph.buffers[s].origin == BufferOrigin::kUnmaterialized && !allocated[s]) {
          allocated[s] = true;
          program.code.push_back({Instruction::Kind::kAllocate, s});
          ++allocations;
        }
      }
    const int32_t group = fusion ? fusion->group_of[n] : -1;
    if (group < 0) {
      program.code.push_back({Instruction::Kind::kLaunch, static_cast<uint32_t>(n)});
      ++plan.report.launches;
    } else if (fusion->runs_at[n] == n) {
      program.code.push_back({Instruction::Kind::kFused, static_cast<uint32_t>(group)});
      ++plan.report.launches;
    }
    for (uint32_t s : release_after[n]) {
      program.code.push_back({Instruction::Kind::kRelease, s});
      ++releases;
    }
  }
  if (fusion) {
    program.fused = fusion->launches;
    plan.report.fused_nodes = fusion->fused_nodes;
  }
  program.peak_bytes = program_peak(plan, program, nullptr, graph);  // values a group never stores take nothing
  plan.programs.push_back(std::move(program));
  plan.report.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  plan.report.summary = fmt::format("{} ops, {} buffers ({} allocated, {} released in the step), peak +{} bytes on device 0",
                             num_nodes, num_slots, allocations, releases, plan.programs[0].peak_bytes);
  if (fusion && !fusion->launches.empty())
    plan.report.summary += fmt::format("; {} elementwise ops fused into {} kernels ({} launches)", plan.report.fused_nodes,
                                fusion->launches.size(), plan.report.launches);
  return plan;
}

}  // namespace moreh::scheduler
