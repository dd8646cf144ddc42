#include "scheduler/analysis/step_analysis.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using moreh::testing::node;
using moreh::testing::ref;
using moreh::testing::shaped;
using moreh::testing::upload;
using runtime::Buffer;
using runtime::CanonicalGraph;
using runtime::StepGraph;
using runtime::TensorRef;


class StepAnalysisTest : public ::testing::Test {
 protected:
  runtime::VirtualMemory vm;
  std::shared_ptr<Buffer> buffer(uint64_t bytes, bool defined) {
    auto b = std::make_shared<Buffer>(vm, bytes);
    if (defined) b->mark_defined();
    return b;
  }
};

TEST_F(StepAnalysisTest, RolesAndBatchSizeOfATrainingStep) {
  auto w = buffer(4 * 16, true);     // a parameter
  auto x = buffer(4 * 8 * 4, false);  // the batch, uploaded in the step
  auto y = buffer(4 * 8, false);      // its labels
  auto h = buffer(4 * 8 * 4, false);  // an activation, released in the step
  auto loss = buffer(4, false);       // kept by the script
  StepGraph g;
  g.append(upload(x, {8, 4}));
  g.append(upload(y, {8}));
  g.append(node("aten::mm", {shaped(x, {8, 4}), shaped(w, {4, 4})}, {shaped(h, {8, 4})}));
  g.append(node("aten::nll_loss", {shaped(h, {8, 4}), shaped(y, {8})}, {ref(loss)}));
  g.append(node("aten::add_", {ref(w), ref(w)}, {}, {0}));
  h->release_frontend();
  CanonicalGraph c = CanonicalGraph::build(g);
  StepAnalysis a = analyze_step(g, c);

  ASSERT_EQ(a.data_inputs.size(), 2u);
  EXPECT_EQ(c.bindings[a.data_inputs[0]], x);
  EXPECT_EQ(c.bindings[a.data_inputs[1]], y);
  EXPECT_EQ(a.batch_size, 8);
  EXPECT_EQ(a.batch_sizes, std::vector<int64_t>({8}));
  for (size_t s = 0; s < c.bindings.size(); ++s) {
    const auto& b = c.bindings[s];
    BufferRole want = b == x || b == y ? BufferRole::kDataInput
                      : b == h         ? BufferRole::kTemporary
                                       : BufferRole::kPersistent;
    EXPECT_EQ(a.roles[s], want) << "slot " << s;
  }
}

TEST_F(StepAnalysisTest, VariousBatchSizesAreListedMostFrequentFirst) {
  StepGraph g;
  std::vector<std::shared_ptr<Buffer>> keep;
  auto add = [&](runtime::Dims sizes) {
    keep.push_back(buffer(64, false));
    g.append(upload(keep.back(), sizes));
  };
  add({1, 16});  // a mask broadcast over the batch, seen first
  add({4, 2});
  add({4});
  add({2, 8});
  CanonicalGraph c = CanonicalGraph::build(g);
  StepAnalysis a = analyze_step(g, c);
  EXPECT_EQ(a.batch_sizes, std::vector<int64_t>({4, 1, 2}));
  EXPECT_EQ(a.batch_size, 4);
}

TEST_F(StepAnalysisTest, DeviceToDeviceCopiesAreNotDataInputs) {
  auto src = buffer(64, true);
  auto dst = buffer(64, false);
  StepGraph g;
  g.append(node("aten::copy_", {shaped(dst, {4, 4}), shaped(src, {4, 4})}, {}, {0}));
  CanonicalGraph c = CanonicalGraph::build(g);
  StepAnalysis a = analyze_step(g, c);
  EXPECT_TRUE(a.data_inputs.empty());
  EXPECT_EQ(a.batch_size, 0);
}

TEST_F(StepAnalysisTest, AHostCopyIsPartOfTheGraphStructure) {
  auto dst = buffer(64, false);
  StepGraph a, b;
  a.append(upload(dst, {4, 4}));
  b.append(upload(dst, {4, 4}));
  b.nodes()[0].host_input = false;
  EXPECT_NE(CanonicalGraph::build(a).hash, CanonicalGraph::build(b).hash);
}

}  // namespace
}  // namespace moreh::scheduler
