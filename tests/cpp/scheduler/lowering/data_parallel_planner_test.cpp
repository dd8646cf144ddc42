#include "scheduler/lowering/data_parallel_planner.h"
#include "scheduler/sharding/sharding_rules.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <memory>
#include <vector>

#include "runtime/base/data_type.h"
#include "runtime/memory/virtual_memory.h"
#include "pipeline_test_graph.h"
#include "scheduler/lowering/tensor_parallel_planner.h"
#include "scheduler/search/step_cost.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using moreh::testing::node;
using moreh::testing::ref;
using moreh::testing::shaped;
using moreh::testing::transposed;
using moreh::testing::upload;
using runtime::Buffer;
using runtime::CanonicalGraph;
using runtime::Instruction;
using runtime::PlacementKind;
using runtime::StepGraph;
using runtime::TensorRef;
using Kind = Instruction::Kind;


const runtime::Dims qkv = {4, 2, 8, 8};  // attention's q, k, v in the attention tests

size_t count(const runtime::DeviceProgram& p, Kind k) {
  return static_cast<size_t>(std::count_if(p.code.begin(), p.code.end(), [&](const Instruction& i) { return i.kind == k; }));
}

class DataParallelPlannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::register_data_type(6, runtime::DataType::kFloat32);
    runtime::set_op_facts(runtime::intern_op("aten::relu"), {.pointwise = true});
  }
  runtime::VirtualMemory vm;
  // q, k, v, the output's gradient, the output, the logsumexp (`lse_len` floats per batch row and head),
  // the gradients of q, k and v and the RNG state (seed, offset), for attention over a batch of 4 (2 heads,
  // 8 positions, head size 8).
  std::array<std::shared_ptr<Buffer>, 11> attention_buffers(int devices, uint64_t lse_len) {
    const uint64_t bytes = 4 * 4 * 2 * 8 * 8;
    std::array<std::shared_ptr<Buffer>, 11> b;
    for (auto& x : b) x = buffer(bytes, false, devices);
    b[5] = buffer(4 * 4 * 2 * lse_len, false, devices);
    b[9] = buffer(8, false, devices);
    b[10] = buffer(8, false, devices);
    return b;
  }
  // A step that uploads q, k, v and the output's gradient.
  static StepGraph attention_uploads(const std::shared_ptr<Buffer>& q, const std::shared_ptr<Buffer>& k,
                                     const std::shared_ptr<Buffer>& v, const std::shared_ptr<Buffer>& go) {
    StepGraph g;
    for (const auto& b : {q, k, v, go}) g.append(upload(b, qkv));
    return g;
  }
  std::shared_ptr<Buffer> buffer(uint64_t bytes, bool defined, int devices) {
    auto b = std::make_shared<Buffer>(vm, bytes, devices);
    if (defined) {
      b->mark_defined();
      b->set_placement({PlacementKind::kReplicate});
    }
    return b;
  }
};

// x [8,4] uploaded, h = relu(x @ w), gw = x^T @ h: the batch splits through mm and relu, and the weight
// gradient (a contraction over the batch) is a partial sum, all-reduced before the in-place update.
TEST_F(DataParallelPlannerTest, SplitsTheBatchAndAllReducesTheWeightGradient) {
  const int n = 2;
  auto w = buffer(4 * 16, true, n);
  auto x = buffer(4 * 32, false, n);
  auto h = buffer(4 * 32, false, n);
  auto r = buffer(4 * 32, false, n);
  auto gw = buffer(4 * 16, false, n);
  StepGraph g;
  g.append(upload(x, {8, 4}));
  g.append(node("aten::mm", {shaped(x, {8, 4}), shaped(w, {4, 4})}, {shaped(h, {8, 4})}));
  g.append(node("aten::relu", {shaped(h, {8, 4})}, {shaped(r, {8, 4})}));
  g.append(node("aten::mm", {transposed(shaped(x, {8, 4})), shaped(r, {8, 4})}, {shaped(gw, {4, 4})}));
  g.append(node("aten::add_.Tensor", {shaped(w, {4, 4}), shaped(gw, {4, 4})}, {}, {0}));
  h->release_frontend();
  gw->release_frontend();
  CanonicalGraph c = CanonicalGraph::build(g);
  PlannedStep plan = compile_data_parallel_plan(g, c, n, {8});
  ASSERT_EQ(plan.programs.size(), 2u);
  EXPECT_EQ(plan.report.split_rows, 8) << plan.report.summary;
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u);
  for (const auto& p : plan.programs) {
    EXPECT_EQ(count(p, Kind::kAllReduce), 1u);  // the weight gradient
    EXPECT_EQ(count(p, Kind::kAllGather), 0u);
    EXPECT_EQ(count(p, Kind::kLaunch), 5u);
    // The upload and the three batch ops run on 4 of the 8 rows.
    ASSERT_EQ(p.launches.size(), 4u);
    EXPECT_EQ(p.launches[0].inputs[0].sizes[0], 4);
    EXPECT_EQ(p.launches[1].outputs[0].sizes[0], 4);
    EXPECT_EQ(p.launches[3].inputs[0].sizes[1], 4);  // x^T: the batch is its second dim
  }
  EXPECT_EQ(plan.programs[1].launches[0].rows.begin, 4);
  // The ring's bytes for the 64-byte gradient: 2·(N−1)/N × 64.
  EXPECT_EQ(plan.report.collective_bytes_per_device, 64u);
  const auto slot_of = [&](const std::shared_ptr<Buffer>& b) {
    return static_cast<size_t>(std::find(c.bindings.begin(), c.bindings.end(), b) - c.bindings.begin());
  };
  EXPECT_EQ(plan.final_placements[slot_of(x)].kind, PlacementKind::kShard);
  EXPECT_EQ(plan.final_placements[slot_of(r)].kind, PlacementKind::kShard);
  EXPECT_EQ(plan.final_placements[slot_of(w)].kind, PlacementKind::kReplicate);
}

// Two weights updated one after the other, as an optimizer without foreach does: their gradients' all-reduces
// come as one run (the executor sends it as one group), before either update.
TEST_F(DataParallelPlannerTest, TheGradientsOfWeightsUpdatedOneByOneAreAllReducedInOneRun) {
  const int n = 2;
  auto w1 = buffer(4 * 16, true, n), w2 = buffer(4 * 16, true, n);
  auto x = buffer(4 * 4 * 256, false, n), h = buffer(4 * 4 * 256, false, n), y = buffer(4 * 4 * 256, false, n);
  auto g1 = buffer(4 * 16, false, n), g2 = buffer(4 * 16, false, n);
  StepGraph g;
  g.append(upload(x, {256, 4}));
  g.append(node("aten::mm", {shaped(x, {256, 4}), shaped(w1, {4, 4})}, {shaped(h, {256, 4})}));
  g.append(node("aten::mm", {shaped(h, {256, 4}), shaped(w2, {4, 4})}, {shaped(y, {256, 4})}));
  g.append(node("aten::mm", {transposed(shaped(h, {256, 4})), shaped(y, {256, 4})}, {shaped(g2, {4, 4})}));
  g.append(node("aten::mm", {transposed(shaped(x, {256, 4})), shaped(h, {256, 4})}, {shaped(g1, {4, 4})}));
  g.append(node("aten::add_.Tensor", {shaped(w1, {4, 4}), shaped(g1, {4, 4})}, {}, {0}));
  g.append(node("aten::add_.Tensor", {shaped(w2, {4, 4}), shaped(g2, {4, 4})}, {}, {0}));
  for (auto* b : {&h, &y, &g1, &g2}) (*b)->release_frontend();
  CanonicalGraph c = CanonicalGraph::build(g);
  PlannedStep plan = compile_data_parallel_plan(g, c, n, {256});
  ASSERT_EQ(plan.report.split_rows, 256) << plan.report.summary;
  for (const auto& p : plan.programs) {
    ASSERT_EQ(count(p, Kind::kAllReduce), 2u);
    size_t first = p.code.size();
    for (size_t i = 0; i < p.code.size(); ++i)
      if (p.code[i].kind == Kind::kAllReduce) {
        first = std::min(first, i);
        EXPECT_TRUE(i == first || i == first + 1) << "all-reduce at " << i << " after one at " << first;
      }
  }
}

// A weight resting split along its columns (Placement::outer > 1, as tensor parallelism leaves it) is gathered
// whole before the batch splits through it: the gather knows its blocks (4 rows of 4-byte columns).
TEST_F(DataParallelPlannerTest, AWeightRestingInColumnsIsGatheredWithItsBlocks) {
  const int n = 2;
  auto w = buffer(4 * 16, true, n);
  w->set_placement(runtime::Placement{PlacementKind::kShard, 4, runtime::DataType::kFloat32, 0, 4});
  auto x = buffer(4 * 32, false, n);
  auto h = buffer(4 * 32, false, n);
  StepGraph g;
  g.append(upload(x, {8, 4}));
  g.append(node("aten::mm", {shaped(x, {8, 4}), shaped(w, {4, 4})}, {shaped(h, {8, 4})}));
  CanonicalGraph c = CanonicalGraph::build(g);
  PlannedStep plan = compile_data_parallel_plan(g, c, n, {8});
  const size_t sw = static_cast<size_t>(std::find(c.bindings.begin(), c.bindings.end(), w) - c.bindings.begin());
  for (const auto& p : plan.programs) {
    ASSERT_EQ(count(p, Kind::kAllGather), 1u);
    EXPECT_EQ(std::find_if(p.code.begin(), p.code.end(), [](const Instruction& i) { return i.kind == Kind::kAllGather; })->index, sw);
  }
  EXPECT_EQ(plan.slots[sw].outer, 4u);
  EXPECT_EQ(plan.slots[sw].row_bytes, 4u);
  EXPECT_EQ(plan.final_placements[sw].kind, PlacementKind::kReplicate);
  EXPECT_EQ(plan.final_placements[sw].outer, 1);
}

// A weight used twice (tied embedding and LM head): its two gradients are partial sums, added on each device
// and all-reduced once (bytes of one gradient), not once per use.
TEST_F(DataParallelPlannerTest, TheGradientsOfATiedWeightAreAllReducedOnce) {
  const int n = 2;
  auto w = buffer(4 * 16, true, n);
  auto x = buffer(4 * 4 * 64, false, n), h = buffer(4 * 4 * 64, false, n), r = buffer(4 * 4 * 64, false, n);
  auto g1 = buffer(4 * 16, false, n), g2 = buffer(4 * 16, false, n), g = buffer(4 * 16, false, n);
  StepGraph s;
  s.append(upload(x, {64, 4}));
  s.append(node("aten::mm", {shaped(x, {64, 4}), shaped(w, {4, 4})}, {shaped(h, {64, 4})}));
  s.append(node("aten::relu", {shaped(h, {64, 4})}, {shaped(r, {64, 4})}));
  s.append(node("aten::mm", {transposed(shaped(x, {64, 4})), shaped(r, {64, 4})}, {shaped(g1, {4, 4})}));
  s.append(node("aten::mm", {transposed(shaped(r, {64, 4})), shaped(x, {64, 4})}, {shaped(g2, {4, 4})}));
  s.append(node("aten::add.Tensor", {shaped(g1, {4, 4}), shaped(g2, {4, 4})}, {shaped(g, {4, 4})}));
  s.append(node("aten::add_.Tensor", {shaped(w, {4, 4}), shaped(g, {4, 4})}, {}, {0}));
  for (auto* b : {&h, &g1, &g2, &g}) (*b)->release_frontend();
  CanonicalGraph c = CanonicalGraph::build(s);
  PlannedStep plan = compile_data_parallel_plan(s, c, n, {64});
  EXPECT_EQ(plan.report.split_rows, 64) << plan.report.summary;
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u) << plan.report.summary;
  for (const auto& p : plan.programs) EXPECT_EQ(count(p, Kind::kAllReduce), 1u) << plan.report.summary;
  EXPECT_EQ(plan.report.collective_bytes_per_device, 64u);  // the ring's 2·(N−1)/N × 64 bytes, once
}

// Four uploads (q, k, v, the output's gradient), an attention forward and its backward over a batch of 4
// split over `n` devices: each device runs 2 rows of both, with no collective.
runtime::Plan expect_attention_split_by_the_batch(const StepGraph& g, int n) {
  CanonicalGraph c = CanonicalGraph::build(g);
  PlannedStep plan = compile_data_parallel_plan(g, c, n, {4});
  EXPECT_EQ(plan.report.split_rows, 4) << plan.report.summary;
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u) << plan.report.summary;
  for (const auto& p : plan.programs) {
    EXPECT_EQ(count(p, Kind::kAllGather), 0u);
    EXPECT_EQ(count(p, Kind::kAllReduce), 0u);
    EXPECT_EQ(count(p, Kind::kBroadcast), 0u);  // the RNG state stays per device
    EXPECT_EQ(p.launches.size(), 6u);
    if (p.launches.size() != 6u) continue;
    EXPECT_EQ(p.launches[4].inputs[0].sizes[0], 2);   // q: 2 of the 4 rows
    EXPECT_EQ(p.launches[4].outputs[1].sizes[0], 2);  // logsumexp
    EXPECT_EQ(p.launches[5].outputs[2].sizes[0], 2);  // dv
  }
  return plan;
}

// Memory-efficient attention (SDPA on CUDA devices) splits by the batch, forward and backward, with no
// collective: its RNG-state outputs are per-device values that the backward uses as they are.
TEST_F(DataParallelPlannerTest, EfficientAttentionSplitsByTheBatch) {
  const int n = 2;
  const runtime::Dims lse = {4, 2, 32};
  auto [q, k, v, go, out, l, dq, dk, dv, seed, offset] = attention_buffers(n, 32);
  StepGraph g = attention_uploads(q, k, v, go);
  runtime::Node fwd = node("aten::_scaled_dot_product_efficient_attention",
                           {shaped(q, qkv), shaped(k, qkv), shaped(v, qkv)},
                           {shaped(out, qkv), shaped(l, lse), shaped(seed, {}), shaped(offset, {})}, {},
                           {true, runtime::StepValue{0.0}, true});
  fwd.attr_args = {4, 5, 6};  // compute_log_sumexp, dropout_p, is_causal (no attn_bias)
  g.append(std::move(fwd));
  runtime::Node bwd = node("aten::_scaled_dot_product_efficient_attention_backward",
                           {shaped(go, qkv), shaped(q, qkv), shaped(k, qkv), shaped(v, qkv), shaped(out, qkv),
                            shaped(l, lse), shaped(seed, {}), shaped(offset, {})},
                           {shaped(dq, qkv), shaped(dk, qkv), shaped(dv, qkv)}, {},
                           {runtime::StepValue{0.0}, std::vector<int64_t>{1, 1, 1, 0}, true});
  bwd.input_args = {0, 1, 2, 3, 5, 6, 7, 8};
  bwd.attr_args = {9, 10, 11};
  g.append(std::move(bwd));
  for (const auto& b : {out, l, seed, offset}) b->release_frontend();
  expect_attention_split_by_the_batch(g, n);
  // With dropout the rule declines (the RNG offsets span the whole batch): the attention runs replicated.
  runtime::Node drop = node("aten::_scaled_dot_product_efficient_attention",
                            {shaped(q, qkv), shaped(k, qkv), shaped(v, qkv)},
                            {shaped(out, qkv), shaped(l, lse), shaped(seed, {}), shaped(offset, {})}, {},
                            {true, runtime::StepValue{0.1}, true});
  drop.attr_args = {4, 5, 6};
  const BatchDims rows = {0, 0, 0};
  EXPECT_FALSE(shard_rule(drop, rows).has_value());
  drop.attrs[1] = runtime::StepValue{0.0};
  ASSERT_TRUE(shard_rule(drop, rows).has_value());
  EXPECT_EQ(shard_rule(drop, rows)->outputs[2].kind, OutputSpec::Kind::kLocal);
}

// Flash attention through the overrideable route (SDPA without a mask, on every device kind) splits by
// the batch too. Its returns the kernels leave out (the sequence offsets, the debug mask) are no outputs of
// the node, so output k is return output_rets[k]; the RNG state (returns 6 and 7) stays per device.
TEST_F(DataParallelPlannerTest, FlashAttentionThroughTheOverrideableRouteSplitsByTheBatch) {
  const int n = 2;
  const runtime::Dims lse = {4, 2, 8};
  auto [q, k, v, go, out, l, dq, dk, dv, seed, offset] = attention_buffers(n, 8);
  StepGraph g = attention_uploads(q, k, v, go);
  auto forward = [&](double dropout) {
    runtime::Node fwd = node("aten::_scaled_dot_product_fused_attention_overrideable",
                             {shaped(q, qkv), shaped(k, qkv), shaped(v, qkv)},
                             {shaped(out, qkv), shaped(l, lse), shaped(seed, {}), shaped(offset, {})}, {},
                             {runtime::StepValue{dropout}, true, false});
    fwd.attr_args = {4, 5, 6};  // dropout_p, is_causal, return_debug_mask (no attn_bias)
    fwd.output_rets = {0, 1, 6, 7};
    return fwd;
  };
  g.append(forward(0.0));
  runtime::Node bwd = node("aten::_scaled_dot_product_fused_attention_overrideable_backward",
                           {shaped(go, qkv), shaped(q, qkv), shaped(k, qkv), shaped(v, qkv), shaped(out, qkv),
                            shaped(l, lse), shaped(seed, {}), shaped(offset, {})},
                           {shaped(dq, qkv), shaped(dk, qkv), shaped(dv, qkv)}, {},
                           {std::vector<int64_t>{1, 1, 1, 0}, int64_t{8}, int64_t{8}, runtime::StepValue{0.0}, true});
  bwd.input_args = {0, 1, 2, 3, 6, 7, 14, 15};
  bwd.attr_args = {5, 10, 11, 12, 13};
  g.append(std::move(bwd));
  for (const auto& b : {out, l, seed, offset}) b->release_frontend();
  expect_attention_split_by_the_batch(g, n);
  const BatchDims rows = {0, 0, 0};
  auto split = shard_rule(forward(0.0), rows);
  ASSERT_TRUE(split.has_value());
  ASSERT_EQ(split->outputs.size(), 4u);
  EXPECT_EQ(split->outputs[1].kind, OutputSpec::Kind::kShard);  // logsumexp
  EXPECT_EQ(split->outputs[2].kind, OutputSpec::Kind::kLocal);  // philox_seed
  EXPECT_EQ(split->outputs[3].kind, OutputSpec::Kind::kLocal);  // philox_offset
  EXPECT_FALSE(shard_rule(forward(0.1), rows).has_value());     // dropout spans the whole batch
}

// An op without a rule (cumsum along the batch) runs replicated on the gathered batch, and is counted.
// (Four row-wise ops before it make splitting worth the gather in the cost model.)
TEST_F(DataParallelPlannerTest, AnOpWithoutARuleGathersItsInputsAndIsCounted) {
  const int n = 4;
  const uint64_t bytes = 4 * 256 * 64;
  std::vector<std::shared_ptr<Buffer>> v;
  for (int i = 0; i < 6; ++i) v.push_back(buffer(bytes, false, n));
  StepGraph g;
  g.append(upload(v[0], {256, 64}));
  for (int i = 0; i < 4; ++i) g.append(node("aten::relu", {shaped(v[i], {256, 64})}, {shaped(v[i + 1], {256, 64})}));
  g.append(node("aten::cumsum", {shaped(v[4], {256, 64})}, {shaped(v[5], {256, 64})}, {}, {int64_t{0}}));
  CanonicalGraph c = CanonicalGraph::build(g);
  PlannedStep plan = compile_data_parallel_plan(g, c, n, {256});
  EXPECT_EQ(plan.report.split_rows, 256) << plan.report.summary;
  EXPECT_EQ(plan.report.replicated_fallbacks, 1u);
  ASSERT_EQ(plan.report.fallback_ops.size(), 1u);
  EXPECT_NE(plan.report.fallback_ops[0].find("aten::cumsum"), std::string::npos);
  for (const auto& p : plan.programs) EXPECT_EQ(count(p, Kind::kAllGather), 1u);
}

// Fewer rows than devices: nothing is split; every device runs the whole step.
TEST_F(DataParallelPlannerTest, FewerRowsThanDevicesRunsReplicated) {
  const int n = 4;
  auto x = buffer(4 * 8, false, n);
  auto y = buffer(4 * 8, false, n);
  StepGraph g;
  g.append(upload(x, {2, 4}));
  g.append(node("aten::relu", {shaped(x, {2, 4})}, {shaped(y, {2, 4})}));
  CanonicalGraph c = CanonicalGraph::build(g);
  PlannedStep plan = compile_data_parallel_plan(g, c, n, {2});
  EXPECT_EQ(plan.report.split_rows, 0);
  for (const auto& p : plan.programs) EXPECT_TRUE(p.launches.empty());
}

// For the search: where every device has as many rows (and, beside TP, as large a part), devices 0 and 1's
// programs stand for all four; the others' programs are device 1's, their peaks its peak, and the step takes
// as long on the clock, its collectives costed over all their members.
TEST_F(DataParallelPlannerTest, TwoDevicesProgramsStandForAllWhenEveryDeviceHasAsManyRows) {
  runtime::set_op_facts(runtime::intern_op("aten::relu"), {.pointwise = true});
  moreh::testing::PipelineStep step(vm, 4);
  const CanonicalGraph c = CanonicalGraph::build(step.graph);
  DeviceProfile profile;
  profile.name = "toy";
  profile.fp32_flops = profile.low_prec_flops = profile.attention_flops = profile.elementwise_flops = 1e9;
  profile.memory_bytes_per_s = 1e9, profile.launch_s = 1e-6;
  profile.intra_node = {1e-6, 1e8};
  // Host devices sharing the machine's cores: the four take turns (the step lasts their work over the speedup
  // of four streams); two programs standing for four must count the four.
  DeviceProfile shared = profile;
  shared.stream_speedup = {0.6, 0.7, 0.7};
  shared.shared_memory = true;
  shared.cores = 2;
  for (int variant = 0; variant < 4; ++variant) {
    const bool zero = variant % 2 == 1, tensor = variant >= 2;
    SCOPED_TRACE(::testing::Message() << (zero ? "distribute_param" : "replicated optimizer") << (tensor ? ", TP 2" : ""));
    auto lower = [&](bool representative) {
      if (tensor)
        return compile_tensor_parallel_plan(step.graph, c, {.tp = 2, .dp = 2, .candidate_rows = {8},
                                                            .distribute_param = zero, .representative = representative});
      return compile_data_parallel_plan(step.graph, c, 4, {8}, zero, nullptr, 0, false, representative);
    };
    const PlannedStep full = lower(false);
    const PlannedStep two = lower(true);
    ASSERT_EQ(full.programs.size(), 4u);
    ASSERT_EQ(two.programs.size(), 2u);
    EXPECT_TRUE(full.report.stand_ins.empty());
    EXPECT_EQ(two.report.stand_ins, (std::vector<int>{0, 1, 1, 1}));
    EXPECT_EQ(two.num_devices, 4);
    EXPECT_EQ(two.report.split_rows, 8);
    auto listed = [](const runtime::DeviceProgram& p) {
      std::vector<std::pair<Kind, uint32_t>> out;
      for (const Instruction& i : p.code) out.emplace_back(i.kind, i.index);
      return out;
    };
    for (int d = 0; d < 4; ++d) {
      const auto& mine = two.programs[static_cast<size_t>(std::min(d, 1))];
      EXPECT_EQ(listed(mine), listed(full.programs[static_cast<size_t>(d)])) << "device " << d;
      EXPECT_EQ(mine.peak_bytes, full.programs[static_cast<size_t>(d)].peak_bytes) << "device " << d;
    }
    ASSERT_GT(count(full.programs[0], Kind::kAllReduce) + count(full.programs[0], Kind::kAllGather) +
                  count(full.programs[0], Kind::kReduceScatter), 0u);
    for (const DeviceProfile& each : {profile, shared}) {
      SCOPED_TRACE(each.stream_speedup.empty() ? "a chip each" : "sharing two cores");
      const ProfileTiming timing(each, 4);
      const StepCost a = predict_step(full, step.graph, c, timing), b = predict_step(two, step.graph, c, timing);
      EXPECT_TRUE(b.stuck.empty()) << b.stuck;
      EXPECT_NEAR(b.seconds, a.seconds, 1e-9 * a.seconds);  // (the work summed in another order)
      EXPECT_NEAR(b.communication_seconds, a.communication_seconds, 1e-9 * a.seconds);
    }
  }
  // Rows that do not divide evenly: every device its own program.
  const PlannedStep uneven = compile_data_parallel_plan(step.graph, c, 3, {8}, false, nullptr, 0, false, true);
  EXPECT_EQ(uneven.programs.size(), 3u);
  EXPECT_TRUE(uneven.report.stand_ins.empty());
}

TEST(SplitRowsTest, FirstDevicesTakeTheRemainder) {
  EXPECT_EQ(runtime::split_rows(5, 2, 0).count, 3);
  EXPECT_EQ(runtime::split_rows(5, 2, 1).begin, 3);
  EXPECT_EQ(runtime::split_rows(5, 4, 0).count, 2);
  EXPECT_EQ(runtime::split_rows(5, 4, 3).begin, 4);
  EXPECT_EQ(runtime::split_rows(5, 4, 3).count, 1);
  EXPECT_EQ(runtime::split_rows(8, 4, 2).begin, 4);
}

}  // namespace
}  // namespace moreh::scheduler
