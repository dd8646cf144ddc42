// Which pipeline stage runs each node of a training step (DESIGN.md §2.5, pipeline parallelism). The
// forward pass (the nodes before the backward pass's seed) is cut into stages of about equal cost, each cut
// moved within 10% of the balanced point to where the fewest bytes cross it; once parameters lie on stages,
// later steps follow them. A parameter belongs to the stage
// of its first forward reader; a backward or optimizer node runs where the earliest of the in-step values it
// reads was made (so a layer's backward runs with its forward, an update with its gradient); a node that
// only writes (an upload, a fill, a zero) runs where its value is first read.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"

namespace moreh::scheduler {

struct StageCut {
  std::vector<int> node_stage;       // per node
  size_t forward_end = 0;            // nodes [0, forward_end) are the forward pass
  std::vector<size_t> starts;        // the forward node where each stage begins (starts[0] = 0)
  std::vector<double> stage_cost;    // the forward pass's cost per stage
  std::vector<uint64_t> cut_bytes;   // per cut (stages - 1): bytes the forward pass sends across it
  // Per node: for an op over lists split by element (splits_by_element), each element's stage (node_stage is
  // the least of them); else empty.
  std::vector<std::vector<int>> element_stage;
};

// Whether a node runs on each stage over that stage's elements of its lists: a _foreach_ op whose every
// written input and output is a list element (not _amp_foreach_non_finite_check_and_unscale_'s shared flag).
bool splits_by_element(const runtime::Node& node);

// A node's cost for balancing: the bytes it writes plus an eighth of a matmul's or attention's
// multiply-adds (a device's arithmetic per byte of memory traffic, roughly).
double node_cost(const runtime::Node& node);

// `placed`: per slot, the stage whose devices hold it from an earlier step (-1: none, or every device). When
// the forward pass reads such values it is not cut again: each node runs on the latest stage among its
// parameters' and its inputs'. Throws ConfigError when a forward pass to cut has fewer ops than stages.
StageCut cut_stages(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical, int stages,
                    const std::vector<int>& placed = {});

}  // namespace moreh::scheduler
