#include "scheduler/lowering/planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <vector>

#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using runtime::BufferOrigin;
using runtime::CanonicalBuffer;
using runtime::CanonicalGraph;
using runtime::Instruction;
using Kind = runtime::Instruction::Kind;

// Builds canonical graphs directly: slots with sizes/origins/liveness, nodes as slot lists.
struct GraphBuilder {
  CanonicalGraph g;
  uint32_t slot(uint64_t bytes, BufferOrigin origin, bool live_after) {
    g.buffers.push_back(CanonicalBuffer{bytes, origin, live_after});
    return static_cast<uint32_t>(g.buffers.size() - 1);
  }
  void op(std::vector<uint32_t> ins, std::vector<uint32_t> outs) {
    g.node_inputs.push_back(std::move(ins));
    g.node_outputs.push_back(std::move(outs));
  }
};

const std::vector<Instruction>& code_of(const runtime::Plan& plan) {
  EXPECT_EQ(plan.programs.size(), 1u);
  return plan.programs.at(0).code;
}

// Position of the launch of node n in the code, or -1.
long launch_pos(const std::vector<Instruction>& code, uint32_t n) {
  for (size_t i = 0; i < code.size(); ++i)
    if (code[i].kind == Kind::kLaunch && code[i].index == n) return static_cast<long>(i);
  return -1;
}

std::vector<long> positions(const std::vector<Instruction>& code, Kind kind, uint32_t index) {
  std::vector<long> out;
  for (size_t i = 0; i < code.size(); ++i)
    if (code[i].kind == kind && code[i].index == index) out.push_back(static_cast<long>(i));
  return out;
}

TEST(PlannerTest, LaunchesFollowTheRecordedOrder) {
  GraphBuilder b;
  uint32_t in = b.slot(64, BufferOrigin::kMaterialized, true);
  uint32_t prev = in;
  for (int i = 0; i < 10; ++i) {
    uint32_t out = b.slot(64, BufferOrigin::kProduced, true);
    b.op({prev, in}, {out});
    prev = out;
  }
  b.g.hash = 0x1234;
  PlannedStep plan = compile_plan(b.g);
  EXPECT_EQ(plan.graph_hash, 0x1234u);
  EXPECT_EQ(plan.num_nodes, 10u);
  EXPECT_FALSE(plan.report.summary.empty());
  ASSERT_EQ(plan.programs.size(), 1u);
  EXPECT_EQ(plan.programs[0].device, 0);
  std::vector<uint32_t> launched;
  for (const auto& ins : code_of(plan))
    if (ins.kind == Kind::kLaunch) launched.push_back(ins.index);
  std::vector<uint32_t> expected(10);
  for (uint32_t i = 0; i < 10; ++i) expected[i] = i;
  EXPECT_EQ(launched, expected);
  // Everything is live and materialized or produced: only launches.
  EXPECT_EQ(code_of(plan).size(), 10u);
  EXPECT_EQ(plan.programs[0].peak_bytes, 640u);
}

TEST(PlannerTest, UnmaterializedInputIsAllocatedOnceBeforeItsFirstLaunch) {
  GraphBuilder b;
  uint32_t m = b.slot(64, BufferOrigin::kMaterialized, true);
  uint32_t u = b.slot(128, BufferOrigin::kUnmaterialized, true);  // torch.empty, read by nodes 1 and 2
  uint32_t o0 = b.slot(64, BufferOrigin::kProduced, true);
  uint32_t o1 = b.slot(64, BufferOrigin::kProduced, true);
  uint32_t o2 = b.slot(64, BufferOrigin::kProduced, true);
  b.op({m}, {o0});
  b.op({u, o0}, {o1});
  b.op({u, o1}, {o2});
  PlannedStep plan = compile_plan(b.g);
  const auto& code = code_of(plan);
  auto allocs = positions(code, Kind::kAllocate, u);
  ASSERT_EQ(allocs.size(), 1u);
  EXPECT_GT(allocs[0], launch_pos(code, 0));
  EXPECT_EQ(allocs[0] + 1, launch_pos(code, 1));  // right before the first reader
  // Nothing else is allocated: materialized inputs exist, produced outputs are bound by the kernel.
  size_t total_allocs = std::count_if(code.begin(), code.end(), [](auto& i) { return i.kind == Kind::kAllocate; });
  EXPECT_EQ(total_allocs, 1u);
  EXPECT_EQ(plan.programs[0].peak_bytes, 128u + 3 * 64u);
}

TEST(PlannerTest, UnmaterializedInputsOfOneNodeAreEachAllocatedOnce) {
  GraphBuilder b;
  uint32_t u = b.slot(32, BufferOrigin::kUnmaterialized, true);
  uint32_t o = b.slot(32, BufferOrigin::kProduced, true);
  b.op({u, u}, {o});  // the same slot twice
  const auto& plan = compile_plan(b.g);
  const auto& code = code_of(plan);
  ASSERT_EQ(code.size(), 2u);
  EXPECT_EQ(code[0].kind, Kind::kAllocate);
  EXPECT_EQ(code[0].index, u);
  EXPECT_EQ(code[1].kind, Kind::kLaunch);
  EXPECT_EQ(plan.programs[0].peak_bytes, 64u);
}

TEST(PlannerTest, TemporaryIsReleasedRightAfterItsLastUse) {
  GraphBuilder b;
  uint32_t in = b.slot(64, BufferOrigin::kMaterialized, true);
  uint32_t t = b.slot(256, BufferOrigin::kProduced, false);  // produced by 0, read by 1 and 3, dropped
  uint32_t o1 = b.slot(64, BufferOrigin::kProduced, true);
  uint32_t o2 = b.slot(64, BufferOrigin::kProduced, true);
  uint32_t o3 = b.slot(64, BufferOrigin::kProduced, true);
  uint32_t o4 = b.slot(64, BufferOrigin::kProduced, true);
  b.op({in}, {t});
  b.op({t}, {o1});
  b.op({o1}, {o2});
  b.op({t, o2}, {o3});
  b.op({o3}, {o4});
  const auto& plan = compile_plan(b.g);
  const auto& code = code_of(plan);
  auto rel = positions(code, Kind::kRelease, t);
  ASSERT_EQ(rel.size(), 1u);
  EXPECT_EQ(rel[0], launch_pos(code, 3) + 1);
  EXPECT_LT(rel[0], launch_pos(code, 4));
  // Only the temporary is released.
  size_t releases = std::count_if(code.begin(), code.end(), [](auto& i) { return i.kind == Kind::kRelease; });
  EXPECT_EQ(releases, 1u);
}

TEST(PlannerTest, UnusedDroppedOutputIsReleasedRightAfterItsProducer) {
  GraphBuilder b;
  uint32_t in = b.slot(64, BufferOrigin::kMaterialized, true);
  uint32_t keep = b.slot(64, BufferOrigin::kProduced, true);
  uint32_t drop = b.slot(64, BufferOrigin::kProduced, false);  // e.g. the indices of a max() nobody reads
  uint32_t next = b.slot(64, BufferOrigin::kProduced, true);
  b.op({in}, {keep, drop});
  b.op({keep}, {next});
  const auto& plan = compile_plan(b.g);
  const auto& code = code_of(plan);
  auto rel = positions(code, Kind::kRelease, drop);
  ASSERT_EQ(rel.size(), 1u);
  EXPECT_EQ(rel[0], launch_pos(code, 0) + 1);
  EXPECT_EQ(plan.programs[0].peak_bytes, 128u);  // keep + drop at node 0; drop goes; then keep + next
}

TEST(PlannerTest, LiveBuffersAreNeverReleased) {
  GraphBuilder b;
  std::vector<uint32_t> live;
  live.push_back(b.slot(64, BufferOrigin::kMaterialized, true));
  live.push_back(b.slot(64, BufferOrigin::kUnmaterialized, true));
  live.push_back(b.slot(64, BufferOrigin::kProduced, true));
  live.push_back(b.slot(64, BufferOrigin::kProduced, true));
  uint32_t dropped_in = b.slot(64, BufferOrigin::kMaterialized, false);
  uint32_t dropped_mid = b.slot(64, BufferOrigin::kProduced, false);
  b.op({live[0], live[1], dropped_in}, {live[2], dropped_mid});
  b.op({live[2], dropped_mid, live[0]}, {live[3]});
  const auto& plan = compile_plan(b.g);
  const auto& code = code_of(plan);
  for (uint32_t s : live) EXPECT_TRUE(positions(code, Kind::kRelease, s).empty()) << "slot " << s;
  // The dropped ones go after their last use.
  EXPECT_EQ(positions(code, Kind::kRelease, dropped_in), std::vector<long>{launch_pos(code, 0) + 1});
  auto rel_mid = positions(code, Kind::kRelease, dropped_mid);
  ASSERT_EQ(rel_mid.size(), 1u);
  EXPECT_GT(rel_mid[0], launch_pos(code, 1));
}

TEST(PlannerTest, PeakOfAChainWithTemporariesFreed) {
  // a -> b -> c -> d -> e; a exists and stays, b/c/d are temporaries, e is the result.
  GraphBuilder g;
  uint32_t a = g.slot(100, BufferOrigin::kMaterialized, true);
  uint32_t b = g.slot(200, BufferOrigin::kProduced, false);
  uint32_t c = g.slot(300, BufferOrigin::kProduced, false);
  uint32_t d = g.slot(400, BufferOrigin::kProduced, false);
  uint32_t e = g.slot(100, BufferOrigin::kProduced, true);
  g.op({a}, {b});  // holds b            = 200
  g.op({b}, {c});  // holds b + c        = 500, then b goes -> 300
  g.op({c}, {d});  // holds c + d        = 700, then c goes -> 400
  g.op({d}, {e});  // holds d + e        = 500, then d goes -> 100
  const auto& plan = compile_plan(g.g);
  EXPECT_EQ(plan.programs[0].peak_bytes, 700u);
  const auto& code = code_of(plan);
  // Launch 0, launch 1, release b, launch 2, release c, launch 3, release d.
  std::vector<std::pair<Kind, uint32_t>> expected = {{Kind::kLaunch, 0}, {Kind::kLaunch, 1},  {Kind::kRelease, b},
                                                     {Kind::kLaunch, 2}, {Kind::kRelease, c}, {Kind::kLaunch, 3},
                                                     {Kind::kRelease, d}};
  ASSERT_EQ(code.size(), expected.size());
  for (size_t i = 0; i < code.size(); ++i) {
    EXPECT_EQ(code[i].kind, expected[i].first) << i;
    EXPECT_EQ(code[i].index, expected[i].second) << i;
  }
}

TEST(PlannerTest, ReleasingPreexistingMemoryLowersWhatTheStepHolds) {
  // m (500 bytes, exists, dropped by the script) -> o1 (100) -> o2 (450).
  GraphBuilder g;
  uint32_t m = g.slot(500, BufferOrigin::kMaterialized, false);
  uint32_t o1 = g.slot(100, BufferOrigin::kProduced, true);
  uint32_t o2 = g.slot(450, BufferOrigin::kProduced, true);
  g.op({m}, {o1});   // +100, then m goes: -400 relative to the start
  g.op({o1}, {o2});  // +50
  const auto& plan = compile_plan(g.g);
  EXPECT_EQ(plan.programs[0].peak_bytes, 100u);
}

TEST(PlannerTest, PeakCountsAllocatedInputs) {
  GraphBuilder g;
  uint32_t u = g.slot(1000, BufferOrigin::kUnmaterialized, false);
  uint32_t o = g.slot(10, BufferOrigin::kProduced, true);
  g.op({u}, {o});
  const auto& plan = compile_plan(g.g);
  EXPECT_EQ(plan.programs[0].peak_bytes, 1010u);
  const auto& code = code_of(plan);
  ASSERT_EQ(code.size(), 3u);
  EXPECT_EQ(code[0].kind, Kind::kAllocate);
  EXPECT_EQ(code[1].kind, Kind::kLaunch);
  EXPECT_EQ(code[2].kind, Kind::kRelease);
  EXPECT_EQ(code[2].index, u);
}

TEST(PlannerTest, FromAStepGraph) {
  runtime::VirtualMemory vm;
  using moreh::testing::node;
  using moreh::testing::ref;
  auto w = std::make_shared<runtime::Buffer>(vm, 64);
  w->mark_defined();
  auto scratch = std::make_shared<runtime::Buffer>(vm, 256);  // never written before the step
  auto t = std::make_shared<runtime::Buffer>(vm, 128);
  auto out = std::make_shared<runtime::Buffer>(vm, 32);
  runtime::StepGraph sg;
  sg.append(node("aten::mul", {ref(w), ref(scratch)}, {ref(t)}));
  sg.append(node("aten::sum", {ref(t)}, {ref(out)}));
  t->release_frontend();
  scratch->release_frontend();
  CanonicalGraph cg = CanonicalGraph::build(sg);
  PlannedStep plan = compile_plan(cg);
  EXPECT_EQ(plan.graph_hash, cg.hash);
  const auto& code = code_of(plan);
  // alloc scratch, launch 0, release scratch, launch 1, release t
  ASSERT_EQ(code.size(), 5u);
  EXPECT_EQ(code[0].kind, Kind::kAllocate);
  EXPECT_EQ(cg.bindings[code[0].index], scratch);
  EXPECT_EQ(code[1].kind, Kind::kLaunch);
  EXPECT_EQ(code[2].kind, Kind::kRelease);
  EXPECT_EQ(cg.bindings[code[2].index], scratch);
  EXPECT_EQ(code[3].kind, Kind::kLaunch);
  EXPECT_EQ(code[4].kind, Kind::kRelease);
  EXPECT_EQ(cg.bindings[code[4].index], t);
  EXPECT_EQ(plan.programs[0].peak_bytes, 256u + 128u);
}

TEST(PlannerTest, EmptyGraph) {
  CanonicalGraph g;
  PlannedStep plan = compile_plan(g);
  ASSERT_EQ(plan.programs.size(), 1u);
  EXPECT_TRUE(plan.programs[0].code.empty());
  EXPECT_EQ(plan.programs[0].peak_bytes, 0u);
}

TEST(PlannerTest, MoreThanOneDeviceIsRefused) {
  CanonicalGraph g;
  EXPECT_THROW(compile_plan(g, PlannerOptions{2}), std::invalid_argument);
}

}  // namespace
}  // namespace moreh::scheduler
