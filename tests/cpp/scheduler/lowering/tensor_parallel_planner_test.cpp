// Tensor parallelism: linear pairs found on the graph, their weights split (the first by rows, the second by
// columns), splits of any rows and blocks carried through views, and one all-reduce where a pair ends.
#include "scheduler/lowering/tensor_parallel_planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "runtime/base/errors.h"
#include "runtime/memory/virtual_memory.h"
#include "scheduler/analysis/linear_pairs.h"
#include "scheduler/lowering/batch_split.h"
#include "scheduler/lowering/pipeline_planner.h"
#include "scheduler/lowering/spmd_emission.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using moreh::testing::node;
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

class TensorParallelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::register_data_type(6, runtime::DataType::kFloat32);
    for (const char* op : {"aten::relu", "aten::add_.Tensor", "aten::mul.out"})
      runtime::set_op_facts(runtime::intern_op(op), {.pointwise = true});
  }
  std::shared_ptr<Buffer> buffer(int64_t floats, bool defined) {
    auto b = std::make_shared<Buffer>(vm, static_cast<uint64_t>(floats) * 4, 2);
    if (defined) {
      b->mark_defined();
      b->set_placement({PlacementKind::kReplicate});
    }
    return b;
  }
  // x [8, 4] -> addmm(b1, x, w1^T) [8, 6] -> relu -> addmm(b2, h, w2^T) [8, 4] -> relu; then w1 and w2 are
  // written in place (an optimizer's update).
  void build() {
    w1 = buffer(6 * 4, true), b1 = buffer(6, true), w2 = buffer(4 * 6, true), b2 = buffer(4, true);
    x = buffer(8 * 4, false), y1 = buffer(8 * 6, false), h = buffer(8 * 6, false), y2 = buffer(8 * 4, false);
    out = buffer(8 * 4, false);
    g.append(upload(x, {8, 4}));
    g.append(node("aten::addmm", {shaped(b1, {6}), shaped(x, {8, 4}), transposed(shaped(w1, {6, 4}))}, {shaped(y1, {8, 6})}));
    g.append(node("aten::relu", {shaped(y1, {8, 6})}, {shaped(h, {8, 6})}));
    g.append(node("aten::addmm", {shaped(b2, {4}), shaped(h, {8, 6}), transposed(shaped(w2, {4, 6}))}, {shaped(y2, {8, 4})}));
    g.append(node("aten::relu", {shaped(y2, {8, 4})}, {shaped(out, {8, 4})}));
    g.append(node("aten::add_.Tensor", {shaped(w1, {6, 4}), shaped(w1, {6, 4})}, {}, {0}));
    // AdamW's decay, w2.mul_(c) recorded as mul.out(w2, out=w2): read as input 0, written as input 1.
    g.append(node("aten::mul.out", {shaped(w2, {4, 6}), shaped(w2, {4, 6})}, {}, {1}));
    y1->release_frontend();
    h->release_frontend();
    y2->release_frontend();
  }
  size_t slot(const std::shared_ptr<Buffer>& b, const CanonicalGraph& c) const {
    return static_cast<size_t>(std::find(c.bindings.begin(), c.bindings.end(), b) - c.bindings.begin());
  }
  runtime::VirtualMemory vm;
  std::shared_ptr<Buffer> w1, b1, w2, b2, x, y1, h, y2, out;
  StepGraph g;
};

TEST_F(TensorParallelTest, APairIsTwoLinearLayersWithElementwiseOpsBetween) {
  build();
  const CanonicalGraph c = CanonicalGraph::build(g);
  const auto pairs = find_linear_pairs(g, c);
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(pairs[0].first_nodes, (std::vector<uint32_t>{1}));
  EXPECT_EQ(pairs[0].second_node, 3u);
  EXPECT_EQ(pairs[0].hidden, 6);
  EXPECT_EQ(pairs[0].seeds.size(), 3u);  // w1, b1 and w2; not b2
  const SplitSeeds seeds = tensor_parallel_seeds(g, c, 2);
  EXPECT_EQ(seeds.at(slot(w1, c)), (SplitLayout{6, 1}));  // [6, 4]: its rows
  EXPECT_EQ(seeds.at(slot(b1, c)), (SplitLayout{6, 1}));
  EXPECT_EQ(seeds.at(slot(w2, c)), (SplitLayout{6, 4}));  // [4, 6]: its columns, in each of 4 rows
  EXPECT_TRUE(tensor_parallel_seeds(g, c, 4).empty());  // 6 hidden features do not split 4 ways evenly
}

// Hugging Face's Conv1D keeps its weight as [in, out] and multiplies by it directly; Llama's MLP multiplies
// two first layers' outputs (gate and up) before the second: both are split, and so is a sibling's weight.
TEST_F(TensorParallelTest, DirectWeightsAndSiblingFirstLayersMakePairsToo) {
  runtime::set_op_facts(runtime::intern_op("aten::silu"), {.pointwise = true});
  runtime::set_op_facts(runtime::intern_op("aten::mul.Tensor"), {.pointwise = true});
  auto conv_w1 = buffer(4 * 6, true), conv_w2 = buffer(6 * 4, true);
  auto gate = buffer(6 * 4, true), up = buffer(6 * 4, true), down = buffer(4 * 6, true);
  x = buffer(8 * 4, true);
  auto t = [&](int64_t n) { return buffer(n, false); };
  auto a = t(48), a2 = t(48), a3 = t(32), gy = t(48), uy = t(48), s = t(48), p = t(48), d = t(32);
  g.append(node("aten::mm", {shaped(x, {8, 4}), shaped(conv_w1, {4, 6})}, {shaped(a, {8, 6})}));
  g.append(node("aten::relu", {shaped(a, {8, 6})}, {shaped(a2, {8, 6})}));
  g.append(node("aten::mm", {shaped(a2, {8, 6}), shaped(conv_w2, {6, 4})}, {shaped(a3, {8, 4})}));
  g.append(node("aten::mm", {shaped(x, {8, 4}), transposed(shaped(gate, {6, 4}))}, {shaped(gy, {8, 6})}));
  g.append(node("aten::silu", {shaped(gy, {8, 6})}, {shaped(s, {8, 6})}));
  g.append(node("aten::mm", {shaped(x, {8, 4}), transposed(shaped(up, {6, 4}))}, {shaped(uy, {8, 6})}));
  g.append(node("aten::mul.Tensor", {shaped(s, {8, 6}), shaped(uy, {8, 6})}, {shaped(p, {8, 6})}));
  g.append(node("aten::mm", {shaped(p, {8, 6}), transposed(shaped(down, {4, 6}))}, {shaped(d, {8, 4})}));
  const CanonicalGraph c = CanonicalGraph::build(g);
  const auto pairs = find_linear_pairs(g, c);
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].seeds.at(slot(conv_w1, c)), (SplitLayout{6, 4}));  // [4, 6]: its columns
  EXPECT_EQ(pairs[0].seeds.at(slot(conv_w2, c)), (SplitLayout{6, 1}));  // [6, 4]: its rows
  EXPECT_EQ(pairs[1].first_nodes, (std::vector<uint32_t>{3, 5}));
  EXPECT_EQ(pairs[1].seeds.at(slot(up, c)), (SplitLayout{6, 1}));
  EXPECT_EQ(pairs[1].seeds.at(slot(down, c)), (SplitLayout{6, 4}));
  const PlannedStep plan = compile_tensor_parallel_plan(g, c, {.tp = 2});
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u) << plan.report.summary;
}

// Attention by heads: y = x @ w_qkv^T is [B*T, 3C]; q, k and v are its three [B, H, T, hd] views; attention's
// output [B, H, T, hd] (laid out [B, T, H, hd]) is the output projection's input. B 2, T 4, H 2, hd 2, C 4.
TEST_F(TensorParallelTest, AttentionIsAPairSplitByHeads) {
  const int64_t B = 2, T = 4, H = 2, hd = 2, C = H * hd;
  auto wqkv = buffer(3 * C * C, true), bqkv = buffer(3 * C, true), wo = buffer(C * C, true), bo = buffer(C, true);
  x = buffer(B * T * C, true);
  auto y = buffer(B * T * 3 * C, false), att = buffer(B * T * C, false), lse = buffer(B * H * T, false);
  auto seed = buffer(2, false), offset = buffer(2, false), o = buffer(B * T * C, false);
  g.append(node("aten::addmm", {shaped(bqkv, {3 * C}), shaped(x, {B * T, C}), transposed(shaped(wqkv, {3 * C, C}))},
                {shaped(y, {B * T, 3 * C})}));
  auto head_view = [&](int64_t section) {  // [B, H, T, hd] of y's section (q 0, k 1, v 2)
    TensorRef r = shaped(y, {B, H, T, hd});
    r.strides = {T * 3 * C, hd, 3 * C, 1};
    r.offset = section * C;
    return r;
  };
  TensorRef out = shaped(att, {B, H, T, hd});
  out.strides = {T * C, hd, C, 1};
  runtime::Node a = node("aten::_scaled_dot_product_fused_attention_overrideable", {head_view(0), head_view(1), head_view(2)},
                         {out, shaped(lse, {B, H, T}), shaped(seed, {}), shaped(offset, {})}, {},
                         {runtime::StepValue{0.0}, true, false});
  a.attr_args = {4, 5, 6};
  a.output_rets = {0, 1, 6, 7};
  g.append(std::move(a));
  g.append(node("aten::addmm", {shaped(bo, {C}), shaped(att, {B * T, C}), transposed(shaped(wo, {C, C}))},
                {shaped(o, {B * T, C})}));
  g.append(node("aten::relu", {shaped(o, {B * T, C})}, {shaped(buffer(B * T * C, false), {B * T, C})}));
  for (const auto& b : {y, att, lse, seed, offset, o}) b->release_frontend();
  const CanonicalGraph c = CanonicalGraph::build(g);
  const auto pairs = find_linear_pairs(g, c);
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(pairs[0].hidden, H);
  EXPECT_EQ(pairs[0].seeds.at(slot(wqkv, c)), (SplitLayout{H, 3}));  // its heads of each of q, k and v
  EXPECT_EQ(pairs[0].seeds.at(slot(bqkv, c)), (SplitLayout{H, 3}));
  EXPECT_EQ(pairs[0].seeds.at(slot(wo, c)), (SplitLayout{H, C}));    // [C, C]: each row's features of its heads
  const PlannedStep plan = compile_tensor_parallel_plan(g, c, {.tp = 2});
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u) << plan.report.summary;
  for (const auto& p : plan.programs) {
    EXPECT_EQ(std::count_if(p.code.begin(), p.code.end(), [](const Instruction& i) { return i.kind == Kind::kAllReduce; }), 1);
    EXPECT_EQ(std::count_if(p.code.begin(), p.code.end(), [](const Instruction& i) { return i.kind == Kind::kAllGather; }), 0);
  }
  // Device 1's q: its head of each row of y's local block [B*T, 3, 1, hd], a [B, 1, T, hd] view.
  const runtime::LocalLaunch& att1 = plan.programs[1].launches.at(1);
  EXPECT_EQ(att1.inputs[0].sizes, (runtime::Dims{B, 1, T, hd}));
  EXPECT_EQ(att1.inputs[0].strides, (runtime::Dims{T * 3 * hd, hd, 3 * hd, 1}));
  EXPECT_EQ(att1.inputs[1].offset, hd);  // k: the second of its three heads in a row
  EXPECT_EQ(att1.outputs[0].sizes, (runtime::Dims{B, 1, T, hd}));
  EXPECT_EQ(plan.final_placements[slot(wqkv, c)].kind, PlacementKind::kShard);  // kept in its parts for the read
}

// Llama's attention: separate q, k and v projections (no bias), q rotated by an elementwise product first, k and
// v with half of q's heads (grouped-query attention), attention, then the output projection. Split by heads,
// each device takes an even part of q's heads and of k's and v's: query heads 0-1 meet key/value head 0.
// B 2, T 4, H 4, H_kv 2, hd 2, C 8.
TEST_F(TensorParallelTest, AttentionOverSeparateProjectionsWithFewerKeyHeadsSplitsEachByHeads) {
  runtime::set_op_facts(runtime::intern_op("aten::mul.Tensor"), {.pointwise = true});
  const int64_t B = 2, T = 4, H = 4, KV = 2, hd = 2, C = H * hd;
  auto wq = buffer(C * C, true), wk = buffer(KV * hd * C, true), wv = buffer(KV * hd * C, true);
  auto wo = buffer(C * C, true), cosine = buffer(T * hd, true);
  x = buffer(B * T * C, true);
  auto q = buffer(B * T * C, false), k = buffer(B * T * KV * hd, false), v = buffer(B * T * KV * hd, false);
  auto qr = buffer(B * H * T * hd, false), att = buffer(B * T * C, false), lse = buffer(B * H * T, false);
  auto seed = buffer(2, false), offset = buffer(2, false), o = buffer(B * T * C, false);
  g.append(node("aten::mm", {shaped(x, {B * T, C}), transposed(shaped(wq, {C, C}))}, {shaped(q, {B * T, C})}));
  g.append(node("aten::mm", {shaped(x, {B * T, C}), transposed(shaped(wk, {KV * hd, C}))}, {shaped(k, {B * T, KV * hd})}));
  g.append(node("aten::mm", {shaped(x, {B * T, C}), transposed(shaped(wv, {KV * hd, C}))}, {shaped(v, {B * T, KV * hd})}));
  auto heads = [&](const std::shared_ptr<Buffer>& b, int64_t n) {  // [B, n, T, hd] of a [B*T, n*hd] output
    TensorRef r = shaped(b, {B, n, T, hd});
    r.strides = {T * n * hd, hd, n * hd, 1};
    return r;
  };
  TensorRef cos_view = shaped(cosine, {1, 1, T, hd});
  g.append(node("aten::mul.Tensor", {heads(q, H), cos_view}, {shaped(qr, {B, H, T, hd})}));
  TensorRef out = shaped(att, {B, H, T, hd});
  out.strides = {T * C, hd, C, 1};
  runtime::Node a = node("aten::_scaled_dot_product_fused_attention_overrideable",
                         {shaped(qr, {B, H, T, hd}), heads(k, KV), heads(v, KV)},
                         {out, shaped(lse, {B, H, T}), shaped(seed, {}), shaped(offset, {})}, {},
                         {runtime::StepValue{0.0}, true, false});
  a.attr_args = {4, 5, 6};
  a.output_rets = {0, 1, 6, 7};
  g.append(std::move(a));
  g.append(node("aten::mm", {shaped(att, {B * T, C}), transposed(shaped(wo, {C, C}))}, {shaped(o, {B * T, C})}));
  g.append(node("aten::relu", {shaped(o, {B * T, C})}, {shaped(buffer(B * T * C, false), {B * T, C})}));
  for (const auto& b : {q, k, v, qr, att, lse, seed, offset, o}) b->release_frontend();
  const CanonicalGraph c = CanonicalGraph::build(g);
  const auto pairs = find_linear_pairs(g, c);
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(pairs[0].first_nodes, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(pairs[0].second_node, 5u);
  EXPECT_EQ(pairs[0].hidden, KV);
  EXPECT_EQ(pairs[0].seeds.at(slot(wq, c)), (SplitLayout{H, 1}));
  EXPECT_EQ(pairs[0].seeds.at(slot(wk, c)), (SplitLayout{KV, 1}));
  EXPECT_EQ(pairs[0].seeds.at(slot(wo, c)), (SplitLayout{H, C}));
  const PlannedStep plan = compile_tensor_parallel_plan(g, c, {.tp = 2});
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u) << plan.report.summary;
  for (const auto& p : plan.programs) {
    EXPECT_EQ(std::count_if(p.code.begin(), p.code.end(), [](const Instruction& i) { return i.kind == Kind::kAllReduce; }), 1);
    EXPECT_EQ(std::count_if(p.code.begin(), p.code.end(), [](const Instruction& i) { return i.kind == Kind::kAllGather; }), 0);
  }
  // Device 1's attention: query heads 2-3, key and value head 1.
  const runtime::LocalLaunch& att1 = plan.programs[1].launches.at(4);
  EXPECT_EQ(att1.inputs[0].sizes, (runtime::Dims{B, 2, T, hd}));
  EXPECT_EQ(att1.inputs[1].sizes, (runtime::Dims{B, 1, T, hd}));
  EXPECT_EQ(att1.inputs[2].sizes, (runtime::Dims{B, 1, T, hd}));
  EXPECT_EQ(att1.outputs[0].sizes, (runtime::Dims{B, 2, T, hd}));
  EXPECT_EQ(tensor_parallel_seeds(g, c, 4).size(), 0u);  // 2 key heads do not split 4 ways
}

// Under autocast each linear layer casts its input afresh (copy_ into a bf16 buffer; the weights' casts are
// kept), so Llama's gate and up projections, and its q, k and v, read different copies of one value; k also
// goes through casts of its own (copy_) on its way to attention. The pairs are found through the copies.
TEST_F(TensorParallelTest, UnderAutocastLayersOverCopiesOfOneInputAreSiblings) {
  runtime::set_op_facts(runtime::intern_op("aten::silu"), {.pointwise = true});
  runtime::set_op_facts(runtime::intern_op("aten::mul.Tensor"), {.pointwise = true});
  const int64_t B = 2, T = 4, H = 4, KV = 2, hd = 2, C = H * hd, F = 12;
  auto wq = buffer(C * C, true), wk = buffer(KV * hd * C, true), wv = buffer(KV * hd * C, true);
  auto wo = buffer(C * C, true), gate = buffer(F * C, true), up = buffer(F * C, true), down = buffer(C * F, true);
  x = buffer(B * T * C, true);
  auto t = [&](int64_t n) { return buffer(n, false); };
  // Each layer's copy of x, and of its weight.
  auto copy = [&](const std::shared_ptr<Buffer>& from, runtime::Dims sizes) {
    int64_t n = 1;
    for (int64_t z : sizes) n *= z;
    auto to = t(n);
    g.append(node("aten::copy_", {shaped(to, sizes), shaped(from, sizes)}, {}, {0}));
    return to;
  };
  auto heads = [&](const std::shared_ptr<Buffer>& b, int64_t n) {  // [B, n, T, hd] of a [B*T, n*hd] output
    TensorRef r = shaped(b, {B, n, T, hd});
    r.strides = {T * n * hd, hd, n * hd, 1};
    return r;
  };
  auto q = t(B * T * C), k = t(B * T * KV * hd), v = t(B * T * KV * hd), att = t(B * T * C), lse = t(B * H * T);
  auto seed = t(2), offset = t(2), o = t(B * T * C);
  // A layer's input already in the low precision (a second layer's: the pair's own bf16 values) is not cast.
  auto linear = [&](const std::shared_ptr<Buffer>& in, const std::shared_ptr<Buffer>& w, int64_t out_features,
                    const std::shared_ptr<Buffer>& y, bool cast = true) {
    auto xc = cast ? copy(in, {B * T, static_cast<int64_t>(in->bytes()) / 4 / (B * T)}) : in;
    auto wc = copy(w, {out_features, static_cast<int64_t>(w->bytes()) / 4 / out_features});
    g.append(node("aten::mm", {shaped(xc, {B * T, static_cast<int64_t>(in->bytes()) / 4 / (B * T)}),
                               transposed(shaped(wc, {out_features, static_cast<int64_t>(w->bytes()) / 4 / out_features}))},
                  {shaped(y, {B * T, out_features})}));
    return wc;
  };
  auto wq16 = linear(x, wq, C, q);
  auto wk16 = linear(x, wk, KV * hd, k);
  linear(x, wv, KV * hd, v);
  auto k_back = t(B * KV * T * hd);  // k cast to another type and back, as a [B, KV, T, hd] value
  g.append(node("aten::copy_", {shaped(k_back, {B, KV, T, hd}), heads(k, KV)}, {}, {0}));
  auto k_in = copy(k_back, {B, KV, T, hd});
  TensorRef out = shaped(att, {B, H, T, hd});
  out.strides = {T * C, hd, C, 1};
  runtime::Node a = node("aten::_scaled_dot_product_fused_attention_overrideable",
                         {heads(q, H), shaped(k_in, {B, KV, T, hd}), heads(v, KV)},
                         {out, shaped(lse, {B, H, T}), shaped(seed, {}), shaped(offset, {})}, {},
                         {runtime::StepValue{0.0}, true, false});
  a.attr_args = {4, 5, 6};
  a.output_rets = {0, 1, 6, 7};
  g.append(std::move(a));
  linear(att, wo, C, o, false);
  auto gy = t(B * T * F), uy = t(B * T * F), s = t(B * T * F), p = t(B * T * F), d = t(B * T * C);
  auto gate16 = linear(o, gate, F, gy);
  g.append(node("aten::silu", {shaped(gy, {B * T, F})}, {shaped(s, {B * T, F})}));
  auto up16 = linear(o, up, F, uy);
  g.append(node("aten::mul.Tensor", {shaped(s, {B * T, F}), shaped(uy, {B * T, F})}, {shaped(p, {B * T, F})}));
  auto down16 = linear(p, down, C, d, false);
  g.append(node("aten::relu", {shaped(d, {B * T, C})}, {shaped(t(B * T * C), {B * T, C})}));
  const CanonicalGraph c = CanonicalGraph::build(g);
  const auto pairs = find_linear_pairs(g, c);
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].hidden, KV);  // attention by heads
  EXPECT_EQ(pairs[0].first_nodes.size(), 3u);
  EXPECT_EQ(pairs[0].seeds.at(slot(wq16, c)), (SplitLayout{H, 1}));
  EXPECT_EQ(pairs[0].seeds.at(slot(wk16, c)), (SplitLayout{KV, 1}));
  EXPECT_EQ(pairs[1].hidden, F);  // the MLP: gate and up over their own copies of o
  EXPECT_EQ(pairs[1].first_nodes.size(), 2u);
  EXPECT_EQ(pairs[1].seeds.at(slot(gate16, c)), (SplitLayout{F, 1}));
  EXPECT_EQ(pairs[1].seeds.at(slot(up16, c)), (SplitLayout{F, 1}));
  EXPECT_EQ(pairs[1].seeds.at(slot(down16, c)), (SplitLayout{F, C}));
  const PlannedStep plan = compile_tensor_parallel_plan(g, c, {.tp = 2});
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u) << plan.report.summary;
  for (const auto& prog : plan.programs)
    EXPECT_EQ(std::count_if(prog.code.begin(), prog.code.end(), [](const Instruction& i) { return i.kind == Kind::kAllReduce; }), 2);
}

// AdamW's first step makes its state in the step (torch.zeros_like: zero_ on an empty buffer) and updates it
// per tensor: exp_avg meets its parameter (addcdiv_), exp_avg_sq only the gradient, which meets exp_avg. The state
// beside a split parameter is made in the parameter's parts: no device ever holds all of it.
TEST_F(TensorParallelTest, OptimizerStateMadeInTheStepIsMadeInItsParametersParts) {
  for (const char* op : {"aten::lerp_.Scalar", "aten::addcmul_", "aten::addcdiv_"})
    runtime::set_op_facts(runtime::intern_op(op), {.pointwise = true});
  build();
  auto grad = buffer(6 * 4, false), m = buffer(6 * 4, false), v = buffer(6 * 4, false);
  for (const auto& st : {m, v}) {
    runtime::Node zero = node("aten::zero_", {shaped(st, {6, 4})}, {}, {0});
    zero.initializes.push_back(0);
    g.append(std::move(zero));
  }
  runtime::Node fill = node("aten::fill_.Scalar", {shaped(grad, {6, 4})}, {}, {0});  // a stand-in gradient
  fill.initializes.push_back(0);
  g.append(std::move(fill));
  g.append(node("aten::lerp_.Scalar", {shaped(m, {6, 4}), shaped(grad, {6, 4})}, {}, {0}));
  g.append(node("aten::addcmul_", {shaped(v, {6, 4}), shaped(grad, {6, 4}), shaped(grad, {6, 4})}, {}, {0}));
  g.append(node("aten::addcdiv_", {shaped(w1, {6, 4}), shaped(m, {6, 4}), shaped(v, {6, 4})}, {}, {0}));
  const CanonicalGraph c = CanonicalGraph::build(g);
  const SplitSeeds seeds = tensor_parallel_seeds(g, c, 2);
  EXPECT_EQ(seeds.at(slot(m, c)), seeds.at(slot(w1, c)));
  EXPECT_EQ(seeds.at(slot(v, c)), seeds.at(slot(w1, c)));  // through the gradient
  const PlannedStep plan = compile_tensor_parallel_plan(g, c, {.tp = 2});
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u) << plan.report.summary;
  for (const auto& p : plan.programs)
    for (const Instruction& i : p.code)
      if (i.index == slot(m, c) || i.index == slot(v, c)) {
        EXPECT_NE(i.kind, Kind::kKeepRows);  // never whole, so never cut down to its part
        if (i.kind == Kind::kAllocate && !p.sizes.empty()) { EXPECT_EQ(p.sizes.at(i.aux), 12u * 4); }  // 12 of 24 floats
      }
  EXPECT_EQ(plan.final_placements[slot(m, c)].kind, PlacementKind::kShard);
  EXPECT_EQ(plan.final_placements[slot(v, c)].rows, 6);
}

TEST_F(TensorParallelTest, AnOpThatIsNotElementwiseEndsTheChain) {
  w1 = buffer(6 * 4, true), w2 = buffer(4 * 6, true);
  x = buffer(8 * 4, true), y1 = buffer(8 * 6, false), h = buffer(8 * 6, false), y2 = buffer(8 * 4, false);
  g.append(node("aten::mm", {shaped(x, {8, 4}), transposed(shaped(w1, {6, 4}))}, {shaped(y1, {8, 6})}));
  g.append(node("aten::cumsum", {shaped(y1, {8, 6})}, {shaped(h, {8, 6})}));
  g.append(node("aten::mm", {shaped(h, {8, 6}), transposed(shaped(w2, {4, 6}))}, {shaped(y2, {8, 4})}));
  EXPECT_TRUE(find_linear_pairs(g, CanonicalGraph::build(g)).empty());
}

TEST_F(TensorParallelTest, ThePairRunsOnShardsAndAllReducesItsOutputOnce) {
  build();
  const CanonicalGraph c = CanonicalGraph::build(g);
  const PlannedStep plan = compile_tensor_parallel_plan(g, c, {.tp = 2});
  ASSERT_EQ(plan.programs.size(), 2u);
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u) << plan.report.summary;
  for (const auto& p : plan.programs) {
    const auto count = [&](Kind k) { return std::count_if(p.code.begin(), p.code.end(), [&](const Instruction& i) { return i.kind == k; }); };
    EXPECT_EQ(count(Kind::kAllReduce), 1);  // the second layer's partial sum, before the last relu
    EXPECT_EQ(count(Kind::kAllGather), 0);
    // w1, b1 and w2, whole from before the step, keep each device's part at their first read (the whole let
    // go of there, not at the update after the backward pass).
    EXPECT_EQ(count(Kind::kKeepRows), 3);
    const auto first_of = [&](Kind k) {
      return std::find_if(p.code.begin(), p.code.end(), [&](const Instruction& i) { return i.kind == k; });
    };
    EXPECT_LT(first_of(Kind::kKeepRows), first_of(Kind::kAllReduce));
  }
  // Device 1's first layer: w1^T's columns 3..5, in its own block, its output [8, 3] in its block.
  const runtime::LocalLaunch& first = plan.programs[1].launches.at(0);
  EXPECT_EQ(first.inputs[2].sizes, (runtime::Dims{4, 3}));
  EXPECT_EQ(first.inputs[2].offset, 0);
  EXPECT_EQ(first.outputs[0].sizes, (runtime::Dims{8, 3}));
  EXPECT_EQ(first.outputs[0].strides, (runtime::Dims{3, 1}));
  // The second layer adds its bias on device 0 only.
  const runtime::LocalLaunch& second = plan.programs[1].launches.at(2);
  ASSERT_EQ(second.int_args.size(), 1u);
  EXPECT_EQ(second.int_args[0], (std::pair<int, int64_t>{3, 0}));
  EXPECT_TRUE(plan.programs[0].launches.at(2).int_args.empty());
  const auto& w1_at = plan.final_placements[slot(w1, c)];
  EXPECT_EQ(w1_at.kind, PlacementKind::kShard);
  EXPECT_EQ(w1_at.rows, 6);
  EXPECT_EQ(w1_at.outer, 1);
  const auto& w2_at = plan.final_placements[slot(w2, c)];
  EXPECT_EQ(w2_at.kind, PlacementKind::kShard);
  EXPECT_EQ(w2_at.outer, 4);
  EXPECT_EQ(plan.slots[slot(w2, c)].row_bytes, 4u);
  // The decay of w2 reads the columns the device keeps for it (in its [4, 3] block), not the whole weight.
  const runtime::LocalLaunch& decay = plan.programs[1].launches.back();
  for (const auto& in : decay.inputs) {
    EXPECT_EQ(in.sizes, (runtime::Dims{4, 3}));
    EXPECT_EQ(in.strides, (runtime::Dims{3, 1}));
    EXPECT_EQ(in.offset, 0);
  }
}

TEST_F(TensorParallelTest, TheNextStepReadsTheWeightsInTheirBlocks) {
  build();
  runtime::Placement rows{PlacementKind::kShard, 6};
  runtime::Placement columns{PlacementKind::kShard, 6};
  columns.outer = 4;
  w1->set_placement(rows);
  b1->set_placement(rows);
  w2->set_placement(columns);
  const CanonicalGraph c = CanonicalGraph::build(g);
  const PlannedStep plan = compile_tensor_parallel_plan(g, c, {.tp = 2});
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u);
  for (const auto& p : plan.programs) {
    EXPECT_EQ(std::count_if(p.code.begin(), p.code.end(), [](const Instruction& i) { return i.kind == Kind::kKeepRows; }), 0);
    EXPECT_EQ(std::count_if(p.code.begin(), p.code.end(), [](const Instruction& i) { return i.kind == Kind::kAllGather; }), 0);
  }
  // w2^T [6, 4] read in device 1's block [4, 3]: its rows 3..5 as a [3, 4] view with strides (1, 3).
  const runtime::LocalLaunch& second = plan.programs[1].launches.at(2);
  EXPECT_EQ(second.inputs[2].sizes, (runtime::Dims{3, 4}));
  EXPECT_EQ(second.inputs[2].strides, (runtime::Dims{1, 3}));
  EXPECT_EQ(second.inputs[2].offset, 0);
}

// dp 2 x tp 2: the batch's rows over the pieces (devices 0, 1 and 2, 3), the pair's weights over each piece's
// ranks. A device reads its piece's rows of x and its rank's features of w1; the second layer's partial sum is
// all-reduced within the piece (its rows only), and what outlives the step rests split along one axis.
TEST_F(TensorParallelTest, BesideBatchSplittingEachPieceRunsThePairOnItsRows) {
  build();
  const CanonicalGraph c = CanonicalGraph::build(g);
  const PlannedStep plan = compile_tensor_parallel_plan(g, c, {.tp = 2, .dp = 2, .candidate_rows = {8}});
  ASSERT_EQ(plan.programs.size(), 4u);
  EXPECT_EQ(plan.report.split_rows, 8) << plan.report.summary;
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u) << plan.report.summary;
  EXPECT_EQ(plan.groups, (std::vector<std::vector<int>>{{0, 1}, {2, 3}, {0, 2}, {1, 3}}));
  for (const auto& p : plan.programs) {
    std::vector<Instruction> reduces;
    std::copy_if(p.code.begin(), p.code.end(), std::back_inserter(reduces),
                 [](const Instruction& i) { return i.kind == Kind::kAllReduce; });
    ASSERT_EQ(reduces.size(), 1u);
    EXPECT_EQ(reduces[0].group, 1 + p.device / 2);  // over the piece's ranks
    ASSERT_GT(reduces[0].aux, 0u);
    EXPECT_EQ(runtime::whole_bytes(p.geometries.at(reduces[0].aux - 1), 0), 4u * 4 * 4);  // [4, 4] floats
    EXPECT_EQ(std::count_if(p.code.begin(), p.code.end(), [](const Instruction& i) { return i.kind == Kind::kAllGather; }), 0);
  }
  // Device 3: piece 1 (rows 4..7 of x, in its own block), rank 1 (w1^T's columns 3..5, kept in its own block).
  const runtime::LocalLaunch& first = plan.programs[3].launches.at(1);
  EXPECT_EQ(first.inputs[1].sizes, (runtime::Dims{4, 4}));
  EXPECT_EQ(first.inputs[1].offset, 0);
  EXPECT_EQ(first.inputs[2].sizes, (runtime::Dims{4, 3}));
  EXPECT_EQ(first.inputs[2].offset, 0);
  EXPECT_EQ(first.outputs[0].sizes, (runtime::Dims{4, 3}));  // its rows, its features: [4, 3] in its block
  EXPECT_EQ(first.outputs[0].strides, (runtime::Dims{3, 1}));
  EXPECT_EQ(first.rows.begin, 4);
  // Only the piece's first rank adds the second layer's bias.
  EXPECT_TRUE(plan.programs[2].launches.at(3).int_args.empty());
  EXPECT_EQ(plan.programs[3].launches.at(3).int_args.size(), 1u);
  const auto& w1_at = plan.final_placements[slot(w1, c)];  // by features over the ranks, the same in each piece
  EXPECT_EQ(w1_at.kind, PlacementKind::kShard);
  EXPECT_EQ(w1_at.rows, 6);
  EXPECT_EQ(w1_at.ranks, 2);
  EXPECT_EQ(w1_at.stride, 1);
  const auto& out_at = plan.final_placements[slot(out, c)];  // by the batch's rows over the pieces
  EXPECT_EQ(out_at.kind, PlacementKind::kShard);
  EXPECT_EQ(out_at.rows, 8);
  EXPECT_EQ(out_at.ranks, 2);
  EXPECT_EQ(out_at.stride, 2);
}

// A weight gradient under dp x tp is split by TP and a partial sum over the pieces. An op with no rule reading it
// (clip_grad_norm_'s norms) has it summed over the pieces in its parts, then gathered, and kept in its parts again
// after: the gradient rests split, never whole.
TEST_F(TensorParallelTest, AGradientReadWholeIsSummedInItsPartsAndKeptInThem) {
  runtime::set_op_facts(runtime::intern_op("aten::cumsum"), {});
  w1 = buffer(6 * 4, true), b1 = buffer(6, true);
  x = buffer(8 * 4, false), y1 = buffer(8 * 6, false);
  auto grad = buffer(4 * 6, false), sums = buffer(4 * 6, false);
  g.append(upload(x, {8, 4}));
  g.append(node("aten::addmm", {shaped(b1, {6}), shaped(x, {8, 4}), transposed(shaped(w1, {6, 4}))}, {shaped(y1, {8, 6})}));
  g.append(node("aten::mm", {transposed(shaped(x, {8, 4})), shaped(y1, {8, 6})}, {shaped(grad, {4, 6})}));
  g.append(node("aten::cumsum", {shaped(grad, {4, 6})}, {shaped(sums, {4, 6})}));
  y1->release_frontend();
  const CanonicalGraph c = CanonicalGraph::build(g);
  const SplitSeeds seeds{{static_cast<uint32_t>(slot(w1, c)), {6, 1}}, {static_cast<uint32_t>(slot(b1, c)), {6, 1}}};
  const BatchSplit split = split_batch(g, c, {{0, 4}, {4, 4}}, 8, nullptr, true, {&seeds, 2});
  const PlannedStep plan = emit_spmd_plan(g, c, split, 4);
  EXPECT_EQ(plan.report.replicated_fallbacks, 1u);
  const auto& p = plan.programs[3];
  std::vector<Instruction> moves;
  for (const auto& i : p.code)
    if (i.index == slot(grad, c) && i.kind != Kind::kRelease && i.kind != Kind::kLaunch && i.kind != Kind::kAllocate)
      moves.push_back(i);
  ASSERT_EQ(moves.size(), 3u);
  EXPECT_EQ(moves[0].kind, Kind::kAllReduce);  // over the pieces (devices 1 and 3), its [4, 3] part only
  EXPECT_EQ(moves[0].group, 3 + 1);
  EXPECT_EQ(runtime::whole_bytes(p.geometries.at(moves[0].aux - 1), 0), 4u * 3 * 4);
  EXPECT_EQ(moves[1].kind, Kind::kAllGather);  // over the ranks, for the op with no rule
  EXPECT_EQ(moves[2].kind, Kind::kKeepRows);   // its part again
  const auto& at = plan.final_placements[slot(grad, c)];
  EXPECT_EQ(at.kind, PlacementKind::kShard);
  EXPECT_EQ(at.ranks, 2);
  EXPECT_EQ(at.stride, 1);
}

// An odd batch does not split evenly over the pieces: every piece runs all of it (tensor splits are a piece's).
TEST_F(TensorParallelTest, ABatchThatDoesNotSplitEvenlyRunsWholeInEveryPiece) {
  build();
  const CanonicalGraph c = CanonicalGraph::build(g);
  const PlannedStep plan = compile_tensor_parallel_plan(g, c, {.tp = 2, .dp = 3, .candidate_rows = {8}});
  ASSERT_EQ(plan.programs.size(), 6u);
  EXPECT_EQ(plan.report.split_rows, 0);
  EXPECT_NE(plan.report.summary.find("batch not split (3 replicas run all of it)"), std::string::npos)
      << plan.report.summary;
  const runtime::LocalLaunch& first = plan.programs[5].launches.at(0);  // the upload runs whole
  ASSERT_EQ(first.inputs.size(), 3u);
  EXPECT_EQ(first.inputs[1].sizes, (runtime::Dims{8, 4}));  // all of x
  EXPECT_EQ(first.inputs[2].sizes, (runtime::Dims{4, 3}));  // rank 1 of piece 2: w1^T's columns 3..5, kept
  EXPECT_EQ(first.inputs[2].offset, 0);
}

// dp 2 x tp 2 with distribute_param: w1's update (in place, on its TP part [3, 4]) runs on each replica's rows of
// the part, 2 and 1: the replica keeps its rows (no traffic) over its rank's replicas, updates them, and gathers
// the part again for the next forward pass.
TEST_F(TensorParallelTest, TheShardedOptimizerSplitsATensorParallelPartOverTheReplicas) {
  build();
  const CanonicalGraph c = CanonicalGraph::build(g);
  const PlannedStep plan =
      compile_tensor_parallel_plan(g, c, {.tp = 2, .dp = 2, .candidate_rows = {8}, .distribute_param = true});
  ASSERT_EQ(plan.programs.size(), 4u);
  EXPECT_NE(plan.report.summary.find("optimizer sharded over the 2 replicas"), std::string::npos) << plan.report.summary;
  const uint32_t w1_slot = static_cast<uint32_t>(slot(w1, c));
  for (const auto& p : plan.programs) {
    bool kept = false, gathered = false;
    for (const Instruction& i : p.code) {
      if (i.index != w1_slot || (i.kind != Kind::kKeepRows && i.kind != Kind::kAllGather)) continue;
      if (i.group != 3 + p.device % 2) continue;  // over its rank's replicas (groups {0, 2} and {1, 3})
      ASSERT_GT(i.aux, 0u);
      const runtime::SlotInfo& geo = p.geometries.at(i.aux - 1);
      EXPECT_EQ(geo.rows, 3u);        // the part's rows
      EXPECT_EQ(geo.row_bytes, 16u);  // of 4 floats
      (i.kind == Kind::kKeepRows ? kept : gathered) = true;
    }
    EXPECT_TRUE(kept && gathered) << "device " << p.device;
    // The update: launch 5 (w1 += w1) on the replica's rows of the part.
    const auto update = std::find_if(p.code.begin(), p.code.end(),
                                     [](const Instruction& i) { return i.kind == Kind::kLaunch && i.index == 5; });
    ASSERT_NE(update, p.code.end());
    ASSERT_GT(update->aux, 0u);
    const runtime::LocalLaunch& l = p.launches.at(update->aux - 1);
    EXPECT_EQ(l.inputs.at(0).sizes, (runtime::Dims{p.device < 2 ? 2 : 1, 4})) << "device " << p.device;
    EXPECT_EQ(l.inputs.at(0).offset, 0);
  }
  const auto& w1_at = plan.final_placements[w1_slot];  // gathered: TP's parts, whole in every replica
  EXPECT_EQ(w1_at.kind, PlacementKind::kShard);
  EXPECT_EQ(w1_at.ranks, 2);
  EXPECT_EQ(w1_at.inner_rows, 0);
}

// A TP part that an earlier step's sharded optimizer left in rows over the replicas (Placement::inner_rows) is
// gathered over its rank's replicas before its first use, and the lowering reads it as TP's part from there.
TEST_F(TensorParallelTest, APartLeftInRowsOverTheReplicasIsGatheredBeforeItsFirstUse) {
  build();
  runtime::Placement rows{PlacementKind::kShard, 6};
  rows.ranks = 2;
  rows.inner_rows = 3;
  rows.inner_ranks = 2;
  rows.inner_stride = 2;
  w1->set_placement(rows);
  const CanonicalGraph c = CanonicalGraph::build(g);
  const SplitSeeds seeds = tensor_parallel_seeds(g, c, 2);
  const BatchSplit split = split_batch(g, c, {{0, 4}, {4, 4}}, 8, nullptr, true, {&seeds, 2});
  const uint32_t w1_slot = static_cast<uint32_t>(slot(w1, c));
  const auto gather = std::find_if(split.steps.begin(), split.steps.end(), [&](const SplitStep& st) {
    return st.kind == Kind::kAllGather && st.index == w1_slot;
  });
  ASSERT_NE(gather, split.steps.end());
  EXPECT_EQ(gather->axis, SplitStep::Axis::kBatch);
  ASSERT_TRUE(gather->geometry.has_value());
  EXPECT_EQ(gather->geometry->rows, 3u);
  EXPECT_EQ(gather->geometry->row_bytes, 16u);
  const auto first_launch = std::find_if(split.steps.begin(), split.steps.end(),
                                         [](const SplitStep& st) { return st.kind == Kind::kLaunch && st.index == 1; });
  EXPECT_LT(gather, first_launch);  // before the first layer reads it
  EXPECT_EQ(split.replicated_fallbacks, 0u);
}

// pp 2 x tp 2: each stage's devices are two tensor ranks (stage 0: devices 0, 1; stage 1: 2, 3). A value crossing
// the cut goes rank to rank, each rank sending the part it holds; the pair's all-reduce runs over the ranks of the
// stage that ends it; split weights rest in their parts on their own stage.
TEST_F(TensorParallelTest, BesidePipelineStagesEachStageIsItsOwnTensorRanks) {
  build();
  const CanonicalGraph c = CanonicalGraph::build(g);
  const PlannedStep plan = compile_pipeline_plan(g, c, {.stages = 2, .tp = 2}, {8});
  ASSERT_EQ(plan.programs.size(), 4u);
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u) << plan.report.summary;
  EXPECT_NE(plan.report.summary.find("tensor parallel: 1 linear pair(s) split over 2 ranks"), std::string::npos)
      << plan.report.summary;
  EXPECT_EQ(plan.groups, (std::vector<std::vector<int>>{{0, 1}, {2, 3}}));
  size_t sends = 0, reduces = 0, split_sends = 0;
  for (const auto& p : plan.programs)
    for (const Instruction& i : p.code) {
      if (i.kind == Kind::kSend) {
        ++sends;
        EXPECT_LT(p.device, 2);
        EXPECT_EQ(static_cast<int>(i.aux), p.device + 2);  // to the same rank of the next stage
        ASSERT_GT(i.range, 0u);
        // A split value goes as the rank's part: h [8, 6] as [8, 3] (else the whole of a replicated one).
        if (i.index == slot(h, c) || i.index == slot(y1, c)) {
          EXPECT_EQ(p.ranges.at(i.range - 1).bytes, 8u * 3 * 4);
          ++split_sends;
        }
      }
      if (i.kind == Kind::kAllReduce) {
        ++reduces;
        EXPECT_EQ(i.group, 1 + p.device / 2);  // over its stage's ranks
      }
    }
  EXPECT_GT(sends, 0u);
  EXPECT_GT(split_sends, 0u) << plan.report.summary;  // the cut falls inside the pair
  EXPECT_EQ(reduces, 2u);  // the second layer's partial sum, on both ranks of its stage
  const auto& w1_at = plan.final_placements[slot(w1, c)];
  EXPECT_EQ(w1_at.kind, PlacementKind::kShard);
  EXPECT_EQ(w1_at.rows, 6);
  const auto& w2_at = plan.final_placements[slot(w2, c)];
  EXPECT_EQ(w2_at.kind, PlacementKind::kShard);
  EXPECT_EQ(w2_at.outer, 4);
  for (const auto* at : {&w1_at, &w2_at}) EXPECT_TRUE(at->devices == 0b0011 || at->devices == 0b1100) << at->devices;
}

// pp 2 x tp 2 with 2 micro-batches: each stage runs the pair's ops micro-batch after micro-batch into blocks of
// the rank's part that hold both micro-batches' rows, or one at a time where 1F1B lets them (a ring); TP's
// all-reduce of the second layer's partial sum sums each micro-batch's rows as soon as they are made (a range of
// the block), not the whole block after the last.
TEST_F(TensorParallelTest, BesideMicroBatchesTheirRowsShareTheRanksBlocks) {
  build();
  const CanonicalGraph c = CanonicalGraph::build(g);
  const PlannedStep plan = compile_pipeline_plan(g, c, {.stages = 2, .tp = 2, .micro_batches = 2}, {8});
  ASSERT_EQ(plan.programs.size(), 4u);
  EXPECT_NE(plan.report.summary.find("batch 8 split by rows, 2 micro-batch(es) per replica"), std::string::npos)
      << plan.report.summary;
  size_t reduces = 0, joined = 0;
  for (const auto& p : plan.programs) {
    std::vector<std::pair<uint64_t, uint64_t>> at;  // per sum: (offset, block bytes)
    size_t last_second_layer = 0, first_reduce = p.code.size();
    for (size_t pc = 0; pc < p.code.size(); ++pc) {
      const Instruction& i = p.code[pc];
      if (i.kind == Kind::kLaunch && i.index == 3) last_second_layer = pc;
      if (i.kind != Kind::kAllReduce) continue;
      ++reduces;
      first_reduce = std::min(first_reduce, pc);
      EXPECT_EQ(i.group, 1 + p.device / 2);  // over its stage's ranks
      ASSERT_GT(i.range, 0u);
      const runtime::ByteRange& r = p.ranges.at(i.range - 1);
      EXPECT_EQ(r.bytes, 4u * 4 * 4);  // a micro-batch's rows of y2: [4, 4] floats
      at.emplace_back(r.offset, r.block_bytes);
    }
    if (!at.empty()) {
      // Micro-batch k's rows at k × 64 of a 128-byte block, or a block of one micro-batch's rows made for each.
      using At = std::vector<std::pair<uint64_t, uint64_t>>;
      EXPECT_TRUE(at == (At{{0, 128}, {64, 128}}) || at == (At{{0, 64}, {0, 64}}));
      EXPECT_LT(first_reduce, last_second_layer);  // micro-batch 0's sum before micro-batch 1's second layer
    }
    for (const runtime::LocalLaunch& l : p.launches)
      for (size_t k = 0; k < l.joins.size(); ++k)
        if (l.joins[k] == runtime::LocalLaunch::Join::kInto && l.into[k] > 0) ++joined;  // micro-batch 1's rows
  }
  EXPECT_EQ(reduces, 4u);  // on both ranks of its stage, once per micro-batch
  EXPECT_GT(joined, 0u);
}

}  // namespace
}  // namespace moreh::scheduler
