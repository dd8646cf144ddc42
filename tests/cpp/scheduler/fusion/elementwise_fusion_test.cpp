// Grouping elementwise nodes (which nodes join, where a group runs, what it stores), the plan around the
// groups, and fused steps run end to end on a host device (the host evaluator) against plain arithmetic.
#include "scheduler/fusion/elementwise_fusion.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "runtime/base/data_type.h"
#include "runtime/host/host_device.h"
#include "scheduler/engine.h"
#include "scheduler/lowering/planner.h"
#include "test_graph.h"
#ifdef MOREH_WITH_NVRTC
#include "runtime/cuda/nvrtc.h"
#endif

namespace moreh::scheduler {
namespace {

using moreh::testing::node;
using moreh::testing::shaped;
using runtime::Attribute;
using runtime::Buffer;
using runtime::CanonicalGraph;
using runtime::Node;
using runtime::StepGraph;
using runtime::StepValue;
using Kind = runtime::Instruction::Kind;

// Nodes the way the recorder gives them: tensors, then attributes at their schema positions.
Node op(std::string_view name, std::vector<runtime::TensorRef> ins, std::vector<runtime::TensorRef> outs,
        std::vector<std::pair<int, Attribute>> attrs = {}, std::initializer_list<uint16_t> written = {}) {
  Node n = node(name, std::move(ins), std::move(outs), written);
  for (auto& [arg, a] : attrs) {
    n.attrs.push_back(a);
    n.attr_args.push_back(static_cast<uint8_t>(arg));
  }
  return n;
}

class FusionTest : public ::testing::Test {
 protected:
  void SetUp() override { runtime::register_data_type(6, runtime::DataType::kFloat32); }

  std::shared_ptr<Buffer> buf(int64_t elements) {
    auto b = std::make_shared<Buffer>(vm_, static_cast<uint64_t>(elements) * 4);
    b->mark_defined();
    return b;
  }

  // Fuses `graph`; the canonical graph (slots, liveness) is kept for the checks.
  FusionResult fuse(const StepGraph& graph, FusionLimits limits = {}) {
    canonical_ = CanonicalGraph::build(graph);
    return fuse_elementwise(graph, canonical_, limits);
  }
  uint32_t slot_of(const StepGraph& g, size_t n, size_t out) {
    (void)g;
    return canonical_.node_outputs.at(n).at(out);
  }

  runtime::VirtualMemory vm_;
  CanonicalGraph canonical_;
};

TEST_F(FusionTest, AChainBecomesOneKernelAndItsIntermediateIsNeverStored) {
  auto x = buf(8), y = buf(8), z = buf(8);
  StepGraph g;
  g.append(op("aten::add.Tensor", {shaped(x, {8}), shaped(x, {8})}, {shaped(y, {8})}, {{2, int64_t{1}}}));
  g.append(op("aten::mul.Tensor", {shaped(y, {8}), shaped(x, {8})}, {shaped(z, {8})}));
  y->release_frontend();  // the script no longer holds the intermediate
  const FusionResult r = fuse(g);
  ASSERT_EQ(r.launches.size(), 1u);
  EXPECT_EQ(r.launches[0].nodes, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(r.fused_nodes, 2u);
  EXPECT_EQ(r.runs_at, (std::vector<uint32_t>{1, 1}));
  EXPECT_TRUE(r.unstored[slot_of(g, 0, 0)]);
  EXPECT_FALSE(r.unstored[slot_of(g, 1, 0)]);
  ASSERT_EQ(r.launches[0].outputs.size(), 1u);
  EXPECT_EQ(r.launches[0].outputs[0].node, 1u);
  EXPECT_TRUE(r.launches[0].outputs[0].fresh);
  EXPECT_EQ(r.launches[0].inputs.size(), 1u);  // x, read once
  EXPECT_EQ(r.launches[0].shape.count, 8u);

  // The plan: one kFused where the chain ended, no memory for the intermediate.
  const PlannedStep plan = compile_plan(canonical_, {}, &r);
  const auto& code = plan.programs[0].code;
  ASSERT_EQ(std::count_if(code.begin(), code.end(), [](const auto& i) { return i.kind == Kind::kFused; }), 1);
  EXPECT_EQ(std::count_if(code.begin(), code.end(), [](const auto& i) { return i.kind == Kind::kLaunch; }), 0);
  EXPECT_EQ(plan.report.launches, 1u);
  EXPECT_EQ(plan.report.fused_nodes, 2u);
  EXPECT_EQ(plan.programs[0].peak_bytes, 32u);  // z only
  const PlannedStep unfused = compile_plan(canonical_);
  EXPECT_EQ(unfused.programs[0].peak_bytes, 64u);
}

TEST_F(FusionTest, AnIntermediateTheScriptHoldsIsStored) {
  auto x = buf(8), y = buf(8), z = buf(8);
  StepGraph g;
  g.append(op("aten::exp", {shaped(x, {8})}, {shaped(y, {8})}));
  g.append(op("aten::neg", {shaped(y, {8})}, {shaped(z, {8})}));
  const FusionResult r = fuse(g);
  ASSERT_EQ(r.launches.size(), 1u);
  EXPECT_EQ(r.launches[0].outputs.size(), 2u);
  EXPECT_FALSE(r.unstored[slot_of(g, 0, 0)]);
}

TEST_F(FusionTest, ANodeReadingTheGroupsValueEndsTheGroupBeforeIt) {
  auto x = buf(8), a = buf(8), b = buf(8), s = buf(1), c = buf(8), d = buf(8);
  StepGraph g;
  g.append(op("aten::exp", {shaped(x, {8})}, {shaped(a, {8})}));
  g.append(op("aten::neg", {shaped(a, {8})}, {shaped(b, {8})}));
  g.append(op("aten::sum", {shaped(a, {8})}, {shaped(s, {1})}));  // no rule: reads a where the group wrote it
  g.append(op("aten::tanh", {shaped(b, {8})}, {shaped(c, {8})}));
  g.append(op("aten::relu", {shaped(c, {8})}, {shaped(d, {8})}));
  for (auto* held : {&a, &b, &c}) (*held)->release_frontend();
  const FusionResult r = fuse(g);
  ASSERT_EQ(r.launches.size(), 2u);
  EXPECT_EQ(r.launches[0].nodes, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(r.launches[1].nodes, (std::vector<uint32_t>{3, 4}));
  EXPECT_EQ(r.group_of[2], -1);
  EXPECT_EQ(r.runs_at[0], 1u);  // before the sum
  EXPECT_FALSE(r.unstored[slot_of(g, 0, 0)]);  // a: the sum reads it
  EXPECT_FALSE(r.unstored[slot_of(g, 1, 0)]);  // b: the second group reads it
  EXPECT_TRUE(r.unstored[slot_of(g, 3, 0)]);   // c
}

TEST_F(FusionTest, IndependentInPlaceUpdatesOfOneShapeShareAKernel) {
  // An optimizer's pattern: each op over every parameter, in place, with per-step scalars.
  auto p1 = buf(6), p2 = buf(6), g1 = buf(6), g2 = buf(6), q = buf(4);
  StepGraph g;
  for (auto& [p, gr] : {std::pair{p1, g1}, std::pair{p2, g2}})
    g.append(op("aten::mul_.Tensor", {shaped(p, {2, 3})}, {}, {{1, StepValue{0.9}}}, {0}));
  g.append(op("aten::exp", {shaped(q, {4})}, {shaped(buf(4), {4})}));  // another shape: its own group
  for (auto& [p, gr] : {std::pair{p1, g1}, std::pair{p2, g2}})
    g.append(op("aten::add_.Tensor", {shaped(p, {2, 3}), shaped(gr, {2, 3})}, {}, {{2, StepValue{-0.1}}}, {0}));
  const FusionResult r = fuse(g);
  ASSERT_EQ(r.launches.size(), 1u);
  const auto& l = r.launches[0];
  EXPECT_EQ(l.nodes, (std::vector<uint32_t>{0, 1, 3, 4}));
  EXPECT_EQ(r.group_of[2], -1);  // a group of one runs as it is
  EXPECT_EQ(l.scalars.size(), 4u);
  EXPECT_EQ(l.inputs.size(), 4u);  // p1, p2, g1, g2
  ASSERT_EQ(l.outputs.size(), 2u);  // p1 and p2, in place
  EXPECT_FALSE(l.outputs[0].fresh);
  EXPECT_FALSE(l.outputs[1].fresh);
}

TEST_F(FusionTest, AWriteBetweenMembersOfWhatTheGroupReadEndsIt) {
  auto x = buf(8), y = buf(8), z = buf(8);
  StepGraph g;
  g.append(op("aten::exp", {shaped(x, {8})}, {shaped(y, {8})}));
  g.append(op("test::scribble", {shaped(x, {8})}, {}, {}, {0}));  // writes x, which the group read
  g.append(op("aten::mul.Tensor", {shaped(y, {8}), shaped(x, {8})}, {shaped(z, {8})}));
  const FusionResult r = fuse(g);
  EXPECT_TRUE(r.launches.empty());
  EXPECT_EQ(r.group_of, (std::vector<int32_t>{-1, -1, -1}));
}

TEST_F(FusionTest, AWriteBetweenMembersOfSomethingElseLetsTheGroupRunAfterIt) {
  auto x = buf(8), q = buf(8), y = buf(8), z = buf(8);
  StepGraph g;
  g.append(op("aten::exp", {shaped(x, {8})}, {shaped(y, {8})}));
  g.append(op("test::scribble", {shaped(q, {8})}, {}, {}, {0}));  // the group has not read q yet
  g.append(op("aten::mul.Tensor", {shaped(y, {8}), shaped(q, {8})}, {shaped(z, {8})}));
  const FusionResult r = fuse(g);
  ASSERT_EQ(r.launches.size(), 1u);
  EXPECT_EQ(r.runs_at[0], 2u);  // after the write it must see
}

TEST_F(FusionTest, BroadcastInputsAreReadThroughStrides) {
  auto x = buf(6), b = buf(3), y = buf(6), z = buf(6);
  StepGraph g;
  g.append(op("aten::add.Tensor", {shaped(x, {2, 3}), shaped(b, {3})}, {shaped(y, {2, 3})}, {{2, int64_t{1}}}));
  g.append(op("aten::relu", {shaped(y, {2, 3})}, {shaped(z, {2, 3})}));
  const FusionResult r = fuse(g);
  ASSERT_EQ(r.launches.size(), 1u);
  const auto& l = r.launches[0];
  EXPECT_FALSE(l.kernel->contiguous());
  EXPECT_EQ(l.shape.sizes, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(l.shape.strides.size(), 2u);
  EXPECT_TRUE(l.shape.strides[0].empty());                       // x: contiguous
  EXPECT_EQ(l.shape.strides[1], (std::vector<int64_t>{0, 1}));   // b: broadcast over rows
}

TEST_F(FusionTest, WhatARuleCannotTakeStaysUnfused) {
  auto x = buf(8), y = buf(8), z = buf(8), w = buf(8);
  StepGraph g;
  // A rounding mode the rules do not cover, a string attribute gelu does not know, then a plain pair.
  g.append(op("aten::div.Tensor_mode", {shaped(x, {8}), shaped(x, {8})}, {shaped(y, {8})}, {{2, std::string("floor")}}));
  g.append(op("aten::gelu", {shaped(y, {8})}, {shaped(z, {8})}, {{1, std::string("cubic")}}));
  g.append(op("aten::sqrt", {shaped(z, {8})}, {shaped(w, {8})}));
  const FusionResult r = fuse(g);
  EXPECT_TRUE(r.launches.empty());
}

TEST_F(FusionTest, GroupsStayWithinTheParameterLimit) {
  StepGraph g;
  std::vector<std::shared_ptr<Buffer>> keep;
  for (int i = 0; i < 40; ++i) {
    auto p = buf(4), q = buf(4);
    keep.push_back(p);
    g.append(op("aten::add_.Tensor", {shaped(p, {4}), shaped(q, {4})}, {}, {{2, StepValue{0.5}}}, {0}));
  }
  const FusionResult r = fuse(g, FusionLimits{.max_parameter_bytes = 512});
  ASSERT_GT(r.launches.size(), 1u);
  size_t nodes = 0;
  for (const auto& l : r.launches) {
    const auto& k = *l.kernel;
    EXPECT_LE((k.inputs().size() + k.outputs().size() + k.scalars().size()) * 8, 512u);
    nodes += l.nodes.size();
  }
  EXPECT_EQ(nodes, 40u);
}

#ifdef MOREH_WITH_NVRTC
TEST_F(FusionTest, AnOptimizerGroupCompilesWithNvrtc) {
  if (!runtime::cuda::nvrtc_available()) GTEST_SKIP() << runtime::cuda::nvrtc_unavailable_reason();
  auto p = buf(6), m = buf(6), v = buf(6), gr = buf(6), denom = buf(6);
  StepGraph g;
  const std::vector<std::pair<int, Attribute>> w = {{2, StepValue{0.1}}};
  g.append(op("aten::lerp_.Scalar", {shaped(m, {6}), shaped(gr, {6})}, {}, w, {0}));
  g.append(op("aten::addcmul_", {shaped(v, {6}), shaped(gr, {6}), shaped(gr, {6})}, {}, {{3, StepValue{0.001}}}, {0}));
  g.append(op("aten::sqrt", {shaped(v, {6})}, {shaped(denom, {6})}));
  g.append(op("aten::add_.Tensor", {shaped(denom, {6})}, {}, {{1, StepValue{1e-8}}, {2, int64_t{1}}}, {0}));
  g.append(op("aten::addcdiv_", {shaped(p, {6}), shaped(m, {6}), shaped(denom, {6})}, {}, {{3, StepValue{-1e-3}}}, {0}));
  g.append(op("aten::gelu_backward", {shaped(gr, {6}), shaped(p, {6})}, {shaped(buf(6), {6})}, {{2, std::string("tanh")}}));
  const FusionResult r = fuse(g);
  ASSERT_EQ(r.launches.size(), 1u);
  EXPECT_EQ(r.launches[0].nodes.size(), 6u);
  const auto& k = *r.launches[0].kernel;
  const auto out = runtime::cuda::nvrtc_compile(k.source(), k.function_name(), 90, runtime::cuda::NvrtcOutput::kPtx);
  EXPECT_FALSE(out.binary.empty());
}
#endif

// Autocast's weight casts: each read by the matmul right after it, so no chain forms; what they read holds its
// value from the step's start, so one kernel runs them all where the first stood.
TEST_F(FusionTest, CastsOfUnwrittenValuesShareAnEarlyKernelWhereTheFirstStood) {
  auto x = buf(16), w1 = buf(16), w2 = buf(16), w3 = buf(16), d1 = buf(16), d2 = buf(16), d3 = buf(16);
  auto y1 = buf(16), y2 = buf(16), y3 = buf(16);
  StepGraph g;
  g.append(op("aten::neg", {shaped(w1, {4, 4})}, {shaped(d1, {4, 4})}));                 // 0
  g.append(op("aten::mm", {shaped(x, {4, 4}), shaped(d1, {4, 4})}, {shaped(y1, {4, 4})}));  // 1
  g.append(op("aten::neg", {shaped(w2, {4, 4})}, {shaped(d2, {4, 4})}));                 // 2
  g.append(op("aten::mm", {shaped(y1, {4, 4}), shaped(d2, {4, 4})}, {shaped(y2, {4, 4})}));  // 3
  g.append(op("aten::neg", {shaped(w3, {4, 4})}, {shaped(d3, {4, 4})}));                 // 4
  g.append(op("aten::mm", {shaped(y2, {4, 4}), shaped(d3, {4, 4})}, {shaped(y3, {4, 4})}));  // 5
  const FusionResult r = fuse(g);
  ASSERT_EQ(r.launches.size(), 1u);
  EXPECT_EQ(r.launches[0].nodes, (std::vector<uint32_t>{0, 2, 4}));
  EXPECT_EQ(r.runs_at[0], 0u);
  EXPECT_EQ(r.runs_at[2], 0u);
  EXPECT_EQ(r.runs_at[4], 0u);
  EXPECT_EQ(r.launches[0].outputs.size(), 3u);  // each cast is read by its matmul: all stored

  // The plan: the kernel first, then the three matmuls; the casts' memory held from the kernel on.
  const PlannedStep plan = compile_plan(canonical_, {}, &r);
  std::vector<Kind> kinds;
  for (const auto& i : plan.programs[0].code)
    if (i.kind == Kind::kFused || i.kind == Kind::kLaunch) kinds.push_back(i.kind);
  EXPECT_EQ(kinds, (std::vector<Kind>{Kind::kFused, Kind::kLaunch, Kind::kLaunch, Kind::kLaunch}));
  EXPECT_EQ(plan.report.launches, 4u);
  const PlannedStep unfused = compile_plan(canonical_);
  EXPECT_EQ(unfused.report.launches, 6u);
  EXPECT_GE(plan.programs[0].peak_bytes, 3 * 64u + 64u);  // d1..d3 from the start, and a matmul's result

  FusionLimits off;
  off.early_groups = false;
  EXPECT_TRUE(fuse(g, off).launches.empty());
}

// A node whose input an earlier node wrote, or whose in-place result an earlier node read, stays in place.
TEST_F(FusionTest, AValueWrittenBeforeTheNodeKeepsItFromMovingEarly) {
  auto x = buf(16), w1 = buf(16), w2 = buf(16), d1 = buf(16), d2 = buf(16), y1 = buf(16), y2 = buf(16);
  auto acc = buf(16);
  StepGraph g;
  g.append(op("aten::neg", {shaped(w1, {4, 4})}, {shaped(d1, {4, 4})}));                      // 0: movable
  g.append(op("aten::mm", {shaped(x, {4, 4}), shaped(d1, {4, 4})}, {shaped(y1, {4, 4})}));     // 1
  g.append(op("aten::addmm_", {shaped(w2, {4, 4}), shaped(x, {4, 4}), shaped(y1, {4, 4})}, {}, {}, {0}));  // 2: writes w2
  g.append(op("aten::neg", {shaped(w2, {4, 4})}, {shaped(d2, {4, 4})}));                      // 3: reads w2
  g.append(op("aten::mm", {shaped(x, {4, 4}), shaped(d2, {4, 4})}, {shaped(y2, {4, 4})}));     // 4
  g.append(op("aten::addmm_", {shaped(x, {4, 4}), shaped(y2, {4, 4}), shaped(acc, {4, 4})}, {}, {}, {0}));  // 5: reads acc
  g.append(op("aten::neg_", {shaped(acc, {4, 4})}, {}, {}, {0}));                              // 6: acc read at 5
  const FusionResult r = fuse(g);
  EXPECT_TRUE(r.launches.empty()) << "nodes 3 and 6 must stay where they are, leaving node 0 alone";
}

// End to end on a host device: the engine fuses (MOREH_FUSION=on), the executor runs the group with the host
// evaluator, and the values are plain arithmetic's.
TEST(FusedExecutionTest, AnEngineRunsAFusedStepOnAHostDevice) {
  runtime::register_data_type(6, runtime::DataType::kFloat32);
  runtime::Config c;
  c.fusion = runtime::FusionChoice::kOn;
  std::vector<std::unique_ptr<runtime::PhysicalDevice>> devices;
  devices.push_back(std::make_unique<runtime::HostDevice>(0, 1 << 20));
  Engine engine(c, std::move(devices));
  ASSERT_TRUE(engine.fusion_enabled());
  auto x = engine.new_buffer(16), p = engine.new_buffer(16);
  std::shared_ptr<Buffer> z;
  const float xs[4] = {1, -2, 3, 0.5f}, ps[4] = {10, 20, 30, 40};
  for (auto& [b, v] : {std::pair{x, xs}, std::pair{p, ps}}) {
    auto block = engine.device().allocate(16);
    std::memcpy(block->data(), v, 16);
    b->bind(std::move(block));
    b->mark_defined();
  }
  for (int step = 0; step < 2; ++step) {  // the second step runs the cached plan with new scalars
    const double lr = step == 0 ? 0.5 : 0.25;
    auto y = engine.new_buffer(16);
    z = engine.new_buffer(16);
    engine.record(op("aten::mul.Tensor", {shaped(x, {4}), shaped(x, {4})}, {shaped(y, {4})}));
    engine.record(op("aten::add_.Tensor", {shaped(p, {4}), shaped(y, {4})}, {}, {{2, StepValue{-lr}}}, {0}));
    engine.record(op("aten::relu", {shaped(p, {4})}, {shaped(z, {4})}));
    y->release_frontend();  // the script drops the square: never stored
    engine.synchronize();
    EXPECT_EQ(y->memory(), nullptr);
    EXPECT_EQ(engine.stats().last_launches, 1u);
    EXPECT_EQ(engine.stats().last_fused_ops, 3u);
  }
  const float* pv = static_cast<const float*>(p->memory()->data());
  const float* zv = static_cast<const float*>(z->memory()->data());
  for (int i = 0; i < 4; ++i) {
    const float expected = ps[i] - 0.5f * xs[i] * xs[i] - 0.25f * xs[i] * xs[i];
    EXPECT_FLOAT_EQ(pv[i], expected) << i;
    EXPECT_FLOAT_EQ(zv[i], std::max(expected, 0.0f)) << i;
  }
  EXPECT_EQ(engine.stats().cache_hits, 1u);
}

}  // namespace
}  // namespace moreh::scheduler
