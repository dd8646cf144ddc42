// The layout search on the pipeline tests' two-layer step: every candidate lowered, pruned by memory, timed,
// the cheapest chosen, the same whatever the thread pool.
#include "scheduler/search/parallel_search.h"

#include <gtest/gtest.h>

#include <algorithm>

#include <unistd.h>

#include "runtime/base/data_type.h"
#include "scheduler/lowering/plan_step.h"
#include "../lowering/pipeline_test_graph.h"
#include "../lowering/recomputation_test_graph.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;

class ParallelSearchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::register_data_type(6, runtime::DataType::kFloat32);
    runtime::set_op_facts(runtime::intern_op("aten::relu"), {.pointwise = true});
    profile_.name = "toy";
    profile_.fp32_flops = profile_.low_prec_flops = profile_.attention_flops = 1e9;
    profile_.elementwise_flops = 1e9, profile_.memory_bytes_per_s = 1e9, profile_.launch_s = 1e-6;
    profile_.intra_node = {1e-6, 1e9};
  }
  SearchResult search(uint64_t capacity, int threads = 0, std::function<bool(const runtime::ParallelConfig&)> admissible = {},
                      SearchProgress progress = {}, uint64_t kept_plan_bytes = uint64_t{1} << 30,
                      bool skip_dominated = true) {
    const runtime::StepGraph& graph = graph_ ? *graph_ : step_.graph;
    const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(graph);
    const ProfileTiming timing(profile_, 2);
    return search_parallel_layouts({.graph = graph,
                                    .canonical = c,
                                    .devices = 2,
                                    .used_bytes = {0, 0},
                                    .capacity = capacity,
                                    .margin = 0,
                                    .fusion = false,
                                    .fusion_limits = {},
                                    .timing = timing,
                                    .threads = threads,
                                    .kept_plan_bytes = kept_plan_bytes,
                                    .admissible = std::move(admissible),
                                    .inadmissible_reason = "not admissible",
                                    .skip_dominated = skip_dominated},
                                   progress);
  }
  runtime::VirtualMemory vm_;
  PipelineStep step_{vm_, 2};
  DeviceProfile profile_;
  const runtime::StepGraph* graph_ = nullptr;  // searched instead of step_'s
};

// PipelineStep's two layers with wide weights and few rows, and an update that makes a temporary as large as a
// weight (gw * gw, then added): the update needs more than the forward and backward passes.
struct UpdateHeavyStep {
  std::shared_ptr<runtime::Buffer> x, w1, h1, a1, w2, h2, loss, seed, gw2, ga1, gw1, t1, t2;
  runtime::StepGraph graph;
  UpdateHeavyStep(runtime::VirtualMemory& vm, int devices) {
    auto make = [&](uint64_t bytes) { return std::make_shared<runtime::Buffer>(vm, bytes, devices); };
    x = make(4 * 32), h1 = make(4 * 32), a1 = make(4 * 32), h2 = make(4 * 32), ga1 = make(4 * 32);
    w1 = make(4 * 256), w2 = make(4 * 256), gw1 = make(4 * 256), gw2 = make(4 * 256), t1 = make(4 * 256), t2 = make(4 * 256);
    loss = make(4), seed = make(4);
    for (auto& w : {w1, w2}) {
      w->mark_defined();
      w->set_placement({runtime::PlacementKind::kHome});
    }
    auto scalar = [](std::shared_ptr<runtime::Buffer> b) { return shaped(std::move(b), {}); };
    graph.append(upload(x, {2, 16}));
    graph.append(node("aten::mm", {shaped(x, {2, 16}), shaped(w1, {16, 16})}, {shaped(h1, {2, 16})}));
    graph.append(node("aten::relu", {shaped(h1, {2, 16})}, {shaped(a1, {2, 16})}));
    graph.append(node("aten::mm", {shaped(a1, {2, 16}), shaped(w2, {16, 16})}, {shaped(h2, {2, 16})}));
    graph.append(node("aten::sum", {shaped(h2, {2, 16})}, {scalar(loss)}));
    Node fill = node("aten::fill_.Scalar", {scalar(seed)}, {}, {0});
    fill.initializes.push_back(0);
    graph.append(std::move(fill));
    graph.append(node("aten::mm", {PipelineStep::transposed(shaped(a1, {2, 16})), shaped(h2, {2, 16})}, {shaped(gw2, {16, 16})}));
    graph.append(node("aten::mm", {shaped(h2, {2, 16}), PipelineStep::transposed(shaped(w2, {16, 16}))}, {shaped(ga1, {2, 16})}));
    graph.append(node("aten::mm", {PipelineStep::transposed(shaped(x, {2, 16})), shaped(ga1, {2, 16})}, {shaped(gw1, {16, 16})}));
    graph.append(node("aten::mul.Tensor", {shaped(gw1, {16, 16}), shaped(gw1, {16, 16})}, {shaped(t1, {16, 16})}));
    graph.append(node("aten::add_.Tensor", {shaped(w1, {16, 16}), shaped(t1, {16, 16})}, {}, {0}));
    graph.append(node("aten::mul.Tensor", {shaped(gw2, {16, 16}), shaped(gw2, {16, 16})}, {shaped(t2, {16, 16})}));
    graph.append(node("aten::add_.Tensor", {shaped(w2, {16, 16}), shaped(t2, {16, 16})}, {}, {0}));
    for (auto* b : {&h1, &a1, &h2, &seed, &gw1, &gw2, &ga1, &x, &t1, &t2}) (*b)->release_frontend();
  }
};

TEST_F(ParallelSearchTest, EveryCandidateIsLoweredAndTimedAndTheCheapestIsSelected) {
  const SearchResult r = search(1 << 30, 0, {}, {}, uint64_t{1} << 30, /*skip_dominated=*/false);
  ASSERT_FALSE(r.candidates.empty());
  EXPECT_EQ(r.tokens_per_step, 8);  // x's rows: floats, so samples
  EXPECT_EQ(r.feasible, r.candidates.size());
  EXPECT_EQ(r.slower + r.larger, 0u);
  ASSERT_GE(r.selected, 0);
  const CandidateResult& chosen = r.candidates[static_cast<size_t>(r.selected)];
  for (const auto& c : r.candidates) {
    EXPECT_TRUE(c.dropped.empty()) << c.dropped;
    EXPECT_GT(c.step_ms, 0);
    EXPECT_EQ(c.peak_bytes.size(), 2u);
    EXPECT_GE(c.step_ms, chosen.step_ms);
    if (&c != &chosen) {
      EXPECT_FALSE(c.plan) << "only the selected plan is kept";
    }
  }
  ASSERT_TRUE(chosen.plan);
  EXPECT_EQ(chosen.plan->num_devices, 2);
  const runtime::ParallelSizes s = runtime::parallel_layout(chosen.config, 2);
  EXPECT_EQ(chosen.config.batch_per_device * s.dp * chosen.config.num_micro_batches, 8);
  EXPECT_NEAR(chosen.tokens_per_s, 8 / (chosen.step_ms / 1e3), 1e-6 * chosen.tokens_per_s);
}

// The search finds the graph's linear pairs once and hands them to every candidate with TP: each one's
// figures are those of its layout lowered alone, which finds them itself.
TEST_F(ParallelSearchTest, TensorParallelCandidatesSplitThePairsAsTheirLayoutAloneDoes) {
  const SearchResult r = search(1 << 30);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step_.graph);
  size_t checked = 0;
  for (const CandidateResult& cand : r.candidates) {
    if (cand.config.tp < 2 || cand.config.recomputation || !cand.dropped.empty()) continue;
    const auto alone = plan_step({.graph = step_.graph, .canonical = c, .devices = 2, .parallelism = cand.config});
    EXPECT_NE(alone->report.summary.find("1 linear pair(s) split over 2 ranks"), std::string::npos)
        << alone->report.summary;
    std::vector<uint64_t> peaks;
    for (const auto& program : alone->programs) peaks.push_back(program.peak_bytes);
    EXPECT_EQ(cand.peak_bytes, peaks) << runtime::format_parallel_config(cand.config);
    ++checked;
  }
  EXPECT_GT(checked, 0u);
}

// Recomputation only adds ops to a layout's programs: where the layout fits without it, the candidate that
// recomputes is not lowered (its twin named), and lowering it anyway shows it would not have won.
TEST_F(ParallelSearchTest, RecomputingCandidatesAreLoweredOnlyWhereTheirTwinDoesNotFit) {
  const SearchResult all = search(1 << 30, 0, {}, {}, uint64_t{1} << 30, /*skip_dominated=*/false);
  const SearchResult some = search(1 << 30);
  ASSERT_EQ(all.candidates.size(), some.candidates.size());
  EXPECT_GT(some.slower, 0u);
  EXPECT_EQ(some.larger, 0u) << "everything fits";
  EXPECT_EQ(some.feasible + some.slower, all.feasible);
  EXPECT_EQ(some.selected, all.selected);
  size_t recomputing = 0;
  for (size_t i = 0; i < some.candidates.size(); ++i) {
    const CandidateResult& c = some.candidates[i];
    recomputing += c.config.recomputation ? 1 : 0;
    if (c.dominated_by < 0) {
      EXPECT_FALSE(c.dropped.find("not lowered") == 0) << c.dropped;
      continue;
    }
    const CandidateResult& twin = some.candidates[static_cast<size_t>(c.dominated_by)];
    EXPECT_TRUE(c.config.recomputation);
    EXPECT_FALSE(twin.config.recomputation);
    runtime::ParallelConfig plain = c.config;
    plain.recomputation = false;
    plain.batch_per_device = twin.config.batch_per_device;  // set on the selected one
    EXPECT_EQ(twin.config, plain);
    EXPECT_TRUE(twin.dropped.empty()) << twin.dropped;
    EXPECT_NE(c.dropped.find("not lowered"), std::string::npos) << c.dropped;
    EXPECT_TRUE(c.peak_bytes.empty()) << "never lowered";
    EXPECT_GE(all.candidates[i].step_ms, all.candidates[static_cast<size_t>(c.dominated_by)].step_ms)
        << runtime::format_parallel_config(c.config);
  }
  EXPECT_EQ(some.slower, recomputing) << "every layout fits without recomputation here";
  // Where the layout without recomputation does not fit (here: may not be lowered), the one with it is lowered
  // and timed.
  const SearchResult only = search(1 << 30, 0, [](const runtime::ParallelConfig& c) { return c.recomputation; });
  EXPECT_EQ(only.slower, 0u);
  EXPECT_EQ(only.feasible, recomputing);
  for (const auto& c : only.candidates)
    if (c.config.recomputation) { EXPECT_TRUE(c.dropped.empty()) << c.dropped; }
}

// Recomputation drops values of the forward pass and makes them again: a layout without it that is over a
// device's memory at a moment holding none of them (the optimizer's update, say), or whose other values alone
// are over it at some moment, is over it with recomputation too. Such a twin's recomputing candidate is not
// lowered, and lowering it anyway shows it would not have fitted.
TEST_F(ParallelSearchTest, RecomputingCandidatesAreNotLoweredWhereTheirTwinIsOverOutsideTheForwardPass) {
  runtime::set_op_facts(runtime::intern_op("aten::mul.Tensor"), {.pointwise = true});
  const UpdateHeavyStep heavy(vm_, 2);
  graph_ = &heavy.graph;
  const SearchResult all = search(1 << 30, 0, {}, {}, uint64_t{1} << 30, /*skip_dominated=*/false);
  std::vector<uint64_t> capacities;
  for (const auto& c : all.candidates)
    if (!c.config.recomputation) capacities.push_back(c.max_peak() - 1);
  std::sort(capacities.begin(), capacities.end());
  capacities.erase(std::unique(capacities.begin(), capacities.end()), capacities.end());
  size_t skipped = 0;
  for (uint64_t capacity : capacities) {
    const SearchResult every = search(capacity, 0, {}, {}, uint64_t{1} << 30, /*skip_dominated=*/false);
    const SearchResult some = search(capacity);
    ASSERT_EQ(every.candidates.size(), some.candidates.size());
    EXPECT_EQ(some.selected, every.selected) << "capacity " << capacity;
    for (size_t i = 0; i < some.candidates.size(); ++i) {
      const CandidateResult& c = some.candidates[i];
      if (c.dominance != CandidateResult::Dominance::kOverAnyway) continue;
      ++skipped;
      const CandidateResult& twin = some.candidates[static_cast<size_t>(c.dominated_by)];
      EXPECT_TRUE(c.config.recomputation);
      EXPECT_FALSE(twin.config.recomputation);
      EXPECT_EQ(twin.dropped.find("out of memory"), 0u) << twin.dropped;
      EXPECT_TRUE(c.dropped.find("holding no value of the forward pass") != std::string::npos ||
                  c.dropped.find("of values recomputation does not drop") != std::string::npos)
          << c.dropped;
      EXPECT_TRUE(c.peak_bytes.empty()) << "never lowered";
      EXPECT_EQ(every.candidates[i].dropped.find("out of memory"), 0u)
          << "capacity " << capacity << ", " << runtime::format_parallel_config(c.config) << ": "
          << every.candidates[i].dropped;
    }
  }
  EXPECT_GT(skipped, 0u) << "some twin is over the memory in its update";
}

// Where the twin is over the memory while the forward pass's values are held, recomputation may bring the
// layout under it: those recomputing candidates are lowered, and some fit where their twin does not.
TEST_F(ParallelSearchTest, RecomputingCandidatesAreLoweredWhereTheirTwinIsOverInTheForwardPass) {
  runtime::set_op_facts(runtime::intern_op("aten::mul.Tensor"), {.pointwise = true});
  const Blocks blocks(vm_, 10, 2);
  graph_ = &blocks.graph;
  const SearchResult all = search(1 << 30, 0, {}, {}, uint64_t{1} << 30, /*skip_dominated=*/false);
  std::vector<uint64_t> capacities;
  for (const auto& c : all.candidates)
    if (!c.config.recomputation) capacities.push_back(c.max_peak() - 1);
  size_t rescued = 0;
  for (uint64_t capacity : capacities) {
    const SearchResult some = search(capacity);
    for (const CandidateResult& c : some.candidates) {
      if (!c.config.recomputation || !c.dropped.empty()) continue;
      runtime::ParallelConfig plain = c.config;
      plain.recomputation = 0;
      const auto twin = std::find_if(some.candidates.begin(), some.candidates.end(), [&](const CandidateResult& t) {
        runtime::ParallelConfig x = t.config;
        x.batch_per_device = plain.batch_per_device;
        return x == plain;
      });
      ASSERT_NE(twin, some.candidates.end());
      if (twin->dropped.find("out of memory") == 0) ++rescued;
    }
  }
  EXPECT_GT(rescued, 0u) << "recomputation brings some layout under the memory";
}

// Every candidate's bound from the graph alone (step_bound.h) is at most what the simulator predicts for its
// plan, on each of the tests' steps; a pipeline of one micro-batch waits for its other stage, which batch
// splitting over the same devices does not.
TEST_F(ParallelSearchTest, NoCandidateIsPredictedFasterThanItsBound) {
  runtime::set_op_facts(runtime::intern_op("aten::mul.Tensor"), {.pointwise = true});
  const UpdateHeavyStep heavy(vm_, 2);
  const Blocks blocks(vm_, 10, 2);
  size_t timed = 0;
  for (const runtime::StepGraph* g : std::vector<const runtime::StepGraph*>{&step_.graph, &heavy.graph, &blocks.graph}) {
    graph_ = g;
    const SearchResult r = search(1 << 30, 0, {}, {}, uint64_t{1} << 30, /*skip_dominated=*/false);
    const CandidateResult* split = nullptr;
    const CandidateResult* staged = nullptr;
    for (const CandidateResult& c : r.candidates) {
      EXPECT_GT(c.bound_ms, 0) << runtime::format_parallel_config(c.config);
      if (c.step_ms <= 0) continue;
      ++timed;
      EXPECT_LE(c.bound_ms, c.step_ms * (1 + 1e-9)) << runtime::format_parallel_config(c.config);
      const runtime::ParallelSizes s = runtime::parallel_layout(c.config, 2);
      if (s.dp == 2 && c.config.num_micro_batches == 1 && !c.config.recomputation) split = &c;
      if (s.pp == 2 && c.config.num_micro_batches == 1 && !c.config.recomputation) staged = &c;
    }
    ASSERT_TRUE(split && staged);
    EXPECT_GT(staged->bound_ms, split->bound_ms);
  }
  EXPECT_GT(timed, 10u);
}

// Sharding over the replicas leaves less on each device: where no layout with distribute_param fits, the same
// layout without it is not lowered (its sibling named), and lowering it anyway shows it would not have fitted.
TEST_F(ParallelSearchTest, CandidatesWithoutDistributeParamAreLoweredOnlyWhereASiblingWithItFits) {
  // A capacity under every candidate with distribute_param (which takes ZeRO-2's leaner plan when ZeRO-3's
  // does not fit: lowered each time under the capacity asked).
  uint64_t capacity = uint64_t{1} << 30;
  SearchResult every;
  for (int tries = 0; tries < 8; ++tries) {
    every = search(capacity, 0, {}, {}, uint64_t{1} << 30, /*skip_dominated=*/false);
    uint64_t least = UINT64_MAX;
    bool fits = false;
    for (const auto& c : every.candidates)
      if (c.config.distribute_param && !c.peak_bytes.empty()) {
        least = std::min(least, c.max_peak());
        fits = fits || c.dropped.empty();
      }
    ASSERT_LT(least, UINT64_MAX) << "two devices: replicas to shard over";
    if (!fits) break;
    capacity = least - 1;
  }
  for (const auto& c : every.candidates)
    if (c.config.distribute_param) { ASSERT_FALSE(c.dropped.empty()) << runtime::format_parallel_config(c.config); }
  const SearchResult tight = search(capacity);
  ASSERT_EQ(tight.candidates.size(), every.candidates.size());
  EXPECT_GT(tight.larger, 0u);
  EXPECT_EQ(tight.selected, every.selected);
  for (size_t i = 0; i < tight.candidates.size(); ++i) {
    const CandidateResult& c = tight.candidates[i];
    if (c.dominance != CandidateResult::Dominance::kLarger) continue;
    const CandidateResult& zero = tight.candidates[static_cast<size_t>(c.dominated_by)];
    EXPECT_FALSE(c.config.distribute_param);
    EXPECT_TRUE(zero.config.distribute_param);
    EXPECT_EQ(zero.config.num_stages, c.config.num_stages);
    EXPECT_EQ(zero.config.num_micro_batches, c.config.num_micro_batches);
    EXPECT_EQ(zero.config.recomputation, c.config.recomputation);
    // Over the memory: lowered, or left out as over it anyway (its twin without recomputation decides).
    EXPECT_TRUE(zero.dropped.find("out of memory") == 0 || zero.dominance == CandidateResult::Dominance::kOverAnyway)
        << zero.dropped;
    EXPECT_NE(c.dropped.find("not lowered"), std::string::npos) << c.dropped;
    EXPECT_EQ(every.candidates[i].dropped.find("out of memory"), 0u)
        << runtime::format_parallel_config(c.config) << ": " << every.candidates[i].dropped;
  }
}

TEST_F(ParallelSearchTest, CandidatesOverTheMemoryAreDroppedAndNamed) {
  const SearchResult all = search(1 << 30, 0, {}, {}, uint64_t{1} << 30, /*skip_dominated=*/false);
  std::vector<uint64_t> peaks;
  for (const auto& c : all.candidates) peaks.push_back(c.max_peak());
  std::sort(peaks.begin(), peaks.end());
  ASSERT_LT(peaks.front(), peaks.back()) << "the layouts differ in memory";
  const uint64_t capacity = peaks.front();  // only the leanest fit
  const SearchResult some = search(capacity);
  EXPECT_GT(some.feasible, 0u);
  EXPECT_LT(some.feasible, some.candidates.size());
  EXPECT_EQ(some.lowered_and_fitting, some.feasible);
  ASSERT_GE(some.selected, 0);
  EXPECT_LE(some.candidates[static_cast<size_t>(some.selected)].max_peak(), capacity);
  for (const auto& c : some.candidates)
    if (!c.dropped.empty() && c.dominance == CandidateResult::Dominance::kNone) {
      EXPECT_NE(c.dropped.find("out of memory"), std::string::npos) << c.dropped;
    }
  // Under the leanest: the search widens to more micro-batches (with stages or without) before giving up.
  const SearchResult wider = search(peaks.front() - 1);
  EXPECT_GT(wider.widened, 0u);
  EXPECT_EQ(wider.candidates.size(), all.candidates.size() + wider.widened);
  for (size_t i = all.candidates.size(); i < wider.candidates.size(); ++i) {
    EXPECT_TRUE(wider.candidates[i].config.num_micro_batches > 1) << runtime::format_parallel_config(wider.candidates[i].config);
    EXPECT_GT(wider.candidates[i].bound_ms, 0) << "the widened ones are bounded too";
  }
  const SearchResult none = search(1);
  EXPECT_EQ(none.selected, -1);
  EXPECT_EQ(none.feasible, 0u);
  ASSERT_GE(none.least_memory(), 0);
  EXPECT_LE(none.candidates[static_cast<size_t>(none.least_memory())].max_peak(), peaks.front());
}

TEST_F(ParallelSearchTest, ThePoolDoesNotChangeTheOutcome) {
  const SearchResult one = search(1 << 30, 1), four = search(1 << 30, 4);
  ASSERT_EQ(one.candidates.size(), four.candidates.size());
  EXPECT_EQ(one.selected, four.selected);
  for (size_t i = 0; i < one.candidates.size(); ++i) {
    EXPECT_EQ(one.candidates[i].config, four.candidates[i].config);
    EXPECT_EQ(one.candidates[i].peak_bytes, four.candidates[i].peak_bytes);
    EXPECT_DOUBLE_EQ(one.candidates[i].step_ms, four.candidates[i].step_ms);
  }
}

TEST_F(ParallelSearchTest, PlansPastTheKeptBytesAreLoweredAgainWithTheSameOutcome) {
  const SearchResult kept = search(1 << 30, 2);
  EXPECT_EQ(kept.lowered_again, 0u);
  const SearchResult lean = search(1 << 30, 2, {}, {}, 1);  // no plan fits one byte: every one is lowered again
  EXPECT_EQ(lean.lowered_again, lean.lowered_and_fitting);
  ASSERT_EQ(kept.candidates.size(), lean.candidates.size());
  EXPECT_EQ(kept.selected, lean.selected);
  for (size_t i = 0; i < kept.candidates.size(); ++i) {
    EXPECT_EQ(kept.candidates[i].peak_bytes, lean.candidates[i].peak_bytes);
    EXPECT_DOUBLE_EQ(kept.candidates[i].step_ms, lean.candidates[i].step_ms);
  }
  ASSERT_GE(lean.selected, 0);
  const auto& chosen = lean.candidates[static_cast<size_t>(lean.selected)];
  ASSERT_TRUE(chosen.plan) << "the selected plan is lowered again to be run";
  EXPECT_EQ(chosen.plan->programs.size(), kept.candidates[static_cast<size_t>(kept.selected)].plan->programs.size());
}

// Plans kept between lowering and timing: a quarter of the machine's memory by default, never under 2 GiB.
TEST(KeptPlanBytesTest, AQuarterOfTheMachinesMemoryAtLeastTwoGiB) {
  const uint64_t physical = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  EXPECT_EQ(default_kept_plan_bytes(), std::max<uint64_t>(uint64_t{2} << 30, physical / 4));
  EXPECT_GE(default_kept_plan_bytes(), uint64_t{2} << 30);
}

TEST_F(ParallelSearchTest, TwoLanesProgramsGiveTheSameFiguresAndTheSelectedOneRunsOnEveryDevice) {
  PipelineStep step(vm_, 8);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  const ProfileTiming timing(profile_, 8);
  auto run = [&](bool representative, std::function<bool(const runtime::ParallelConfig&)> admissible = {}) {
    return search_parallel_layouts({.graph = step.graph,
                                    .canonical = c,
                                    .devices = 8,
                                    .used_bytes = std::vector<uint64_t>(8, 0),
                                    .capacity = 1 << 30,
                                    .margin = 0,
                                    .fusion = false,
                                    .fusion_limits = {},
                                    .timing = timing,
                                    .threads = 0,
                                    .max_micro_batches = 8,
                                    .kept_plan_bytes = default_kept_plan_bytes(),
                                    .autocast = false,
                                    .admissible = std::move(admissible),
                                    .inadmissible_reason = "not a pipeline with replicas",
                                    .representative = representative});
  };
  const SearchResult full = run(false), quick = run(true);
  ASSERT_EQ(full.candidates.size(), quick.candidates.size());
  size_t represented = 0;
  for (size_t i = 0; i < full.candidates.size(); ++i) {
    const CandidateResult &a = full.candidates[i], &b = quick.candidates[i];
    EXPECT_EQ(a.config, b.config);
    EXPECT_EQ(a.peak_bytes, b.peak_bytes) << runtime::format_parallel_config(a.config);
    EXPECT_NEAR(a.step_ms, b.step_ms, 1e-9 * a.step_ms) << runtime::format_parallel_config(a.config);
    const runtime::ParallelSizes s = runtime::parallel_layout(a.config, 8);
    represented += s.dp * s.tp > 2 && (s.pp > 1 || a.config.num_micro_batches > 1) ? 1 : 0;
  }
  EXPECT_GT(represented, 0u) << "some candidates are pipelines with replicas";
  EXPECT_EQ(quick.selected, full.selected);
  ASSERT_GE(quick.selected, 0);
  const auto& chosen = quick.candidates[static_cast<size_t>(quick.selected)];
  ASSERT_TRUE(chosen.plan);
  EXPECT_TRUE(chosen.plan->report.stand_ins.empty()) << "the plan that runs has every device's program";
  EXPECT_EQ(chosen.plan->programs.size(), full.candidates[static_cast<size_t>(full.selected)].plan->programs.size());
  // Pipelines with replicas only: the one selected was lowered for two lanes, then again for every device.
  const SearchResult piped = run(true, [](const runtime::ParallelConfig& p) {
    const auto s = runtime::parallel_layout(p, 8);
    return s.dp == 4 && s.pp == 2;
  });
  ASSERT_GE(piped.selected, 0);
  const auto& picked = piped.candidates[static_cast<size_t>(piped.selected)];
  ASSERT_TRUE(picked.plan);
  EXPECT_EQ(picked.plan->programs.size(), 8u);
  EXPECT_TRUE(picked.plan->report.stand_ins.empty());
  EXPECT_EQ(picked.peak_bytes, full.candidates[static_cast<size_t>(piped.selected)].peak_bytes);
  EXPECT_NEAR(picked.step_ms, full.candidates[static_cast<size_t>(piped.selected)].step_ms, 1e-9 * picked.step_ms);
}

TEST_F(ParallelSearchTest, InadmissibleCandidatesAreDroppedAndProgressIsReportedInOrder) {
  std::vector<SearchPhase> phases;
  const SearchResult r = search(
      1 << 30, 0, [](const runtime::ParallelConfig& c) { return c.num_stages == 1; },
      [&](SearchPhase p, const SearchResult&) { phases.push_back(p); });
  EXPECT_EQ(phases, (std::vector<SearchPhase>{SearchPhase::kEnumerated, SearchPhase::kLowered, SearchPhase::kTimed}));
  for (const auto& c : r.candidates)
    if (c.dominated_by < 0) { EXPECT_EQ(c.dropped.empty(), c.config.num_stages == 1) << c.dropped; }
  ASSERT_GE(r.selected, 0);
  EXPECT_EQ(r.candidates[static_cast<size_t>(r.selected)].config.num_stages, 1);
}

}  // namespace
}  // namespace moreh::scheduler
