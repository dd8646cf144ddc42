// Each sharding rule family, called directly: how an op runs on each device's rows given where the batch
// lies in its inputs (scheduler/sharding/*_rules.cpp).
#include "scheduler/sharding/sharding_rules.h"

#include <gtest/gtest.h>

#include "rule_test_support.h"

namespace moreh::scheduler {
namespace {

using moreh::testing::node;
using moreh::testing::split;
using Kind = OutputSpec::Kind;

class ShardingRulesTest : public ::testing::Test, public moreh::testing::RuleTest {
 protected:
  void SetUp() override { runtime::set_op_facts(runtime::intern_op("test::pointwise"), {.pointwise = true}); }
};

TEST_F(ShardingRulesTest, PointwiseKeepsTheRowsAndTakesBroadcastInputsWhole) {
  const runtime::Node n = node("test::pointwise", {t({8, 4}), t({4})}, {t({8, 4})});
  const auto d = shard_rule(n, split(2, {{0, 0}}));
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->inputs[0].batch);
  EXPECT_FALSE(d->inputs[1].batch);  // broadcast along the rows
  EXPECT_EQ(d->outputs[0].kind, Kind::kShard);
  EXPECT_EQ(d->outputs[0].dim, 0);
  // Inputs split along different dims: the larger's rows win, the other is taken by those rows (the planner
  // gathers and cuts it).
  const runtime::Node two = node("test::pointwise", {t({8, 8}), t({8, 8})}, {t({8, 8})});
  const auto both = shard_rule(two, split(2, {{0, 0}, {1, 1}}));
  ASSERT_TRUE(both);
  EXPECT_EQ(both->inputs[1].dim, 0);
  const runtime::Node random = node("aten::bernoulli", {t({8, 4})}, {t({8, 4})});
  runtime::set_op_facts(random.op, {.pointwise = true, .seeded = true});
  EXPECT_FALSE(shard_rule(random, split(1, {{0, 0}})));  // would draw the same numbers on every device
}

TEST_F(ShardingRulesTest, MatmulRowsGiveRowsAndAContractionGivesAPartialSum) {
  const runtime::Node rows = node("aten::mm", {t({8, 4}), t({4, 3})}, {t({8, 3})});
  const auto d = shard_rule(rows, split(2, {{0, 0}}));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->outputs[0].kind, Kind::kShard);
  const runtime::Node grad = node("aten::mm", {t({4, 8}), t({8, 3})}, {t({4, 3})});  // x^T @ g
  const auto p = shard_rule(grad, split(2, {{0, 1}, {1, 0}}));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->outputs[0].kind, Kind::kPartial);
  EXPECT_EQ(p->inputs[0].dim, 1);
}

// Tensor parallelism's linear layers: a weight split by output features gives split columns (its bias cut
// alike); a contraction split on both sides with a bias is a partial sum that adds the bias once.
TEST_F(ShardingRulesTest, MatmulColumnsGiveColumnsAndABiasIsAddedOnce) {
  const runtime::Node column = node("aten::addmm", {t({6}), t({8, 4}), t({4, 6})}, {t({8, 6})});
  const auto c = shard_rule(column, split(3, {{2, 1}}));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->outputs[0].kind, Kind::kShard);
  EXPECT_EQ(c->outputs[0].dim, 1);
  EXPECT_TRUE(c->inputs[0].batch);  // the bias, cut to the same columns
  EXPECT_FALSE(c->inputs[1].batch);
  EXPECT_EQ(c->first_device_beta, -1);
  const runtime::Node row = node("aten::addmm", {t({4}), t({8, 6}), t({6, 4})}, {t({8, 4})});
  const auto r = shard_rule(row, split(3, {{1, 1}, {2, 0}}));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outputs[0].kind, Kind::kPartial);
  EXPECT_FALSE(r->inputs[0].batch);
  EXPECT_EQ(r->first_device_beta, 3);  // addmm's beta: 0 on every device but the first
  EXPECT_FALSE(shard_rule(row, split(3, {{0, 0}, {1, 1}, {2, 0}})));  // a split bias cannot be added once
  const runtime::Node backward = node("aten::mm", {t({8, 4}), t({4, 6})}, {t({8, 6})});  // g @ W, W by columns
  const auto b = shard_rule(backward, split(2, {{1, 1}}));
  ASSERT_TRUE(b);
  EXPECT_EQ(b->outputs[0].dim, 1);
}

TEST_F(ShardingRulesTest, AReductionOverTheBatchIsPartialAndAMeanScalesByTheShare) {
  const runtime::Node sum = node("aten::sum.dim_IntList", {t({8, 4})}, {t({4})}, {},
                                 {std::vector<int64_t>{0}, false});
  const auto s = shard_rule(sum, split(1, {{0, 0}}));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->outputs[0].kind, Kind::kPartial);
  EXPECT_FALSE(s->outputs[0].scale_by_share);
  const runtime::Node mean = node("aten::mean.dim", {t({8, 4})}, {t({4})}, {}, {std::vector<int64_t>{0}, false});
  EXPECT_TRUE(shard_rule(mean, split(1, {{0, 0}}))->outputs[0].scale_by_share);
  const runtime::Node rowsum = node("aten::sum.dim_IntList", {t({8, 4})}, {t({8})}, {},
                                    {std::vector<int64_t>{1}, false});
  EXPECT_EQ(shard_rule(rowsum, split(1, {{0, 0}}))->outputs[0].kind, Kind::kShard);
  const runtime::Node softmax = node("aten::_softmax", {t({8, 4})}, {t({8, 4})}, {}, {int64_t{0}, false});
  EXPECT_FALSE(shard_rule(softmax, split(1, {{0, 0}})));  // normalizes across the batch
}

TEST_F(ShardingRulesTest, LayerNormOverTrailingDimsKeepsTheRows) {
  runtime::Node ln = node("aten::native_layer_norm", {t({8, 4}), t({4}), t({4})}, {t({8, 4}), t({8, 1}), t({8, 1})});
  ln.input_args = {0, 2, 3};
  ln.attrs = {std::vector<int64_t>{4}, runtime::StepValue{1e-5}};
  ln.attr_args = {1, 4};
  const auto d = shard_rule(ln, split(3, {{0, 0}}));
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->inputs[1].batch);
  for (const auto& o : d->outputs) EXPECT_EQ(o.kind, Kind::kShard);
  ln.attrs[0] = std::vector<int64_t>{8, 4};  // normalized over the batch too
  EXPECT_FALSE(shard_rule(ln, split(3, {{0, 0}})));
}

TEST_F(ShardingRulesTest, AMeanNllLossIsALossMeanOfPartialSums) {
  runtime::Node nll = node("aten::nll_loss_forward", {t({8, 10}), t({8})}, {t({}), t({})});
  nll.attrs = {std::monostate{}, int64_t{1}, int64_t{-100}};  // weight None, reduction mean, ignore_index
  nll.attr_args = {2, 3, 4};
  const auto d = shard_rule(nll, split(2, {{0, 0}, {1, 0}}));
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->loss_mean);
  EXPECT_EQ(d->outputs[0].kind, Kind::kPartial);
  EXPECT_EQ(d->outputs[1].kind, Kind::kPartial);
}

TEST_F(ShardingRulesTest, EmbeddingRowsFollowTheIndicesAndItsGradientIsPartial) {
  const runtime::Node emb = node("aten::embedding", {t({10, 4}), t({8})}, {t({8, 4})});
  const auto d = shard_rule(emb, split(2, {{1, 0}}));
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->inputs[0].batch);
  EXPECT_EQ(d->outputs[0].kind, Kind::kShard);
  runtime::Node back = node("aten::embedding_dense_backward", {t({8, 4}), t({8})}, {t({10, 4})}, {},
                            {int64_t{10}, int64_t{-1}, false});
  EXPECT_EQ(shard_rule(back, split(2, {{0, 0}, {1, 0}}))->outputs[0].kind, Kind::kPartial);
}

TEST_F(ShardingRulesTest, CatAlongAnotherDimKeepsTheRows) {
  runtime::Node cat = node("aten::cat", {t({8, 2}), t({8, 3})}, {t({8, 5})}, {}, {int64_t{1}});
  cat.input_args = {0, 0};
  cat.attr_args = {1};
  const auto d = shard_rule(cat, split(2, {{0, 0}}));
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->inputs[1].batch);  // cut to the same rows
  cat.attrs = {int64_t{0}};
  EXPECT_FALSE(shard_rule(cat, split(2, {{0, 0}})));
}

TEST_F(ShardingRulesTest, AttentionSplitsRowsOnlyWithoutDropout) {
  auto attention = [&](double dropout) {
    runtime::Node n = node("aten::_scaled_dot_product_flash_attention_for_cpu",
                           {t({8, 2, 16, 4}), t({8, 2, 16, 4}), t({8, 2, 16, 4})}, {t({8, 2, 16, 4}), t({8, 2, 16})});
    n.attrs = {runtime::StepValue{dropout}, true};
    n.attr_args = {3, 4};
    return shard_rule(n, split(3, {{0, 0}, {1, 0}, {2, 0}}));
  };
  ASSERT_TRUE(attention(0.0));
  EXPECT_EQ(attention(0.0)->outputs[1].kind, Kind::kShard);
  EXPECT_FALSE(attention(0.1));  // one dropout mask for the whole batch
}

TEST_F(ShardingRulesTest, PoolingAndConvolutionKeepTheImagesApart) {
  const runtime::Node pool = node("aten::avg_pool2d", {t({8, 3, 4, 4})}, {t({8, 3, 2, 2})});
  EXPECT_EQ(shard_rule(pool, split(1, {{0, 0}}))->outputs[0].kind, Kind::kShard);
  const runtime::Node conv = node("aten::convolution", {t({8, 3, 4, 4}), t({5, 3, 3, 3})}, {t({8, 5, 2, 2})});
  EXPECT_TRUE(shard_rule(conv, split(2, {{0, 0}})));
  EXPECT_FALSE(shard_rule(conv, split(2, {{0, 1}})));  // channels, not images
}

TEST_F(ShardingRulesTest, AnOpWithoutARuleOrARandomOneHasNoDecision) {
  const runtime::Node cumsum = node("aten::cumsum", {t({8, 4})}, {t({8, 4})}, {}, {int64_t{0}});
  EXPECT_FALSE(shard_rule(cumsum, split(1, {{0, 0}})));
  EXPECT_FALSE(has_rule(runtime::intern_op("aten::cumsum")));
  EXPECT_TRUE(has_rule(runtime::intern_op("aten::mm")));
}

}  // namespace
}  // namespace moreh::scheduler
