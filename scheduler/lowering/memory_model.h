// The memory a device's program holds as it runs, instruction by instruction: the one account of
// liveness and peak bytes that the planners report and the engine checks against a device's capacity.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "runtime/plan/program.h"

namespace moreh::scheduler {

// The most bytes `program` holds at once beyond what its device held before it (values from before the
// step count from zero, so releasing one lowers the count): its blocks as the executor binds them
// (allocations, kernels' fresh outputs over the device's part of a split node, received values, gathers,
// generated kernels' stored results, and the moments two blocks of one value exist at once (a micro-batch's
// result beside the block it joins, a gather's or a keep-rows' new block beside the old).
// `plan` gives the slots' rows and the groups (kKeepRows); `graph` the views of launches on a device's rows
// (nullptr: a plan with none).
uint64_t program_peak(const runtime::Plan& plan, const runtime::DeviceProgram& program,
                      const runtime::StepGraph* graph, const runtime::CanonicalGraph& canonical);

// Bytes from a buffer's start to the end of a device's view (a kernel's fresh output covers that much): its
// own strides where it has them, else the recorded ones.
uint64_t view_end(const runtime::TensorRef& ref, const runtime::LocalRef& local);

// A device's blocks as its program binds them, one instruction after another: what program_peak counts, and
// what a planner asks while it writes a program (how many bytes of a value a device holds, to send them).
// `plan` (its slots, groups and device count) and `graph` are read as instructions arrive, not copied.
class DeviceMemory {
 public:
  DeviceMemory(const runtime::Plan& plan, int device, const runtime::StepGraph* graph,
               const runtime::CanonicalGraph& canonical);
  void apply(const runtime::DeviceProgram& program, const runtime::Instruction& ins);
  uint64_t held(uint32_t slot) const { return static_cast<uint64_t>(held_[slot]); }
  // The most bytes held at once so far beyond what the device held before the step.
  uint64_t peak() const { return static_cast<uint64_t>(std::max<int64_t>(peak_ - start_, 0)); }
  // Bytes held now beyond what the device held before the step (negative once it released some of those).
  int64_t now() const { return total_ - start_; }
  // Counts apart the bytes of the slots flagged in `slots` (by slot; none held yet): apart() is what they hold.
  void count_apart(const std::vector<char>* slots) { apart_slots_ = slots; }
  int64_t apart() const { return apart_; }

 private:
  void set(uint32_t s, int64_t b);
  void transient(int64_t b) { peak_ = std::max(peak_, total_ + b); }
  const runtime::Plan& plan_;
  const int device_;
  const runtime::StepGraph* graph_;
  const runtime::CanonicalGraph& cg_;
  std::vector<int64_t> held_;
  int64_t total_ = 0, start_ = 0, peak_ = 0;
  const std::vector<char>* apart_slots_ = nullptr;
  int64_t apart_ = 0;
};

// What a device holds when its program peaks: the first instruction after which the peak is reached, the
// bytes then beyond what the device held before the step, those of them that exist only during that
// instruction (a gather's parts, a micro-batch's result beside the block it joins), and every slot held after
// it, largest first (values from before the step included). What a plan's peak is made of (the engine's
// debug log).
struct PeakMoment {
  size_t instruction = 0;
  uint64_t bytes = 0, transient = 0;
  std::vector<std::pair<uint32_t, uint64_t>> held;
};
PeakMoment peak_moment(const runtime::Plan& plan, const runtime::DeviceProgram& program,
                       const runtime::StepGraph* graph, const runtime::CanonicalGraph& canonical);

// The most bytes `program` holds at once beyond what its device held before the step, not counting the slots
// flagged in `apart` nor the bytes that exist only during an instruction, and the first instruction after
// which it holds them: what remains of its peaks when those values take nothing.
struct HeldMoment {
  size_t instruction = 0;
  uint64_t bytes = 0;
};
HeldMoment peak_without(const runtime::Plan& plan, const runtime::DeviceProgram& program,
                        const runtime::StepGraph* graph, const runtime::CanonicalGraph& canonical,
                        const std::vector<char>& apart);

// The largest of a plan's programs' peaks (what program_peak gave each).
uint64_t max_peak_bytes(const runtime::Plan& plan);

}  // namespace moreh::scheduler
