// split_batch: each piece of the batch gets a launch of every step split by rows; with `viewed`, only the
// devices asked for get views (the others their rows only). gather_all_reduces: all-reduces move up into one
// run where nothing between touches their slots.
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

// An optimizer's per-parameter updates between its gradients' all-reduces: each all-reduce moves up to the
// one before it unless a step between reads or writes its slot, or it sums over other devices (TP's axis) or
// a piece's rows (piece_sum); what runs between keeps its order.
TEST(GatherAllReducesTest, AllReducesMoveUpIntoOneRunWhereNothingBetweenTouchesTheirSlots) {
  auto all_reduce = [](uint32_t slot, SplitStep::Axis axis = SplitStep::Axis::kAll) {
    SplitStep st{Kind::kAllReduce, slot};
    st.axis = axis;
    return st;
  };
  auto scale = [](uint32_t slot) { return SplitStep{Kind::kScale, slot}; };
  SplitStep piece = all_reduce(9);
  piece.piece_sum = true;
  std::vector<SplitStep> steps{all_reduce(1), scale(7), all_reduce(2), scale(2), all_reduce(3), scale(4),
                               all_reduce(4), all_reduce(5, SplitStep::Axis::kTensor), scale(8), piece};
  const runtime::StepGraph graph;
  const runtime::CanonicalGraph canonical;
  gather_all_reduces(graph, canonical, steps);
  std::vector<std::pair<Kind, uint32_t>> order;
  for (const SplitStep& st : steps) order.emplace_back(st.kind, st.index);
  const std::vector<std::pair<Kind, uint32_t>> want{
      {Kind::kAllReduce, 1}, {Kind::kAllReduce, 2}, {Kind::kAllReduce, 3}, {Kind::kScale, 7},
      {Kind::kScale, 2},     {Kind::kScale, 4},     {Kind::kAllReduce, 4},  // slot 4 was written between
      {Kind::kAllReduce, 5},                                                  // another axis: stays
      {Kind::kScale, 8},     {Kind::kAllReduce, 9}};                          // a piece's sum: stays
  EXPECT_EQ(order, want);
}

}  // namespace
}  // namespace moreh::scheduler
