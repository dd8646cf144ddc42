#include "scheduler/lowering/memory_model.h"

#include <gtest/gtest.h>

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
