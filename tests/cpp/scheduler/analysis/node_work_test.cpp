// A node's FLOPs and bytes: matmuls count multiply-adds, a launch's own views count its part, transcendental
// functions are marked.
#include "scheduler/analysis/node_work.h"

#include <gtest/gtest.h>

#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;

TEST(NodeWorkTest, AMatmulCountsItsMultiplyAddsAndItsBytes) {
  runtime::VirtualMemory vm;
  auto a = std::make_shared<Buffer>(vm, 4 * 64 * 16, 1), b = std::make_shared<Buffer>(vm, 4 * 16 * 32, 1);
  auto c = std::make_shared<Buffer>(vm, 4 * 64 * 32, 1);
  const Node mm = node("aten::mm", {shaped(a, {64, 16}), shaped(b, {16, 32})}, {shaped(c, {64, 32})});
  const NodeWork w = node_work(mm);
  EXPECT_DOUBLE_EQ(w.multiply_adds, 64.0 * 32 * 16);
  EXPECT_DOUBLE_EQ(w.flops(), 2.0 * 64 * 32 * 16);
  EXPECT_DOUBLE_EQ(w.bytes_read, 4.0 * (64 * 16 + 16 * 32));
  EXPECT_DOUBLE_EQ(w.bytes_written, 4.0 * 64 * 32);
  EXPECT_FALSE(w.low_precision);
  EXPECT_FALSE(w.transcendental);
}

TEST(NodeWorkTest, ALaunchsOwnViewsCountItsPart) {
  runtime::VirtualMemory vm;
  auto a = std::make_shared<Buffer>(vm, 4 * 64 * 16, 1), b = std::make_shared<Buffer>(vm, 4 * 16 * 32, 1);
  auto c = std::make_shared<Buffer>(vm, 4 * 64 * 32, 1);
  const Node mm = node("aten::mm", {shaped(a, {64, 16}), shaped(b, {16, 32})}, {shaped(c, {64, 32})});
  runtime::LocalLaunch local;  // a tensor-parallel rank's half of the columns; input a as recorded
  local.inputs = {{}, {0, {16, 16}, {32, 1}}};
  local.outputs = {{0, {64, 16}, {32, 1}}};
  const NodeWork w = node_work(mm, &local);
  EXPECT_DOUBLE_EQ(w.multiply_adds, 64.0 * 16 * 16);
  EXPECT_DOUBLE_EQ(w.bytes_read, 4.0 * (64 * 16 + 16 * 16));
  EXPECT_DOUBLE_EQ(w.bytes_written, 4.0 * 64 * 16);
}

TEST(NodeWorkTest, TranscendentalFunctionsCountMoreThanAnAdd) {
  runtime::VirtualMemory vm;
  auto x = std::make_shared<Buffer>(vm, 4 * 100, 1), y = std::make_shared<Buffer>(vm, 4 * 100, 1);
  const NodeWork gelu = node_work(node("aten::gelu", {shaped(x, {100})}, {shaped(y, {100})}));
  const NodeWork add = node_work(node("aten::add.Tensor", {shaped(x, {100}), shaped(x, {100})}, {shaped(y, {100})}));
  EXPECT_TRUE(gelu.transcendental);
  EXPECT_FALSE(add.transcendental);
  EXPECT_DOUBLE_EQ(add.flops(), 100);
  EXPECT_DOUBLE_EQ(gelu.flops(), 100 * kTranscendentalFlops);
}

}  // namespace
}  // namespace moreh::scheduler
