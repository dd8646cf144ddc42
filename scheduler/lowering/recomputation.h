// Recomputation (`recomputation : 1`, DESIGN.md §2.5): activations the backward pass reads are dropped after
// the forward pass and made again, from checkpoints, just before the backward pass needs them.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"

namespace moreh::scheduler {

// The checkpoints are the values the forward pass narrows to: a slot that, at some point of the forward
// pass, is the only activation still to be read (a transformer's residual stream between blocks), besides
// the few that live through most of it (a mask, rotary tables). What comes after the last checkpoint is
// kept, since the backward pass starts there. Every other activation the backward pass reads is dropped
// after its last forward use; before the first backward node that reads it, its node runs again (and,
// first, whatever dropped values that node reads). A node runs again only when that gives the same bits:
// it writes nothing in place, its outputs have no other writer and the script does not hold them, what it
// reads is unchanged since it first ran, and a random op draws from its recorded seed.
struct Recomputation {
  std::vector<uint32_t> order;   // the nodes in the order they run: a node listed twice runs again
  // Per place in `order`: the slots its node makes afresh (its outputs, and the inputs it gives their first
  // value, such as copy_ into torch.empty): what they held before is not read again.
  std::vector<std::vector<uint32_t>> made_at;
  std::vector<bool> dropped;     // per slot: dropped after the forward pass and made again
  size_t checkpoints = 0;        // slots kept as checkpoints
  size_t recomputed_nodes = 0;   // launches added
  std::vector<std::string> ops;  // what runs again: "aten::gelu ×4"
  uint64_t dropped_bytes = 0;    // activation bytes no longer held from the forward to the backward pass
  std::string none;              // why nothing is recomputed ("" when something is)
};

// `tail`: the forward pass's last `tail` checkpoints and what follows them are kept (the backward pass would
// make them again as soon as it starts); the planner tries a few and keeps the lowest peak. `rows`: batch
// sizes the step may be split by into micro-batches (step_analysis.h), whose results are joined over the
// micro-batches: a value is then made again only if it is made from the step's data and keeps the rows of
// each, so that a micro-batch makes its own again (not a loss or batch statistics summed over them, nor a
// mask made once for all). Empty: no micro-batches (one device, or a device per piece of the batch, makes
// its own values of any kind again).
Recomputation plan_recomputation(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                 size_t tail = 1, const std::vector<int64_t>& rows = {});

// The tails plan_step tries (the longest kept first for the search, else the shortest).
inline constexpr std::array<size_t, 3> kCheckpointTails = {1, 3, 6};

// "recomputation: 12 op(s) run again in the backward pass (aten::gelu ×4, ...), 3.0 MiB of activations dropped
// after the forward pass, 4 checkpoint(s) kept", or why nothing is.
std::string describe(const Recomputation& r);

}  // namespace moreh::scheduler
