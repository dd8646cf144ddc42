// split_batch: each piece of the batch gets a launch of every step split by rows; with `viewed`, only the
// devices asked for get views (the others their rows only).
#include "scheduler/lowering/batch_split.h"

#include <gtest/gtest.h>

#include "pipeline_test_graph.h"
#include "runtime/base/data_type.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;
using runtime::Instruction;
using Kind = Instruction::Kind;

class BatchSplitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::register_data_type(6, runtime::DataType::kFloat32);
    runtime::set_op_facts(runtime::intern_op("aten::relu"), {.pointwise = true});
  }
  runtime::VirtualMemory vm;
};

TEST_F(BatchSplitTest, OnlyTheDevicesViewedGetViewsTheOthersTheirRows) {
  PipelineStep step(vm, 4);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  const std::vector<runtime::RowRange> pieces = {{0, 2}, {2, 2}, {4, 2}, {6, 2}};
  const BatchSplit all = split_batch(step.graph, c, pieces, 8);
  const std::vector<char> viewed = {1, 0, 1, 0};
  const BatchSplit some = split_batch(step.graph, c, pieces, 8, nullptr, true, {}, &viewed);
  ASSERT_EQ(all.replicated_fallbacks, 0u);
  ASSERT_EQ(some.steps.size(), all.steps.size());
  EXPECT_EQ(some.final_placements, all.final_placements);
  size_t split_launches = 0;
  for (size_t i = 0; i < all.steps.size(); ++i) {
    const SplitStep &a = all.steps[i], &s = some.steps[i];
    ASSERT_EQ(s.kind, a.kind);
    ASSERT_EQ(s.index, a.index);
    EXPECT_EQ(s.aligned, a.aligned);
    ASSERT_EQ(s.launches.size(), a.launches.size());
    if (!per_piece(a)) continue;
    ++split_launches;
    for (size_t d = 0; d < a.launches.size(); ++d) {
      SCOPED_TRACE(::testing::Message() << "step " << i << " device " << d);
      EXPECT_EQ(s.launches[d].rows.begin, a.launches[d].rows.begin);
      EXPECT_EQ(s.launches[d].rows.count, a.launches[d].rows.count);
      EXPECT_EQ(s.launches[d].batch_rows, a.launches[d].batch_rows);
      if (viewed[d]) {
        EXPECT_TRUE(same_views(s.launches[d].inputs, a.launches[d].inputs));
        EXPECT_TRUE(same_views(s.launches[d].outputs, a.launches[d].outputs));
        EXPECT_FALSE(a.launches[d].inputs.empty());
      } else {
        EXPECT_TRUE(s.launches[d].inputs.empty());
        EXPECT_TRUE(s.launches[d].outputs.empty());
      }
    }
  }
  EXPECT_GE(split_launches, 3u);  // the matmuls and relu of the forward pass, at least
}

}  // namespace
}  // namespace moreh::scheduler
