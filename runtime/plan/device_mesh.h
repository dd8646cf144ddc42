// The devices of a parallel layout as a mesh with named axes (dp, pp, tp, ...), and where a value lies on
// it: one placement per axis, DTensor-style (Shard(dim), Replicate, Partial). The group a collective along
// an axis spans, and a value's local shape on each device, come from here.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "runtime/graph/step_graph.h"
#include "runtime/plan/rank_layout.h"

namespace moreh::runtime {

struct MeshAxis {
  std::string name;
  int size = 1;
};

class DeviceMesh {
 public:
  // Devices 0..n-1 laid out row-major over `axes` (the last axis varies fastest). Throws ConfigError for an
  // axis of size < 1, a repeated or empty name.
  explicit DeviceMesh(std::vector<MeshAxis> axes);
  // ezpz's layout (rank_layout.h): dp slowest, then pp, cp, tp fastest; axes of size 1 are kept.
  static DeviceMesh of_layout(const ParallelSizes& sizes);

  int size() const { return size_; }
  const std::vector<MeshAxis>& axes() const { return axes_; }
  // The axis called `name`; ConfigError naming the axes there are.
  int axis(std::string_view name) const;
  std::vector<int> coordinates(int device) const;
  int device_at(const std::vector<int>& coordinates) const;
  // The devices that differ from `device` along `axis` only, in that axis's order: whom a collective along
  // the axis spans (a pipeline stage's data-parallel replicas, a tensor-parallel group).
  std::vector<int> group(int device, int axis) const;
  // Every such group along `axis`: a partition of the devices, ordered by their first device.
  std::vector<std::vector<int>> groups(int axis) const;

 private:
  std::vector<MeshAxis> axes_;
  int size_ = 1;
};

struct AxisPlacement {
  enum class Kind : uint8_t { kReplicate, kShard, kPartial };
  Kind kind = Kind::kReplicate;
  int dim = -1;  // kShard: the tensor dimension split along the axis

  static AxisPlacement replicate() { return {}; }
  static AxisPlacement shard(int dim) { return {Kind::kShard, dim}; }
  static AxisPlacement partial() { return {Kind::kPartial, -1}; }
  bool operator==(const AxisPlacement&) const = default;
  std::string str() const;  // "Replicate", "Shard(0)", "Partial"
};

// One placement per mesh axis, in the mesh's axis order.
using Placements = std::vector<AxisPlacement>;

// "(dp: Shard(0), pp: Replicate, tp: Partial)".
std::string describe(const DeviceMesh& mesh, const Placements& placements);

// The shape `device` holds of a value of shape `global`: each Shard(d) splits dimension d over its axis as
// split_rows does (the first size % n get one more), axis after axis in mesh order; Replicate and Partial
// hold the whole extent. Throws ConfigError for placements that do not fit the mesh or the shape.
Dims local_shape(const DeviceMesh& mesh, const Placements& placements, const Dims& global, int device);

}  // namespace moreh::runtime
