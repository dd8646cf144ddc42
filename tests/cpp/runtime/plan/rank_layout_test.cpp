#include "runtime/plan/rank_layout.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

std::vector<std::string> host_names(int n) {
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back("host:" + std::to_string(i));
  return names;
}

TEST(RankLayoutTest, DeviceCountLine) {
  EXPECT_EQ(device_count_line(1), "The number of devices is 1.");
  EXPECT_EQ(device_count_line(8), "The number of devices is 8.");
}

TEST(RankLayoutTest, OneDeviceShowsNoAxes) {
  EXPECT_EQ(rank_layout_lines({}, {"cuda:0"}), std::vector<std::string>{"[0/0]: cuda:0"});
}

TEST(RankLayoutTest, TwoDevicesOfDataParallelism) {
  EXPECT_EQ(rank_layout_lines({.dp = 2}, host_names(2)),
            (std::vector<std::string>{"[0/1]: [dp:0/1] host:0", "[1/1]: [dp:1/1] host:1"}));
}

TEST(RankLayoutTest, FourDevicesTensorFastestThenPipeline) {
  EXPECT_EQ(rank_layout_lines({.pp = 2, .tp = 2}, host_names(4)),
            (std::vector<std::string>{"[0/3]: [pp:0/1][tp:0/1] host:0", "[1/3]: [pp:0/1][tp:1/1] host:1",
                                      "[2/3]: [pp:1/1][tp:0/1] host:2", "[3/3]: [pp:1/1][tp:1/1] host:3"}));
}

TEST(RankLayoutTest, EightDevicesOfEveryMainAxis) {
  const auto lines = rank_layout_lines({.dp = 2, .pp = 2, .tp = 2}, host_names(8));
  ASSERT_EQ(lines.size(), 8u);
  EXPECT_EQ(lines[0], "[0/7]: [pp:0/1][tp:0/1][dp:0/1] host:0");
  EXPECT_EQ(lines[5], "[5/7]: [pp:0/1][tp:1/1][dp:1/1] host:5");
  EXPECT_EQ(lines[6], "[6/7]: [pp:1/1][tp:0/1][dp:1/1] host:6");
  EXPECT_EQ(rank_layout_lines({.dp = 8}, host_names(8))[7], "[7/7]: [dp:7/7] host:7");
  EXPECT_EQ(rank_layout_lines({.tp = 8}, host_names(8))[3], "[3/7]: [tp:3/7] host:3");
}

// The lines of seed 004 (ezpz on 24 ranks), with the device name after them.
TEST(RankLayoutTest, ReproducesTheEzpzLinesOfSeed004) {
  const auto names = host_names(24);
  const auto a = rank_layout_lines({.dp = 3, .pp = 2, .tp = 1, .cp = 4}, names);
  EXPECT_EQ(a[0], "[ 0/23]: [cp:0/3][pp:0/1][dp:0/2] host:0");
  EXPECT_EQ(a[3], "[ 3/23]: [cp:3/3][pp:0/1][dp:0/2] host:3");
  EXPECT_EQ(a[4], "[ 4/23]: [cp:0/3][pp:1/1][dp:0/2] host:4");
  EXPECT_EQ(a[21], "[21/23]: [cp:1/3][pp:1/1][dp:2/2] host:21");
  const auto b = rank_layout_lines({.dp = 3, .pp = 2, .tp = 2, .cp = 2}, names);
  EXPECT_EQ(b[1], "[ 1/23]: [cp:0/1][pp:0/1][tp:1/1][dp:0/2] host:1");
  EXPECT_EQ(b[11], "[11/23]: [cp:1/1][pp:0/1][tp:1/1][dp:1/2] host:11");
  EXPECT_EQ(b[22], "[22/23]: [cp:1/1][pp:1/1][tp:0/1][dp:2/2] host:22");
  const auto c = rank_layout_lines({.dp = 6, .tp = 2, .cp = 2}, names);
  EXPECT_EQ(c[2], "[ 2/23]: [cp:1/1][tp:0/1][dp:0/5] host:2");
  EXPECT_EQ(c[19], "[19/23]: [cp:1/1][tp:1/1][dp:4/5] host:19");
}

TEST(RankLayoutTest, WideAxesPadTheIndexAndTheLastIndex) {
  const auto lines = rank_layout_lines({.dp = 12, .tp = 2}, host_names(24));
  EXPECT_EQ(lines[6], "[ 6/23]: [tp:0/1][dp: 3/11] host:6");
  EXPECT_EQ(lines[23], "[23/23]: [tp:1/1][dp:11/11] host:23");
}

TEST(RankLayoutTest, CoordinatesAndRanksAreInverse) {
  const ParallelSizes s{.dp = 3, .pp = 2, .tp = 2, .cp = 2};
  for (int r = 0; r < s.devices(); ++r) EXPECT_EQ(rank_of(s, rank_coordinates(s, r)), r);
  EXPECT_EQ(rank_coordinates(s, 13), (RankCoordinates{.dp = 1, .pp = 1, .tp = 1, .cp = 0}));
}

TEST(RankLayoutTest, ALayoutThatDoesNotFitTheDevicesIsAConfigError) {
  EXPECT_THROW(rank_layout_lines({.dp = 3}, host_names(4)), ConfigError);
  EXPECT_THROW(rank_layout_lines({.dp = 0}, {}), ConfigError);
  EXPECT_THROW(rank_coordinates({.dp = 2}, 2), ConfigError);
}

}  // namespace
}  // namespace moreh::runtime
