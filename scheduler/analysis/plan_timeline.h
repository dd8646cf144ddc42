// A plan's schedule on a clock: every device runs its program in order, a kernel takes its node's cost
// (stage_cut.h's node_cost, times the share of the batch a split launch covers), a receive waits for its
// send and a collective for every device of its group; moving bytes takes no time. The idle fraction this
// gives is the schedule's own bubble, to set against GPipe's (p - 1) / (m + p - 1).
#pragma once
#include <string>
#include <vector>

#include "runtime/graph/step_graph.h"
#include "runtime/plan/program.h"

namespace moreh::scheduler {

struct PlanTimeline {
  std::vector<double> busy;  // per device: the cost of its kernels
  double makespan = 0;       // when the last device finishes
  double idle_fraction = 0;  // 1 - sum(busy) / (devices × makespan)
  std::string stuck;         // set when the programs cannot all finish (a receive or collective never met)
};

PlanTimeline simulate_plan(const runtime::Plan& plan, const runtime::StepGraph& graph);

}  // namespace moreh::scheduler
