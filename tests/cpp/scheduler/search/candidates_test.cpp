// Advanced Parallelization's candidates: every layout the devices and the batch hold, each plan once.
#include "scheduler/search/candidates.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace moreh::scheduler {
namespace {

using runtime::ParallelConfig;

int replicas(const ParallelConfig& c, int devices) { return devices / (c.num_stages * c.tp); }

TEST(CandidatesTest, EightDevicesAndABatchOfEightGiveEveryLayoutOnce) {
  const auto all = enumerate_candidates({.devices = 8, .batch = 8});
  // 10 factorisations of 8; micro-batches dividing a replica's rows with stages; recomputation; distribute_param
  // where there are replicas: 4 + 8 + 12 + 8 (tp 1) + 4 + 12 + 8 (tp 2) + 4 + 8 (tp 4) + 2 (tp 8).
  EXPECT_EQ(all.size(), 70u);
  std::set<std::string> lines;
  for (const auto& c : all) {
    EXPECT_TRUE(lines.insert(runtime::format_parallel_config(c)).second) << runtime::format_parallel_config(c);
    const int dp = replicas(c, 8);
    EXPECT_EQ(c.num_stages * c.tp * dp, 8);
    EXPECT_EQ(8 % (dp * c.num_micro_batches), 0) << "a replica's rows split evenly into micro-batches";
    if (c.num_stages == 1) { EXPECT_EQ(c.num_micro_batches, 1); }
    if (dp == 1) { EXPECT_FALSE(c.distribute_param) << "nothing to shard over"; }
    EXPECT_FALSE(c.distribute_low_prec_param) << "no autocast, no copies";
  }
  EXPECT_TRUE(lines.count("num_stages : 2, num_micro_batches : 2, batch_per_device : 0, TP : 2, recomputation : 1, "
                          "distribute_param : true, distribute_low_prec_param : false"));
}

TEST(CandidatesTest, AutocastAddsLowPrecisionShardingBesideReplicas) {
  const auto plain = enumerate_candidates({.devices = 4, .batch = 8});
  const auto autocast = enumerate_candidates({.devices = 4, .batch = 8, .autocast = true});
  size_t with_replicas = 0;
  for (const auto& c : plain) with_replicas += replicas(c, 4) > 1;
  EXPECT_EQ(autocast.size(), plain.size() + with_replicas);
  for (const auto& c : autocast)
    if (c.distribute_low_prec_param) { EXPECT_GT(replicas(c, 4), 1); }
}

TEST(CandidatesTest, ABatchThatDoesNotDivideTheReplicasLeavesThemOut) {
  for (const auto& c : enumerate_candidates({.devices = 4, .batch = 6})) EXPECT_NE(replicas(c, 4), 4);
  for (const auto& c : enumerate_candidates({.devices = 4, .batch = 0})) {  // unknown: one replica only
    EXPECT_EQ(replicas(c, 4), 1);
    EXPECT_EQ(c.num_micro_batches, 1);
  }
  EXPECT_EQ(enumerate_candidates({.devices = 1, .batch = 4}).size(), 2u);  // recomputation on and off
}

TEST(CandidatesTest, MicroBatchesWithoutStagesAccumulateAReplicasGradients) {
  const auto plain = enumerate_candidates({.devices = 2, .batch = 8});
  const auto wide = enumerate_candidates({.devices = 2, .batch = 8, .max_micro_batches = 64, .micro_batches_without_stages = true});
  EXPECT_GT(wide.size(), plain.size());
  bool accumulates = false;
  for (const auto& c : wide) {
    const int dp = replicas(c, 2);
    EXPECT_EQ(8 % (dp * c.num_micro_batches), 0);
    accumulates |= c.num_stages == 1 && c.num_micro_batches == 8;  // one replica, a row per micro-batch
  }
  EXPECT_TRUE(accumulates);
  for (const auto& c : plain)
    if (c.num_stages == 1) { EXPECT_EQ(c.num_micro_batches, 1); }
}

}  // namespace
}  // namespace moreh::scheduler
