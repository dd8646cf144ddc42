#include "runtime/exec/gather_home.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <vector>

#include "runtime/host/host_device.h"
#include "runtime/memory/virtual_memory.h"
#include "runtime/plan/placement.h"

namespace moreh::runtime {
namespace {

class GatherHomeTest : public ::testing::Test {
 protected:
  static constexpr int kDevices = 3;
  GatherHomeTest() {
    for (int d = 0; d < kDevices; ++d) devices.push_back(std::make_unique<HostDevice>(d, 1 << 20));
    for (auto& d : devices) raw.push_back(d.get());
  }
  float* on(Buffer& b, int d, uint64_t bytes) {
    if (!b.memory(d)) b.bind(d, devices[d]->allocate(bytes));
    return static_cast<float*>(b.memory(d)->data());
  }
  VirtualMemory vm;
  std::vector<std::unique_ptr<PhysicalDevice>> devices;
  std::vector<PhysicalDevice*> raw;
};

TEST_F(GatherHomeTest, RowsSplitOverTheDevicesComeTogetherOnDeviceZero) {
  Buffer b(vm, 5 * 4, kDevices);  // 5 rows of one float
  for (int d = 0; d < kDevices; ++d) {
    const RowRange r = split_rows(5, kDevices, d);  // 2, 2, 1 rows
    float* f = on(b, d, r.count * 4);
    for (int64_t i = 0; i < r.count; ++i) f[i] = static_cast<float>(10 * (r.begin + i));
  }
  b.set_placement({PlacementKind::kShard, 5});
  gather_home(b, raw);
  EXPECT_EQ(b.placement().kind, PlacementKind::kHome);
  const float* home = static_cast<const float*>(b.memory(0)->data());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(home[i], 10.0f * i);
  EXPECT_EQ(b.memory(1), nullptr);
  EXPECT_EQ(b.memory(2), nullptr);
}

TEST_F(GatherHomeTest, AHostReadAssemblesRowsAndSumsWithoutBringingThemHome) {
  Buffer rows(vm, 5 * 4, kDevices);  // a parameter resting in rows (ZeRO-3)
  for (int d = 0; d < kDevices; ++d) {
    const RowRange r = split_rows(5, kDevices, d);
    float* f = on(rows, d, r.count * 4);
    for (int64_t i = 0; i < r.count; ++i) f[i] = static_cast<float>(10 * (r.begin + i));
  }
  rows.set_placement({PlacementKind::kShard, 5});
  std::vector<float> host(5, -1.0f);
  ASSERT_TRUE(read_whole(rows, raw, host.data()));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(host[i], 10.0f * i);
  EXPECT_EQ(rows.placement().kind, PlacementKind::kShard);  // left where it lies, every device's rows kept
  for (int d = 0; d < kDevices; ++d) EXPECT_NE(rows.memory(d), nullptr);

  Buffer partial(vm, 2 * 4, kDevices);
  for (int d = 0; d < kDevices; ++d) {
    float* f = on(partial, d, 8);
    f[0] = static_cast<float>(d + 1);
    f[1] = 1.0f;
  }
  partial.set_placement({PlacementKind::kPartial, 0, DataType::kFloat32});
  std::vector<float> sum(2);
  ASSERT_TRUE(read_whole(partial, raw, sum.data()));
  EXPECT_EQ(sum[0], 6.0f);
  EXPECT_EQ(sum[1], 3.0f);
  EXPECT_EQ(partial.placement().kind, PlacementKind::kPartial);

  Buffer home(vm, 4, kDevices);
  *on(home, 0, 4) = 1.0f;
  home.set_placement({PlacementKind::kHome});
  float x = 0;
  EXPECT_FALSE(read_whole(home, raw, &x));  // at home: the caller reads device 0's block
}

TEST_F(GatherHomeTest, PartialValuesAreSummedOnDeviceZero) {
  Buffer b(vm, 3 * 4, kDevices);
  for (int d = 0; d < kDevices; ++d) {
    float* f = on(b, d, 12);
    for (int i = 0; i < 3; ++i) f[i] = static_cast<float>((d + 1) * (i + 1));
  }
  b.set_placement({PlacementKind::kPartial, 0, DataType::kFloat32});
  gather_home(b, raw);
  const float* home = static_cast<const float*>(b.memory(0)->data());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(home[i], 6.0f * (i + 1));
  EXPECT_EQ(b.placement().kind, PlacementKind::kHome);
  EXPECT_EQ(b.memory(1), nullptr);
}

TEST_F(GatherHomeTest, AReplicatedValueKeepsDeviceZerosCopyOnly) {
  Buffer b(vm, 4, kDevices);
  for (int d = 0; d < kDevices; ++d) *on(b, d, 4) = 7.0f;
  b.set_placement({PlacementKind::kReplicate});
  gather_home(b, raw);
  EXPECT_EQ(*static_cast<const float*>(b.memory(0)->data()), 7.0f);
  EXPECT_EQ(b.memory(2), nullptr);
  EXPECT_EQ(b.placement().kind, PlacementKind::kHome);
  gather_home(b, raw);  // at home already: nothing to do
  EXPECT_EQ(*static_cast<const float*>(b.memory(0)->data()), 7.0f);
}

// A pipeline stage's values lie on its devices only (Placement::devices).
TEST_F(GatherHomeTest, AStagesValueComesHomeFromItsDevices) {
  Buffer w(vm, 4, kDevices);
  *on(w, 2, 4) = 3.0f;  // stage 2's parameter
  Placement p{PlacementKind::kReplicate};
  p.devices = 0b100;
  w.set_placement(p);
  gather_home(w, raw);
  EXPECT_EQ(*static_cast<const float*>(w.memory(0)->data()), 3.0f);
  EXPECT_EQ(w.memory(2), nullptr);

  Buffer rows(vm, 3 * 4, kDevices);  // 3 rows over the replicas on devices 1 and 2: 2 + 1
  on(rows, 0, 4)[0] = -1.0f;         // a stale block on device 0, not a holder
  float* a = on(rows, 1, 8);
  a[0] = 1.0f, a[1] = 2.0f;
  on(rows, 2, 4)[0] = 3.0f;
  Placement shard{PlacementKind::kShard, 3};
  shard.devices = 0b110;
  rows.set_placement(shard);
  gather_home(rows, raw);
  const float* home = static_cast<const float*>(rows.memory(0)->data());
  EXPECT_EQ(home[0], 1.0f);
  EXPECT_EQ(home[1], 2.0f);
  EXPECT_EQ(home[2], 3.0f);

  Buffer sum(vm, 4, kDevices);
  *on(sum, 0, 4) = 100.0f;  // stale
  *on(sum, 1, 4) = 1.0f;
  *on(sum, 2, 4) = 2.0f;
  Placement partial{PlacementKind::kPartial, 0, DataType::kFloat32};
  partial.devices = 0b110;
  sum.set_placement(partial);
  gather_home(sum, raw);
  EXPECT_EQ(*static_cast<const float*>(sum.memory(0)->data()), 3.0f);
}

// The optimizer state of a tensor-parallel part sharded over the replicas (2 replicas x 2 ranks): each rank's part
// (2 of the 4 rows) is split again by its own rows over the replicas, device d = replica d / 2, rank d % 2.
TEST(GatherHomeMeshTest, APartSplitAgainOverTheReplicasComesTogether) {
  VirtualMemory vm;
  std::vector<std::unique_ptr<PhysicalDevice>> devices;
  std::vector<PhysicalDevice*> raw;
  for (int d = 0; d < 4; ++d) {
    devices.push_back(std::make_unique<HostDevice>(d, 1 << 20));
    raw.push_back(devices.back().get());
  }
  Buffer b(vm, 4 * 4, 4);
  const int row_on[4] = {0, 2, 1, 3};  // rank r's rows 2r, 2r + 1; replica i keeps the i-th of them
  for (int d = 0; d < 4; ++d) {
    b.bind(d, devices[d]->allocate(4));
    *static_cast<float*>(b.memory(d)->data()) = 10.0f * static_cast<float>(row_on[d]);
  }
  Placement p{PlacementKind::kShard, 4};
  p.ranks = 2;
  p.inner_rows = 2;
  p.inner_ranks = 2;
  p.inner_stride = 2;
  b.set_placement(p);
  for (int d = 0; d < 4; ++d) EXPECT_EQ(placement_bytes(p, 16, 4, d), 4u);
  float read[4] = {};
  ASSERT_TRUE(read_whole(b, raw, read));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(read[i], 10.0f * static_cast<float>(i));
  gather_home(b, raw);
  const float* home = static_cast<const float*>(b.memory(0)->data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(home[i], 10.0f * static_cast<float>(i));
}

}  // namespace
}  // namespace moreh::runtime
