// distribute_param over batch splitting: the weight gradient reduce-scattered, the update on each
// replica's rows, the parameter all-gathered after it, the optimizer state left in rows.
#include "scheduler/lowering/optimizer_sharding.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "pipeline_test_graph.h"
#include "runtime/base/data_type.h"
#include "scheduler/lowering/data_parallel_planner.h"
#include "scheduler/lowering/spmd_emission.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;
using runtime::Instruction;
using runtime::PlacementKind;
using Kind = Instruction::Kind;

class OptimizerShardingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::register_data_type(6, runtime::DataType::kFloat32);
    runtime::set_op_facts(runtime::intern_op("aten::relu"), {.pointwise = true});
    runtime::set_op_facts(runtime::intern_op("aten::add_.Tensor"), {.pointwise = true});
  }
  uint32_t slot(const runtime::CanonicalGraph& c, const std::shared_ptr<runtime::Buffer>& b) {
    return static_cast<uint32_t>(std::find(c.bindings.begin(), c.bindings.end(), b) - c.bindings.begin());
  }
  runtime::VirtualMemory vm;
};

// PipelineStep's two layers, plus optimizer state m for w2: m += gw2 and w2 += m in place of w2 += gw2.
struct StepWithState {
  PipelineStep step;
  std::shared_ptr<runtime::Buffer> m;
  runtime::StepGraph graph;
  StepWithState(runtime::VirtualMemory& vm, int devices) : step(vm, devices) {
    m = std::make_shared<runtime::Buffer>(vm, 4 * 16, devices);
    m->mark_defined();
    m->set_placement({PlacementKind::kReplicate});
    for (auto* w : {&step.w1, &step.w2}) (*w)->set_placement({PlacementKind::kReplicate});
    for (size_t i = 0; i + 1 < step.graph.size(); ++i) graph.append(step.graph.nodes()[i]);
    graph.append(node("aten::add_.Tensor", {shaped(m, {4, 4}), shaped(step.gw2, {4, 4})}, {}, {0}));
    graph.append(node("aten::add_.Tensor", {shaped(step.w2, {4, 4}), shaped(m, {4, 4})}, {}, {0}));
  }
};

TEST_F(OptimizerShardingTest, GradientsAreReduceScatteredUpdatesRunOnRowsStateStaysInRows) {
  StepWithState s(vm, 2);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(s.graph);
  BatchSplit split = split_batch(s.graph, c, {{0, 4}, {4, 4}}, 8);
  const uint32_t gw1 = slot(c, s.step.gw1), gw2 = slot(c, s.step.gw2), w1 = slot(c, s.step.w1),
                 w2 = slot(c, s.step.w2), m = slot(c, s.m);
  auto has = [&](Kind k, uint32_t index) {
    return std::any_of(split.steps.begin(), split.steps.end(),
                       [&](const SplitStep& st) { return st.kind == k && st.index == index; });
  };
  ASSERT_TRUE(has(Kind::kAllReduce, gw1));  // batch splitting alone all-reduces the gradients
  const OptimizerSharding r = shard_optimizer(s.graph, c, split, 2);
  EXPECT_EQ(r.reduce_scatters, 2u);
  EXPECT_EQ(r.sharded_ops, 3u);  // w1 += gw1, m += gw2, w2 += m
  EXPECT_FALSE(has(Kind::kAllReduce, gw1));
  EXPECT_TRUE(has(Kind::kReduceScatter, gw1));
  EXPECT_TRUE(has(Kind::kReduceScatter, gw2));
  EXPECT_TRUE(has(Kind::kKeepRows, w1));   // a replicated parameter: each replica keeps its rows to update
  EXPECT_TRUE(has(Kind::kKeepRows, m));
  EXPECT_TRUE(has(Kind::kAllGather, w1));  // and gathers them after, for the next forward pass
  EXPECT_TRUE(has(Kind::kAllGather, w2));
  EXPECT_FALSE(has(Kind::kAllGather, m));
  // The update runs on two rows of the four on each replica.
  const auto update = std::find_if(split.steps.begin(), split.steps.end(), [](const SplitStep& st) {
    return st.kind == Kind::kLaunch && st.index == kUpdate1;
  });
  ASSERT_NE(update, split.steps.end());
  ASSERT_EQ(update->launches.size(), 2u);
  for (const auto& l : update->launches) {
    EXPECT_EQ(l.inputs.at(0).sizes, (runtime::Dims{2, 4}));
    EXPECT_EQ(l.inputs.at(1).sizes, (runtime::Dims{2, 4}));
  }
  EXPECT_EQ(split.final_placements[w1].kind, PlacementKind::kReplicate);
  EXPECT_EQ(split.final_placements[m].kind, PlacementKind::kShard);
  EXPECT_EQ(split.final_placements[m].rows, 4);
  EXPECT_EQ(split.slots[m].row_bytes, 16u);
  EXPECT_EQ(r.sharded_state, 1u);
  EXPECT_EQ(r.sharded_bytes, 64u);
}

// Beside tensor parallelism (2 replicas x 2 ranks; nothing here split by TP): what TP keeps whole is sharded over
// each rank's replicas, devices 0 and 2, 1 and 3. Device d takes replica d / 2's rows; the collectives run over
// its rank's replicas with the slot's own rows, and the state rests in rows along that axis of the mesh.
TEST_F(OptimizerShardingTest, BesideTensorParallelismEachRanksReplicasShareTheRows) {
  StepWithState s(vm, 4);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(s.graph);
  const SplitSeeds none;
  BatchSplit split = split_batch(s.graph, c, {{0, 4}, {4, 4}}, 8, nullptr, true, {&none, 2});
  const OptimizerSharding r = shard_optimizer(s.graph, c, split, 4);
  EXPECT_EQ(r.reduce_scatters, 2u);
  EXPECT_EQ(r.sharded_ops, 3u);
  const uint32_t gw2 = slot(c, s.step.gw2), m = slot(c, s.m);
  const auto scatter = std::find_if(split.steps.begin(), split.steps.end(), [&](const SplitStep& st) {
    return st.kind == Kind::kReduceScatter && st.index == gw2;
  });
  ASSERT_NE(scatter, split.steps.end());
  EXPECT_EQ(scatter->axis, SplitStep::Axis::kBatch);
  ASSERT_TRUE(scatter->geometry.has_value());
  EXPECT_EQ(scatter->geometry->rows, 4u);
  EXPECT_EQ(scatter->geometry->row_bytes, 16u);
  const auto update = std::find_if(split.steps.begin(), split.steps.end(), [](const SplitStep& st) {
    return st.kind == Kind::kLaunch && st.index == kUpdate1;
  });
  ASSERT_NE(update, split.steps.end());
  ASSERT_EQ(update->launches.size(), 4u);  // one per device: replica 1's rows on devices 2 and 3
  EXPECT_EQ(update->launches[3].inputs.at(0).sizes, (runtime::Dims{2, 4}));
  EXPECT_EQ(split.final_placements[m].kind, PlacementKind::kShard);
  EXPECT_EQ(split.final_placements[m].ranks, 2);
  EXPECT_EQ(split.final_placements[m].stride, 2);
  const PlannedStep plan = emit_spmd_plan(s.graph, c, split, 4);
  for (const auto& p : plan.programs)
    for (const auto& i : p.code)
      if (i.kind == Kind::kReduceScatter) { EXPECT_EQ(i.group, 1 + 2 + p.device % 2) << "device " << p.device; }
}

TEST_F(OptimizerShardingTest, TheNextStepKeepsTheStateInRowsAndItsPlanPredictsItsPeak) {
  StepWithState s(vm, 2);
  s.m->set_placement({PlacementKind::kShard, 4});  // as the step before left it
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(s.graph);
  const PlannedStep plan = compile_data_parallel_plan(s.graph, c, 2, {8}, true);
  const uint32_t m = slot(c, s.m);
  for (const auto& p : plan.programs) {
    EXPECT_EQ(std::count_if(p.code.begin(), p.code.end(),
                            [&](const Instruction& i) { return i.index == m && i.kind == Kind::kAllGather; }),
              0)
        << plan.report.summary;
    EXPECT_GT(p.peak_bytes, 0u);
  }
  EXPECT_EQ(plan.final_placements[m].kind, PlacementKind::kShard);
  EXPECT_NE(plan.report.summary.find("optimizer sharded over the 2 replicas"), std::string::npos)
      << plan.report.summary;
}

TEST_F(OptimizerShardingTest, ParametersRestingInRowsAreGatheredForEachPassAndLetGoOfBetween) {
  StepWithState s(vm, 2);
  for (auto* w : {&s.step.w1, &s.step.w2}) (*w)->set_placement({PlacementKind::kShard, 4});  // a ZeRO-3 step's
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(s.graph);
  BatchSplit split = split_batch(s.graph, c, {{0, 4}, {4, 4}}, 8);
  const OptimizerSharding r = shard_optimizer(s.graph, c, split, 2, {}, {.params_in_rows = true});
  EXPECT_TRUE(r.params_in_rows);
  const uint32_t w1 = slot(c, s.step.w1), w2 = slot(c, s.step.w2);
  auto at = [&](Kind k, uint32_t index) {
    std::vector<size_t> out;
    for (size_t i = 0; i < split.steps.size(); ++i)
      if (split.steps[i].kind == k && split.steps[i].index == index) out.push_back(i);
    return out;
  };
  auto launch_of = [&](size_t node) {
    for (size_t i = 0; i < split.steps.size(); ++i)
      if (split.steps[i].kind == Kind::kLaunch && split.steps[i].index == node) return i;
    return split.steps.size();
  };
  // w2: gathered for the forward pass (h2 = a1 @ w2), let go of (each replica keeps its rows), gathered again
  // for the backward pass (ga1 = h2 @ w2^T); never gathered after its update.
  const auto gathers = at(Kind::kAllGather, w2), keeps = at(Kind::kKeepRows, w2);
  ASSERT_EQ(gathers.size(), 2u);
  ASSERT_GE(keeps.size(), 1u);
  EXPECT_LT(gathers[0], launch_of(kMm2));
  EXPECT_GT(keeps[0], launch_of(kMm2));
  EXPECT_LT(keeps[0], gathers[1]);
  EXPECT_LT(gathers[1], launch_of(kGa1));
  // w1: gathered once, for the forward pass; after it, only its update (on rows) reads it.
  EXPECT_EQ(at(Kind::kAllGather, w1).size(), 1u);
  EXPECT_GE(r.dropped, 2u);
  for (uint32_t w : {w1, w2}) {
    EXPECT_EQ(split.final_placements[w].kind, PlacementKind::kShard);
    EXPECT_EQ(split.final_placements[w].rows, 4);
  }
}

TEST_F(OptimizerShardingTest, TheMemoryModelChoosesZero3WhenZero2DoesNotFit) {
  StepWithState s(vm, 2);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(s.graph);
  const PlannedStep roomy = compile_data_parallel_plan(s.graph, c, 2, {8}, true, nullptr, 1 << 20);
  EXPECT_NE(roomy.report.summary.find("ZeRO-2"), std::string::npos) << roomy.report.summary;
  uint64_t peak = 0;
  for (const auto& p : roomy.programs) peak = std::max(peak, p.peak_bytes);
  const PlannedStep tight = compile_data_parallel_plan(s.graph, c, 2, {8}, true, nullptr, peak - 1);
  EXPECT_NE(tight.report.summary.find("ZeRO-3"), std::string::npos) << tight.report.summary;
  for (const auto& p : tight.programs) EXPECT_LT(p.peak_bytes, peak);
}

TEST_F(OptimizerShardingTest, AutocastsCopiesOfParametersAreMadeOnRowsAndGatheredForEachPass) {
  // x [8,4] uploaded; wl = w cast to a 2-byte type (copy_ into torch.empty); h = x @ wl; loss = sum(h); the
  // seed; gx = seed-scaled h @ wl^T (the backward pass reads the copy again).
  runtime::register_data_type(5, runtime::DataType::kFloat16);
  auto make = [&](uint64_t bytes) { return std::make_shared<runtime::Buffer>(vm, bytes, 2); };
  auto x = make(128), w = make(64), wl = make(32), h = make(128), loss = make(4), seed = make(4), gx = make(128);
  w->mark_defined();
  w->set_placement({PlacementKind::kReplicate});
  auto half = [](TensorRef r) {
    r.dtype = 5;
    r.itemsize = 2;
    return r;
  };
  runtime::StepGraph g;
  g.append(upload(x, {8, 4}));
  runtime::Node cast = node("aten::copy_", {half(shaped(wl, {4, 4})), shaped(w, {4, 4})}, {}, {0});
  cast.initializes.push_back(0);
  g.append(std::move(cast));
  g.append(node("aten::mm", {shaped(x, {8, 4}), half(shaped(wl, {4, 4}))}, {shaped(h, {8, 4})}));
  g.append(node("aten::sum", {shaped(h, {8, 4})}, {shaped(loss, {})}));
  runtime::Node fill = node("aten::fill_.Scalar", {shaped(seed, {})}, {}, {0});
  fill.initializes.push_back(0);
  g.append(std::move(fill));
  g.append(node("aten::mm", {shaped(h, {8, 4}), PipelineStep::transposed(half(shaped(wl, {4, 4})))}, {shaped(gx, {8, 4})}));
  for (auto* b : {&x, &wl, &h, &seed, &gx}) (*b)->release_frontend();
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(g);
  BatchSplit split = split_batch(g, c, {{0, 4}, {4, 4}}, 8);
  const OptimizerSharding r = shard_optimizer(g, c, split, 2, {}, {.optimizer = false, .low_precision = true});
  EXPECT_EQ(r.low_precision_casts, 1u);
  const uint32_t sw = slot(c, w), swl = slot(c, wl);
  std::vector<std::pair<Kind, uint32_t>> seq;  // the memory steps and collectives of w and its copy, in order
  for (const auto& st : split.steps)
    if (st.kind != Kind::kLaunch && (st.index == sw || st.index == swl)) seq.emplace_back(st.kind, st.index);
  const std::vector<std::pair<Kind, uint32_t>> want = {
      {Kind::kAllocate, swl},   // the copy's rows only
      {Kind::kAllGather, swl},  // before the forward pass's mm
      {Kind::kKeepRows, swl},   // let go of until the backward pass
      {Kind::kAllGather, swl},
  };
  EXPECT_EQ(seq, want);
  // The cast runs on each replica's two rows, reading them from the whole parameter at their offset.
  const auto launch = std::find_if(split.steps.begin(), split.steps.end(),
                                   [](const SplitStep& st) { return st.kind == Kind::kLaunch && st.index == 1; });
  ASSERT_NE(launch, split.steps.end());
  ASSERT_TRUE(launch->own_rows);
  ASSERT_EQ(launch->launches.size(), 2u);
  EXPECT_EQ(launch->launches[1].inputs.at(1).offset, 8);  // w's rows 2..3 of 4 floats each
  EXPECT_EQ(launch->launches[1].inputs.at(0).offset, 0);  // into the copy's own rows
  EXPECT_EQ(launch->launches[1].inputs.at(0).sizes, (runtime::Dims{2, 4}));
}

TEST_F(OptimizerShardingTest, OneReplicaOrNoUpdateChangesNothing) {
  StepWithState s(vm, 2);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(s.graph);
  BatchSplit split = split_batch(s.graph, c, {{0, 8}}, 8);
  const size_t steps = split.steps.size();
  EXPECT_EQ(shard_optimizer(s.graph, c, split, 1).sharded_ops, 0u);
  EXPECT_EQ(split.steps.size(), steps);
}

}  // namespace
}  // namespace moreh::scheduler
