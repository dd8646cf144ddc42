#include "scheduler/lowering/plan_step.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <optional>

#include "runtime/base/errors.h"
#include "scheduler/lowering/data_parallel_planner.h"
#include "scheduler/lowering/pipeline_planner.h"
#include "scheduler/lowering/memory_model.h"
#include "scheduler/lowering/planner.h"
#include "scheduler/lowering/recomputation.h"
#include "scheduler/lowering/tensor_parallel_planner.h"
#include "scheduler/fusion/program_fusion.h"
#include "scheduler/analysis/step_analysis.h"

namespace moreh::scheduler {
namespace {

double ms_since(std::chrono::steady_clock::time_point started) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
}

// The plan under the request's layout, its nodes run in `recompute`'s order when given.
std::shared_ptr<PlannedStep> lower(const PlanRequest& r, const runtime::ParallelSizes& layout,
                                   const StepAnalysis& analysis, const Recomputation* recompute) {
  const std::vector<uint32_t>* order = recompute ? &recompute->order : nullptr;
  // Fusion: over the recorded order (a one-device plan), or over each device's program as it runs (batch
  // splitting, and a recomputing order's reruns).
  const bool graph_fusion = r.fusion && !order && layout.dp == 1 && layout.tp == 1;
  // (Not under tensor parallelism yet: its local views have strides of their own, which fused kernels do not take.)
  const bool program_fusion = r.fusion && !graph_fusion && layout.tp == 1;
  std::shared_ptr<PlannedStep> plan;
  const bool pipelined = layout.pp > 1 || r.parallelism.num_micro_batches > 1;
  if (pipelined && !wants_pipeline_stages(r.graph, r.canonical, layout.pp, layout.tp)) {
    // Nothing to pipeline (pipeline_planner.h): batch splitting over every device, values left replicated.
    plan = std::make_shared<PlannedStep>(
        compile_data_parallel_plan(r.graph, r.canonical, layout.dp * layout.pp * layout.tp, analysis.batch_sizes,
                                   /*distribute_param=*/false, order, r.available_bytes, /*low_prec=*/false,
                                   r.representative));
    plan->report.summary += "; no backward pass and nothing on pipeline stages yet: batch splitting, not stages";
  } else if (pipelined) {
    plan = std::make_shared<PlannedStep>(compile_pipeline_plan(
        r.graph, r.canonical, {.stages = layout.pp,
                                       .dp = layout.dp,
                                       .tp = layout.tp,
                                       .micro_batches = r.parallelism.num_micro_batches,
                                       .schedule = r.parallelism.pipeline_schedule,
                                       .distribute_param = r.parallelism.distribute_param,
                                       .distribute_low_prec_param = r.parallelism.distribute_low_prec_param,
                                       .order = order,
                                       .representative = r.representative,
                                       .linear_pairs = r.linear_pairs},
        analysis.batch_sizes));
    return plan;  // pipelines are not fused
  } else if (layout.tp > 1) {
    plan = std::make_shared<PlannedStep>(compile_tensor_parallel_plan(
        r.graph, r.canonical,
        {.tp = layout.tp,
         .dp = layout.dp,
         .candidate_rows = analysis.batch_sizes,
         .order = order,
         .distribute_param = r.parallelism.distribute_param,
         .distribute_low_prec_param = r.parallelism.distribute_low_prec_param,
         .available_bytes = r.available_bytes,
         .linear_pairs = r.linear_pairs,
         .representative = r.representative}));
  } else if (layout.dp == 1) {
    const auto started = std::chrono::steady_clock::now();
    std::optional<FusionResult> fused;
    if (graph_fusion) fused = fuse_elementwise(r.graph, r.canonical, r.fusion_limits);
    const double fusion_ms = ms_since(started);
    plan = std::make_shared<PlannedStep>(compile_plan(r.canonical, {}, fused ? &*fused : nullptr, recompute));
    plan->report.compile_ms += fusion_ms;
  } else {
    plan = std::make_shared<PlannedStep>(
        compile_data_parallel_plan(r.graph, r.canonical, layout.dp, analysis.batch_sizes,
                                   r.parallelism.distribute_param, order, r.available_bytes,
                                   r.parallelism.distribute_low_prec_param, r.representative));
  }
  if (program_fusion) {
    const auto started = std::chrono::steady_clock::now();
    fuse_device_programs(r.graph, r.canonical, *plan, r.fusion_limits);
    if (order) {  // what a group never stores takes no memory, a release a group needs moves after it
      for (auto& p : plan->programs) p.peak_bytes = program_peak(*plan, p, &r.graph, r.canonical);
      plan->report.summary += fmt::format("; peak +{} bytes per device once fused", max_peak_bytes(*plan));
    }
    plan->report.compile_ms += ms_since(started);
    if (plan->report.fused_nodes > 0)
      plan->report.summary += fmt::format("; {} elementwise ops fused per device ({} launches on device 0)",
                                   plan->report.fused_nodes, plan->report.launches);
  }
  return plan;
}

}  // namespace

std::shared_ptr<PlannedStep> plan_step(const PlanRequest& r) {
  const runtime::ParallelSizes layout = runtime::parallel_layout(r.parallelism, r.devices);
  const auto started = std::chrono::steady_clock::now();
  const StepAnalysis analysis = analyze_step(r.graph, r.canonical);
  if (!r.parallelism.recomputation) {
    std::shared_ptr<PlannedStep> plan = lower(r, layout, analysis, nullptr);
    plan->report.batch_sizes = analysis.batch_sizes;
    return plan;
  }
  // Recomputation: the forward pass's last few checkpoints are tried as where the kept tail begins (the
  // backward pass would make what follows them again at once); the memory model picks the lowest peak, the
  // fewest ops run again among equals. For the search (PlanRequest::fits), the longest tail kept first, and
  // the first that fits is taken.
  const bool micro_batches = r.parallelism.num_micro_batches > 1;
  std::shared_ptr<PlannedStep> best;
  Recomputation chosen;
  std::optional<Recomputation> nothing;  // a tail with nothing to recompute (a long one may keep every activation)
  std::vector<std::string> tried;
  std::vector<size_t> tails(kCheckpointTails.begin(), kCheckpointTails.end());
  if (r.fits) std::reverse(tails.begin(), tails.end());
  for (size_t tail : tails) {
    Recomputation rc = plan_recomputation(r.graph, r.canonical, tail, micro_batches ? analysis.batch_sizes
                                                                                     : std::vector<int64_t>{});
    if (!rc.none.empty()) {
      if (r.fits) {  // a shorter tail may still drop something
        if (!nothing) nothing = std::move(rc);
        continue;
      }
      if (!best) chosen = std::move(rc);
      break;
    }
    if (best && rc.order == chosen.order) continue;
    std::shared_ptr<PlannedStep> plan = lower(r, layout, analysis, &rc);
    tried.push_back(fmt::format("{} kept: peak +{}, {} op(s) again", tail, max_peak_bytes(*plan), rc.recomputed_nodes));
    const bool fits = r.fits && r.fits(*plan);
    // The lowest peak; among equal peaks, the fewest ops run again (the longest tail kept).
    if (fits || !best || max_peak_bytes(*plan) < max_peak_bytes(*best) ||
        (max_peak_bytes(*plan) == max_peak_bytes(*best) && rc.recomputed_nodes < chosen.recomputed_nodes)) {
      best = std::move(plan);
      chosen = std::move(rc);
    }
    if (fits) break;
  }
  if (!best && nothing) chosen = std::move(*nothing);
  if (!best) best = lower(r, layout, analysis, nullptr);
  best->report.summary += "; " + describe(chosen);
  best->report.recomputed_ops = chosen.recomputed_nodes;
  best->report.dropped_activation_bytes = chosen.dropped_bytes;
  if (chosen.none.empty()) {
    best->report.summary += fmt::format(" (checkpoints at the end {})", fmt::join(tried, ", "));
  }
  best->report.compile_ms = ms_since(started);  // every try, and the recomputation's own planning
  best->report.batch_sizes = analysis.batch_sizes;
  return best;
}

bool plan_accepts(const runtime::Placement& p, const runtime::ParallelSizes& layout) {
  using runtime::PlacementKind;
  if (p.kind == PlacementKind::kHome) return true;
  const bool split = p.kind == PlacementKind::kShard || p.kind == PlacementKind::kPartial;
  // Along one axis of a mesh of replicas × tensor ranks (every device's, or a pipeline stage's): the tensor
  // ranks of a replica, or a rank's replicas (pp × tp devices apart beside pipeline stages).
  const bool mesh = layout.tp > 1 && layout.dp > 1;
  auto on_axis = [&] {
    if (p.inner_rows > 0)  // TP's parts, each in rows over the replicas (the sharded optimizer's state)
      return p.ranks == layout.tp && p.stride == 1 && p.inner_ranks == layout.dp &&
             p.inner_stride == layout.pp * layout.tp;
    return (p.ranks == layout.tp && p.stride == 1) || (p.ranks == layout.dp && p.stride == layout.pp * layout.tp);
  };
  if (p.inner_rows > 0 && !(mesh && split)) return false;
  if (layout.pp == 1) {
    if (p.devices != 0) return false;  // batch splitting and TP speak of every device
    if (mesh) return split ? on_axis() : p.ranks == 0;
    if (p.ranks != 0) return false;
    return true;  // split along a later dimension too: batch splitting gathers it (re-laid in its blocks)
  }
  if (p.devices == 0) return p.kind == PlacementKind::kReplicate && p.ranks == 0;
  bool stage = false;  // one stage's devices (pipeline_planner.h's layout)
  for (int j = 0; j < layout.pp && !stage; ++j) {
    uint64_t mask = 0;
    for (int i = 0; i < layout.dp; ++i)
      for (int r = 0; r < layout.tp; ++r) mask |= uint64_t{1} << ((i * layout.pp + j) * layout.tp + r);
    stage = p.devices == mask;
  }
  if (!stage) return false;
  if (mesh && split) return on_axis();
  if (p.ranks != 0) return false;
  // Split along a later dimension: TP's parts; without TP, pipeline stages cannot gather it.
  return !(p.kind == PlacementKind::kShard && p.outer != 1 && layout.tp == 1);
}

}  // namespace moreh::scheduler
