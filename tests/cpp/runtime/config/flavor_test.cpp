#include "runtime/config/flavor.h"

#include <gtest/gtest.h>

#include <set>

namespace moreh::runtime {
namespace {

TEST(FlavorTest, TableIsMoaisThirteenFlavorsWithOneDevicePer64GB) {
  const auto& table = flavor_table();
  ASSERT_EQ(table.size(), 13u);
  EXPECT_EQ(table.front().name, "Small.64GB");
  EXPECT_EQ(table.front().num_devices, 1);
  EXPECT_EQ(table[3].name, "xLarge.512GB");
  EXPECT_EQ(table[3].num_devices, 8);
  EXPECT_EQ(table[4].name, "1.5xLarge.768GB");
  EXPECT_EQ(table[4].num_devices, 12);
  EXPECT_EQ(table.back().name, "48xLarge.24576GB");
  EXPECT_EQ(table.back().num_devices, 384);
  std::set<int> counts;
  for (const auto& f : table) {
    EXPECT_EQ(f.name.substr(f.name.rfind('.') + 1), std::to_string(f.num_devices * 64) + "GB") << f.name;
    counts.insert(f.num_devices);
  }
  EXPECT_EQ(counts.size(), table.size());
}

TEST(FlavorTest, FindIgnoresCaseAndRejectsUnknownNames) {
  ASSERT_TRUE(find_flavor("xlarge.512gb"));
  EXPECT_EQ(find_flavor("xlarge.512gb")->name, "xLarge.512GB");
  EXPECT_FALSE(find_flavor("xLarge"));
  EXPECT_FALSE(find_flavor("Huge.1GB"));
  EXPECT_FALSE(find_flavor(""));
}

TEST(FlavorTest, DeviceCountsOutsideTheTableAreCustom) {
  EXPECT_EQ(flavor_for_devices(4).name, "Large.256GB");
  EXPECT_EQ(flavor_for_devices(3).name, "Custom.192GB");
  EXPECT_EQ(flavor_for_devices(3).num_devices, 3);
  EXPECT_EQ(default_flavor().name, "Small.64GB");
  EXPECT_NE(flavor_names().find("Small.64GB, Medium.128GB"), std::string::npos);
}

}  // namespace
}  // namespace moreh::runtime
