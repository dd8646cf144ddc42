// The geometry of split values: the dim a view walks the rows along (leading rows, rows in blocks, a dim running
// through several blocks), the layout a split gives a buffer, and a device's view of its part.
#include "scheduler/lowering/split_geometry.h"

#include <gtest/gtest.h>

#include <memory>

#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using moreh::testing::shaped;
using moreh::testing::transposed;
using runtime::Buffer;
using runtime::TensorRef;

TEST(SplitGeometryTest, AViewFindsTheDimThatWalksTheRowsOfEachBlock) {
  runtime::VirtualMemory vm;
  auto b = std::make_shared<Buffer>(vm, 4 * 6 * 4);  // [4, 6] floats, split along its 6 columns: 4 blocks
  const TensorRef m = shaped(b, {4, 6});
  EXPECT_EQ(split_dim(m, b->bytes(), 6, 4), 1);
  EXPECT_EQ(split_dim(transposed(m), b->bytes(), 6, 4), 0);  // [6, 4] over the same memory
  EXPECT_EQ(split_dim(shaped(b, {2, 2, 6}), b->bytes(), 6, 4), 2);
  const auto flat = view_split(shaped(b, {24}), b->bytes(), 6, 4);  // one dim through the rows of all 4 blocks
  ASSERT_TRUE(flat);
  EXPECT_EQ(flat->dim, 0);
  EXPECT_EQ(flat->blocks, 4);
  EXPECT_EQ(split_dim(shaped(b, {3, 8}), b->bytes(), 6, 4), std::nullopt);  // rows cut across
  EXPECT_EQ(split_dim(m, b->bytes(), 4, 1), 0);  // by leading rows: row_dim
  const auto layout = split_layout(m, b->bytes(), 1, 6);
  ASSERT_TRUE(layout);
  EXPECT_EQ(*layout, (SplitLayout{6, 4}));
  EXPECT_EQ(split_layout(m, b->bytes(), 0, 4), (SplitLayout{4, 1}));

  // Device 1 of 2 holds columns 3..5 of every row as [4, 3]; cut from the whole value it reads at offset 3.
  const runtime::LocalRef mine = local_part(m, b->bytes(), 1, *layout, {3, 3}, true);
  EXPECT_EQ(mine.sizes, (runtime::Dims{4, 3}));
  EXPECT_EQ(mine.strides, (runtime::Dims{3, 1}));
  EXPECT_EQ(mine.offset, 0);
  const runtime::LocalRef cut = local_part(m, b->bytes(), 1, *layout, {3, 3}, false);
  EXPECT_EQ(cut.sizes, (runtime::Dims{4, 3}));
  EXPECT_TRUE(cut.strides.empty());  // the recorded ones
  EXPECT_EQ(cut.offset, 3);
  TensorRef row2 = m;  // the third row only, as a view from its start
  row2.offset = 12;
  row2.sizes = {1, 6};
  const runtime::LocalRef in_block = local_part(row2, b->bytes(), 1, *layout, {3, 3}, true);
  EXPECT_EQ(in_block.offset, 6);  // the third of the device's blocks of 3
}

// A fused qkv weight [3C, C] (C = 4: 2 heads of 2) split by heads is 3 blocks of 2 heads; its transpose's dim 1
// runs through all three, and a device's view of its block takes its head of each.
TEST(SplitGeometryTest, AFusedQkvWeightSplitByHeadsRunsThroughThreeBlocks) {
  runtime::VirtualMemory vm;
  auto w = std::make_shared<Buffer>(vm, 12 * 4 * 4);
  const TensorRef wt = transposed(shaped(w, {12, 4}));  // [4, 12], strides (1, 4)
  const auto layout = split_layout(wt, w->bytes(), 1, 2, 3);
  ASSERT_TRUE(layout);
  EXPECT_EQ(*layout, (SplitLayout{2, 3}));  // 2 heads (rows of 2 x 4 elements) in each of 3 blocks
  EXPECT_EQ(split_layout(wt, w->bytes(), 1, 2, 1), (SplitLayout{2, 1}));  // one block: two halves of the 12 rows
  const runtime::LocalRef mine = local_part(wt, w->bytes(), 1, *layout, {1, 1}, true, 3);
  EXPECT_EQ(mine.sizes, (runtime::Dims{4, 6}));  // head 1 of q, k and v: 3 x 2 rows of the weight
  EXPECT_EQ(mine.strides, (runtime::Dims{1, 4}));
  EXPECT_EQ(mine.offset, 0);
}

}  // namespace
}  // namespace moreh::scheduler
