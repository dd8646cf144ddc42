// Tensor parallelism (TP : k, DESIGN.md §2.5): Megatron's layout derived from the graph, over every device or
// beside batch splitting (dp × tp: the batch split over dp groups of k devices, each group one TP rank set).
// Each linear pair (analysis/linear_pairs.h) has its first weight and bias split by output features and its
// second weight by input features; sharding propagation (batch_split.h with seeds, sharding_rules.h) carries
// the splits through the hidden activations, their gradients and the optimizer's updates, so each pair
// all-reduces one partial sum forward and one backward. Everything else runs replicated.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "scheduler/analysis/linear_pairs.h"
#include "scheduler/lowering/batch_split.h"
#include "scheduler/plan_report.h"

namespace moreh::scheduler {

// What tensor parallelism splits over `devices` devices: the pairs whose hidden features divide evenly.
// `known`: the graph's pairs, found once by the caller (the search lowers many layouts of one graph); null:
// found here.
SplitSeeds tensor_parallel_seeds(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                 int devices, int* pairs = nullptr, const std::vector<LinearPair>* known = nullptr);

// The plan: one program per device, `tp` tensor ranks per data-parallel replica, `dp` replicas (device d:
// replica d / tp, rank d % tp). With dp > 1, the first of `candidate_rows` (the step's batch sizes) that splits
// evenly over the replicas is split by rows, else every replica runs the whole batch. `order`: the nodes in
// the order they run (recomputation.h); nullptr: as recorded.
struct TensorParallelOptions {
  int tp = 1;
  int dp = 1;
  std::vector<int64_t> candidate_rows{};
  const std::vector<uint32_t>* order = nullptr;
  // The optimizer (and autocast's copies of the parameters) sharded over each rank's replicas, for what TP keeps
  // whole (optimizer_sharding.h); ZeRO-3 where the ZeRO-2 plan's peak exceeds `available_bytes` (0: no limit).
  bool distribute_param = false, distribute_low_prec_param = false;
  uint64_t available_bytes = 0;
  const std::vector<LinearPair>* linear_pairs = nullptr;  // the graph's, found once by the caller (null: here)
  bool representative = false;  // two devices' programs stand for all where they can (emit_spmd_plan)
};
PlannedStep compile_tensor_parallel_plan(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                                         const TensorParallelOptions& options);

}  // namespace moreh::scheduler
