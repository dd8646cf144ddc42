#include "scheduler/lowering/data_parallel_planner.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "runtime/base/spdlog_logger.h"
#include "scheduler/lowering/batch_split.h"
#include "scheduler/lowering/memory_model.h"
#include "scheduler/lowering/optimizer_sharding.h"
#include "scheduler/lowering/spmd_emission.h"

namespace moreh::scheduler {

using runtime::Instruction;
using runtime::RowRange;
using Kind = Instruction::Kind;

PlannedStep lower_candidate(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                            const std::vector<RowRange>& pieces, int64_t rows, int devices,
                            const CandidateOptions& options) {
  const int replicas = devices / std::max(options.tensor.ranks, 1);
  const bool sharded = replicas > 1 && (options.distribute_param || options.distribute_low_prec_param);
  auto lower = [&](bool params_in_rows) {
    BatchSplit split = split_batch(graph, canonical, pieces, rows, options.order, true, options.tensor);
    OptimizerSharding sharding;
    if (sharded)
      sharding = shard_optimizer(graph, canonical, split, devices, {},
                                 {.optimizer = options.distribute_param,
                                  .params_in_rows = params_in_rows,
                                  .low_precision = options.distribute_low_prec_param});
    gather_all_reduces(graph, canonical, split.steps);
    const bool alike = std::all_of(pieces.begin(), pieces.end(), [&](const RowRange& r) { return r.count == pieces[0].count; });
    PlannedStep p = emit_spmd_plan(graph, canonical, split, devices, options.representative && (rows == 0 || alike));
    if (sharded) p.report.summary = describe(sharding, replicas);
    return p;
  };
  PlannedStep p = lower(false);
  // ZeRO-3 where memory demands it: when the ZeRO-2 plan's peak does not fit what the devices have free,
  // the parameters rest in rows and are gathered for each pass, if that lowers the peak.
  if (sharded && options.distribute_param && options.available_bytes > 0 && max_peak_bytes(p) > options.available_bytes) {
    PlannedStep q = lower(true);
    if (max_peak_bytes(q) < max_peak_bytes(p)) {
      q.report.summary +=
          fmt::format(" (ZeRO-2's peak +{} bytes is over the {} bytes free)", max_peak_bytes(p), options.available_bytes);
      p = std::move(q);
    }
  }
  return p;
}

PlannedStep compile_data_parallel_plan(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                         int devices, const std::vector<int64_t>& candidate_rows,
                                         bool distribute_param, const std::vector<uint32_t>* order,
                                         uint64_t available_bytes, bool distribute_low_prec_param,
                                         bool representative) {
  auto start = std::chrono::steady_clock::now();
  // Each candidate batch (and no split at all) is lowered; the cheapest by spmd_cost wins. Lowering takes well
  // under a millisecond for a GPT step.
  std::optional<PlannedStep> best;
  int64_t rows = 0;
  const auto cost = spmd_cost;
  std::vector<int64_t> candidates{0};
  for (int64_t r : candidate_rows)
    if (r >= devices && std::find(candidates.begin(), candidates.end(), r) == candidates.end()) candidates.push_back(r);
  std::string tried;
  for (int64_t r : candidates) {
    std::vector<RowRange> pieces;
    for (int d = 0; d < devices; ++d) pieces.push_back(runtime::split_rows(r, devices, d));
    PlannedStep p = lower_candidate(graph, canonical, pieces, r, devices,
                                    {.order = order,
                                     .distribute_param = distribute_param,
                                     .distribute_low_prec_param = distribute_low_prec_param,
                                     .available_bytes = available_bytes,
                                     .representative = representative});
    tried += fmt::format("{}{}: {:.0f}", tried.empty() ? "" : ", ", r ? fmt::format("batch {}", r) : "not split", cost(p));
    if (!best || cost(p) < cost(*best)) {
      best = std::move(p);
      rows = r;
    }
  }
  PlannedStep plan = std::move(*best);
  for (const auto& line : plan.report.fallback_details) runtime::log().debug("{}", line);
  plan.report.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  uint64_t peak = 0;
  for (const auto& p : plan.programs) peak = std::max(peak, p.peak_bytes);
  plan.report.summary = fmt::format(
      "{} ops on {} devices, {}, {} collective bytes per device, {} replicated fallback op(s), peak +{} bytes per device "
      "(cost of candidates: {})",
      plan.num_nodes, devices, rows ? fmt::format("batch {} split by rows", rows) : std::string("not split (replicated)"),
      plan.report.collective_bytes_per_device, plan.report.replicated_fallbacks, peak, tried) + plan.report.summary;
  plan.report.split_rows = rows;
  return plan;
}

}  // namespace moreh::scheduler
