#include "scheduler/lowering/planner.h"

#include "scheduler/lowering/liveness.h"
#include "scheduler/lowering/memory_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace moreh::scheduler {

using runtime::BufferOrigin;
using runtime::Instruction;

PlannedStep compile_plan(const runtime::CanonicalGraph& graph, const PlannerOptions& options,
                           const FusionResult* fusion, const Recomputation* recompute) {
  if (options.num_devices != 1)
    throw std::invalid_argument("compile_plan: only one physical device is supported in this build");
  auto start = std::chrono::steady_clock::now();
  const size_t num_nodes = graph.node_inputs.size();
  const size_t num_slots = graph.buffers.size();

  if (fusion && (fusion->runs_at.size() != num_nodes || fusion->unstored.size() != num_slots))
    throw std::invalid_argument("compile_plan: the fusion result is for another graph");
  const std::vector<uint32_t>* order = recompute ? &recompute->order : nullptr;
  if (order && fusion) throw std::invalid_argument("compile_plan: a recomputing order is not fused");
  // The position of each launch: the recorded order, or the order given (a node listed again runs again);
  // a fused node where its group's last node stood (an early group's: its first).
  const size_t positions = order ? order->size() : num_nodes;
  auto node_at = [&](size_t p) -> uint32_t { return order ? (*order)[p] : static_cast<uint32_t>(p); };
  auto stored = [&](uint32_t s) { return !fusion || !fusion->unstored[s]; };
  std::vector<std::vector<uint32_t>> runs_here(positions);
  for (size_t p = 0; p < positions; ++p)
    runs_here[fusion ? static_cast<size_t>(fusion->runs_at[p]) : p].push_back(node_at(p));
  // Slots to release after each position: where their value is dead.
  std::vector<std::vector<uint32_t>> release_after =
      dead_after(positions, num_slots, [&](size_t p, std::vector<uint32_t>& touched, std::vector<uint32_t>& fresh) {
        for (uint32_t n : runs_here[p]) {
          touched.insert(touched.end(), graph.node_inputs[n].begin(), graph.node_inputs[n].end());
          touched.insert(touched.end(), graph.node_outputs[n].begin(), graph.node_outputs[n].end());
        }
        if (order) fresh = recompute->made_at[p];
      });
  for (auto& slots : release_after)
    slots.erase(std::remove_if(slots.begin(), slots.end(),
                               [&](uint32_t s) { return graph.buffers[s].live_after || !stored(s); }),
                slots.end());

  PlannedStep plan;
  plan.graph_hash = graph.hash;
  plan.num_nodes = num_nodes;
  runtime::DeviceProgram program;
  program.device = 0;
  program.code.reserve(num_nodes * 2);
  // The nodes whose inputs are allocated at each position: a node's own, or an early group's first (which
  // runs nodes from later on).
  std::vector<std::vector<uint32_t>> starting_at(positions);
  for (size_t p = 0; p < positions; ++p)
    starting_at[static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(p), fusion ? static_cast<int64_t>(fusion->runs_at[p])
                                                                                  : static_cast<int64_t>(p)))]
        .push_back(node_at(p));
  std::vector<bool> allocated(num_slots, false);
  uint64_t releases = 0, allocations = 0;
  for (size_t p = 0; p < positions; ++p) {
    for (uint32_t k : starting_at[p])
      for (uint32_t s : graph.node_inputs[k]) {
        if (graph.buffers[s].origin == BufferOrigin::kUnmaterialized && !allocated[s]) {
          allocated[s] = true;
          program.code.push_back({Instruction::Kind::kAllocate, s});
          ++allocations;
        }
      }
    const uint32_t n = node_at(p);
    const int32_t group = fusion ? fusion->group_of[n] : -1;
    if (group < 0) {
      program.code.push_back({Instruction::Kind::kLaunch, n});
      ++plan.report.launches;
    } else if (fusion->runs_at[n] == n) {
      program.code.push_back({Instruction::Kind::kFused, static_cast<uint32_t>(group)});
      ++plan.report.launches;
    }
    for (uint32_t s : release_after[p]) {
      program.code.push_back({Instruction::Kind::kRelease, s});
      allocated[s] = false;  // a node that runs again gives it memory again
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
