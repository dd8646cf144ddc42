// Turns a canonical step graph into per-device programs. With one physical device the program is the
// recorded order plus memory instructions from liveness; batch splitting and the AP candidates extend
// this (DESIGN.md §2.5).
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/plan/program.h"
#include "scheduler/lowering/recomputation.h"
#include "scheduler/plan_report.h"
#include "scheduler/fusion/elementwise_fusion.h"

namespace moreh::scheduler {

struct PlannerOptions {
  int num_devices = 1;
};

// With `fusion` (scheduler/fusion/elementwise_fusion.h), each group runs as one kFused instruction where its last
// node stood; values it never stores take no memory. With `recompute` (recomputation.h; not with fusion), the
// nodes run in its order, a node listed twice running again.
PlannedStep compile_plan(const runtime::CanonicalGraph& graph, const PlannerOptions& options = {},
                           const FusionResult* fusion = nullptr, const Recomputation* recompute = nullptr);

}  // namespace moreh::scheduler
