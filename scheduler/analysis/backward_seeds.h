// Where a training step's backward passes begin: the nodes that make a backward pass's seed.
#pragma once
#include <cstddef>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"

namespace moreh::scheduler {

// The nodes, in order, that make the seed of a backward pass (loss.backward()'s constant ones: a node that
// only writes a fresh scalar, after a computed scalar, the loss). A step with gradient accumulation has one
// per micro-batch; a step with no backward pass has none.
std::vector<size_t> backward_seeds(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical);

}  // namespace moreh::scheduler
