// Sharding propagation for a batch split into pieces (DESIGN.md §2.5): the step's data inputs are split by
// rows, the rules of sharding_rules.h carry the split through the graph, partial sums are summed where a
// whole value is needed, and ops with no rule run on gathered inputs. The result is one sequence of steps
// that every piece runs (SPMD); data_parallel_planner.h gives each piece a device, pipeline_planner.h
// gives each a micro-batch of a stage's device.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/graph/canonical_graph.h"
#include "runtime/graph/step_graph.h"
#include "runtime/plan/program.h"
#include "scheduler/lowering/split_geometry.h"
#include "scheduler/sharding/sharding_rules.h"

namespace moreh::scheduler {

// One step of the sequence, with what differs per piece.
struct SplitStep {
  runtime::Instruction::Kind kind;
  uint32_t index = 0;
  uint32_t aux = 0;
  uint32_t node = 0;                           // the node whose lowering emitted it
  std::vector<runtime::LocalLaunch> launches{};  // kLaunch split by rows: one per piece (empty: as recorded)
  std::vector<uint64_t> bytes{};                 // kAllocate: per piece
  std::vector<double> factors{};                 // kScale: per piece
  bool split_allocation = false;               // kAllocate: each piece gets its rows only
  bool batch_rows = false;                     // kAllocate: bytes[i] are piece i's rows of the batch
  // kLaunch split by rows: per input, the dim along which an input already split by rows is read at its
  // recorded offset (-1: whole, or sliced from a whole value at the piece's own offset); the decision's
  // outputs; a loss mean's (output, weight) pair.
  std::vector<int8_t> aligned{};
  std::vector<OutputSpec> outputs{};
  // kLaunch split by tensor parallelism alone (the batch does not split it): `aligned` and `outputs` are TP's.
  bool tensor_only = false;
  int loss_out = -1, loss_weight = -1;
  // kLaunch: inputs the kernel is given but whose values it does not use (a mean loss's total weight once
  // deferred_loss_division.h takes its gradient as a sum): no ordering waits on them.
  std::vector<int> unused_inputs{};
  // Collectives with tensor parallelism beside the batch split (a mesh of pieces × tensor ranks): over the
  // devices of the step's mesh axis (kAll: every device), with the rows of `geometry` (else the slot's).
  enum class Axis : uint8_t { kAll, kBatch, kTensor };
  Axis axis = Axis::kAll;
  std::optional<runtime::SlotInfo> geometry{};
  // Rows of the slot's own first dim over the replicas (optimizer_sharding.h), not of the batch: a kLaunch
  // whose launches[i] runs once on replica i's rows of every tensor, a kKeepRows, kReduceScatter or
  // kAllGather in that geometry, a kAllocate of bytes[i] per replica.
  bool own_rows = false;
  // kAllReduce over tensor parallelism's ranks of a value split by the batch's rows: each piece's ranks sum
  // that piece's rows, so it runs once per piece, as the launches that make them (a pipeline's micro-batch
  // by micro-batch).
  bool piece_sum = false;
};

// Whether a step runs once per piece of the batch (a kLaunch split by rows, or TP's sum of a piece's rows), as
// against once per replica (a launch on whole values, the sharded optimizer's rows, or TP's parts alone: every
// piece of a replica alike).
inline bool per_piece(const SplitStep& st) {
  return (st.kind == runtime::Instruction::Kind::kLaunch && !st.launches.empty() && !st.own_rows && !st.tensor_only) ||
         st.piece_sum;
}

struct BatchSplit {
  std::vector<SplitStep> steps;
  std::vector<runtime::Placement> final_placements;  // where each slot is after the steps, per piece
  std::vector<bool> known;                           // the slot was written or placed (else never touched)
  std::vector<runtime::SlotInfo> slots;
  int tensor_ranks = 1;  // devices per piece of the batch (device d: piece d / tensor_ranks)
  uint64_t replicated_fallbacks = 0;
  std::vector<std::string> fallback_ops;      // "aten::cumsum ×2"
  std::vector<std::string> fallback_details;  // per node, why (filled when the log is at debug)
};

// The slots a step reads and writes.
void step_slots(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical, const SplitStep& step,
                std::vector<uint32_t>& reads, std::vector<uint32_t>& writes);

// Lowers `graph` for the batch of `rows` rows split into `pieces` (each piece's rows of the batch; rows 0:
// not split, every piece runs the whole step). The nodes are lowered in `order` when given (recomputation.h:
// a node listed twice runs again, on what its inputs are then); with `reallocate`, a node that runs again
// gets new memory for the inputs it gives a first value to (copy_ into torch.empty), as it did the first
// time (else they keep theirs from the forward pass: a pipeline's micro-batches share such blocks).
//
// `tensor` (tensor parallelism, tensor_parallel_planner.h): each piece of the batch runs on `ranks` devices
// (device d: piece d / ranks, tensor rank d % ranks), and `seeds` name values split where they are read,
// along their own dimensions rather than the batch's; such a split then carries whatever rows and blocks
// its value has (runtime::Placement::outer), each rank taking split_rows' part of them. Beside a batch
// split (several pieces), the pieces must be equal.
struct TensorSplit {
  const SplitSeeds* seeds = nullptr;  // nullptr: no tensor parallelism
  int ranks = 1;
};

//
// `viewed` (null: every device): per device, whether its launches of steps split by the batch get their views;
// the others' carry their rows only. For a plan emitted for a few devices (a pipeline's two lanes standing for
// all, PipelineOptions::representative), where nothing reads the others'.
BatchSplit split_batch(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                       const std::vector<runtime::RowRange>& pieces, int64_t rows,
                       const std::vector<uint32_t>* order = nullptr, bool reallocate = true,
                       const TensorSplit& tensor = {}, const std::vector<char>* viewed = nullptr);

// Moves each all-reduce up to just after the all-reduce before it (over the same devices) where no step between
// reads or writes its slot. An optimizer that reads the gradients one parameter at a time then finds them
// summed in one run, which the executor sends as one group: one meeting and one ring between processes
// instead of one per parameter. What each device computes is unchanged.
void gather_all_reduces(const runtime::StepGraph& graph, const runtime::CanonicalGraph& canonical,
                        std::vector<SplitStep>& steps);

}  // namespace moreh::scheduler
