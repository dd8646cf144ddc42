// A plan's schedule on a clock: every device runs its program in order (one stream: kernels, collectives and
// messages one after another, as the executor runs them), a receive waits for its send and a collective for
// every device of its group. What each takes comes from a StepTiming: the default counts a kernel as its
// node's cost (stage_cut.h's node_cost, times the share of the batch a split launch covers) and moving bytes
// as free, so the idle fraction is the schedule's own bubble, to set against GPipe's (p - 1) / (m + p - 1);
// the cost simulator's (search/step_cost.h) gives seconds from a device profile.
#pragma once
#include <string>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "runtime/plan/program.h"

namespace moreh::scheduler {

// A kernel's time, and the part of it that is a launch's fixed cost (devices that share compute pay that part
// side by side, and the rest in turns).
struct KernelTime {
  double seconds = 0;
  double overhead = 0;
};

// How long each thing a program does takes, in the timeline's unit.
class StepTiming {
 public:
  virtual ~StepTiming() = default;
  // A launch of `node`: on `local`'s views where it has some (nullptr: as recorded), else over `share` of its
  // rows (1: all of them).
  virtual KernelTime kernel(const runtime::Node& node, const runtime::LocalLaunch* local, double share) const = 0;
  // A small kernel the plan adds (a loss's scale, a division).
  virtual double scalar_kernel() const { return 0; }
  // A kernel the plan adds that reads and writes a block of `bytes` once (a partial sum scaled by a share,
  // gradients divided by a loss's weight): by default as a small one.
  virtual double block_pass(double bytes) const {
    (void)bytes;
    return scalar_kernel();
  }
  // A collective of `kind` over `devices` (device ids) where each device holds `bytes` of the whole value.
  virtual double collective(runtime::Instruction::Kind kind, double bytes, const std::vector<int>& devices) const {
    (void)kind, (void)bytes, (void)devices;
    return 0;
  }
  // A message of `bytes` from device `from` to `to`: when it arrives after it was sent.
  virtual double message(double bytes, int from, int to) const {
    (void)bytes, (void)from, (void)to;
    return 0;
  }
  // The work `devices` devices running at once finish per unit of time against one device's (`devices`
  // itself: each has its own chip). Below `devices`, the step lasts at least the kernels' work (their time
  // less their overhead) over it, plus their overhead over `devices`.
  virtual double speedup(int devices) const { return devices; }
  // How many of those devices' launch overheads (host-side work) proceed at once.
  virtual double overhead_parallelism(int devices) const { return devices; }
};

struct PlanTimeline {
  std::vector<double> busy;  // per device: the time of its kernels
  std::vector<double> communication;  // per device: the time of its collectives and receives' transfers
  double makespan = 0;       // when the last device finishes
  double idle_fraction = 0;  // 1 - sum(busy) / (devices × makespan)
  std::string stuck;         // set when the programs cannot all finish (a receive or collective never met)
};

// With node costs and free communication.
PlanTimeline simulate_plan(const runtime::Plan& plan, const runtime::StepGraph& graph);
// With `timing`; `canonical` gives the bytes each collective and message moves (the memory model's blocks).
PlanTimeline simulate_plan(const runtime::Plan& plan, const runtime::StepGraph& graph,
                           const runtime::CanonicalGraph& canonical, const StepTiming& timing);

}  // namespace moreh::scheduler
