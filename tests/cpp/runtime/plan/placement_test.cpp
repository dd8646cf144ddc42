// Where a placement's parts lie: the devices a placement speaks of, and a device's rank among them (every device, a pipeline stage's replicas, or one axis of a mesh).
#include "runtime/plan/placement.h"

#include <gtest/gtest.h>

#include <vector>

namespace moreh::runtime {
namespace {

TEST(PlacementDevicesTest, AStagesReplicasAreItsDevices) {
  Placement p{PlacementKind::kShard, 8};
  p.devices = 0b1010;
  EXPECT_EQ(placement_devices(p, 4), (std::vector<int>{1, 3}));
  EXPECT_EQ(placement_rank(p, 4, 3).rank, 1);
  EXPECT_EQ(placement_rank(p, 4, 3).ranks, 2);
  EXPECT_EQ(placement_rank(p, 4, 2).rank, -1);
}

TEST(PlacementRankTest, AMeshAxisGivesEachDeviceItsRankAlongIt) {
  Placement p{PlacementKind::kShard, 8};
  EXPECT_EQ(placement_devices(p, 4), (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(placement_rank(p, 4, 3).rank, 3);
  p.ranks = 2;  // the tensor axis of 2 pieces x 2 ranks
  EXPECT_EQ(placement_devices(p, 4), (std::vector<int>{0, 1}));
  EXPECT_EQ(placement_rank(p, 4, 3).rank, 1);
  EXPECT_EQ(placement_rank(p, 4, 3).ranks, 2);
  p.stride = 2;  // the batch's axis
  EXPECT_EQ(placement_devices(p, 4), (std::vector<int>{0, 2}));
  EXPECT_EQ(placement_rank(p, 4, 1).rank, 0);
  EXPECT_EQ(placement_rank(p, 4, 3).rank, 1);
  EXPECT_EQ(placement_rank(Placement{}, 4, 1).rank, -1);  // kHome: device 0 only
}

TEST(PlacementRankTest, AStagesMeshCountsFromItsFirstDevice) {
  // 2 replicas x 2 stages x 2 ranks: stage 1 is devices 2, 3, 6, 7.
  Placement p{PlacementKind::kShard, 8};
  p.devices = 0b11001100;
  p.ranks = 2;  // its tensor axis
  EXPECT_EQ(placement_devices(p, 8), (std::vector<int>{2, 3}));
  EXPECT_EQ(placement_rank(p, 8, 7).rank, 1);
  EXPECT_EQ(placement_rank(p, 8, 1).rank, -1);  // stage 0's
  p.stride = 4;  // its replicas' axis
  EXPECT_EQ(placement_devices(p, 8), (std::vector<int>{2, 6}));
  EXPECT_EQ(placement_rank(p, 8, 7).rank, 1);
  EXPECT_EQ(placement_rank(p, 8, 2).rank, 0);
}

}  // namespace
}  // namespace moreh::runtime
