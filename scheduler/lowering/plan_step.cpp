#include "scheduler/lowering/plan_step.h"

#include <fmt/format.h>

#include <chrono>
#include <optional>

#include "runtime/base/errors.h"
#include "scheduler/lowering/data_parallel_planner.h"
#include "scheduler/lowering/pipeline_planner.h"
#include "scheduler/lowering/planner.h"
#include "scheduler/fusion/program_fusion.h"
#include "scheduler/analysis/step_analysis.h"

namespace moreh::scheduler {
namespace {

double ms_since(std::chrono::steady_clock::time_point started) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
}

}  // namespace

std::shared_ptr<PlannedStep> plan_step(const PlanRequest& r) {
  const runtime::ParallelSizes layout = runtime::parallel_layout(r.parallelism, r.devices);
  if (const std::string why = runtime::unsupported_parallelism(r.parallelism); !why.empty())
    throw runtime::ConfigError(why);
  const StepAnalysis analysis = analyze_step(r.graph, r.canonical);
  std::shared_ptr<PlannedStep> plan;
  if (layout.pp > 1 || r.parallelism.num_micro_batches > 1) {
    plan = std::make_shared<PlannedStep>(compile_pipeline_plan(
        r.graph, r.canonical, {.stages = layout.pp,
                                       .dp = layout.dp,
                                       .micro_batches = r.parallelism.num_micro_batches,
                                       .schedule = r.parallelism.pipeline_schedule,
                                       .distribute_param = r.parallelism.distribute_param},
        analysis.batch_sizes));
  } else if (layout.dp == 1) {
    const auto started = std::chrono::steady_clock::now();
    std::optional<FusionResult> fusion;
    if (r.fusion) fusion = fuse_elementwise(r.graph, r.canonical, r.fusion_limits);
    const double fusion_ms = ms_since(started);
    plan = std::make_shared<PlannedStep>(compile_plan(r.canonical, {}, fusion ? &*fusion : nullptr));
    plan->report.compile_ms += fusion_ms;
  } else {
    plan = std::make_shared<PlannedStep>(
        compile_data_parallel_plan(r.graph, r.canonical, layout.dp, analysis.batch_sizes,
                                   r.parallelism.distribute_param));
    if (r.fusion) {
      const auto started = std::chrono::steady_clock::now();
      fuse_device_programs(r.graph, r.canonical, *plan, r.fusion_limits);
      plan->report.compile_ms += ms_since(started);
      if (plan->report.fused_nodes > 0)
        plan->report.summary += fmt::format("; {} elementwise ops fused per device ({} launches on device 0)",
                                     plan->report.fused_nodes, plan->report.launches);
    }
  }
  plan->report.batch_sizes = analysis.batch_sizes;
  return plan;
}

bool plan_accepts(const runtime::Placement& p, const runtime::ParallelSizes& layout) {
  if (p.kind == runtime::PlacementKind::kHome) return true;
  if (layout.pp == 1) return p.devices == 0;  // batch splitting speaks of every device
  if (p.devices == 0) return p.kind == runtime::PlacementKind::kReplicate;
  for (int j = 0; j < layout.pp; ++j) {  // one stage's replicas (pipeline_planner.h's layout)
    uint64_t mask = 0;
    for (int i = 0; i < layout.dp; ++i) mask |= uint64_t{1} << (i * layout.pp + j);
    if (p.devices == mask) return true;
  }
  return false;
}

}  // namespace moreh::scheduler
