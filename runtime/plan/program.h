// What the scheduler hands the runtime: one program per physical device, cached by graph hash.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/data_type.h"
#include "runtime/kernels/elementwise_kernel.h"
#include "runtime/graph/step_graph.h"
#include "runtime/plan/placement.h"

namespace moreh::runtime {

struct Instruction {
  enum class Kind : uint8_t {
    kAllocate,  // bind fresh memory to a buffer slot read before anything in the step writes it
    kLaunch,    // run node `index` of the step graph
    kRelease,   // the slot's last use has passed and the script no longer holds it
    // With several devices (every device's program has the same instructions; `index` is a slot):
    kAllReduce,  // sum the slot's partial values over the devices (kPartial -> kReplicate)
    kAllGather,  // gather the slot's rows from every device (kShard -> kReplicate)
    kBroadcast,  // copy device 0's value to every device (kHome/kLocal -> kReplicate)
    kScale,      // multiply the slot's elements by factors[aux] (a device's share of a mean)
    kMultiply,   // scalar slot *= scalar slot `aux` (a local mean loss back to a local sum)
    kDivide,     // scalar slot /= scalar slot `aux` (the summed loss over the summed weight)
    kKeepRows,   // keep only this device's rows of a replicated slot (kReplicate -> kShard, no traffic)
    kReduceScatter,  // sum the slot's partial values, each device keeping its rows of the sum (kPartial -> kShard)
    // One generated kernel in place of several elementwise nodes: fused[index] of the program.
    kFused,
    // Point to point between two devices' programs (pipeline stages): `index` is a slot, `aux` the peer
    // device, `tag` names the message. The k-th send from a to b meets b's k-th receive from a; both must
    // carry the same tag and as many bytes (check_point_to_point, before anything runs).
    kSend,  // send the slot's whole value (or ranges[range - 1] of it) to device `aux`
    kRecv,  // receive it from device `aux` (memory is bound first if the slot has none)
  };
  Kind kind;
  uint32_t index;
  // kAllocate: sizes[aux] bytes; kLaunch: launches[aux - 1] (0: as recorded); kSend/kRecv: peer; kAllGather,
  // kReduceScatter, kKeepRows: the rows in geometries[aux - 1] (0: the plan's slots[index]).
  uint32_t aux = 0;
  uint32_t tag = 0;  // kSend/kRecv
  // Collectives: over every device of the plan (0) or over the devices of groups[group - 1] (a pipeline
  // stage's data-parallel replicas), ranked in that list's order.
  uint16_t group = 0;
  // kSend/kRecv: 0 for the buffer's whole value, else ranges[range - 1] of the device's block (a pipeline
  // stage's micro-batch of rows); kAllReduce: 0 as `aux` says, else the sum of ranges[range - 1] (a micro-batch's
  // rows of a tensor-parallel partial sum).
  uint32_t range = 0;
};

// Bytes [offset, offset + bytes) of a device's block of a buffer; a receiver without memory binds
// `block_bytes` first.
struct ByteRange {
  uint64_t offset = 0, bytes = 0, block_bytes = 0;
};

// A tensor as one device sees it: its part of the batch (strides as recorded), or its part of a value split
// along another dimension (`strides` of its own block; empty: as recorded).
struct LocalRef {
  int64_t offset = 0;
  Dims sizes{};
  Dims strides{};
};

// A node run on one device's part of the batch.
struct LocalLaunch {
  std::vector<LocalRef> inputs, outputs;
  RowRange rows;            // this device's rows of the step's batch
  int64_t batch_rows = 0;   // the whole batch
  int input0_dim = -1;      // where input 0 is split (random ops draw the whole batch's numbers along it)

  // Micro-batches (a pipeline stage runs a node once per micro-batch on one device): how each output's
  // result joins what the device's block of that buffer already holds. Empty: every output is fresh.
  enum class Join : uint8_t {
    kFresh,       // the result is the buffer's value (bound as a kernel's output always is)
    kInto,        // copied into the existing block at `into[k]` elements past the output's recorded offset
    kAccumulate,  // added to the existing block (a sum over micro-batches); fresh when there is none yet
  };
  std::vector<Join> joins;
  std::vector<int64_t> into;      // per output, for kInto
  std::vector<double> factors;    // per output, multiplied into the result first (empty: 1)
  // A loss mean: output `weighted` is multiplied by output `weight` (its local weight) before joining, so
  // that the sum over micro-batches divided by the summed weight is the whole batch's mean.
  int weighted = -1, weight = -1;
  // Integer arguments read in place of the recorded ones (schema argument, value): 1F1B takes a mean loss's
  // gradient as a sum (reduction 2) and divides it by the loss's total weight once every micro-batch is in.
  std::vector<std::pair<int, int64_t>> int_args;

  // An op over lists (list_elements) run on some of their elements only (a _foreach_ op whose tensors lie
  // on several pipeline stages): the elements kept, ascending. Empty: all. The launch then has no refs of
  // its own (inputs and outputs as recorded).
  std::vector<uint32_t> elements;
};

// What the collectives and host arithmetic need to know about a slot.
struct SlotInfo {
  std::optional<DataType> type;  // the element type, when the runtime can compute on it
  uint64_t row_bytes = 0;        // kShard slots: bytes per row
  uint64_t outer = 1;            // kShard slots: blocks of rows (Placement::outer)
  // kShard slots: the rows split, when the value the collective's group shares is less than the buffer (its
  // part of the batch, tensor parallelism beside data parallelism); 0: as many as the buffer holds.
  uint64_t rows = 0;
};

// The bytes of the whole value a collective of `info`'s geometry gathers, scatters or keeps rows of.
inline uint64_t whole_bytes(const SlotInfo& info, uint64_t buffer_bytes) {
  return info.rows ? info.rows * info.row_bytes * std::max<uint64_t>(info.outer, 1) : buffer_bytes;
}

// Several elementwise nodes of the step run as one generated kernel (scheduler/fusion/elementwise_fusion.h). Where
// each kernel argument comes from is named by node, so a cached plan serves every step with its graph's hash:
// the step's own buffers and per-step scalar values are read at launch.
struct FusedLaunch {
  struct Tensor {
    uint32_t node = 0;
    uint16_t index = 0;   // into the node's inputs (kernel inputs, and outputs written in place) or outputs
    bool fresh = false;   // an output: the node's fresh output (the launch gives it memory), else a written input
    int64_t offset = -1;  // >= 0: this device's offset in place of the node's (a launch on its rows of the batch)
  };
  struct Scalar {
    uint32_t node = 0;
    uint16_t attr = 0;    // into the node's attrs: a StepValue, an integer or a bool
  };
  std::shared_ptr<const ElementwiseKernel> kernel;
  std::vector<Tensor> inputs;    // kernel input i reads this tensor
  std::vector<Scalar> scalars;   // kernel scalar j
  std::vector<Tensor> outputs;   // kernel output k writes this tensor
  ElementwiseArguments shape;    // count, sizes and strides; pointers and scalars are filled at launch
  std::vector<uint32_t> nodes;   // the nodes it stands for, ascending
};

struct DeviceProgram {
  int device = 0;
  std::vector<Instruction> code;
  uint64_t peak_bytes = 0;  // most bytes the program holds at once beyond what exists before it
  std::vector<LocalLaunch> launches{};
  std::vector<uint64_t> sizes{};
  std::vector<double> factors{};
  std::vector<FusedLaunch> fused{};
  std::vector<ByteRange> ranges{};  // kSend/kRecv, kAllReduce
  std::vector<SlotInfo> geometries{};  // kAllGather, kReduceScatter, kKeepRows
};

// What the executor runs for a step (what the scheduler says about it is its report,
// scheduler/plan_report.h).
struct Plan {
  uint64_t graph_hash = 0;
  std::vector<DeviceProgram> programs;
  uint64_t num_nodes = 0;
  // With several devices: the groups collectives may span, where each slot's value lives after the step,
  // and what collectives need about each slot.
  int num_devices = 1;
  std::vector<std::vector<int>> groups;  // device groups that collectives may span (Instruction::group)
  std::vector<Placement> final_placements;
  std::vector<SlotInfo> slots;
};

// The rows a collective of `program` moves: its own geometry, else the slot's.
inline const SlotInfo& geometry_of(const Plan& plan, const DeviceProgram& program, const Instruction& ins) {
  return ins.aux ? program.geometries.at(ins.aux - 1) : plan.slots.at(ins.index);
}

}  // namespace moreh::runtime
