#include "scheduler/lowering/pipeline_schedule.h"

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

namespace moreh::scheduler {

std::string_view name_of(PipelineSchedule s) { return s == PipelineSchedule::k1F1B ? "1F1B" : "GPipe"; }

std::vector<PipelineTask> one_f_one_b_order(int stage, int stages, int micro) {
  std::vector<PipelineTask> order;
  const int warmup = std::max(0, std::min(stages - 1 - stage, micro));
  for (int k = 0; k < warmup; ++k) order.push_back({stage, false, k});
  for (int i = 0; i + warmup < micro; ++i) {
    order.push_back({stage, false, warmup + i});
    order.push_back({stage, true, i});
  }
  for (int k = micro - warmup; k < micro; ++k) order.push_back({stage, true, k});
  return order;
}

std::optional<std::vector<size_t>> merge_stage_orders(const std::vector<PipelineTask>& tasks,
                                                      const std::vector<std::vector<size_t>>& preds, int stages,
                                                      int micro) {
  std::map<std::tuple<int, bool, int>, size_t> index;
  for (size_t i = 0; i < tasks.size(); ++i) index[{tasks[i].stage, tasks[i].backward, tasks[i].micro}] = i;
  // Each stage's own tasks in 1F1B order (the ones the step has: a stage may do no backward work).
  std::vector<std::vector<size_t>> queue(static_cast<size_t>(std::max(stages, 0)));
  size_t queued = 0;
  for (int j = 0; j < stages; ++j)
    for (const PipelineTask& t : one_f_one_b_order(j, stages, micro))
      if (auto it = index.find({t.stage, t.backward, t.micro}); it != index.end()) {
        queue[j].push_back(it->second);
        ++queued;
      }
  if (queued != tasks.size() || preds.size() != tasks.size()) return std::nullopt;  // a task outside the layout
  auto cost = [&](size_t t) { return tasks[t].cost > 0 ? tasks[t].cost : tasks[t].backward ? 2.0 : 1.0; };
  std::vector<size_t> next(queue.size(), 0), order;
  std::vector<double> clock(queue.size(), 0), finish(tasks.size(), 0);
  std::vector<bool> done(tasks.size(), false);
  while (order.size() < tasks.size()) {
    // The stages whose next task can start soonest.
    std::vector<int> soonest;
    double best_start = std::numeric_limits<double>::infinity();
    for (int j = 0; j < stages; ++j) {
      if (next[j] >= queue[j].size()) continue;
      const size_t t = queue[j][next[j]];
      bool ready = true;
      double start = clock[j];
      for (size_t p : preds[t]) {
        ready = ready && done[p];
        start = std::max(start, finish[p]);
      }
      if (!ready) continue;
      if (start < best_start) soonest.clear(), best_start = start;
      if (start == best_start) soonest.push_back(j);
    }
    if (soonest.empty()) return std::nullopt;
    // Of those, one whose stage none of the others takes data from (else the lowest stage).
    int best = soonest.front();
    for (int j : soonest) {
      bool feeds = false;
      for (int other : soonest)
        if (other != j)
          for (size_t p : preds[queue[other][next[other]]]) feeds = feeds || tasks[p].stage == j;
      if (!feeds) {
        best = j;
        break;
      }
    }
    const size_t t = queue[best][next[best]++];
    done[t] = true;
    finish[t] = best_start + cost(t);
    clock[best] = finish[t];
    order.push_back(t);
  }
  return order;
}

}  // namespace moreh::scheduler
