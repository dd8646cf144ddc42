#include "scheduler/lowering/stage_cut.h"

#include <gtest/gtest.h>

#include "pipeline_test_graph.h"
#include "runtime/base/data_type.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;

class StageCutTest : public ::testing::Test {
 protected:
  void SetUp() override { runtime::register_data_type(6, runtime::DataType::kFloat32); }
  runtime::VirtualMemory vm;
};

TEST_F(StageCutTest, TheForwardPassIsCutByCostAndTheBackwardFollowsIt) {
  PipelineStep step(vm, 2);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  const StageCut cut = cut_stages(step.graph, c, 2);
  EXPECT_EQ(cut.forward_end, static_cast<size_t>(kSeed));  // the seed after the scalar loss
  // mm1 (128 bytes + 16), relu (128), mm2 (144), sum (4): the balanced point is before mm2.
  EXPECT_EQ(cut.node_stage[kMm1], 0);
  EXPECT_EQ(cut.node_stage[kRelu], 0);
  EXPECT_EQ(cut.node_stage[kMm2], 1);
  EXPECT_EQ(cut.node_stage[kSum], 1);
  ASSERT_EQ(cut.starts.size(), 2u);
  EXPECT_EQ(cut.starts[1], static_cast<size_t>(kMm2));
  ASSERT_EQ(cut.cut_bytes.size(), 1u);
  EXPECT_EQ(cut.cut_bytes[0], 128u);  // a1 crosses
  EXPECT_EQ(cut.node_stage[kUpload], 0);  // where x is first read
  EXPECT_EQ(cut.node_stage[kSeed], 0);    // never read: stage 0
  // A layer's weight gradient runs with its layer; the updates run on their parameter's stage.
  EXPECT_EQ(cut.node_stage[kGw2], 1);
  EXPECT_EQ(cut.node_stage[kGa1], 1);
  EXPECT_EQ(cut.node_stage[kGw1], 0);
  EXPECT_EQ(cut.node_stage[kUpdate1], 0);
  EXPECT_EQ(cut.node_stage[kUpdate2], 1);
}

TEST_F(StageCutTest, LaterStepsFollowWhereTheParametersLie) {
  PipelineStep step(vm, 2);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  std::vector<int> placed(c.buffers.size(), -1);
  for (size_t s = 0; s < c.bindings.size(); ++s)
    if (c.bindings[s] == step.w1) placed[s] = 1;  // swapped against the cost cut
    else if (c.bindings[s] == step.w2) placed[s] = 0;
  const StageCut cut = cut_stages(step.graph, c, 2, placed);
  EXPECT_EQ(cut.node_stage[kMm1], 1);
  EXPECT_EQ(cut.node_stage[kMm2], 1);  // the latest stage among its inputs (a1 from stage 1) and w2 (stage 0)
  EXPECT_EQ(cut.node_stage[kUpdate1], 1);
  EXPECT_EQ(cut.node_stage[kUpdate2], 0);  // parameters never move
}

TEST_F(StageCutTest, MoreStagesThanOpsGivesEachOpAStage) {
  runtime::StepGraph g;
  auto a = std::make_shared<runtime::Buffer>(vm, 16, 4), b = std::make_shared<runtime::Buffer>(vm, 16, 4);
  g.append(upload(a, {4}));
  g.append(node("aten::relu", {shaped(a, {4})}, {shaped(b, {4})}));
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(g);
  const StageCut cut = cut_stages(g, c, 4);
  EXPECT_EQ(cut.node_stage[1], 0);
  EXPECT_EQ(cut.node_stage[0], 0);
  EXPECT_EQ(cut.starts.size(), 4u);
}

TEST(NodeCostTest, AMatmulCostsItsBytesAndAnEighthOfItsMultiplyAdds) {
  runtime::VirtualMemory vm;
  auto a = std::make_shared<runtime::Buffer>(vm, 4 * 64 * 32, 1), b = std::make_shared<runtime::Buffer>(vm, 4 * 32 * 16, 1);
  auto o = std::make_shared<runtime::Buffer>(vm, 4 * 64 * 16, 1);
  const Node mm = node("aten::mm", {shaped(a, {64, 32}), shaped(b, {32, 16})}, {shaped(o, {64, 16})});
  EXPECT_DOUBLE_EQ(node_cost(mm), 4.0 * 64 * 16 + 64.0 * 16 * 32 / 8);
  const Node relu = node("aten::relu", {shaped(o, {64, 16})}, {shaped(o, {64, 16})});
  EXPECT_DOUBLE_EQ(node_cost(relu), 4.0 * 64 * 16);
}

}  // namespace
}  // namespace moreh::scheduler
