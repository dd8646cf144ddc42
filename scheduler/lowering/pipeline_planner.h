// Pipeline parallelism (DESIGN.md §2.5): the step is cut into stages (stage_cut.h) on disjoint groups of
// devices, the batch is split over each stage's data-parallel replicas and then into micro-batches
// (batch_split.h with dp × micro-batches pieces), and every device runs its stage's ops micro-batch after
// micro-batch in 1F1B or GPipe order (pipeline_schedule.h): activations go forward and gradients back
// with send/receive, a micro-batch's partial sums (weight gradients, the loss) are added to the earlier ones on the device, and the rest of the step
// (the loss's division by its weight, the gradients' all-reduce over the replicas, the optimizer) runs once.
// With TP each replica is a group of tensor ranks, lowered as dp × tp lowers them (tensor_parallel_planner.h).
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "runtime/plan/program.h"
#include "scheduler/analysis/linear_pairs.h"
#include "scheduler/lowering/pipeline_schedule.h"
#include "scheduler/plan_report.h"
#include "runtime/plan/rank_layout.h"

namespace moreh::scheduler {

struct PipelineOptions {
  int stages = 2;
  int dp = 1;              // data-parallel replicas per stage
  int tp = 1;              // tensor-parallel ranks per replica (tensor_parallel_planner.h); one micro-batch then
  int micro_batches = 1;   // per replica; fewer when the batch has fewer rows
  PipelineSchedule schedule = PipelineSchedule::k1F1B;
  bool distribute_param = false;  // the optimizer sharded over each stage's replicas (optimizer_sharding.h)
  bool distribute_low_prec_param = false;  // autocast's copies of the parameters made on each replica's rows
  // The nodes in the order they run, some twice (recomputation.h; a node runs again on its own stage, in the
  // backward half of its micro-batch); nullptr: as recorded.
  const std::vector<uint32_t>* order = nullptr;
  // Emit two lanes' programs only (a lane: one replica's tensor rank, over the stages), when there are more
  // than two and every replica's rows are as many: device 0's lane, which holds what lies on device 0, and
  // one more (replica 0's rank 1, else replica 1), which every other lane runs alike on its own rows and
  // parts. Where parts divide unevenly the first ones are larger, so the stand-in holds at least as much
  // as those after it. For the search's peaks and costs at 2/(dp·tp) of the work; the report's stand_ins say
  // which device stands for which.
  bool representative = false;
  const std::vector<LinearPair>* linear_pairs = nullptr;  // the graph's, found once by the caller (null: here)
};

// Devices are laid out as ezpz's (dp slowest, then pp, tp fastest): stage j's replica i, tensor rank r, is
// device (i × stages + j) × tp + r. A value moves between stages rank to rank, each rank sending the part it holds.
// `candidate_rows`: the step's batch sizes, most frequent first (step_analysis.h); the first one with a row
// for every micro-batch of every replica is split, else the step runs unsplit on each stage.
PlannedStep compile_pipeline_plan(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                    const PipelineOptions& options, const std::vector<int64_t>& candidate_rows);

// Per slot, the stage whose devices hold it from an earlier step (-1: none, or every device): what
// compile_pipeline_plan's stage cut follows.
std::vector<int> placed_stages(const runtime::CanonicalGraph& canonical, int pp, int tp);

// Whether a step has work for pipeline stages: a backward pass (whose stages follow its forward pass's) or
// values an earlier step left on one stage's devices. A step with neither (the parameters' initialisation, a
// forward pass before any training) runs as batch splitting over every device instead: cut by cost, it would
// pin each parameter to the stage its initialisation happened to cost on, and the training steps after it
// follow where parameters lie.
bool wants_pipeline_stages(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical, int stages,
                           int tp);

}  // namespace moreh::scheduler
