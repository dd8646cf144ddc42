// Selections kept across runs: a stable graph hash, one file per graph and flavor, read back or ignored.
#include "scheduler/search/selection_cache.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;

runtime::StepGraph two_ops(runtime::VirtualMemory& vm, int64_t rows) {
  auto x = std::make_shared<Buffer>(vm, 4 * rows * 4, 1), y = std::make_shared<Buffer>(vm, 4 * rows * 4, 1);
  runtime::StepGraph g;
  g.append(upload(x, {rows, 4}));
  g.append(node("aten::relu", {shaped(x, {rows, 4})}, {shaped(y, {rows, 4})}));
  return g;
}

TEST(SelectionCacheTest, TheGraphHashIsTheSameForTheSameStepAndDiffersForAnother) {
  runtime::VirtualMemory vm1, vm2;
  const runtime::StepGraph a = two_ops(vm1, 8), b = two_ops(vm2, 8), c = two_ops(vm2, 16);
  const auto ca = runtime::CanonicalGraph::build(a), cb = runtime::CanonicalGraph::build(b),
             cc = runtime::CanonicalGraph::build(c);
  EXPECT_EQ(stable_graph_hash(a, ca), stable_graph_hash(b, cb));
  EXPECT_NE(stable_graph_hash(a, ca), stable_graph_hash(c, cc));
}

TEST(SelectionCacheTest, ASelectionReadsBackForItsGraphAndFlavorOnly) {
  const auto dir = std::filesystem::temp_directory_path() / ("moreh-ap-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const SelectionCache cache(dir.string());
  runtime::ParallelConfig config;
  config.num_stages = 2;
  config.num_micro_batches = 4;
  config.batch_per_device = 1;
  EXPECT_FALSE(cache.find(42, "xLarge.512GB", 4));
  ASSERT_TRUE(cache.store(42, "xLarge.512GB", 4, config));
  EXPECT_EQ(cache.find(42, "xLarge.512GB", 4), config);
  EXPECT_FALSE(cache.find(43, "xLarge.512GB", 4));
  EXPECT_FALSE(cache.find(42, "Large.256GB", 4));
  EXPECT_FALSE(cache.find(42, "xLarge.512GB", 2)) << "another device count";
  std::ofstream(cache.path(42, "xLarge.512GB", 4)) << "num_stages : banana\n";
  EXPECT_FALSE(cache.find(42, "xLarge.512GB", 4)) << "a corrupt file is searched again";
  std::ofstream(cache.path(42, "xLarge.512GB", 4)) << "num_stages : 3\n";
  EXPECT_FALSE(cache.find(42, "xLarge.512GB", 4)) << "3 stages do not divide 4 devices";
  std::filesystem::remove_all(dir);
  EXPECT_FALSE(SelectionCache("").store(42, "x", 4, config)) << "no directory: nothing kept";
}

}  // namespace
}  // namespace moreh::scheduler
