#include "runtime/device/physical_devices.h"

#include <gtest/gtest.h>

#include <vector>

#include "runtime/config/config.h"

namespace moreh::runtime {
namespace {

TEST(PlaceLogicalDevicesTest, ContiguousRanksPerGpuTheFirstGpusTakingTheRemainder) {
  EXPECT_EQ(place_logical_devices(8, 3), (std::vector<int>{0, 0, 0, 1, 1, 1, 2, 2}));
  EXPECT_EQ(place_logical_devices(4, 2), (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(place_logical_devices(2, 4), (std::vector<int>{0, 1}));
  EXPECT_EQ(place_logical_devices(3, 1), (std::vector<int>{0, 0, 0}));
  EXPECT_TRUE(place_logical_devices(0, 2).empty());
}

TEST(MakePhysicalDevicesTest, HostDevicesWhenAskedFor) {
  Config config;
  config.flavor.num_devices = 3;
  config.device_kind = DeviceKindChoice::kHost;
  config.host_memory_capacity = 1 << 20;
  DeviceChoice choice = make_physical_devices(config, true);
  ASSERT_EQ(choice.devices.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(choice.devices[i]->kind(), DeviceKind::kHost);
    EXPECT_EQ(choice.devices[i]->index(), i);
    EXPECT_EQ(choice.devices[i]->capacity(), 1u << 20);
  }
  EXPECT_TRUE(choice.fallback_reason.empty());
}

}  // namespace
}  // namespace moreh::runtime
