#include "runtime/plan/device_mesh.h"

#include <gtest/gtest.h>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

using P = AxisPlacement;

TEST(DeviceMeshTest, EzpzLayoutAndTheMeshAgreeOnEveryRank) {
  const ParallelSizes sizes{.dp = 2, .pp = 2, .tp = 2, .cp = 1};
  const DeviceMesh mesh = DeviceMesh::of_layout(sizes);
  ASSERT_EQ(mesh.size(), 8);
  for (int r = 0; r < 8; ++r) {
    const RankCoordinates c = rank_coordinates(sizes, r);
    EXPECT_EQ(mesh.coordinates(r), (std::vector<int>{c.dp, c.pp, c.cp, c.tp})) << r;
    EXPECT_EQ(mesh.device_at(mesh.coordinates(r)), r);
  }
}

TEST(DeviceMeshTest, AGroupAlongAnAxisIsTheDevicesThatDifferThereOnly) {
  const DeviceMesh mesh = DeviceMesh::of_layout({.dp = 2, .pp = 2, .tp = 2});
  // device = dp * 4 + pp * 2 + tp
  EXPECT_EQ(mesh.group(1, mesh.axis("dp")), (std::vector<int>{1, 5}));
  EXPECT_EQ(mesh.group(1, mesh.axis("pp")), (std::vector<int>{1, 3}));
  EXPECT_EQ(mesh.group(1, mesh.axis("tp")), (std::vector<int>{0, 1}));
  EXPECT_EQ(mesh.group(6, mesh.axis("cp")), (std::vector<int>{6}));
  EXPECT_EQ(mesh.groups(mesh.axis("dp")), (std::vector<std::vector<int>>{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(mesh.groups(mesh.axis("pp")), (std::vector<std::vector<int>>{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
}

TEST(DeviceMeshTest, BadAxesAndCoordinatesAreConfigErrors) {
  EXPECT_THROW(DeviceMesh({{"dp", 2}, {"dp", 2}}), ConfigError);
  EXPECT_THROW(DeviceMesh({{"dp", 0}}), ConfigError);
  EXPECT_THROW(DeviceMesh({{"", 2}}), ConfigError);
  const DeviceMesh mesh({{"dp", 2}, {"tp", 3}});
  try {
    mesh.axis("pp");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("the mesh has no axis pp (axes: dp, tp)"), std::string::npos);
  }
  EXPECT_THROW(mesh.coordinates(6), ConfigError);
  EXPECT_THROW(mesh.device_at({0, 3}), ConfigError);
  EXPECT_THROW(mesh.group(0, 2), ConfigError);
}

TEST(DeviceMeshTest, LocalShapesSplitShardedDimensionsAxisAfterAxis) {
  const DeviceMesh mesh({{"dp", 2}, {"tp", 2}});
  const Placements rows_and_cols{P::shard(0), P::shard(1)};
  EXPECT_EQ(describe(mesh, rows_and_cols), "(dp: Shard(0), tp: Shard(1))");
  EXPECT_EQ(local_shape(mesh, rows_and_cols, {10, 6}, 3), (Dims{5, 3}));
  // Uneven: the first of the axis gets the extra row, as split_rows does.
  EXPECT_EQ(local_shape(mesh, {P::shard(0), P::replicate()}, {5, 6}, 0), (Dims{3, 6}));
  EXPECT_EQ(local_shape(mesh, {P::shard(0), P::replicate()}, {5, 6}, 2), (Dims{2, 6}));
  // Twice along one dimension: dp's share, then tp's share of it.
  EXPECT_EQ(local_shape(mesh, {P::shard(0), P::shard(0)}, {10, 6}, 1), (Dims{2, 6}));
  EXPECT_EQ(local_shape(mesh, {P::partial(), P::replicate()}, {10, 6}, 1), (Dims{10, 6}));
  EXPECT_EQ(describe(mesh, {P::partial(), P::replicate()}), "(dp: Partial, tp: Replicate)");
  EXPECT_THROW(local_shape(mesh, {P::shard(2), P::replicate()}, {10, 6}, 0), ConfigError);
  EXPECT_THROW(local_shape(mesh, {P::replicate()}, {10, 6}, 0), ConfigError);
}

}  // namespace
}  // namespace moreh::runtime
