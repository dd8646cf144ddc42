// The one planning seam: what the engine asks of the scheduler for a step, and the plan it gets back.
#pragma once
#include <functional>
#include <memory>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "runtime/config/parallel_config.h"
#include "runtime/plan/program.h"
#include "scheduler/plan_report.h"
#include "scheduler/analysis/linear_pairs.h"
#include "scheduler/fusion/elementwise_fusion.h"

namespace moreh::scheduler {

struct PlanRequest {
  const runtime::StepGraph& graph;
  const runtime::CanonicalGraph& canonical;
  int devices = 1;                       // physical devices behind the virtual one
  runtime::ParallelConfig parallelism;   // the layout asked for (set_parallelism / MOREH_PARALLELISM)
  bool fusion = false;                   // run chains of elementwise nodes as generated kernels
  FusionLimits fusion_limits{};
  // The least free memory of any device (0: unknown): the memory model's budget where a choice depends on
  // it (distribute_param's ZeRO-3).
  uint64_t available_bytes = 0;
  // For the search: pipelines emit two lanes' programs only where the lanes are alike
  // (pipeline_planner.h's PipelineOptions::representative), batch splitting and TP without stages two devices'
  // programs where the devices are (spmd_emission.h); such a plan is measured, never run.
  bool representative = false;
  // For the search: whether a plan fits the devices' memory. With it, recomputation takes the first of its
  // checkpoint tails, from the longest kept, whose plan fits (fewer ops run again: a faster step than the
  // lowest peak would give), and lowers no more; without it, or when none fits, the lowest peak.
  std::function<bool(const PlannedStep&)> fits{};
  // For the search: the graph's linear pairs (tensor parallelism's), found once for every candidate; null:
  // found where a layout with TP needs them.
  const std::vector<LinearPair>* linear_pairs = nullptr;
};

// The plan for one step under the request's layout: with one device the recorded order plus memory
// instructions; over dp replicas, batch splitting (the cheapest of the batch sizes step_analysis finds and
// of not splitting), then fusion when asked; with pipeline stages or micro-batches, the pipeline
// (pipeline_planner.h), unfused. Throws ConfigError for a layout the devices cannot hold or this
// build cannot run (runtime/config/parallel_config.h).
std::shared_ptr<PlannedStep> plan_step(const PlanRequest& request);

// Whether a plan under `layout` can start from a value placed as `p` (where an earlier step under another
// layout left it); the engine brings the others home first.
bool plan_accepts(const runtime::Placement& p, const runtime::ParallelSizes& layout);

}  // namespace moreh::scheduler
