// Plans through the wire: real plans (a pipeline of two stages beside data parallelism, with micro-batches,
// sends, collectives and groups) come back byte for byte; a worker's share holds its programs only; torn,
// flipped and inconsistent payloads are ProtocolErrors, never out-of-range reads.
#include "runtime/worker/plan_codec.h"

#include <gtest/gtest.h>

#include <random>

#include "../../scheduler/lowering/pipeline_test_graph.h"
#include "runtime/base/data_type.h"
#include "runtime/base/errors.h"
#include "scheduler/lowering/pipeline_planner.h"

namespace moreh::runtime {
namespace {

using namespace moreh::testing;
using moreh::testing::PipelineStep;

class PlanCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    register_data_type(6, DataType::kFloat32);
    set_op_facts(intern_op("aten::relu"), {.pointwise = true});
    step_ = std::make_unique<PipelineStep>(vm_, 4);
    const CanonicalGraph c = CanonicalGraph::build(step_->graph);
    plan_ = scheduler::compile_pipeline_plan(step_->graph, c, {.stages = 2, .dp = 2, .micro_batches = 2}, {8});
    plan_.graph_hash = 0x1234abcd;
  }
  VirtualMemory vm_;
  std::unique_ptr<PipelineStep> step_;
  scheduler::PlannedStep plan_;
};

TEST_F(PlanCodecTest, ARealPlanComesBackByteForByte) {
  ASSERT_EQ(plan_.programs.size(), 4u);
  ASSERT_FALSE(plan_.groups.empty());
  const std::string wire = encode_plan(plan_);
  const Plan back = decode_plan(wire);
  EXPECT_EQ(encode_plan(back), wire);
  EXPECT_EQ(back.graph_hash, 0x1234abcdu);
  EXPECT_EQ(back.num_nodes, plan_.num_nodes);
  EXPECT_EQ(back.groups, plan_.groups);
  EXPECT_EQ(back.final_placements, plan_.final_placements);
  ASSERT_EQ(back.programs.size(), plan_.programs.size());
  for (size_t p = 0; p < back.programs.size(); ++p) {
    const auto &a = plan_.programs[p], &b = back.programs[p];
    EXPECT_EQ(b.device, a.device);
    ASSERT_EQ(b.code.size(), a.code.size());
    for (size_t i = 0; i < a.code.size(); ++i) {
      EXPECT_EQ(b.code[i].kind, a.code[i].kind);
      EXPECT_EQ(b.code[i].index, a.code[i].index);
      EXPECT_EQ(b.code[i].aux, a.code[i].aux);
      EXPECT_EQ(b.code[i].tag, a.code[i].tag);
      EXPECT_EQ(b.code[i].group, a.code[i].group);
      EXPECT_EQ(b.code[i].range, a.code[i].range);
    }
    ASSERT_EQ(b.launches.size(), a.launches.size());
    for (size_t l = 0; l < a.launches.size(); ++l) {
      EXPECT_EQ(b.launches[l].rows.begin, a.launches[l].rows.begin);
      EXPECT_EQ(b.launches[l].rows.count, a.launches[l].rows.count);
      EXPECT_EQ(b.launches[l].joins, a.launches[l].joins);
      EXPECT_EQ(b.launches[l].inputs.size(), a.launches[l].inputs.size());
    }
    EXPECT_EQ(b.sizes, a.sizes);
    EXPECT_EQ(b.ranges.size(), a.ranges.size());
  }
}

TEST_F(PlanCodecTest, AWorkersShareHoldsItsDevicesProgramsOnly) {
  const Plan mine = decode_plan(encode_plan(plan_, {2, 3}));
  ASSERT_EQ(mine.programs.size(), 2u);
  EXPECT_EQ(mine.programs[0].device, 2);
  EXPECT_EQ(mine.programs[1].device, 3);
  EXPECT_EQ(mine.slots.size(), plan_.slots.size());  // the slots and groups every program may name
  EXPECT_LT(encode_plan(plan_, {2, 3}).size(), encode_plan(plan_).size());
}

TEST_F(PlanCodecTest, GeneratedKernelsDoNotTravelYet) {
  plan_.programs[1].fused.emplace_back();
  try {
    encode_plan(plan_);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("MOREH_FUSION=off"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(encode_plan(plan_, {0}));  // device 0's program has none
}

TEST_F(PlanCodecTest, TornFlippedAndInconsistentPayloadsAreRefused) {
  const std::string wire = encode_plan(plan_);
  for (size_t n = 0; n < wire.size(); n += 1 + n / 16) EXPECT_THROW(decode_plan(wire.substr(0, n)), ProtocolError) << n;
  EXPECT_THROW(decode_plan(wire + "x"), ProtocolError);
  // Flipped bytes: refused, or a plan whose every index checks out (a flip in a number the executor only reads).
  std::mt19937_64 rng(7);
  int refused = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string bad = wire;
    bad[rng() % bad.size()] ^= static_cast<char>(1 + rng() % 255);
    try {
      decode_plan(bad);
    } catch (const ProtocolError&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  // An instruction naming a launch the program does not have.
  Plan broken = plan_;
  auto& code = broken.programs[0].code;
  const auto launch = std::find_if(code.begin(), code.end(), [](const Instruction& i) { return i.kind == Instruction::Kind::kLaunch; });
  ASSERT_NE(launch, code.end());
  launch->aux = static_cast<uint32_t>(broken.programs[0].launches.size() + 1);
  try {
    decode_plan(encode_plan(broken));
    FAIL();
  } catch (const ProtocolError& e) {
    EXPECT_NE(std::string(e.what()).find("launch that is not there"), std::string::npos) << e.what();
  }
  broken = plan_;
  broken.programs[1].device = 9;
  EXPECT_THROW(decode_plan(encode_plan(broken)), ProtocolError);
}

}  // namespace
}  // namespace moreh::runtime
