// The cost simulator's clock: kernels on a roofline, collectives and messages over a link, shared compute.
#include "scheduler/search/step_cost.h"

#include <gtest/gtest.h>

#include "runtime/base/data_type.h"
#include "scheduler/lowering/pipeline_planner.h"
#include "../lowering/pipeline_test_graph.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;
using Kind = runtime::Instruction::Kind;

DeviceProfile toy() {
  DeviceProfile p;
  p.name = "toy";
  p.fp32_flops = 100e9, p.low_prec_flops = 400e9, p.attention_flops = 50e9, p.elementwise_flops = 10e9;
  p.memory_bytes_per_s = 10e9, p.launch_s = 1e-6;
  p.intra_node = {10e-6, 1e9};
  p.inter_node = {100e-6, 0.1e9};
  return p;
}

TEST(StepCostTest, AKernelTakesTheSlowerOfItsArithmeticAndItsBytesPlusALaunch) {
  runtime::VirtualMemory vm;
  auto a = std::make_shared<runtime::Buffer>(vm, 4 * 512 * 512, 1), b = std::make_shared<runtime::Buffer>(vm, 4 * 512 * 512, 1);
  auto c = std::make_shared<runtime::Buffer>(vm, 4 * 512 * 512, 1);
  const ProfileTiming t(toy());
  // 512^3 multiply-adds at 100 GFLOP/s: 2.68 ms of arithmetic against 0.31 ms of bytes.
  const KernelTime mm = t.kernel(node("aten::mm", {shaped(a, {512, 512}), shaped(b, {512, 512})}, {shaped(c, {512, 512})}),
                                 nullptr, 1);
  EXPECT_NEAR(mm.seconds, 1e-6 + 2.0 * 512 * 512 * 512 / 100e9, 1e-12);
  EXPECT_DOUBLE_EQ(mm.overhead, 1e-6);
  // An add: 3 × 1 MiB of bytes at 10 GB/s, its arithmetic far below; half the rows, half the time.
  const Node add = node("aten::add.Tensor", {shaped(a, {512, 512}), shaped(b, {512, 512})}, {shaped(c, {512, 512})});
  EXPECT_NEAR(t.kernel(add, nullptr, 1).seconds, 1e-6 + 3.0 * 4 * 512 * 512 / 10e9, 1e-12);
  EXPECT_NEAR(t.kernel(add, nullptr, 0.5).seconds, 1e-6 + 1.5 * 4 * 512 * 512 / 10e9, 1e-12);
}

TEST(StepCostTest, CollectivesFollowTheRingOrTheSharedMemoryRendezvous) {
  const ProfileTiming ring(toy());
  const std::vector<int> four{0, 1, 2, 3};
  EXPECT_NEAR(ring.collective(Kind::kAllReduce, 1e6, four), 6 * 10e-6 + 1.5 * 1e6 / 1e9, 1e-12);
  EXPECT_NEAR(ring.collective(Kind::kAllGather, 1e6, four), 3 * 10e-6 + 0.75 * 1e6 / 1e9, 1e-12);
  EXPECT_DOUBLE_EQ(ring.collective(Kind::kAllReduce, 1e6, {2}), 0);  // alone: nothing to do
  DeviceProfile host = toy();
  host.shared_memory = true;
  const ProfileTiming shared(host);
  EXPECT_NEAR(shared.collective(Kind::kAllReduce, 1e6, four), 2 * 10e-6 + 1.5 * 1e6 / 1e9, 1e-12);
  // Two machines of two devices: a group across them pays the network.
  const ProfileTiming nodes(toy(), 1, 2);
  EXPECT_NEAR(nodes.message(1e6, 0, 1), 10e-6 + 1e6 / 1e9, 1e-12);
  EXPECT_NEAR(nodes.message(1e6, 1, 2), 100e-6 + 1e6 / 0.1e9, 1e-12);
  EXPECT_GT(nodes.collective(Kind::kAllReduce, 1e6, four), ring.collective(Kind::kAllReduce, 1e6, four));
  // Machines of uneven sizes (the script's process with one device, a worker with three).
  const ProfileTiming uneven(toy(), 1, std::vector<int>{0, 1, 1, 1});
  EXPECT_NEAR(uneven.message(1e6, 0, 1), 100e-6 + 1e6 / 0.1e9, 1e-12);
  EXPECT_NEAR(uneven.message(1e6, 1, 3), 10e-6 + 1e6 / 1e9, 1e-12);
  EXPECT_EQ(uneven.collective(Kind::kAllReduce, 1e6, {1, 2, 3}), ring.collective(Kind::kAllReduce, 1e6, {1, 2, 3}));
  EXPECT_GT(uneven.collective(Kind::kAllReduce, 1e6, {0, 2}), ring.collective(Kind::kAllReduce, 1e6, {0, 2}));
}

class StepCostPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::register_data_type(6, runtime::DataType::kFloat32);
    runtime::set_op_facts(runtime::intern_op("aten::relu"), {.pointwise = true});
  }
};

TEST_F(StepCostPlanTest, APipelinesMessagesCostTheirLinkAndSharedComputeStretchesTheStep) {
  runtime::VirtualMemory vm;
  PipelineStep step(vm, 2);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  const runtime::Plan plan = compile_pipeline_plan(step.graph, c, {.stages = 2, .micro_batches = 2}, {8});
  const StepCost fast = predict_step(plan, step.graph, c, ProfileTiming(toy()));
  EXPECT_TRUE(fast.stuck.empty());
  EXPECT_GT(fast.seconds, 0);
  EXPECT_GT(fast.communication_seconds, 0);
  DeviceProfile slow_link = toy();
  slow_link.intra_node.latency_s = 1e-3;
  const StepCost slow = predict_step(plan, step.graph, c, ProfileTiming(slow_link));
  EXPECT_GT(slow.seconds, fast.seconds + 1e-3) << "every message waits a millisecond more";
  // Two devices that take turns on one core: at least all their kernels' work one after another.
  DeviceProfile turns = toy();
  turns.stream_speedup = {1, 1, 1};
  turns.cores = 1;
  const PlanTimeline shared = simulate_plan(plan, step.graph, c, ProfileTiming(turns, 2));
  const PlanTimeline alone = simulate_plan(plan, step.graph, c, ProfileTiming(toy(), 2));
  EXPECT_GE(shared.makespan, alone.busy[0] + alone.busy[1] - 1e-12);
  EXPECT_GE(shared.makespan, alone.makespan);
}

// A plan's own passes over a block (a partial sum's scale, 1F1B's gradients divided by the loss's weight)
// cost its bytes read and written, not a launch alone.
TEST_F(StepCostPlanTest, AScaleOrADivisionPassesOverItsBlock) {
  const ProfileTiming t(toy());
  EXPECT_NEAR(t.block_pass(1e6), 1e-6 + 2e6 / 10e9, 1e-15);
  EXPECT_DOUBLE_EQ(t.block_pass(0), t.scalar_kernel());
  runtime::VirtualMemory vm;
  PipelineStep step(vm, 2);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  auto slot = [&](const std::shared_ptr<runtime::Buffer>& buf) {
    return static_cast<uint32_t>(std::find(c.bindings.begin(), c.bindings.end(), buf) - c.bindings.begin());
  };
  // One device makes a block of 1 MiB and divides it by the loss (as 1F1B's deferred division does).
  runtime::Plan plan;
  plan.num_nodes = step.graph.size();
  runtime::DeviceProgram p;
  p.sizes = {1 << 20};
  p.code = {{Kind::kAllocate, slot(step.h1), 0}, {Kind::kDivide, slot(step.h1), slot(step.loss)}};
  plan.programs.push_back(p);
  struct LaunchOnly final : StepTiming {  // the same clock, but a pass costs a launch alone
    explicit LaunchOnly(const ProfileTiming& t) : t(t) {}
    KernelTime kernel(const runtime::Node& n, const runtime::LocalLaunch* l, double s) const override { return t.kernel(n, l, s); }
    double scalar_kernel() const override { return t.scalar_kernel(); }
    double collective(Kind k, double b, const std::vector<int>& d) const override { return t.collective(k, b, d); }
    double message(double b, int from, int to) const override { return t.message(b, from, to); }
    const ProfileTiming& t;
  };
  const PlanTimeline with = simulate_plan(plan, step.graph, c, t), without = simulate_plan(plan, step.graph, c, LaunchOnly(t));
  EXPECT_NEAR(with.busy[0] - without.busy[0], 2.0 * (1 << 20) / 10e9, 1e-12);
}

}  // namespace
}  // namespace moreh::scheduler
