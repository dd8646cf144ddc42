#include "scheduler/lowering/pipeline_planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <utility>

#include "pipeline_test_graph.h"
#include "runtime/base/data_type.h"
#include "runtime/exec/executor.h"
#include "runtime/plan/point_to_point.h"
#include "scheduler/analysis/plan_timeline.h"
#include "scheduler/lowering/stage_cut.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;
using runtime::Instruction;
using runtime::LocalLaunch;
using runtime::PlacementKind;
using Kind = Instruction::Kind;

size_t count(const runtime::DeviceProgram& p, Kind k, uint32_t index = UINT32_MAX) {
  return static_cast<size_t>(std::count_if(p.code.begin(), p.code.end(), [&](const Instruction& i) {
    return i.kind == k && (index == UINT32_MAX || i.index == index);
  }));
}

class PipelinePlannerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::register_data_type(6, runtime::DataType::kFloat32);
    runtime::set_op_facts(runtime::intern_op("aten::relu"), {.pointwise = true});
  }
  uint32_t slot(const runtime::CanonicalGraph& c, const std::shared_ptr<runtime::Buffer>& b) {
    return static_cast<uint32_t>(std::find(c.bindings.begin(), c.bindings.end(), b) - c.bindings.begin());
  }
  runtime::VirtualMemory vm;
};

TEST_F(PipelinePlannerTest, TwoStagesRunTheirMicroBatchesAndSendActivationsForward) {
  PipelineStep step(vm, 2);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  const PlannedStep plan = compile_pipeline_plan(step.graph, c, {.stages = 2, .dp = 1, .micro_batches = 2}, {8});
  ASSERT_EQ(plan.programs.size(), 2u);
  EXPECT_EQ(plan.report.split_rows, 8) << plan.report.summary;
  EXPECT_EQ(plan.report.replicated_fallbacks, 0u) << plan.report.summary;
  EXPECT_FALSE(runtime::point_to_point_mismatch(plan, [&](uint32_t s) { return c.buffers[s].bytes; }));
  const auto& first = plan.programs[0];
  const auto& second = plan.programs[1];
  // Stage 0 runs mm1 and relu once per micro-batch, on rows 0..3 then 4..7.
  EXPECT_EQ(count(first, Kind::kLaunch, kMm1), 2u);
  EXPECT_EQ(count(second, Kind::kLaunch, kMm1), 0u);
  EXPECT_EQ(count(second, Kind::kLaunch, kMm2), 2u);
  const auto mm1 = std::find_if(first.code.begin(), first.code.end(),
                                [](const Instruction& i) { return i.kind == Kind::kLaunch && i.index == kMm1; });
  ASSERT_NE(mm1->aux, 0u);
  EXPECT_EQ(first.launches[mm1->aux - 1].rows.begin, 0);
  EXPECT_EQ(first.launches[mm1->aux - 1].rows.count, 4);
  // a1 goes to stage 1 a micro-batch (4 rows of 16 bytes) at a time. Each side holds one micro-batch of it
  // at a time (a ring of one place): stage 0 sends each as soon as it is made, and stage 1, the last stage,
  // runs a micro-batch's backward (gw2 reads a1) right after its forward under 1F1B.
  const uint32_t a1 = slot(c, step.a1);
  EXPECT_EQ(count(first, Kind::kSend, a1), 2u);
  EXPECT_EQ(count(second, Kind::kRecv, a1), 2u);
  auto ranges = [&](const runtime::DeviceProgram& p, Kind k) {
    std::vector<std::pair<uint64_t, uint64_t>> out;  // (offset, block bytes)
    for (const auto& ins : p.code)
      if (ins.kind == k && ins.index == a1) {
        const runtime::ByteRange& r = p.ranges.at(ins.range - 1);
        EXPECT_EQ(r.bytes, 64u);
        out.push_back({r.offset, r.block_bytes});
      }
    return out;
  };
  using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(ranges(first, Kind::kSend), (Ranges{{0, 64}, {0, 64}}));
  EXPECT_EQ(ranges(second, Kind::kRecv), (Ranges{{0, 64}, {0, 64}}));
  // Between two micro-batches' uses that block takes no memory: stage 0 makes it for each micro-batch and
  // lets it go after sending it; stage 1 lets it go after the micro-batch's last use and receives the next
  // into a block bound anew.
  EXPECT_EQ(count(first, Kind::kAllocate, a1), 2u);
  EXPECT_EQ(count(first, Kind::kRelease, a1), 2u);
  EXPECT_EQ(count(second, Kind::kRelease, a1), 2u);
  for (const auto* p : {&first, &second}) {  // no instruction touches it between a release and its next making
    bool held = false;
    for (const auto& ins : p->code) {
      if (ins.index != a1 || ins.kind == Kind::kLaunch) continue;
      if (ins.kind == Kind::kRelease) EXPECT_TRUE(std::exchange(held, false));
      else if (ins.kind == Kind::kAllocate || ins.kind == Kind::kRecv) held = true;
    }
    EXPECT_FALSE(held);
  }
  // The weight gradient of stage 0 is a sum over the micro-batches: the second one accumulates.
  const uint32_t gw1 = slot(c, step.gw1);
  std::vector<LocalLaunch::Join> joins;
  for (const auto& ins : first.code)
    if (ins.kind == Kind::kLaunch && ins.index == kGw1) joins.push_back(first.launches.at(ins.aux - 1).joins.at(0));
  EXPECT_EQ(joins, (std::vector<LocalLaunch::Join>{LocalLaunch::Join::kAccumulate, LocalLaunch::Join::kAccumulate}));
  EXPECT_EQ(count(first, Kind::kLaunch, kUpdate1), 1u);  // the update runs once
  EXPECT_EQ(count(first, Kind::kRelease, gw1), 1u);
  // Each parameter ends on its stage: w1 on device 0, w2 on device 1, each sent there from device 0 once.
  EXPECT_EQ(plan.final_placements[slot(c, step.w1)].devices, 0b01u);
  EXPECT_EQ(plan.final_placements[slot(c, step.w2)].devices, 0b10u);
  EXPECT_EQ(count(first, Kind::kSend, slot(c, step.w2)), 1u);
  EXPECT_EQ(count(first, Kind::kRelease, slot(c, step.w2)), 1u);  // device 0 no longer holds it
  EXPECT_EQ(count(first, Kind::kSend, slot(c, step.w1)), 0u);
  EXPECT_GT(first.peak_bytes, 0u);
}

// A step run once that nothing in the phase needs sooner (an optimizer's state made in the first step: zeroed,
// then the gradient added in) runs after every micro-batch, not in the first one's turn.
TEST_F(PipelinePlannerTest, AStepRunOnceThatNoMicroBatchNeedsRunsAfterThemAll) {
  PipelineStep step(vm, 2);
  auto state = std::make_shared<runtime::Buffer>(vm, 4 * 16, 2);
  step.graph.append(node("aten::zero_", {shaped(state, {4, 4})}, {}, {0}));
  step.graph.append(node("aten::add_.Tensor", {shaped(state, {4, 4}), shaped(step.gw1, {4, 4})}, {}, {0}));
  const size_t zero = step.graph.size() - 2;
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  const PlannedStep plan = compile_pipeline_plan(step.graph, c, {.stages = 2, .dp = 1, .micro_batches = 2}, {8});
  EXPECT_NE(plan.report.summary.find("run once after every micro-batch"), std::string::npos) << plan.report.summary;
  const auto& first = plan.programs[0];
  auto last_launch = [&](size_t node) {
    size_t at = 0;
    for (size_t pc = 0; pc < first.code.size(); ++pc)
      if (first.code[pc].kind == Kind::kLaunch && first.code[pc].index == node) at = pc;
    return at;
  };
  ASSERT_EQ(count(first, Kind::kLaunch, static_cast<uint32_t>(zero)), 1u);
  EXPECT_GT(last_launch(zero), last_launch(kGw1));  // after micro-batch 1's gradient, not before
  EXPECT_GT(last_launch(zero), last_launch(kMm1));
}

TEST_F(PipelinePlannerTest, ReplicasOfAStageAllReduceTheirGradientsInTheirGroup) {
  PipelineStep step(vm, 4);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  const PlannedStep plan = compile_pipeline_plan(step.graph, c, {.stages = 2, .dp = 2, .micro_batches = 2}, {8});
  ASSERT_EQ(plan.programs.size(), 4u);
  EXPECT_EQ(plan.groups, (std::vector<std::vector<int>>{{0, 2}, {1, 3}}));
  EXPECT_FALSE(runtime::point_to_point_mismatch(plan, [&](uint32_t s) { return c.buffers[s].bytes; }));
  const uint32_t gw1 = slot(c, step.gw1), gw2 = slot(c, step.gw2);
  for (int d : {0, 2}) {
    const auto& p = plan.programs[d];
    ASSERT_EQ(count(p, Kind::kAllReduce, gw1), 1u);
    EXPECT_EQ(std::find_if(p.code.begin(), p.code.end(), [&](const Instruction& i) {
                return i.kind == Kind::kAllReduce && i.index == gw1;
              })->group, 1);
    EXPECT_EQ(count(p, Kind::kAllReduce, gw2), 0u);
    // Replica d / 2 holds rows 4·(d/2)..: its micro-batches are 2 rows each.
    for (const auto& l : p.launches) EXPECT_EQ(l.rows.count, 2);
  }
  for (int d : {1, 3}) EXPECT_EQ(count(plan.programs[d], Kind::kAllReduce, gw2), 1u);
  EXPECT_EQ(plan.final_placements[slot(c, step.w2)].devices, 0b1010u);
}

TEST_F(PipelinePlannerTest, TwoLanesProgramsStandForAllWhenEveryReplicaHasAsManyRows) {
  PipelineStep step(vm, 8);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  // The same instructions (kind and slot), but for sends to devices not in `kept` (device 0 sends the step's
  // input to every lane; those to lanes left out are not emitted).
  auto same_code = [](const runtime::DeviceProgram& a, const runtime::DeviceProgram& b, const std::vector<int>& kept) {
    auto listed = [&](const runtime::DeviceProgram& p) {
      std::vector<std::pair<Kind, uint32_t>> out;
      for (const Instruction& i : p.code)
        if (i.kind != Kind::kSend || std::find(kept.begin(), kept.end(), static_cast<int>(i.aux)) != kept.end())
          out.emplace_back(i.kind, i.index);
      return out;
    };
    return listed(a) == listed(b);
  };
  const std::vector<int> every{0, 1, 2, 3, 4, 5, 6, 7};
  for (const PipelineOptions& all : {PipelineOptions{.stages = 2, .dp = 4, .micro_batches = 2},
                                     PipelineOptions{.stages = 2, .dp = 4, .micro_batches = 2, .distribute_param = true},
                                     PipelineOptions{.stages = 2, .dp = 2, .tp = 2, .micro_batches = 2}}) {
    SCOPED_TRACE(::testing::Message() << "dp " << all.dp << " tp " << all.tp << " zero " << all.distribute_param);
    PipelineOptions two = all;
    two.representative = true;
    const PlannedStep full = compile_pipeline_plan(step.graph, c, all, {8});
    const PlannedStep rep = compile_pipeline_plan(step.graph, c, two, {8});
    ASSERT_EQ(full.programs.size(), 8u);
    ASSERT_EQ(rep.programs.size(), 4u) << "two lanes of two stages";
    EXPECT_TRUE(full.report.stand_ins.empty());
    ASSERT_EQ(rep.report.stand_ins.size(), 8u);
    EXPECT_EQ(rep.num_devices, 8);
    EXPECT_EQ(rep.groups, full.groups);
    EXPECT_EQ(rep.final_placements, full.final_placements);
    std::vector<int> emitted;
    for (const auto& p : rep.programs) emitted.push_back(p.device);
    auto rep_program = [&](int d) -> const runtime::DeviceProgram& {
      return *std::find_if(rep.programs.begin(), rep.programs.end(), [&](const auto& p) { return p.device == d; });
    };
    for (int d = 0; d < 8; ++d) {
      const int in = rep.report.stand_ins[static_cast<size_t>(d)];
      ASSERT_NE(std::find(emitted.begin(), emitted.end(), in), emitted.end()) << "device " << d;
      if (in == d) {
        EXPECT_TRUE(same_code(rep_program(d), full.programs[d], emitted)) << "device " << d;
        // Its launches see what they do in the full plan (split_batch gave views to the emitted lanes only).
        const auto& a = rep_program(d).launches;
        const auto& b = full.programs[static_cast<size_t>(d)].launches;
        ASSERT_EQ(a.size(), b.size()) << "device " << d;
        for (size_t l = 0; l < a.size(); ++l) {
          EXPECT_TRUE(same_views(a[l].inputs, b[l].inputs)) << "device " << d << " launch " << l;
          EXPECT_TRUE(same_views(a[l].outputs, b[l].outputs)) << "device " << d << " launch " << l;
          EXPECT_EQ(a[l].rows.begin, b[l].rows.begin);
          EXPECT_EQ(a[l].rows.count, b[l].rows.count);
        }
      }
      else EXPECT_TRUE(same_code(full.programs[in], full.programs[d], every)) << "device " << d << " like " << in;
      EXPECT_EQ(rep_program(in).peak_bytes, full.programs[d].peak_bytes) << "device " << d << " like " << in;
    }
    EXPECT_EQ(rep.report.stand_ins[0], 0);
    EXPECT_GT(count(full.programs[0], Kind::kSend), count(rep_program(0), Kind::kSend)) << "to the lanes left out";
    // On the clock: the members present meet alone, as they would with the others beside them.
    const PlanTimeline t_full = simulate_plan(full, step.graph), t_rep = simulate_plan(rep, step.graph);
    EXPECT_TRUE(t_rep.stuck.empty()) << t_rep.stuck;
    EXPECT_DOUBLE_EQ(t_rep.makespan, t_full.makespan);
  }
  // Device 0 holds the step's input already; the other lanes' first stage receive it.
  const PlannedStep dp4 = compile_pipeline_plan(step.graph, c, {.stages = 2, .dp = 4, .micro_batches = 2}, {8});
  EXPECT_LT(dp4.programs[0].peak_bytes, dp4.programs[2].peak_bytes);
  // 8 rows over 3 replicas are 3, 3 and 2; two lanes are all there are: every device's program.
  PipelineStep odd(vm, 6);
  const runtime::CanonicalGraph co = runtime::CanonicalGraph::build(odd.graph);
  EXPECT_EQ(compile_pipeline_plan(odd.graph, co, {.stages = 2, .dp = 3, .representative = true}, {8}).programs.size(), 6u);
  PipelineStep pair(vm, 4);
  const runtime::CanonicalGraph cp = runtime::CanonicalGraph::build(pair.graph);
  EXPECT_TRUE(compile_pipeline_plan(pair.graph, cp, {.stages = 2, .dp = 2, .micro_batches = 2, .representative = true}, {8})
                  .report.stand_ins.empty());
}

TEST_F(PipelinePlannerTest, ABatchTooSmallForTheMicroBatchesGetsFewer) {
  PipelineStep step(vm, 2);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step.graph);
  const PlannedStep plan = compile_pipeline_plan(step.graph, c, {.stages = 2, .dp = 1, .micro_batches = 16}, {8});
  EXPECT_NE(plan.report.summary.find("8 (of 16 asked: a micro-batch needs a row) micro-batch(es) per replica"), std::string::npos)
      << plan.report.summary;
  EXPECT_EQ(count(plan.programs[0], Kind::kLaunch, kMm1), 8u);
}

// Gradient clipping's _foreach_mul_(grads, factor): each stage scales its own gradients; only the factor
// (a scalar) travels.
TEST_F(PipelinePlannerTest, AForeachOpRunsOnEachStageOverItsOwnElements) {
  PipelineStep step(vm, 2);
  runtime::StepGraph g;
  for (size_t i = 0; i <= kGw1; ++i) g.append(step.graph.nodes()[i]);
  auto factor = std::make_shared<runtime::Buffer>(vm, 4, 2);
  Node fill = node("aten::fill_.Scalar", {shaped(factor, {})}, {}, {0});
  fill.initializes.push_back(0);
  g.append(std::move(fill));
  Node scale = node("aten::_foreach_mul_.Tensor",
                    {shaped(step.gw1, {4, 4}), shaped(step.gw2, {4, 4}), shaped(factor, {})}, {}, {0, 1});
  scale.input_args = {0, 0, 1};  // self[] (two elements), other
  g.append(std::move(scale));
  g.append(step.graph.nodes()[kUpdate1]);
  g.append(step.graph.nodes()[kUpdate2]);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(g);
  const StageCut cut = cut_stages(g, c, 2);
  ASSERT_EQ(cut.element_stage[kGw1 + 2], (std::vector<int>{0, 1}));
  const PlannedStep plan = compile_pipeline_plan(g, c, {.stages = 2, .dp = 1, .micro_batches = 2}, {8});
  EXPECT_FALSE(runtime::point_to_point_mismatch(plan, [&](uint32_t s) { return c.buffers[s].bytes; }));
  for (int d = 0; d < 2; ++d) {
    const auto& p = plan.programs[d];
    const auto at = std::find_if(p.code.begin(), p.code.end(), [](const Instruction& i) {
      return i.kind == Kind::kLaunch && i.index == kGw1 + 2;
    });
    ASSERT_NE(at, p.code.end());
    EXPECT_EQ(p.launches.at(at->aux - 1).elements, (std::vector<uint32_t>{static_cast<uint32_t>(d)}));
    EXPECT_EQ(count(p, Kind::kSend, slot(c, d == 0 ? step.gw1 : step.gw2)), 0u);  // its gradient stays
  }
  EXPECT_EQ(count(plan.programs[0], Kind::kSend, slot(c, factor)), 1u);  // made on stage 0, read on both
  EXPECT_EQ(plan.final_placements[slot(c, step.w2)].devices, 0b10u);
}

// An MLP of `layers` layers (z = h @ W, h' = relu(z)) whose loss also reads a value the first layer's stage
// makes from the batch (y = -x: a language model's labels), with its backward pass and updates.
struct MlpChain {
  runtime::StepGraph graph;
  std::vector<std::shared_ptr<runtime::Buffer>> keep;
  MlpChain(runtime::VirtualMemory& vm, int layers, int devices) {
    auto make = [&](uint64_t bytes) { return keep.emplace_back(std::make_shared<runtime::Buffer>(vm, bytes, devices)); };
    auto rows = [&](const std::shared_ptr<runtime::Buffer>& b) { return shaped(b, {16, 8}); };
    auto square = [&](const std::shared_ptr<runtime::Buffer>& b) { return shaped(b, {8, 8}); };
    const auto x = make(4 * 128), y = make(4 * 128), loss = make(4), seed = make(4);
    std::vector<std::shared_ptr<runtime::Buffer>> w, h{x}, z;
    graph.append(upload(x, {16, 8}));
    graph.append(node("aten::neg", {rows(x)}, {rows(y)}));
    for (int i = 0; i < layers; ++i) {
      w.push_back(make(4 * 64));
      w.back()->mark_defined();
      w.back()->set_placement({PlacementKind::kHome});
      z.push_back(make(4 * 128));
      h.push_back(make(4 * 128));
      graph.append(node("aten::mm", {rows(h[i]), square(w[i])}, {rows(z[i])}));
      graph.append(node("aten::relu", {rows(z[i])}, {rows(h[i + 1])}));
    }
    const auto prod = make(4 * 128);
    graph.append(node("aten::mul.Tensor", {rows(h.back()), rows(y)}, {rows(prod)}));
    graph.append(node("aten::sum", {rows(prod)}, {shaped(loss, {})}));
    runtime::Node fill = node("aten::fill_.Scalar", {shaped(seed, {})}, {}, {0});
    fill.initializes.push_back(0);
    graph.append(std::move(fill));
    auto g = make(4 * 128);
    graph.append(node("aten::mul.Tensor", {rows(y), shaped(seed, {})}, {rows(g)}));
    std::vector<std::shared_ptr<runtime::Buffer>> gw(static_cast<size_t>(layers));
    for (int i = layers - 1; i >= 0; --i) {
      const auto gz = make(4 * 128);
      graph.append(node("aten::mul.Tensor", {rows(g), rows(z[i])}, {rows(gz)}));  // relu's backward, in shape
      gw[i] = make(4 * 64);
      graph.append(node("aten::mm", {transposed(rows(h[i])), rows(gz)}, {square(gw[i])}));
      if (i > 0) {
        g = make(4 * 128);
        graph.append(node("aten::mm", {rows(gz), transposed(square(w[i]))}, {rows(g)}));
      }
    }
    for (int i = 0; i < layers; ++i) graph.append(node("aten::add_.Tensor", {square(w[i]), square(gw[i])}, {}, {0}));
    for (const auto& b : keep)
      if (std::find(w.begin(), w.end(), b) == w.end()) b->release_frontend();
  }
};

// 1F1B over four stages: what a stage sends goes right after the task that made it, so the step lasts about
// GPipe's (m + p - 1) micro-batches of the busiest stage (its update too), not more: a receiver emitted after
// its sender's next task would find the send behind that task.
TEST_F(PipelinePlannerTest, SendsFollowWhatMadeThemSoTheStepLastsAboutMPlusPMinusOneMicroBatches) {
  runtime::set_op_facts(runtime::intern_op("aten::neg"), {.pointwise = true});
  runtime::set_op_facts(runtime::intern_op("aten::mul.Tensor"), {.pointwise = true});
  const int stages = 4, micro = 8;
  MlpChain chain(vm, 16, stages);
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(chain.graph);
  const PlannedStep plan = compile_pipeline_plan(chain.graph, c, {.stages = stages, .micro_batches = micro}, {16});
  ASSERT_NE(plan.report.summary.find("1F1B"), std::string::npos) << plan.report.summary;
  const PlanTimeline t = simulate_plan(plan, chain.graph);
  ASSERT_TRUE(t.stuck.empty()) << t.stuck;
  const double busiest = *std::max_element(t.busy.begin(), t.busy.end());
  const double gpipe = busiest * (micro + stages - 1) / micro;
  EXPECT_LE(t.makespan, 1.2 * gpipe) << "1.28 when sends waited for the receiver's emission, 1.14 now";
}

TEST(NodeOnElementsTest, KeepsItsElementsAndTheTensorsBesideTheLists) {
  runtime::VirtualMemory vm;
  auto a = std::make_shared<runtime::Buffer>(vm, 16, 1), b = std::make_shared<runtime::Buffer>(vm, 16, 1);
  auto f = std::make_shared<runtime::Buffer>(vm, 4, 1);
  auto na = std::make_shared<runtime::Buffer>(vm, 4, 1), nb = std::make_shared<runtime::Buffer>(vm, 4, 1);
  Node norm = node("aten::_foreach_norm.Scalar", {shaped(a, {4}), shaped(b, {4})}, {shaped(na, {}), shaped(nb, {})});
  norm.input_args = {0, 0};
  norm.output_rets = {0, 0};
  const runtime::ListElements lists = runtime::list_elements(norm);
  EXPECT_EQ(lists.length, 2u);
  EXPECT_EQ(lists.inputs, (std::vector<int>{0, 1}));
  EXPECT_EQ(lists.outputs, (std::vector<int>{0, 1}));
  EXPECT_TRUE(splits_by_element(norm));
  const Node second = runtime::node_on_elements(norm, {1});
  ASSERT_EQ(second.inputs.size(), 1u);
  EXPECT_EQ(second.inputs[0].buffer, b);
  ASSERT_EQ(second.outputs.size(), 1u);
  EXPECT_EQ(second.outputs[0].buffer, nb);
  Node scale = node("aten::_foreach_mul_.Tensor", {shaped(a, {4}), shaped(b, {4}), shaped(f, {})}, {}, {0, 1});
  scale.input_args = {0, 0, 1};
  const Node first = runtime::node_on_elements(scale, {0});
  ASSERT_EQ(first.inputs.size(), 2u);  // a and the factor
  EXPECT_EQ(first.inputs[1].buffer, f);
  EXPECT_EQ(first.written.size(), 1u);
  Node flag = node("aten::_amp_foreach_non_finite_check_and_unscale_",
                   {shaped(a, {4}), shaped(b, {4}), shaped(f, {})}, {}, {0, 1, 2});
  flag.input_args = {0, 0, 1};
  EXPECT_FALSE(splits_by_element(flag));  // every element writes the found-inf flag
}

}  // namespace
}  // namespace moreh::scheduler
