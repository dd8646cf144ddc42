// One program per device from the SPMD steps of a split (batch_split.h): each device runs every step on its
// part (batch splitting's rows, tensor parallelism's shards), values are released after their last use,
// and each program's peak comes from the memory model.
#pragma once

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "scheduler/lowering/batch_split.h"
#include "scheduler/plan_report.h"

namespace moreh::scheduler {

// Device d runs piece d's launches. The report holds the fallbacks, the bytes each device's collectives send
// (ring all-reduce: 2(N-1)/N of the value) and the bytes the busiest device's kernels write.
// `representative` (the caller has checked that every piece has as many rows, or the step is not split): where
// every device after device 1 runs each step as device 1 does (views, allocations, factors alike: the parts
// divide evenly), only devices 0 and 1 get programs, device 1 standing in for the others
// (PlanReport::stand_ins), for the search's figures.
PlannedStep emit_spmd_plan(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                           const BatchSplit& split, int devices, bool representative = false);

// What the SPMD planners choose among candidate batch splits by: the bytes the busiest device's kernels write
// plus the bytes it sends, a fallback weighing as much as moving everything it wrote twice.
double spmd_cost(const PlannedStep& plan);

}  // namespace moreh::scheduler
