// A lower bound on a candidate's predicted step time from the step graph alone, before it is lowered: its
// kernels' roofline time per device, and a pipeline's fill and drain (a micro-batch's way through the stages).
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "runtime/config/parallel_config.h"
#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "scheduler/search/step_cost.h"

namespace moreh::scheduler {

// Each node's time is its profile's roofline on the recorded shapes, without the launch (ProfileTiming::kernel);
// the simulator's time for a plan (predict_step with the same timing) is never below the bound, since
// - a device of stage s runs at least its share of the stage's nodes: their time over dp × tp (a replica's
//   rows and a tensor rank's part take at least that share of a node's FLOPs and bytes; a fused kernel is
//   timed as its nodes);
// - a node of stage s that reads what an earlier stage made and is read by an earlier stage waits, first, for
//   a micro-batch to come through the earlier stages (`fill`: the longest chain of their nodes before it, at
//   a micro-batch's share, floor(rows / (dp × m)) of the rows over tp), and the step lasts, after the last of
//   them, the way back through the earlier stages (`drain`): the device runs them in order in between.
// An op over lists split by element across stages is left out of a pipeline's bound (its parts lie on several
// stages). Recomputation only adds work, so a candidate's bound is its layout's without it. Thread-safe.
class StepBound {
 public:
  StepBound(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical, const ProfileTiming& timing,
            int64_t rows);
  // Seconds; 0 where nothing is known (a stage cut that cannot be made: lowering will say why).
  double seconds(const runtime::ParallelConfig& config, int devices) const;

 private:
  // Nodes of a stage on a micro-batch's way through earlier stages: `fill` (the longest chain of earlier
  // stages' nodes before one), the least `drain` (the longest chain after) among those of at least that fill,
  // and their summed `time`, all on the whole batch.
  struct Way {
    double fill = 0, drain = 0, time = 0;
  };
  struct Stages {
    bool valid = false;
    std::vector<double> all;               // per stage: its nodes' time (the whole batch)
    std::vector<std::vector<Way>> ways;    // per stage (none for the first), by fill, largest first
  };
  const Stages& stages(int pp, int tp) const;

  const runtime::StepGraph& graph_;
  const runtime::CanonicalGraph& canonical_;
  int64_t rows_;
  std::vector<double> time_;  // per node: a contraction's roofline seconds on the whole batch, else 0
  mutable std::mutex mutex_;
  mutable std::map<std::pair<int, int>, Stages> cuts_;  // by (pp, tp): the placed stages depend on tp
};

}  // namespace moreh::scheduler
