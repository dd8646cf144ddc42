// Sharded optimizer state and updates (`distribute_param : true`, ZeRO-2) over the data-parallel
// replicas, a pass over batch_split.h's steps: a gradient that only elementwise updates read is
// reduce-scattered instead of all-reduced, each replica runs those updates (the optimizer's foreach and
// pointwise ops, the state's zero fills) on its rows of every tensor (split_rows of the first dim) and
// keeps its rows of the optimizer state between steps. A value the step also reads whole (a parameter
// its forward pass reads) is all-gathered after its update; one the step reads only in updates stays in
// rows, and the next step that reads it whole gathers it first (a parameter updated in a step of its own,
// as when the script reads the loss between backward() and step(): it rests in rows until the next
// forward pass). An op that needs a whole value a replica holds only rows of (a gradient norm for
// clipping) gets an all-gather first, counted.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "scheduler/lowering/batch_split.h"

namespace moreh::scheduler {

struct OptimizerSharding {
  uint64_t sharded_ops = 0;      // launches run on each replica's rows
  uint64_t reduce_scatters = 0;  // gradients reduce-scattered in place of an all-reduce
  uint64_t gathers = 0;          // all-gathers: parameters after their update, values a whole op reads
  uint64_t sharded_state = 0;    // slots left sharded after the step (optimizer state)
  uint64_t sharded_bytes = 0;    // their bytes (whole)
  bool params_in_rows = false;   // ZeRO-3: parameters rest in rows and are gathered for each pass
  uint64_t dropped = 0;          // whole values let go of (kept rows) after a pass, gathered again later
  uint64_t low_precision_casts = 0;  // autocast's copies of parameters made on each replica's rows
  bool optimizer = true, low_precision = false;  // what was asked (ShardingOptions)
};

struct ShardingOptions {
  bool optimizer = true;        // distribute_param: the updates and the optimizer's state (ZeRO-2)
  bool params_in_rows = false;  // ZeRO-3: the parameters too
  // distribute_low_prec_param: autocast's low-precision copies of the parameters are made on each replica's
  // rows, gathered before each pass's first use and let go of after its last.
  bool low_precision = false;
};

// Rewrites `split` (an SPMD sequence for `devices` devices: replicas, each of split.tensor_ranks tensor-parallel
// ranks) in place, with its final placements and slot facts. Beside tensor parallelism it shards over each rank's
// replicas what TP keeps whole (by its rows) and TP's parts (by the rows of each device's part).
// `whole_nodes` (per node, optional): nodes to leave as they are (a pipeline's foreach ops split by list
// element over its stages). With `params_in_rows` (ZeRO-3) the parameters are not gathered after their
// update but rest in rows between steps; a pass (forward, or a backward pass) gathers each before its first
// use, and each replica keeps only its rows again after the pass's last use when the next use is in a
// later pass (the gathered copy is released). `low_precision` treats autocast's casts of parameters so.
OptimizerSharding shard_optimizer(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                  BatchSplit& split, int devices, const std::vector<bool>& whole_nodes = {},
                                  const ShardingOptions& options = {});

// For a plan's summary: "; optimizer sharded over the 4 replicas (distribute_param): ...".
std::string describe(const OptimizerSharding& sharding, int replicas);

// autocast's cast of a parameter: a copy_ into a fresh buffer of a narrower type, of the same sizes, from a value
// that existed before the step and outlives it (what distribute_low_prec_param shards). `slots`: the node's
// inputs' slots (CanonicalGraph::node_inputs).
bool casts_a_parameter(const runtime::Node& node, const std::vector<uint32_t>& slots,
                       const runtime::CanonicalGraph& canonical);

}  // namespace moreh::scheduler
