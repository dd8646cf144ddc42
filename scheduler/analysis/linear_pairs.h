// Megatron's pairs in a recorded step (tensor parallelism, DESIGN.md §2.5): a linear layer whose output
// goes, through elementwise ops only, into the next linear layer. Found on the graph (matmuls over a
// transposed weight), not from module names.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"

namespace moreh::scheduler {

struct LinearPair {
  uint32_t first_node = 0, second_node = 0;  // the two linear layers (addmm or mm)
  uint32_t first_weight = 0;                 // slot of [hidden, in]: split by its rows (output features)
  int64_t first_bias = -1;                   // slot of [hidden] (-1: none): split alike
  uint32_t second_weight = 0;                // slot of [out, hidden]: split by its columns (input features)
  int64_t hidden = 0, out = 0;               // the hidden features between them; the second's outputs
};

// The pairs in node order. A linear layer is addmm(bias, x, w.t()) or mm(x, w.t()) over a 2-D weight read
// whole through its transpose; between the two, each op is elementwise with one tensor input (an activation,
// dropout) and is the first to read what the previous one made. A weight in two pairs keeps the first.
std::vector<LinearPair> find_linear_pairs(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical);

}  // namespace moreh::scheduler
