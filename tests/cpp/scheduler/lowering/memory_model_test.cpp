#include "scheduler/lowering/memory_model.h"

#include <gtest/gtest.h>

#include <tuple>

#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;
using runtime::Instruction;
using Kind = Instruction::Kind;

TEST(MemoryModelTest, AllocationsOutputsReceivesAndReleasesAddUp) {
  runtime::VirtualMemory vm;
  auto a = std::make_shared<runtime::Buffer>(vm, 400, 2), b = std::make_shared<runtime::Buffer>(vm, 800, 2);
  auto c = std::make_shared<runtime::Buffer>(vm, 100, 2);
  runtime::StepGraph g;
  g.append(node("aten::relu", {shaped(a, {100})}, {shaped(b, {200})}));
  const runtime::CanonicalGraph cg = runtime::CanonicalGraph::build(g);
  const uint32_t sa = 0, sb = 1;
  runtime::DeviceProgram p;
  p.sizes = {400};
  p.ranges = {{0, 100, 100}};
  p.code = {{Kind::kAllocate, sa, 0}, {Kind::kLaunch, 0}, {Kind::kRelease, sa}, {Kind::kRecv, 2, 1}};
  p.code.back().range = 1;
  (void)c;
  (void)sb;
  EXPECT_EQ(program_peak(runtime::Plan{}, p, &g, cg), 1200u);  // a and b together, then b and the received 100 bytes
  p.code.push_back({Kind::kRelease, sb});
  p.code.push_back({Kind::kAllGather, sa});  // a gathered whole again: 400 beside the 100 held
  EXPECT_EQ(program_peak(runtime::Plan{}, p, &g, cg), 1200u);
}

// b = relu(a): a (400 bytes) allocated, b (800) made, a released, then a receive.
struct AThenB {
  runtime::VirtualMemory vm;
  runtime::StepGraph g;
  runtime::CanonicalGraph cg;
  runtime::DeviceProgram p;
  AThenB() {
    auto a = std::make_shared<runtime::Buffer>(vm, 400, 2), b = std::make_shared<runtime::Buffer>(vm, 800, 2);
    g.append(node("aten::relu", {shaped(a, {100})}, {shaped(b, {200})}));
    cg = runtime::CanonicalGraph::build(g);
    p.sizes = {400};
    p.ranges = {{0, 100, 100}};
    p.code = {{Kind::kAllocate, 0, 0}, {Kind::kLaunch, 0}, {Kind::kRelease, 0}, {Kind::kRecv, 2, 1}};
    p.code.back().range = 1;
  }
};

// The peak's moment: after the launch (a and b held), not after the later receive.
TEST(MemoryModelTest, ThePeaksMomentNamesWhatIsHeldThen) {
  const AThenB s;
  const PeakMoment m = peak_moment(runtime::Plan{}, s.p, &s.g, s.cg);
  EXPECT_EQ(m.instruction, 1u);
  EXPECT_EQ(m.bytes, 1200u);
  EXPECT_EQ(m.transient, 0u);
  EXPECT_EQ(m.held, (std::vector<std::pair<uint32_t, uint64_t>>{{1, 800}, {0, 400}}));  // largest first
}

// What remains of a program's peaks when some values take nothing: the most held at once of the others,
// at whatever moment that is (not the peak's moment less those values).
TEST(MemoryModelTest, ThePeakWithoutSomeValuesIsTheMostTheOthersHoldAtOnce) {
  const AThenB s;
  const auto& [g, cg, p] = std::tie(s.g, s.cg, s.p);
  // Held: a 400; a and b 1200 (the peak); b 800.
  std::vector<char> apart(cg.buffers.size(), 0);
  apart[1] = 1;  // without b: 400 after the allocation, before the peak; no more after
  HeldMoment m = peak_without(runtime::Plan{}, p, &g, cg, apart);
  EXPECT_EQ(m.bytes, 400u);
  EXPECT_EQ(m.instruction, 0u);
  apart = std::vector<char>(cg.buffers.size(), 0);
  apart[0] = 1;  // without a: b, from the launch on
  m = peak_without(runtime::Plan{}, p, &g, cg, apart);
  EXPECT_EQ(m.bytes, 800u);
  EXPECT_EQ(m.instruction, 1u);
  m = peak_without(runtime::Plan{}, p, &g, cg, std::vector<char>(cg.buffers.size(), 0));
  EXPECT_EQ(m.bytes, program_peak(runtime::Plan{}, p, &g, cg));  // nothing apart: the peak
}

// A value split along a later dimension (Placement::outer > 1) is gathered beside the parts as they arrive,
// and a sum is laid rank after rank in a copy before it is scattered (executor_split_dims_test measures
// the same peaks).
TEST(MemoryModelTest, LaterDimensions) {
  runtime::VirtualMemory vm;
  auto a = std::make_shared<runtime::Buffer>(vm, 80, 3);
  runtime::StepGraph g;
  g.append(node("aten::relu", {shaped(a, {20})}, {shaped(std::make_shared<runtime::Buffer>(vm, 80, 3), {20})}));
  a->mark_defined();  // a value from before the step, resting in columns
  a->set_placement(runtime::Placement{runtime::PlacementKind::kShard, 5, runtime::DataType::kFloat32, 0, 4});
  const runtime::CanonicalGraph cg = runtime::CanonicalGraph::build(g);
  runtime::Plan plan;
  plan.num_devices = 3;
  plan.slots.assign(cg.buffers.size(), runtime::SlotInfo{runtime::DataType::kFloat32, 4, 4});
  runtime::DeviceProgram p;
  p.device = 2;  // one column of each of 4 rows held: 16 bytes
  p.code = {{Kind::kAllGather, 0}};
  EXPECT_EQ(program_peak(plan, p, &g, cg), 2 * 80u);
  // Two columns held (32 bytes); gathered (32 + 80 + 80), then the whole sum scattered from a copy into 32
  // bytes (80 + 80 + 32): 192 at most, 160 above the start.
  p.device = 0;
  p.code = {{Kind::kAllGather, 0}, {Kind::kReduceScatter, 0}};
  EXPECT_EQ(program_peak(plan, p, &g, cg), 160u);
}

TEST(MemoryModelTest, AMicroBatchResultExistsBesideTheBlockItJoins) {
  runtime::VirtualMemory vm;
  auto x = std::make_shared<runtime::Buffer>(vm, 64, 1), y = std::make_shared<runtime::Buffer>(vm, 64, 1);
  runtime::StepGraph g;
  g.append(node("aten::relu", {shaped(x, {4, 4})}, {shaped(y, {4, 4})}));
  const runtime::CanonicalGraph cg = runtime::CanonicalGraph::build(g);
  runtime::DeviceProgram p;
  p.sizes = {64};
  runtime::LocalLaunch half;
  half.inputs = {{0, {2, 4}}};
  half.outputs = {{0, {2, 4}}};
  half.joins = {runtime::LocalLaunch::Join::kInto};
  half.into = {8};
  p.launches = {half, half};
  p.code = {{Kind::kAllocate, 1, 0}, {Kind::kLaunch, 0, 1}, {Kind::kLaunch, 0, 2}};
  // y's block (64 bytes) and one micro-batch's 2 rows (32 bytes) beside it.
  EXPECT_EQ(program_peak(runtime::Plan{}, p, &g, cg), 96u);
}

}  // namespace
}  // namespace moreh::scheduler
