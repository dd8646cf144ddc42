// The 1F1B order of a stage's tasks and the merge of every stage's order into one that respects the
// step's data dependencies.
#include "scheduler/lowering/pipeline_schedule.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <tuple>

namespace moreh::scheduler {
namespace {

std::string spell(const std::vector<PipelineTask>& tasks) {
  std::string s;
  for (const auto& t : tasks) s += (t.backward ? "B" : "F") + std::to_string(t.micro) + " ";
  return s;
}

TEST(PipelineSchedule, OneFOneBWarmsUpThenAlternates) {
  EXPECT_EQ(spell(one_f_one_b_order(0, 4, 6)), "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5 ");
  EXPECT_EQ(spell(one_f_one_b_order(2, 4, 6)), "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 B5 ");
  EXPECT_EQ(spell(one_f_one_b_order(3, 4, 6)), "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 ");
  // Fewer micro-batches than stages: every forward first, as GPipe.
  EXPECT_EQ(spell(one_f_one_b_order(0, 4, 2)), "F0 F1 B0 B1 ");
}

// Every task of a pipeline of `stages` stages and `micro` micro-batches, with the dependencies of a
// plain pipeline: F(j, k) after F(j − 1, k), B(j, k) after B(j + 1, k) and after F(j, k).
struct Pipeline {
  std::vector<PipelineTask> tasks;
  std::vector<std::vector<size_t>> preds;
  std::map<std::tuple<int, bool, int>, size_t> at;
};

Pipeline pipeline(int stages, int micro) {
  Pipeline p;
  for (int b = 0; b < 2; ++b)
    for (int j = 0; j < stages; ++j)
      for (int k = 0; k < micro; ++k) {
        p.at[{j, b == 1, k}] = p.tasks.size();
        p.tasks.push_back({j, b == 1, k});
      }
  p.preds.resize(p.tasks.size());
  for (const auto& [key, i] : p.at) {
    const auto [j, b, k] = key;
    if (!b && j > 0) p.preds[i].push_back(p.at[{j - 1, false, k}]);
    if (b) p.preds[i].push_back(p.at[{j, false, k}]);
    if (b && j + 1 < stages) p.preds[i].push_back(p.at[{j + 1, true, k}]);
  }
  return p;
}

TEST(PipelineSchedule, MergeKeepsEachStagesOrderAndEveryDependency) {
  const int stages = 4, micro = 8;
  Pipeline p = pipeline(stages, micro);
  const auto order = merge_stage_orders(p.tasks, p.preds, stages, micro);
  ASSERT_TRUE(order.has_value());
  ASSERT_EQ(order->size(), p.tasks.size());
  std::vector<size_t> position(p.tasks.size());
  for (size_t i = 0; i < order->size(); ++i) position[(*order)[i]] = i;
  for (size_t t = 0; t < p.tasks.size(); ++t)
    for (size_t q : p.preds[t]) EXPECT_LT(position[q], position[t]);
  for (int j = 0; j < stages; ++j) {
    std::vector<PipelineTask> mine;
    for (size_t t : *order)
      if (p.tasks[t].stage == j) mine.push_back(p.tasks[t]);
    EXPECT_EQ(spell(mine), spell(one_f_one_b_order(j, stages, micro))) << "stage " << j;
  }
}

TEST(PipelineSchedule, AReceiverComesBeforeItsSendersNextTask) {
  // Stage 1's F0 and stage 0's F1 can both start when stage 0's F0 ends: stage 1 takes F0's activation
  // first, so that the send sits right after F0 in stage 0's program.
  Pipeline p = pipeline(2, 2);
  const auto order = merge_stage_orders(p.tasks, p.preds, 2, 2);
  ASSERT_TRUE(order.has_value());
  std::vector<PipelineTask> seq;
  for (size_t t : *order) seq.push_back(p.tasks[t]);
  ASSERT_GE(seq.size(), 3u);
  EXPECT_EQ(seq[0].stage, 0);
  EXPECT_EQ(seq[1].stage, 1) << spell(seq);
  EXPECT_FALSE(seq[1].backward);
  EXPECT_EQ(seq[1].micro, 0);
}

TEST(PipelineSchedule, MergeRefusesOrdersTheDataForbid) {
  // The last stage's backward of micro-batch 0 reads something every forward micro-batch makes (a loss's
  // total weight before its division is deferred): 1F1B cannot run B0 before F1.
  Pipeline p = pipeline(2, 2);
  p.preds[p.at[{1, true, 0}]].push_back(p.at[{1, false, 1}]);
  EXPECT_FALSE(merge_stage_orders(p.tasks, p.preds, 2, 2).has_value());
  // A task outside the layout.
  Pipeline q = pipeline(2, 2);
  q.tasks.push_back({5, false, 0});
  q.preds.emplace_back();
  EXPECT_FALSE(merge_stage_orders(q.tasks, q.preds, 2, 2).has_value());
}

}  // namespace
}  // namespace moreh::scheduler
