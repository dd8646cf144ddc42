// What a step's buffers are for, and the step's batch size (DESIGN.md §2.5, analysis): the facts batch
// splitting starts from. Data inputs (host data copied in this step) split on their leading dimension;
// persistent state (parameters, gradients, optimizer state, results the script keeps) is replicated;
// temporaries live and die inside the step.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"

namespace moreh::scheduler {

enum class BufferRole : uint8_t {
  kPersistent,  // the script holds it after the step (parameters, gradients, optimizer state, results)
  kDataInput,   // written from host data in this step: x.to("moreh")
  kTemporary,   // produced or last used in the step, released by its end
};

struct StepAnalysis {
  std::vector<BufferRole> roles;     // per canonical slot
  std::vector<uint32_t> data_inputs;  // slots, in first-use order
  // Leading dimensions of the data inputs (as written by the host copies), most frequent first, ties by
  // first appearance; batch_size is the first (0 when the step has no data input).
  std::vector<int64_t> batch_sizes;
  int64_t batch_size = 0;
  // The rows batch splitting divides: batch_size, unless every host copy of the step is state being set
  // up (parameters uploaded and then updated in the same graph), which is never split: then 0.
  int64_t split_rows = 0;
};

StepAnalysis analyze_step(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical);

}  // namespace moreh::scheduler
