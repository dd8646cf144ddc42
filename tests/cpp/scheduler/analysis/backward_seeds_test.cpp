#include "scheduler/analysis/backward_seeds.h"

#include <gtest/gtest.h>

#include <memory>

#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using moreh::testing::node;
using moreh::testing::shaped;
using moreh::testing::upload;

// x uploaded; per micro-batch: loss = sum(relu(x)), the seed (a fresh scalar), grad = seed * x.
void micro_batch(runtime::StepGraph& g, runtime::VirtualMemory& vm, const std::shared_ptr<runtime::Buffer>& x) {
  auto h = std::make_shared<runtime::Buffer>(vm, 128, 1), loss = std::make_shared<runtime::Buffer>(vm, 4, 1);
  auto seed = std::make_shared<runtime::Buffer>(vm, 4, 1), grad = std::make_shared<runtime::Buffer>(vm, 128, 1);
  g.append(node("aten::relu", {shaped(x, {8, 4})}, {shaped(h, {8, 4})}));
  g.append(node("aten::sum", {shaped(h, {8, 4})}, {shaped(loss, {})}));
  runtime::Node fill = node("aten::fill_.Scalar", {shaped(seed, {})}, {}, {0});
  fill.initializes.push_back(0);
  g.append(std::move(fill));
  g.append(node("aten::mul.Tensor", {shaped(x, {8, 4}), shaped(seed, {})}, {shaped(grad, {8, 4})}));
}

TEST(BackwardSeedsTest, OneSeedPerLossBackward) {
  runtime::VirtualMemory vm;
  runtime::StepGraph g;
  auto x = std::make_shared<runtime::Buffer>(vm, 128, 1);
  g.append(upload(x, {8, 4}));
  micro_batch(g, vm, x);
  micro_batch(g, vm, x);  // gradient accumulation: a second loss and its backward pass
  const runtime::CanonicalGraph cg = runtime::CanonicalGraph::build(g);
  EXPECT_EQ(backward_seeds(g, cg), (std::vector<size_t>{3, 7}));
}

TEST(BackwardSeedsTest, AFreshScalarBeforeAnyLossIsNoSeed) {
  runtime::VirtualMemory vm;
  runtime::StepGraph g;
  auto s = std::make_shared<runtime::Buffer>(vm, 4, 1);
  runtime::Node fill = node("aten::fill_.Scalar", {shaped(s, {})}, {}, {0});
  fill.initializes.push_back(0);
  g.append(std::move(fill));
  const runtime::CanonicalGraph cg = runtime::CanonicalGraph::build(g);
  EXPECT_TRUE(backward_seeds(g, cg).empty());
}

}  // namespace
}  // namespace moreh::scheduler
