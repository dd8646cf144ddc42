// What the scheduler says about a plan: its log line, how long planning took, what the planner chose and
// why (the batch it split, the ops with no sharding rule), its costs and its schedule. Kept beside the
// runtime::Plan the executor runs, which holds none of it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/plan/program.h"
#include "scheduler/analysis/plan_timeline.h"

namespace moreh::scheduler {

struct PlanReport {
  std::string summary;  // one line for the log
  double compile_ms = 0;
  // The step's predicted time on the engine's device profile (search/step_cost.h), once the profile is known
  // (Advanced Parallelization ran, or torch.moreh.option.device_profile() was asked); 0 before.
  double predicted_ms = 0;
  // The leading dimensions of the step's data inputs, most frequent first (analysis/step_analysis.h).
  std::vector<int64_t> batch_sizes;
  // With several devices: the ops that had no sharding rule and ran replicated on gathered inputs, the
  // bytes each device sends in the step's collectives and the bytes its kernels write (the cost model's).
  uint64_t replicated_fallbacks = 0;
  std::vector<std::string> fallback_ops;      // "aten::cumsum ×2"
  std::vector<std::string> fallback_details;  // per node, why (filled when the log is at debug)
  uint64_t collective_bytes_per_device = 0;
  uint64_t work_bytes_per_device = 0;
  int64_t split_rows = 0;     // the batch split by rows (0: not split)
  uint64_t fused_nodes = 0;   // nodes that run inside generated kernels
  uint64_t launches = 0;      // kernels the program launches per step (fused ones count once)
  // Recomputation (lowering/recomputation.h): launches added to run nodes again, and the activation bytes no
  // longer held from the forward to the backward pass.
  uint64_t recomputed_ops = 0;
  uint64_t dropped_activation_bytes = 0;
  // The search's quick lowering (plan_step.h, PlanRequest::representative): per device, the device whose
  // program it runs alike (itself where its own was emitted); empty: every device has its program. Such a
  // plan is measured, never run.
  std::vector<int> stand_ins;
  std::optional<PlanTimeline> timeline;  // plans over several devices: the schedule on a clock
  // Steps that ran this plan. Only a step graph that recurs has per-step data: the first graph of a
  // script also uploads the model's parameters, which are host copies too. The engine's lock guards it.
  mutable uint64_t uses = 0;
};

// A plan with the scheduler's report on it, as the planners return it and the plan cache keeps it; the
// executor is given the runtime::Plan part only.
struct PlannedStep : runtime::Plan {
  PlanReport report;
};

}  // namespace moreh::scheduler
