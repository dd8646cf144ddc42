// 1F1B with a mean cross entropy: its gradient taken as a sum, the gradients divided by the loss's total
// weight where they leave the pipelined part, the loss's own division after every micro-batch.
#include "scheduler/lowering/deferred_loss_division.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "runtime/base/data_type.h"
#include "runtime/memory/virtual_memory.h"
#include "scheduler/lowering/pipeline_planner.h"
#include "scheduler/lowering/stage_cut.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;
using runtime::Instruction;
using Kind = Instruction::Kind;

// x [8,4] and targets t [8] uploaded; h = x @ w1, z = h @ w2, (loss, tw) = nll_loss(z, t, mean); the seed;
// gz = nll_loss_backward(seed, z, t, mean, tw); gw2 = h^T @ gz, gh = gz @ w2^T, gw1 = x^T @ gh; updates.
struct CrossEntropyStep {
  std::shared_ptr<runtime::Buffer> x, t, w1, w2, h, z, loss, tw, seed, gz, gw2, gh, gw1;
  runtime::StepGraph graph;
  enum : size_t { kUploadX, kUploadT, kMm1, kMm2, kLoss, kSeed, kLossBackward, kGw2, kGh, kGw1, kUpdate1, kUpdate2 };

  static TensorRef transposed(TensorRef r) {
    std::swap(r.sizes[0], r.sizes[1]);
    std::swap(r.strides[0], r.strides[1]);
    return r;
  }
  static TensorRef targets(std::shared_ptr<runtime::Buffer> b) {
    TensorRef r = shaped(std::move(b), {8});
    r.dtype = 4;  // int64
    r.itemsize = 8;
    return r;
  }

  explicit CrossEntropyStep(runtime::VirtualMemory& vm) {
    auto make = [&](uint64_t bytes) { return std::make_shared<runtime::Buffer>(vm, bytes, 2); };
    x = make(4 * 32), h = make(4 * 32), z = make(4 * 32), gz = make(4 * 32), gh = make(4 * 32), t = make(8 * 8);
    w1 = make(4 * 16), w2 = make(4 * 16), gw1 = make(4 * 16), gw2 = make(4 * 16);
    loss = make(4), tw = make(4), seed = make(4);
    for (auto& w : {w1, w2}) {
      w->mark_defined();
      w->set_placement({runtime::PlacementKind::kHome});
    }
    auto scalar = [](std::shared_ptr<runtime::Buffer> b) { return shaped(std::move(b), {}); };
    graph.append(upload(x, {8, 4}));
    Node up = node("aten::copy_", {targets(t)}, {}, {0});
    up.host_input = true;
    graph.append(std::move(up));
    graph.append(node("aten::mm", {shaped(x, {8, 4}), shaped(w1, {4, 4})}, {shaped(h, {8, 4})}));
    graph.append(node("aten::mm", {shaped(h, {8, 4}), shaped(w2, {4, 4})}, {shaped(z, {8, 4})}));
    // nll_loss_forward(self, target, weight, reduction, ignore_index) -> (output, total_weight)
    Node nll = node("aten::nll_loss_forward", {shaped(z, {8, 4}), targets(t)}, {scalar(loss), scalar(tw)}, {},
                    {Attribute{int64_t{1}}, Attribute{int64_t{-100}}});
    nll.attr_args = {3, 4};
    graph.append(std::move(nll));
    Node fill = node("aten::fill_.Scalar", {scalar(seed)}, {}, {0});
    fill.initializes.push_back(0);
    graph.append(std::move(fill));
    // nll_loss_backward(grad_output, self, target, weight, reduction, ignore_index, total_weight)
    Node back = node("aten::nll_loss_backward", {scalar(seed), shaped(z, {8, 4}), targets(t), scalar(tw)},
                     {shaped(gz, {8, 4})}, {}, {Attribute{int64_t{1}}, Attribute{int64_t{-100}}});
    back.input_args = {0, 1, 2, 6};
    back.attr_args = {4, 5};
    graph.append(std::move(back));
    graph.append(node("aten::mm", {transposed(shaped(h, {8, 4})), shaped(gz, {8, 4})}, {shaped(gw2, {4, 4})}));
    graph.append(node("aten::mm", {shaped(gz, {8, 4}), transposed(shaped(w2, {4, 4}))}, {shaped(gh, {8, 4})}));
    graph.append(node("aten::mm", {transposed(shaped(x, {8, 4})), shaped(gh, {8, 4})}, {shaped(gw1, {4, 4})}));
    graph.append(node("aten::add_.Tensor", {shaped(w1, {4, 4}), shaped(gw1, {4, 4})}, {}, {0}));
    graph.append(node("aten::add_.Tensor", {shaped(w2, {4, 4}), shaped(gw2, {4, 4})}, {}, {0}));
    for (auto* b : {&h, &z, &seed, &gz, &gw1, &gw2, &gh, &x, &t}) (*b)->release_frontend();
  }
};

class DeferredLossDivisionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::register_data_type(6, runtime::DataType::kFloat32);
    runtime::register_data_type(4, runtime::DataType::kInt64);
  }
  uint32_t slot(const runtime::CanonicalGraph& c, const std::shared_ptr<runtime::Buffer>& b) {
    return static_cast<uint32_t>(std::find(c.bindings.begin(), c.bindings.end(), b) - c.bindings.begin());
  }
  runtime::VirtualMemory vm;
};

TEST_F(DeferredLossDivisionTest, TheLossGradientGoesAsASumAndTheGradientsAreDividedBeforeTheUpdates) {
  CrossEntropyStep step(vm);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  const StageCut cut = cut_stages(step.graph, c, 2);
  const std::vector<runtime::RowRange> pieces = {{0, 4}, {4, 4}};
  BatchSplit split = split_batch(step.graph, c, pieces, 8);
  ASSERT_EQ(split.replicated_fallbacks, 0u);
  const size_t before = split.steps.size();
  const DeferredDivision d = defer_loss_division(step.graph, c, split.steps, cut.forward_end);
  ASSERT_TRUE(d.refused.empty()) << d.refused;
  ASSERT_TRUE(d.rewritten);
  const std::vector<SplitStep>& steps = split.steps;
  EXPECT_EQ(steps.size(), before + 2);  // the two divisions added; the rest moved
  EXPECT_EQ(d.sum_gradients, 1);
  EXPECT_EQ(d.divisions, 2);  // gw1 and gw2, each before its update
  const uint32_t tw = slot(c, step.tw), loss = slot(c, step.loss);
  auto at = [&](auto pred) {
    return static_cast<size_t>(std::find_if(steps.begin(), steps.end(), pred) - steps.begin());
  };
  const size_t backward = at([](const SplitStep& s) {
    return s.kind == Kind::kLaunch && s.index == CrossEntropyStep::kLossBackward;
  });
  ASSERT_LT(backward, steps.size());
  const SplitStep& b = steps[backward];
  EXPECT_EQ(b.unused_inputs, std::vector<int>{3});  // total_weight: not read
  ASSERT_FALSE(b.launches.empty());
  for (const auto& l : b.launches) EXPECT_EQ(l.int_args, (std::vector<std::pair<int, int64_t>>{{4, 2}}));
  // The loss's division waits until after the backward pass, and the gradients' divisions come after it.
  const size_t loss_divided = at([&](const SplitStep& s) { return s.kind == Kind::kDivide && s.index == loss; });
  const size_t update = at([](const SplitStep& s) {
    return s.kind == Kind::kLaunch && s.index == CrossEntropyStep::kUpdate1;
  });
  const size_t gw1_divided = at([&](const SplitStep& s) {
    return s.kind == Kind::kDivide && s.index == slot(c, step.gw1) && s.aux == tw;
  });
  EXPECT_LT(backward, loss_divided);
  EXPECT_LT(loss_divided, gw1_divided);
  EXPECT_LT(gw1_divided, update);
}

TEST_F(DeferredLossDivisionTest, AnotherLossGradientAddedToTheDeferredOneRefuses) {
  CrossEntropyStep step(vm);
  // gh += a value that is no gradient of the deferred loss (an upload), before gw1 reads gh: split by rows
  // as a pointwise op is.
  runtime::set_op_facts(runtime::intern_op("aten::add_.Tensor"), {.pointwise = true});
  auto other = std::make_shared<runtime::Buffer>(vm, 4 * 32, 2);
  runtime::StepGraph g;
  g.append(upload(other, {8, 4}));
  for (size_t i = 0; i < step.graph.size(); ++i) {
    if (i == CrossEntropyStep::kGw1)
      g.append(node("aten::add_.Tensor", {shaped(step.gh, {8, 4}), shaped(other, {8, 4})}, {}, {0}));
    g.append(step.graph.nodes()[i]);
  }
  other->release_frontend();
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(g);
  const StageCut cut = cut_stages(g, c, 2);
  BatchSplit split = split_batch(g, c, {{0, 4}, {4, 4}}, 8);
  const BatchSplit original = split;
  const DeferredDivision d = defer_loss_division(g, c, split.steps, cut.forward_end);
  EXPECT_NE(d.refused.find("aten::add_.Tensor adds the loss's gradient to another value"), std::string::npos)
      << d.refused;
  EXPECT_FALSE(d.rewritten);
  // Refused after the loss's gradient was taken as a sum: the steps are as they were.
  ASSERT_EQ(split.steps.size(), original.steps.size());
  for (size_t i = 0; i < split.steps.size(); ++i) {
    EXPECT_EQ(split.steps[i].kind, original.steps[i].kind);
    EXPECT_EQ(split.steps[i].index, original.steps[i].index);
    ASSERT_EQ(split.steps[i].launches.size(), original.steps[i].launches.size());
    for (size_t k = 0; k < split.steps[i].launches.size(); ++k)
      EXPECT_TRUE(split.steps[i].launches[k].int_args.empty());
    EXPECT_EQ(split.steps[i].unused_inputs, original.steps[i].unused_inputs);
  }
}

TEST_F(DeferredLossDivisionTest, OneFOneBRunsABackwardBeforeTheNextForwardOnTheLastStage) {
  CrossEntropyStep step(vm);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  auto order_on_last = [&](PipelineSchedule schedule) {
    const PlannedStep plan = compile_pipeline_plan(
        step.graph, c, {.stages = 2, .dp = 1, .micro_batches = 2, .schedule = schedule}, {8});
    std::string seq;
    for (const Instruction& i : plan.programs.at(1).code)
      if (i.kind == Kind::kLaunch && (i.index == CrossEntropyStep::kMm2 || i.index == CrossEntropyStep::kLossBackward))
        seq += i.index == CrossEntropyStep::kMm2 ? "F" : "B";
    return std::make_pair(seq, plan.report.summary);
  };
  const auto [one_f_one_b, summary] = order_on_last(PipelineSchedule::k1F1B);
  EXPECT_EQ(one_f_one_b, "FBFB") << summary;
  EXPECT_NE(summary.find("1F1B (the loss's gradient as a sum, 2 gradients divided by its weight after)"),
            std::string::npos)
      << summary;
  const auto [gpipe, gpipe_summary] = order_on_last(PipelineSchedule::kGPipe);
  EXPECT_EQ(gpipe, "FFBB") << gpipe_summary;
}

}  // namespace
}  // namespace moreh::scheduler
