// Megatron's pairs in a recorded step (tensor parallelism, DESIGN.md §2.5): linear layers whose outputs go,
// through elementwise ops only, into the next linear layer. Found on the graph (matmuls over a whole 2-D
// weight), not from module names.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "scheduler/lowering/split_geometry.h"

namespace moreh::scheduler {

struct LinearPair {
  // The first layers (one, or several over the same input whose outputs meet elementwise: Llama's gate and
  // up projections) and the second.
  std::vector<uint32_t> first_nodes;
  uint32_t second_node = 0;
  // Slot -> how the pair splits it over the hidden features: the first layers' weights and biases by their
  // output features, the second layer's weight by its input features.
  SplitSeeds seeds;
  int64_t hidden = 0;  // the hidden features between the layers
};

// The pairs in node order. A linear layer is addmm(bias, x, w) or mm(x, w) with w a whole 2-D weight read as
// [in, out]: the transpose of an [out, in] one (nn.Linear) or itself (Hugging Face's Conv1D). From the first
// layer's output, every later op that reads what the pair has made so far must be elementwise, its other
// tensor inputs made by the pair too or by a sibling first layer (same input, same features), until a linear
// layer reads it. A weight in two pairs keeps the first.
std::vector<LinearPair> find_linear_pairs(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical);

}  // namespace moreh::scheduler
