// The order in which a pipeline's stages run their micro-batches' forward and backward work: 1F1B
// (each stage starts a micro-batch's backward pass as soon as it can, so it holds at most stages − j
// micro-batches' activations) or GPipe (every forward before any backward).
#pragma once
#include <optional>
#include <string_view>
#include <vector>

#include "runtime/config/parallel_config.h"

namespace moreh::scheduler {

using runtime::PipelineSchedule;

std::string_view name_of(PipelineSchedule s);

// One stage's forward or backward work on one micro-batch.
struct PipelineTask {
  int stage = 0;
  bool backward = false;
  int micro = 0;
  double cost = 0;  // its time on the simulated clock (<= 0: 1 for a forward, 2 for a backward)
};

// Stage `stage`'s tasks in 1F1B order: min(stages − 1 − stage, micro) forwards to fill the pipeline, then
// a forward and a backward in turn, then the backwards left.
std::vector<PipelineTask> one_f_one_b_order(int stage, int stages, int micro);

// One global order of `tasks` (indices into it) in which every stage runs its own tasks in 1F1B order
// and every task comes after its predecessors (`preds[i]`: tasks that must come before task i). Stages
// advance on a simulated clock, the task that can start first next; of tasks that can start at once, one
// that takes data from another's stage comes before that stage moves on, so that what a stage sends
// follows what made it in the stage's program rather than the stage's next task. nullopt when the stages' orders contradict the predecessors (the step's data
// dependencies allow no 1F1B order; GPipe's is then the one to use).
std::optional<std::vector<size_t>> merge_stage_orders(const std::vector<PipelineTask>& tasks,
                                                      const std::vector<std::vector<size_t>>& preds, int stages,
                                                      int micro);

}  // namespace moreh::scheduler
