#include "scheduler/lowering/tensor_parallel_planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "runtime/base/spdlog_logger.h"
#include "scheduler/analysis/linear_pairs.h"
#include "scheduler/lowering/memory_model.h"
#include "scheduler/lowering/data_parallel_planner.h"
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
                                         const TensorParallelOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const int tp = options.tp, dp = std::max(options.dp, 1), devices = tp * dp;
  int pairs = 0;
  const SplitSeeds seeds = tensor_parallel_seeds(graph, canonical, tp, &pairs);
  // The batch: each candidate that every replica gets an equal part of (the tensor splits' layouts are a
  // piece's, the same on every replica), and no split at all; the cheapest by spmd_cost wins.
  std::vector<int64_t> candidates{0};
  if (dp > 1)
    for (int64_t r : options.candidate_rows)
      if (r >= dp && r % dp == 0 && std::find(candidates.begin(), candidates.end(), r) == candidates.end())
        candidates.push_back(r);
  std::optional<PlannedStep> best;
  int64_t rows = 0;
  std::string tried;
  for (int64_t r : candidates) {
    std::vector<runtime::RowRange> pieces;
    for (int p = 0; p < dp; ++p) pieces.push_back(r ? runtime::split_rows(r, dp, p) : runtime::RowRange{});
    PlannedStep p = lower_candidate(graph, canonical, pieces, r, devices,
                                    {.order = options.order,
                                     .tensor = {&seeds, tp},
                                     .distribute_param = options.distribute_param,
                                     .distribute_low_prec_param = options.distribute_low_prec_param,
                                     .available_bytes = options.available_bytes});
    if (dp > 1)
      tried += fmt::format("{}{}: {:.0f}", tried.empty() ? "" : ", ", r ? fmt::format("batch {}", r) : "not split",
                           spmd_cost(p));
    if (!best || spmd_cost(p) < spmd_cost(*best)) {
      best = std::move(p);
      rows = r;
    }
  }
  PlannedStep plan = std::move(*best);
  const std::string sharding = plan.report.summary;  // the optimizer's sharding, when asked
  for (const auto& line : plan.report.fallback_details) runtime::log().debug("{}", line);
  plan.report.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const std::string batch = dp == 1    ? std::string()
                            : rows > 0 ? fmt::format("batch {} split by rows over {} replicas, ", rows, dp)
                                       : fmt::format("batch not split ({} replicas run all of it), ", dp);
  plan.report.summary = fmt::format(
      "{} ops on {} devices, {}tensor parallel: {} linear pair(s) split over {} ranks (first weight by output "
      "features, second by input features), {} collective bytes per device, {} replicated fallback op(s), peak +{} "
      "bytes per device",
      plan.num_nodes, devices, batch, pairs, tp, plan.report.collective_bytes_per_device,
      plan.report.replicated_fallbacks, max_peak_bytes(plan));
  if (!tried.empty()) plan.report.summary += fmt::format(" (cost of candidates: {})", tried);
  plan.report.summary += sharding;
  if (dp == 1 && (options.distribute_param || options.distribute_low_prec_param))
    plan.report.summary += "; distribute_param / distribute_low_prec_param: no data-parallel replicas to shard over";
  plan.report.split_rows = rows;
  return plan;
}

}  // namespace moreh::scheduler
