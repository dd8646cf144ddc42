// Per-op sharding rules for batch splitting (DESIGN.md §2.5): given where the batch lies in a node's
// inputs, how the node can run on each device's rows, and what its outputs become. The rules follow
// DTensor's (reference/lazy_graph.md): pointwise ops keep the shard on the broadcast-aligned dim, the
// matmul family keeps a sharded row operand and turns a sharded contraction into a partial sum, a
// reduction over the batch dim gives a partial sum, and so on.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "runtime/graph/step_graph.h"

namespace moreh::scheduler {

// How a rule wants one input: the whole value on every device, or its rows along `dim` of the input as
// recorded (a sharded input must have its batch there; a replicated one is sliced there).
struct InputUse {
  bool batch = false;
  int dim = 0;
};

// What an output becomes.
struct OutputSpec {
  enum class Kind : uint8_t {
    kShard,      // the device's rows along `dim`
    kPartial,    // a full-size addend of a sum over the devices
    kLocal,      // a per-device value (batch-norm statistics)
    kReplicate,  // the same on every device
  };
  Kind kind = Kind::kShard;
  int dim = 0;
  // Multiply the device's result by its share of the batch (rows / batch rows): a local mean becomes an
  // addend of the global mean, or a gradient of a local mean becomes one of the global mean.
  bool scale_by_share = false;
  // cat along the split dim: the output's split dim runs through its inputs' blocks one after another (each
  // device concatenates its parts of each input), not through one block of rows.
  bool concat_blocks = false;
};

struct ShardDecision {
  std::vector<InputUse> inputs;
  std::vector<OutputSpec> outputs;
  // Written inputs that become per-device values (batch norm's running statistics, as DDP keeps them).
  std::vector<int> written_local;
  // nll_loss with reduction='mean': output 0 is a local mean over output 1's local weight; the plan
  // turns them into the global mean.
  bool loss_mean = false;
  // A partial sum with a bias (addmm over a split contraction): the bias is added on the first device only;
  // the others run with this Scalar argument (beta) 0. -1: none.
  int first_device_beta = -1;
};

// Where the batch lies in each input: its dim, or nullopt when the input is not split by rows (whole
// on every device, or not aligned with the rows).
using BatchDims = std::vector<std::optional<int>>;

// The rule's decision for `node`, or nullopt when the op has no rule for this input layout (then the node
// runs replicated on whole inputs). Called only when at least one input is split.
std::optional<ShardDecision> shard_rule(const runtime::Node& node, const BatchDims& batch_dims);

// Whether the op is known to the rules at all (for logging the ops that fell back).
bool has_rule(runtime::OpId op);

}  // namespace moreh::scheduler
