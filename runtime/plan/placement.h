// How a buffer's contents are laid over the physical devices of the virtual one (DESIGN.md §2.5). With
// one device every buffer is kHome. With N, a step's plan leaves each buffer it touched in one of the
// others, and the next plan (or a host read) starts from there.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/base/data_type.h"

namespace moreh::runtime {

enum class PlacementKind : uint8_t {
  kHome,       // the whole value, on device 0 only (written by the host or an eager op)
  kReplicate,  // the whole value on every device
  kShard,      // split by rows: device d holds rows split_rows(rows, N, d) of `rows` equal rows, contiguous;
               // with outer > 1, of each of `outer` blocks (see Placement::outer)
  kPartial,    // every device holds a full-size addend; the value is their sum
  kLocal,      // every device holds its own value (per-device batch-norm statistics); device 0's counts
};

struct Placement {
  PlacementKind kind = PlacementKind::kHome;
  int64_t rows = 0;                     // kShard: the global number of rows
  DataType type = DataType::kFloat32;   // kPartial: the element type to sum in
  // The devices the kinds above speak of, as a bit per device (a pipeline stage's data-parallel replicas);
  // 0: every device. kHome is always device 0.
  uint64_t devices = 0;
  // kShard along a dimension that is not the leading one (tensor parallelism): the value is `outer` blocks
  // of `rows` rows each (outer: the product of the sizes before that dimension; a row: what follows it),
  // and device d holds its rows of every block, [outer, its rows, row] contiguous. 1: split by leading rows.
  int64_t outer = 1;
  // Along one axis of a mesh (data parallelism beside tensor parallelism, a pipeline stage's replicas × ranks):
  // device d of `devices` has rank (d / stride) % ranks on the axis. kShard: rank q's devices each hold split_rows(rows, ranks,
  // q) (equal copies); kPartial: the value is the sum over one group along the axis, each group giving the
  // same sum. ranks 0: every device (of `devices`) is a rank of its own.
  int32_t stride = 1;
  int32_t ranks = 0;
  // kShard along a mesh axis whose parts are split again along the other axis (the optimizer state of tensor
  // parallelism's parts sharded over the replicas): a device's part ([outer, its rows, row]) is `inner_rows`
  // rows of the part's own leading dim, of which device d keeps split_rows(inner_rows, inner_ranks, q), q =
  // (d / inner_stride) % inner_ranks. 0: each device holds its whole part.
  int64_t inner_rows = 0;
  int32_t inner_stride = 1;
  int32_t inner_ranks = 0;
  bool operator==(const Placement&) const = default;
};

// The devices of `p` in ascending order, out of `count` (every one when p.devices is 0); along a mesh axis
// (p.ranks > 0), the group of the first device of `devices` (device 0 when 0): one device per rank, in rank order.
std::vector<int> placement_devices(const Placement& p, int count);

// Device `device`'s rank among the holders of `p` (of `count` devices), and how many ranks there are; rank -1
// when the device holds none of it (kHome: every device but 0).
struct PlacementRank {
  int rank = -1, ranks = 0;
};
PlacementRank placement_rank(const Placement& p, int count, int device);

// The bytes device `device` holds of a value of `bytes` bytes placed as `p` (0: none of it): its rows of a
// kShard value (of its part, when the part is split again), else the whole.
uint64_t placement_bytes(const Placement& p, uint64_t bytes, int count, int device);

struct RowRange {
  int64_t begin = 0, count = 0;
};

// Device d's rows when `rows` rows are split over `devices`: contiguous, the first rows % devices devices
// one row more (torch.tensor_split's rule), so every device gets a row when rows >= devices.
RowRange split_rows(int64_t rows, int devices, int device);

}  // namespace moreh::runtime
