#include "scheduler/lowering/plan_step.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "runtime/base/data_type.h"
#include "runtime/base/errors.h"
#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using moreh::testing::node;
using moreh::testing::shaped;
using moreh::testing::upload;
using runtime::Buffer;
using runtime::CanonicalGraph;
using runtime::Instruction;
using runtime::ParallelConfig;
using runtime::PlacementKind;
using runtime::StepGraph;

size_t count(const runtime::DeviceProgram& p, Instruction::Kind k) {
  return static_cast<size_t>(
      std::count_if(p.code.begin(), p.code.end(), [&](const Instruction& i) { return i.kind == k; }));
}

// x [8,4] uploaded, h = relu(x @ w), w += x^T @ h: a batch to split over the replicas.
class PlanStepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::register_data_type(6, runtime::DataType::kFloat32);
    runtime::set_op_facts(runtime::intern_op("aten::relu"), {.pointwise = true});
  }
  std::shared_ptr<Buffer> buffer(uint64_t bytes, bool defined) {
    auto b = std::make_shared<Buffer>(vm, bytes, devices);
    if (defined) {
      b->mark_defined();
      b->set_placement({PlacementKind::kReplicate});
    }
    return b;
  }
  StepGraph step() {
    auto w = buffer(4 * 16, true), x = buffer(4 * 32, false), h = buffer(4 * 32, false), r = buffer(4 * 32, false);
    auto gw = buffer(4 * 16, false);
    StepGraph g;
    g.append(upload(x, {8, 4}));
    g.append(node("aten::mm", {shaped(x, {8, 4}), shaped(w, {4, 4})}, {shaped(h, {8, 4})}));
    g.append(node("aten::relu", {shaped(h, {8, 4})}, {shaped(r, {8, 4})}));
    if (with_loss) {  // loss = sum(r) and loss.backward()'s seed: a training step's backward pass begins
      auto loss = buffer(4, false), seed = buffer(4, false);
      g.append(node("aten::sum", {shaped(r, {8, 4})}, {shaped(loss, {})}));
      runtime::Node fill = node("aten::fill_.Scalar", {shaped(seed, {})}, {}, {0});
      fill.initializes.push_back(0);
      g.append(std::move(fill));
      for (const auto& b : {loss, seed}) b->release_frontend();
    }
    runtime::TensorRef xt = shaped(x, {8, 4});
    std::swap(xt.sizes[0], xt.sizes[1]);
    std::swap(xt.strides[0], xt.strides[1]);
    g.append(node("aten::mm", {xt, shaped(r, {8, 4})}, {shaped(gw, {4, 4})}));
    g.append(node("aten::add_.Tensor", {shaped(w, {4, 4}), shaped(gw, {4, 4})}, {}, {0}));
    for (const auto& b : {h, r, gw}) b->release_frontend();
    return g;
  }
  std::shared_ptr<PlannedStep> plan(const ParallelConfig& config = {}) {
    StepGraph g = step();
    if (w_placement) g.nodes()[1].inputs[1].buffer->set_placement(*w_placement);
    CanonicalGraph c = CanonicalGraph::build(g);
    return plan_step({.graph = g, .canonical = c, .devices = devices, .parallelism = config});
  }
  runtime::VirtualMemory vm;
  int devices = 1;
  bool with_loss = false;
  std::optional<runtime::Placement> w_placement;  // where an earlier step left w
};

TEST_F(PlanStepTest, OneDeviceRunsTheRecordedOrder) {
  auto p = plan();
  ASSERT_EQ(p->programs.size(), 1u);
  EXPECT_EQ(count(p->programs[0], Instruction::Kind::kLaunch), 5u);
  EXPECT_EQ(count(p->programs[0], Instruction::Kind::kAllReduce), 0u);
  EXPECT_EQ(p->report.batch_sizes, std::vector<int64_t>{8});  // the step's analysis comes with the plan
}

TEST_F(PlanStepTest, ReplicasSplitTheBatch) {
  devices = 2;
  auto p = plan();
  ASSERT_EQ(p->programs.size(), 2u);
  EXPECT_EQ(p->report.split_rows, 8) << p->report.summary;
  for (const auto& program : p->programs) EXPECT_EQ(count(program, Instruction::Kind::kAllReduce), 1u);
}

TEST_F(PlanStepTest, ALayoutItCannotRunIsAConfigErrorBeforeAnyPlanning) {
  devices = 4;
  ParallelConfig too_many;
  too_many.num_stages = 8;
  EXPECT_THROW(plan(too_many), runtime::ConfigError);
  ParallelConfig odd;
  odd.tp = 3;  // does not divide the 4 devices
  EXPECT_THROW(plan(odd), runtime::ConfigError);
}

TEST_F(PlanStepTest, StagesOrMicroBatchesGoToThePipelinePlanner) {
  devices = 2;
  with_loss = true;
  ParallelConfig pipeline;
  pipeline.num_stages = 2;
  auto p = plan(pipeline);
  ASSERT_EQ(p->programs.size(), 2u);
  EXPECT_NE(p->report.summary.find("2 pipeline stages"), std::string::npos) << p->report.summary;
  devices = 1;
  ParallelConfig micro;
  micro.num_micro_batches = 2;
  p = plan(micro);
  ASSERT_EQ(p->programs.size(), 1u);
  EXPECT_NE(p->report.summary.find("2 micro-batch(es) per replica"), std::string::npos) << p->report.summary;
}

// A step with no backward pass (the parameters' initialisation, here one update) is not cut into stages while
// nothing lies on one: batch splitting over both devices, its values left on every device.
TEST_F(PlanStepTest, AStepWithNoBackwardPassIsNotCutIntoStagesUntilValuesLieOnThem) {
  devices = 2;
  ParallelConfig pipeline;
  pipeline.num_stages = 2;
  auto p = plan(pipeline);
  ASSERT_EQ(p->programs.size(), 2u);
  EXPECT_EQ(p->report.summary.find("2 pipeline stages"), std::string::npos) << p->report.summary;
  EXPECT_NE(p->report.summary.find("batch splitting, not stages"), std::string::npos) << p->report.summary;
  // w on stage 1's device (a pipelined step left it there): the step follows it onto the stages.
  w_placement = runtime::Placement{PlacementKind::kReplicate, 0, runtime::DataType::kFloat32, 0b10};
  p = plan(pipeline);
  EXPECT_NE(p->report.summary.find("2 pipeline stages"), std::string::npos) << p->report.summary;
}

TEST(PlanAcceptsTest, APlanStartsFromWhatItsLayoutLeft) {
  using runtime::Placement;
  using runtime::PlacementKind;
  const runtime::ParallelSizes dp4{.dp = 4}, pp2{.dp = 2, .pp = 2};
  EXPECT_TRUE(plan_accepts({PlacementKind::kHome}, pp2));
  EXPECT_TRUE(plan_accepts({PlacementKind::kShard, 8}, dp4));
  EXPECT_FALSE(plan_accepts({PlacementKind::kShard, 8}, pp2));  // over every device: batch splitting's
  EXPECT_TRUE(plan_accepts({PlacementKind::kReplicate}, pp2));
  Placement stage1{PlacementKind::kPartial};
  stage1.devices = 0b1010;  // stage 1's replicas are devices 1 and 3
  EXPECT_TRUE(plan_accepts(stage1, pp2));
  EXPECT_FALSE(plan_accepts(stage1, dp4));
  stage1.devices = 0b0110;
  EXPECT_FALSE(plan_accepts(stage1, pp2));
  // Split along a later dimension: batch splitting gathers it in its blocks; pipeline stages cannot.
  Placement columns{PlacementKind::kShard, 8};
  columns.outer = 4;
  EXPECT_TRUE(plan_accepts(columns, dp4));
  EXPECT_FALSE(plan_accepts(columns, pp2));
  columns.devices = 0b0101;
  EXPECT_FALSE(plan_accepts(columns, dp4));
  // dp 2 x tp 2: a value split along one of its mesh's axes, not one over every device (and the reverse).
  const runtime::ParallelSizes mesh{.dp = 2, .tp = 2};
  Placement features{PlacementKind::kShard, 8};
  features.ranks = 2;
  EXPECT_TRUE(plan_accepts(features, mesh));
  EXPECT_FALSE(plan_accepts(features, dp4));
  Placement pieces{PlacementKind::kShard, 8};
  pieces.ranks = 2;
  pieces.stride = 2;
  EXPECT_TRUE(plan_accepts(pieces, mesh));
  pieces.stride = 3;
  EXPECT_FALSE(plan_accepts(pieces, mesh));
  EXPECT_FALSE(plan_accepts({PlacementKind::kShard, 8}, mesh));
  EXPECT_TRUE(plan_accepts({PlacementKind::kReplicate}, mesh));
}

}  // namespace
}  // namespace moreh::scheduler
