#include "scheduler/plan_cache.h"

#include <gtest/gtest.h>

#include <memory>

namespace moreh::scheduler {
namespace {

std::shared_ptr<const PlannedStep> plan_for(uint64_t hash) {
  auto p = std::make_shared<PlannedStep>();
  p->graph_hash = hash;
  return p;
}

TEST(PlanCacheTest, MissThenHit) {
  PlanCache cache(4);
  EXPECT_EQ(cache.find(1), nullptr);
  EXPECT_EQ(cache.misses(), 1u);
  EXPECT_EQ(cache.hits(), 0u);
  auto p = plan_for(1);
  cache.insert(1, p);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.find(1), p);
  EXPECT_EQ(cache.find(1), p);
  EXPECT_EQ(cache.hits(), 2u);
  EXPECT_EQ(cache.misses(), 1u);
  EXPECT_EQ(cache.find(2), nullptr);
  EXPECT_EQ(cache.misses(), 2u);
}

TEST(PlanCacheTest, EvictsTheLeastRecentlyInserted) {
  PlanCache cache(3);
  for (uint64_t h : {1, 2, 3}) cache.insert(h, plan_for(h));
  cache.insert(4, plan_for(4));  // 1 is the oldest
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.find(1), nullptr);
  for (uint64_t h : {2, 3, 4}) {
    auto p = cache.find(h);
    ASSERT_NE(p, nullptr) << h;
    EXPECT_EQ(p->graph_hash, h);
  }
}

TEST(PlanCacheTest, FindRefreshesRecency) {
  PlanCache cache(3);
  for (uint64_t h : {1, 2, 3}) cache.insert(h, plan_for(h));
  ASSERT_NE(cache.find(1), nullptr);  // order now (most recent first): 1 3 2
  cache.insert(4, plan_for(4));       // evicts 2
  EXPECT_NE(cache.find(1), nullptr);
  EXPECT_EQ(cache.find(2), nullptr);
  EXPECT_NE(cache.find(3), nullptr);
  EXPECT_NE(cache.find(4), nullptr);
  // order: 4 3 1
  cache.insert(5, plan_for(5));  // evicts 1
  EXPECT_EQ(cache.find(1), nullptr);
  EXPECT_NE(cache.find(3), nullptr);
  EXPECT_NE(cache.find(4), nullptr);
  EXPECT_NE(cache.find(5), nullptr);
  EXPECT_EQ(cache.size(), 3u);
}

TEST(PlanCacheTest, ReinsertReplacesAndRefreshes) {
  PlanCache cache(2);
  cache.insert(1, plan_for(1));
  cache.insert(2, plan_for(2));
  auto replacement = plan_for(100);
  cache.insert(1, replacement);  // replaces, and 1 becomes the most recent
  EXPECT_EQ(cache.size(), 2u);
  cache.insert(3, plan_for(3));  // evicts 2
  EXPECT_EQ(cache.find(2), nullptr);
  EXPECT_EQ(cache.find(1), replacement);
  EXPECT_NE(cache.find(3), nullptr);
}

TEST(PlanCacheTest, ZeroCapacityActsAsOne) {
  PlanCache cache(0);
  cache.insert(1, plan_for(1));
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_NE(cache.find(1), nullptr);
  cache.insert(2, plan_for(2));
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.find(1), nullptr);
  EXPECT_NE(cache.find(2), nullptr);
}

TEST(PlanCacheTest, EvictedPlansStayAliveForTheirHolders) {
  PlanCache cache(1);
  auto held = plan_for(1);
  cache.insert(1, held);
  auto found = cache.find(1);
  cache.insert(2, plan_for(2));
  EXPECT_EQ(cache.find(1), nullptr);
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->graph_hash, 1u);
}

TEST(PlanCacheTest, CountersAcrossManyLookups) {
  PlanCache cache(8);
  uint64_t hits = 0, misses = 0;
  for (uint64_t round = 0; round < 3; ++round) {
    for (uint64_t h = 0; h < 8; ++h) {
      if (cache.find(h)) {
        ++hits;
      } else {
        ++misses;
        cache.insert(h, plan_for(h));
      }
    }
  }
  EXPECT_EQ(misses, 8u);
  EXPECT_EQ(hits, 16u);
  EXPECT_EQ(cache.hits(), hits);
  EXPECT_EQ(cache.misses(), misses);
}

}  // namespace
}  // namespace moreh::scheduler
