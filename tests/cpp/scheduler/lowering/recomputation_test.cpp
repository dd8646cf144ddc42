#include "scheduler/lowering/recomputation.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "runtime/base/data_type.h"
#include "runtime/memory/virtual_memory.h"
#include "scheduler/lowering/data_parallel_planner.h"
#include "scheduler/lowering/memory_model.h"
#include "scheduler/lowering/plan_step.h"
#include "scheduler/lowering/planner.h"
#include "recomputation_test_graph.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using moreh::testing::node;
using moreh::testing::shaped;
using moreh::testing::upload;
using runtime::Buffer;
using runtime::CanonicalGraph;
using runtime::Instruction;
using Kind = Instruction::Kind;

// Two blocks that each narrow to one value: a = x @ w1, b = repeat(a) (4 times a's bytes), c = a + b;
// d = c @ w2, e = repeat(d), f = d + e; loss = sum(f). Checkpoints: x, a, c, d, f (at some point each is the
// only value still to be read); b and e are read by the backward pass and dropped. The backward pass reads
// e, then b; then w1 is updated.
struct TwoBlocks {
  std::shared_ptr<Buffer> x, w1, w2, a, b, c, d, e, f, loss, seed, ge, gb;
  runtime::StepGraph graph;
  enum : size_t { kUpload, kA, kB, kC, kD, kE, kF, kLoss, kSeed, kGe, kGb, kUpdate };

  TwoBlocks(runtime::VirtualMemory& vm, bool overwrite_a_before_gb = false) {
    auto make = [&](uint64_t bytes) { return std::make_shared<Buffer>(vm, bytes, 1); };
    x = make(128), a = make(128), b = make(512), c = make(128), d = make(128), e = make(512), f = make(128);
    ge = make(512), gb = make(512), loss = make(4), seed = make(4);
    w1 = make(64), w2 = make(64);
    for (auto& w : {w1, w2}) {
      w->mark_defined();
      w->set_placement({runtime::PlacementKind::kHome});
    }
    auto m = [](const std::shared_ptr<Buffer>& buf) {
      return shaped(buf, {static_cast<int64_t>(buf->bytes() / 16), 4});
    };
    auto scalar = [](const std::shared_ptr<Buffer>& buf) { return shaped(buf, {}); };
    graph.append(upload(x, {8, 4}));
    graph.append(node("aten::mm", {m(x), shaped(w1, {4, 4})}, {m(a)}));
    graph.append(node("aten::repeat", {m(a)}, {m(b)}, {}, {std::vector<int64_t>{4, 1}}));
    graph.append(node("aten::add.Tensor", {m(a), m(b)}, {m(c)}));
    graph.append(node("aten::mm", {m(c), shaped(w2, {4, 4})}, {m(d)}));
    graph.append(node("aten::repeat", {m(d)}, {m(e)}, {}, {std::vector<int64_t>{4, 1}}));
    graph.append(node("aten::add.Tensor", {m(d), m(e)}, {m(f)}));
    graph.append(node("aten::sum", {m(f)}, {scalar(loss)}));
    runtime::Node fill = node("aten::fill_.Scalar", {scalar(seed)}, {}, {0});
    fill.initializes.push_back(0);
    graph.append(std::move(fill));
    graph.append(node("aten::mul.Tensor", {m(e), scalar(seed)}, {m(ge)}));
    if (overwrite_a_before_gb) graph.append(node("aten::mul_.Tensor", {m(a), m(ge)}, {}, {0}));
    graph.append(node("aten::mul.Tensor", {m(b), m(ge)}, {m(gb)}));
    graph.append(node("aten::add_.Tensor", {shaped(w1, {4, 4}), shaped(gb, {4, 4})}, {}, {0}));  // gb's first rows
    for (auto* buf : {&x, &a, &b, &c, &d, &e, &f, &seed, &ge, &gb}) (*buf)->release_frontend();
  }
};

class RecomputationTest : public ::testing::Test {
 protected:
  void SetUp() override { runtime::register_data_type(6, runtime::DataType::kFloat32); }
  runtime::VirtualMemory vm;
};

uint32_t slot_of(const CanonicalGraph& cg, const std::shared_ptr<Buffer>& b) {
  for (size_t s = 0; s < cg.bindings.size(); ++s)
    if (cg.bindings[s] == b) return static_cast<uint32_t>(s);
  ADD_FAILURE() << "no slot";
  return 0;
}

size_t launches_of(const runtime::DeviceProgram& p, size_t node) {
  return static_cast<size_t>(std::count_if(p.code.begin(), p.code.end(), [&](const Instruction& i) {
    return i.kind == Kind::kLaunch && i.index == node;
  }));
}

TEST_F(RecomputationTest, DropsWhatLiesBetweenCheckpointsAndMakesItAgainBeforeTheBackwardPassReadsIt) {
  TwoBlocks t(vm);
  const CanonicalGraph cg = CanonicalGraph::build(t.graph);
  const Recomputation r = plan_recomputation(t.graph, cg, 1);
  ASSERT_TRUE(r.none.empty()) << r.none;
  // e is made again (from the checkpoint d) just before the backward pass reads it, b (from a) before its
  // reader; nothing else runs twice.
  const std::vector<uint32_t> want = {TwoBlocks::kUpload, TwoBlocks::kA,    TwoBlocks::kB,  TwoBlocks::kC,
                                      TwoBlocks::kD,      TwoBlocks::kE,    TwoBlocks::kF,  TwoBlocks::kLoss,
                                      TwoBlocks::kSeed,   TwoBlocks::kE,    TwoBlocks::kGe, TwoBlocks::kB,
                                      TwoBlocks::kGb,     TwoBlocks::kUpdate};
  EXPECT_EQ(r.order, want);
  EXPECT_EQ(r.recomputed_nodes, 2u);
  EXPECT_TRUE(r.dropped[slot_of(cg, t.b)]);
  EXPECT_TRUE(r.dropped[slot_of(cg, t.e)]);
  for (const auto& kept : {t.a, t.c, t.d, t.f}) EXPECT_FALSE(r.dropped[slot_of(cg, kept)]);
  EXPECT_EQ(r.dropped_bytes, 1024u);
  EXPECT_EQ(r.checkpoints, 5u);
  EXPECT_NE(describe(r).find("2 op(s) run again in the backward pass (aten::repeat ×2)"), std::string::npos) << describe(r);
}

TEST_F(RecomputationTest, TheOneDevicePlanReleasesTheDroppedValuesAndRunsTheirNodesAgain) {
  TwoBlocks t(vm);
  const CanonicalGraph cg = CanonicalGraph::build(t.graph);
  const Recomputation r = plan_recomputation(t.graph, cg, 1);
  const PlannedStep plain = compile_plan(cg);
  const PlannedStep again = compile_plan(cg, {}, nullptr, &r);
  const auto& code = again.programs.at(0).code;
  EXPECT_EQ(launches_of(again.programs[0], TwoBlocks::kE), 2u);
  EXPECT_EQ(launches_of(again.programs[0], TwoBlocks::kB), 2u);
  // b is released after c reads it, and again after the backward pass's last read.
  const uint32_t b = slot_of(cg, t.b);
  EXPECT_EQ(std::count_if(code.begin(), code.end(), [&](const Instruction& i) { return i.kind == Kind::kRelease && i.index == b; }), 2);
  // The forward pass's end holds the checkpoints a and d, not b and e: the peak is lower.
  EXPECT_LT(again.programs[0].peak_bytes, plain.programs[0].peak_bytes);
  EXPECT_EQ(again.report.launches, plain.report.launches + 2);
}

TEST_F(RecomputationTest, ANodeWhoseInputChangedBeforeItWouldRunAgainIsKept) {
  TwoBlocks t(vm, /*overwrite_a_before_gb=*/true);  // a *= ge before the backward pass reads b = relu(a)
  const CanonicalGraph cg = CanonicalGraph::build(t.graph);
  const Recomputation r = plan_recomputation(t.graph, cg, 1);
  EXPECT_FALSE(r.dropped[slot_of(cg, t.b)]);  // repeat(a) now would not be b
  EXPECT_TRUE(r.dropped[slot_of(cg, t.e)]);
  EXPECT_EQ(std::count(r.order.begin(), r.order.end(), TwoBlocks::kB), 1);
  EXPECT_EQ(r.recomputed_nodes, 1u);
}

TEST_F(RecomputationTest, AStepWithoutABackwardPassRecomputesNothing) {
  runtime::StepGraph g;
  auto x = std::make_shared<Buffer>(vm, 128, 1), y = std::make_shared<Buffer>(vm, 128, 1);
  g.append(upload(x, {8, 4}));
  g.append(node("aten::relu", {shaped(x, {8, 4})}, {shaped(y, {8, 4})}));
  const CanonicalGraph cg = CanonicalGraph::build(g);
  const Recomputation r = plan_recomputation(g, cg);
  EXPECT_EQ(r.none, "the step has no backward pass");
  EXPECT_EQ(r.order, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(r.recomputed_nodes, 0u);
}

TEST_F(RecomputationTest, UnderMicroBatchesAValueMadeFromTheBatchButNotByRowsIsNotMadeAgain) {
  // b keeps the batch's 8 rows (4 rows of it per row of x); a value without them (a loss, batch statistics)
  // may be a sum over micro-batches that one micro-batch cannot make again.
  TwoBlocks t(vm);
  const CanonicalGraph cg = CanonicalGraph::build(t.graph);
  EXPECT_TRUE(plan_recomputation(t.graph, cg, 1, {8}).dropped[slot_of(cg, t.b)]);
  EXPECT_FALSE(plan_recomputation(t.graph, cg, 1, {3}).dropped[slot_of(cg, t.b)]);  // 8 rows are no 3 pieces' rows
  // What is not made from the step's data (a mask, made once for every micro-batch) is not made again.
  TwoBlocks u(vm);
  u.graph.nodes()[TwoBlocks::kUpload].host_input = false;  // x as if made from the parameters alone
  const CanonicalGraph cu = CanonicalGraph::build(u.graph);
  EXPECT_TRUE(plan_recomputation(u.graph, cu, 1).dropped[slot_of(cu, u.b)]);
  EXPECT_FALSE(plan_recomputation(u.graph, cu, 1, {8}).dropped[slot_of(cu, u.b)]);
}

TEST_F(RecomputationTest, BatchSplittingRunsTheSameNodesAgainOnEachDevice) {
  runtime::set_op_facts(runtime::intern_op("aten::relu"), {.pointwise = true});
  TwoBlocks t(vm);
  for (auto* buf : {&t.w1, &t.w2}) (*buf)->set_placement({runtime::PlacementKind::kReplicate});
  const CanonicalGraph cg = CanonicalGraph::build(t.graph);
  const Recomputation r = plan_recomputation(t.graph, cg, 1);
  const PlannedStep plan = compile_data_parallel_plan(t.graph, cg, 2, {8}, false, &r.order);
  ASSERT_EQ(plan.programs.size(), 2u);
  for (const auto& p : plan.programs) {
    EXPECT_EQ(launches_of(p, TwoBlocks::kE), 2u);
    EXPECT_EQ(launches_of(p, TwoBlocks::kB), 2u);
  }
}

// `k` blocks like TwoBlocks's: h_i = a_i + repeat(a_i), a_i = h_{i-1} @ w_i; the backward pass reads each
// repeat, last block first, then updates w_1. Enough checkpoints that the tails kept differ.
// The search's plans (PlanRequest::fits): the longest kept tail whose plan fits, so that fewer ops run again
// and no other tail is lowered; where none fits, the lowest peak, as a layout chosen by hand gets.
TEST_F(RecomputationTest, TheSearchTakesTheLongestKeptTailThatFitsAndLowersNoMore) {
  Blocks t(vm, 10);
  const CanonicalGraph cg = CanonicalGraph::build(t.graph);
  runtime::ParallelConfig config;
  config.recomputation = 1;
  int asked = 0;
  auto plan = [&](std::function<bool(const PlannedStep&)> fits) {
    asked = 0;
    return plan_step({.graph = t.graph, .canonical = cg, .devices = 1, .parallelism = config, .fits = std::move(fits)});
  };
  const auto lowest = plan({});
  const auto fitting = plan([&](const PlannedStep&) { return ++asked, true; });
  EXPECT_EQ(asked, 1) << "the first tail that fits ends the search";
  const auto none = plan([&](const PlannedStep&) { return ++asked, false; });
  EXPECT_EQ(asked, 3) << "each tail lowered and asked";
  ASSERT_GT(lowest->report.recomputed_ops, 0u);
  EXPECT_LT(fitting->report.recomputed_ops, lowest->report.recomputed_ops);
  EXPECT_GT(max_peak_bytes(*fitting), max_peak_bytes(*lowest)) << "less dropped: a higher peak, which fits";
  EXPECT_EQ(none->report.recomputed_ops, lowest->report.recomputed_ops);
  EXPECT_EQ(max_peak_bytes(*none), max_peak_bytes(*lowest));
  // Only the 3-block tail fits: the 6-block one is lowered and refused on the way.
  const uint64_t between = max_peak_bytes(*fitting) - 1;
  const auto middle = plan([&](const PlannedStep& p) { return ++asked, max_peak_bytes(p) <= between; });
  EXPECT_EQ(asked, 2);
  EXPECT_LE(max_peak_bytes(*middle), between);
  EXPECT_GT(middle->report.recomputed_ops, fitting->report.recomputed_ops);
}

}  // namespace
}  // namespace moreh::scheduler
