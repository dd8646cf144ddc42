// Fusing a device's program of a plan over several devices: local offsets reach the kernel, releases a
// group still needs move after it, and a collective on a group's tensor keeps the group from crossing it.
#include "scheduler/fusion/program_fusion.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "runtime/base/data_type.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using moreh::testing::node;
using moreh::testing::shaped;
using runtime::Buffer;
using runtime::CanonicalGraph;
using runtime::Instruction;
using runtime::LocalLaunch;
using runtime::LocalRef;
using runtime::StepGraph;
using Kind = Instruction::Kind;

class ProgramFusionTest : public ::testing::Test {
 protected:
  void SetUp() override { runtime::register_data_type(6, runtime::DataType::kFloat32); }
  std::shared_ptr<Buffer> buf(int64_t elements) {
    auto b = std::make_shared<Buffer>(vm_, static_cast<uint64_t>(elements) * 4, 2);
    b->mark_defined();
    return b;
  }
  uint32_t slot_of(const std::shared_ptr<Buffer>& b) const {
    for (size_t s = 0; s < cg_.bindings.size(); ++s)
      if (cg_.bindings[s] == b) return static_cast<uint32_t>(s);
    ADD_FAILURE() << "no slot";
    return 0;
  }
  // A plan with one program (device 0) of the given instructions over `graph`.
  PlannedStep plan_of(const StepGraph& graph, std::vector<Instruction> code, std::vector<LocalLaunch> launches = {}) {
    cg_ = CanonicalGraph::build(graph);
    PlannedStep plan;
    plan.num_devices = 2;
    plan.programs.resize(1);
    plan.programs[0].code = std::move(code);
    plan.programs[0].launches = std::move(launches);
    return plan;
  }

  runtime::VirtualMemory vm_;
  CanonicalGraph cg_;
};

TEST_F(ProgramFusionTest, AReleaseInsideAGroupWaitsForItsKernel) {
  auto x = buf(8), y = buf(8), a = buf(8), c = buf(8), b = buf(8);
  StepGraph g;
  g.append(node("aten::exp", {shaped(x, {8})}, {shaped(a, {8})}));
  g.append(node("test::other", {shaped(y, {8})}, {shaped(c, {8})}));
  g.append(node("aten::mul.Tensor", {shaped(a, {8}), shaped(a, {8})}, {shaped(b, {8})}));
  x->release_frontend();
  a->release_frontend();
  PlannedStep plan = plan_of(g, {});
  const uint32_t sx = slot_of(x);
  plan.programs[0].code = {{Kind::kLaunch, 0}, {Kind::kRelease, sx}, {Kind::kLaunch, 1}, {Kind::kLaunch, 2}};
  fuse_device_programs(g, cg_, plan);
  const auto& code = plan.programs[0].code;
  ASSERT_EQ(code.size(), 3u);
  EXPECT_EQ(code[0].kind, Kind::kLaunch);  // the unfused op first
  EXPECT_EQ(code[0].index, 1u);
  EXPECT_EQ(code[1].kind, Kind::kFused);
  EXPECT_EQ(code[2].kind, Kind::kRelease);  // x, read by the kernel, goes after it
  EXPECT_EQ(code[2].index, sx);
  ASSERT_EQ(plan.programs[0].fused.size(), 1u);
  EXPECT_EQ(plan.programs[0].fused[0].nodes, (std::vector<uint32_t>{0, 2}));
  EXPECT_EQ(plan.report.fused_nodes, 2u);
  EXPECT_EQ(plan.report.launches, 2u);
}

TEST_F(ProgramFusionTest, ACollectiveOnTheGroupsValueKeepsItsPlace) {
  auto x = buf(8), a = buf(8), b = buf(8);
  StepGraph g;
  g.append(node("aten::exp", {shaped(x, {8})}, {shaped(a, {8})}));
  g.append(node("aten::mul.Tensor", {shaped(a, {8}), shaped(a, {8})}, {shaped(b, {8})}));
  PlannedStep plan = plan_of(g, {});
  plan.programs[0].code = {{Kind::kLaunch, 0}, {Kind::kAllReduce, slot_of(a)}, {Kind::kLaunch, 1}};
  const auto before = plan.programs[0].code;
  fuse_device_programs(g, cg_, plan);
  EXPECT_TRUE(plan.programs[0].fused.empty());
  ASSERT_EQ(plan.programs[0].code.size(), before.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(plan.programs[0].code[i].kind, before[i].kind);
}

TEST_F(ProgramFusionTest, ADevicesRowsReachTheKernelAsItsOffsets) {
  auto x = buf(8), a = buf(8), b = buf(8);
  StepGraph g;
  g.append(node("aten::exp", {shaped(x, {4, 2})}, {shaped(a, {4, 2})}));
  g.append(node("aten::neg", {shaped(a, {4, 2})}, {shaped(b, {4, 2})}));
  a->release_frontend();
  // Device 1's half: rows 2..3, at element offset 4 of each buffer.
  LocalLaunch l0, l1;
  l0.inputs = {LocalRef{4, {2, 2}}};
  l0.outputs = {LocalRef{4, {2, 2}}};
  l1.inputs = {LocalRef{4, {2, 2}}};
  l1.outputs = {LocalRef{4, {2, 2}}};
  PlannedStep plan = plan_of(g, {{Kind::kLaunch, 0, 1}, {Kind::kLaunch, 1, 2}}, {l0, l1});
  fuse_device_programs(g, cg_, plan);
  ASSERT_EQ(plan.programs[0].fused.size(), 1u);
  const auto& f = plan.programs[0].fused[0];
  EXPECT_EQ(f.shape.count, 4u);  // this device's rows, not the batch
  ASSERT_EQ(f.inputs.size(), 1u);
  EXPECT_EQ(f.inputs[0].node, 0u);
  EXPECT_EQ(f.inputs[0].offset, 4);
  ASSERT_EQ(f.outputs.size(), 1u);  // a is never stored
  EXPECT_EQ(f.outputs[0].node, 1u);
  EXPECT_TRUE(f.outputs[0].fresh);
  EXPECT_EQ(f.outputs[0].offset, 4);
}

}  // namespace
}  // namespace moreh::scheduler
