#include "scheduler/analysis/plan_timeline.h"

#include <gtest/gtest.h>

#include "runtime/base/data_type.h"
#include "scheduler/lowering/pipeline_planner.h"
#include "scheduler/lowering/stage_cut.h"
#include "../lowering/pipeline_test_graph.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;
using runtime::Instruction;
using Kind = Instruction::Kind;

TEST(PlanTimelineTest, AReceiveWaitsForItsSendAndTheBubbleIsWhatNobodyRuns) {
  runtime::VirtualMemory vm;
  auto a = std::make_shared<runtime::Buffer>(vm, 64, 2), b = std::make_shared<runtime::Buffer>(vm, 64, 2);
  runtime::StepGraph g;
  g.append(node("aten::relu", {shaped(a, {16})}, {shaped(b, {16})}));  // costs 64
  runtime::Plan plan;
  plan.programs.resize(2);
  plan.programs[0].device = 0;
  plan.programs[1].device = 1;
  plan.programs[0].code = {{Kind::kLaunch, 0}, {Kind::kSend, 1, 1}};
  plan.programs[1].code = {{Kind::kRecv, 1, 0}, {Kind::kLaunch, 0}};
  const PlanTimeline t = simulate_plan(plan, g);
  EXPECT_TRUE(t.stuck.empty());
  EXPECT_DOUBLE_EQ(t.makespan, 128);  // device 1 starts when device 0's value arrives
  EXPECT_DOUBLE_EQ(t.idle_fraction, 0.5);
  plan.programs[0].code.pop_back();  // the send is gone: device 1 never finishes
  EXPECT_FALSE(simulate_plan(plan, g).stuck.empty());
}

TEST(PlanTimelineTest, MoreMicroBatchesShrinkAPipelinesBubble) {
  runtime::register_data_type(6, runtime::DataType::kFloat32);
  runtime::set_op_facts(runtime::intern_op("aten::relu"), {.pointwise = true});
  runtime::VirtualMemory vm;
  PipelineStep step(vm, 2);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  const PlanTimeline one = simulate_plan(compile_pipeline_plan(step.graph, c, {.stages = 2, .micro_batches = 1}, {8}),
                                         step.graph);
  const PlanTimeline four = simulate_plan(
      compile_pipeline_plan(step.graph, c, {.stages = 2, .micro_batches = 4}, {8}), step.graph);
  EXPECT_TRUE(one.stuck.empty());
  EXPECT_TRUE(four.stuck.empty());
  EXPECT_LT(four.idle_fraction, one.idle_fraction);
  EXPECT_GT(one.idle_fraction, 0.3);
}

}  // namespace
}  // namespace moreh::scheduler
