#include "scheduler/lowering/liveness.h"

#include <gtest/gtest.h>

#include <vector>

namespace moreh::scheduler {
namespace {

struct Touch {
  std::vector<uint32_t> touched, fresh;
};

std::vector<std::vector<uint32_t>> dead(const std::vector<Touch>& seq, size_t slots) {
  return dead_after(seq.size(), slots, [&](size_t p, std::vector<uint32_t>& t, std::vector<uint32_t>& f) {
    t = seq[p].touched;
    f = seq[p].fresh;
  });
}

TEST(LivenessTest, AValueDiesAtItsLastTouch) {
  // 0: make s0; 1: read s0, make s1; 2: read s1 twice.
  const auto d = dead({{{0}, {0}}, {{0, 1}, {1}}, {{1, 1}, {}}}, 2);
  EXPECT_TRUE(d[0].empty());
  EXPECT_EQ(d[1], std::vector<uint32_t>{0});
  EXPECT_EQ(d[2], std::vector<uint32_t>{1});  // once, though touched twice
}

TEST(LivenessTest, AValueMadeAgainDiesBeforeItIsMadeAgain) {
  // s0 made, read, made again (a recomputed activation), read.
  const auto d = dead({{{0}, {0}}, {{0}, {}}, {{1}, {}}, {{0}, {0}}, {{0}, {}}}, 2);
  EXPECT_EQ(d[1], std::vector<uint32_t>{0});
  EXPECT_EQ(d[2], std::vector<uint32_t>{1});
  EXPECT_TRUE(d[3].empty());
  EXPECT_EQ(d[4], std::vector<uint32_t>{0});
}

TEST(LivenessTest, AWriteThatReadsKeepsTheValueAlive) {
  // s0 made, then updated in place (touched, not fresh): it lives to the update.
  const auto d = dead({{{0}, {0}}, {{0}, {}}}, 1);
  EXPECT_TRUE(d[0].empty());
  EXPECT_EQ(d[1], std::vector<uint32_t>{0});
}

}  // namespace
}  // namespace moreh::scheduler
