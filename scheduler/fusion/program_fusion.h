// Elementwise fusion for plans over several devices (scheduler/lowering/data_parallel_planner.h): each device's
// program is fused as a one-device step would be (scheduler/fusion/elementwise_fusion.h), over its launches as it
// runs them (on its rows of the batch, at its offsets). The program's collectives and its own arithmetic are
// nodes no kernel takes in, so a group never moves across one that touches what the group reads or writes,
// and every device still meets the collectives in the same order.
#pragma once
#include "runtime/graph/canonical_graph.h"
#include "runtime/plan/program.h"
#include "scheduler/plan_report.h"
#include "scheduler/fusion/elementwise_fusion.h"

namespace moreh::scheduler {

// Rewrites `plan`'s programs in place: a group's launches become one kFused where its last launch stood,
// releases of what a group still reads move after it. Sets plan.fused_nodes and plan.launches (device 0's).
void fuse_device_programs(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                          PlannedStep& plan, const FusionLimits& limits = {});

}  // namespace moreh::scheduler
