#include "scheduler/lowering/tensor_parallel_planner.h"

#include <fmt/format.h>

#include <chrono>

#include "runtime/base/spdlog_logger.h"
#include "scheduler/analysis/linear_pairs.h"
#include "scheduler/lowering/memory_model.h"
#include "scheduler/lowering/spmd_emission.h"

namespace moreh::scheduler {

SplitSeeds tensor_parallel_seeds(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                 int devices, int* pairs) {
  SplitSeeds seeds;
  int used = 0;
  for (const LinearPair& p : find_linear_pairs(graph, canonical)) {
    if (p.hidden % devices != 0 || p.hidden < devices) continue;  // even parts only
    seeds.insert(p.seeds.begin(), p.seeds.end());
    ++used;
  }
  if (pairs) *pairs = used;
  return seeds;
}

PlannedStep compile_tensor_parallel_plan(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                         int devices, const std::vector<uint32_t>* order) {
  const auto start = std::chrono::steady_clock::now();
  int pairs = 0;
  const SplitSeeds seeds = tensor_parallel_seeds(graph, canonical, devices, &pairs);
  const std::vector<runtime::RowRange> pieces(static_cast<size_t>(devices));  // no batch split
  const BatchSplit split = split_batch(graph, canonical, pieces, 0, order, true, &seeds);
  PlannedStep plan = emit_spmd_plan(graph, canonical, split, devices);
  for (const auto& line : plan.report.fallback_details) runtime::log().debug("{}", line);
  plan.report.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  plan.report.summary = fmt::format(
      "{} ops on {} devices, tensor parallel: {} linear pair(s) split (first weight by output features, second by "
      "input features), {} collective bytes per device, {} replicated fallback op(s), peak +{} bytes per device",
      plan.num_nodes, devices, pairs, plan.report.collective_bytes_per_device, plan.report.replicated_fallbacks,
      max_peak_bytes(plan));
  return plan;
}

}  // namespace moreh::scheduler
