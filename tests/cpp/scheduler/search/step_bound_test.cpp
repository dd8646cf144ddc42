// The bound from the graph alone: batch splitting's is every node's roofline time over the devices; a pipeline
// waits for its micro-batches to come through the stages, less so the more micro-batches there are.
#include "scheduler/search/step_bound.h"

#include <gtest/gtest.h>

#include "runtime/base/data_type.h"
#include "../lowering/pipeline_test_graph.h"

namespace moreh::scheduler {
namespace {

using namespace moreh::testing;

class StepBoundTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::register_data_type(6, runtime::DataType::kFloat32);
    runtime::set_op_facts(runtime::intern_op("aten::relu"), {.pointwise = true});
    profile_.name = "toy";
    profile_.fp32_flops = profile_.low_prec_flops = profile_.attention_flops = profile_.elementwise_flops = 1e9;
    profile_.memory_bytes_per_s = 1e9, profile_.launch_s = 1e-6;
  }
  runtime::VirtualMemory vm_;
  PipelineStep step_{vm_, 2};
  DeviceProfile profile_;
};

TEST_F(StepBoundTest, BatchSplittingsBoundIsEveryNodesRooflineOverTheDevices) {
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step_.graph);
  const ProfileTiming timing(profile_);
  const StepBound bound(step_.graph, c, timing, 8);
  double all = 0;
  for (const runtime::Node& n : step_.graph.nodes()) {
    const KernelTime k = timing.kernel(n, nullptr, 1);
    all += k.seconds - k.overhead;
  }
  ASSERT_GT(all, 0);
  runtime::ParallelConfig dp;  // 2 devices: 2 replicas
  EXPECT_DOUBLE_EQ(bound.seconds(dp, 2), all / 2);
  EXPECT_DOUBLE_EQ(bound.seconds(dp, 1), all);
  runtime::ParallelConfig tp;
  tp.tp = 2;
  EXPECT_DOUBLE_EQ(bound.seconds(tp, 2), all / 2);
  runtime::ParallelConfig recomputing = dp;
  recomputing.recomputation = 1;
  EXPECT_DOUBLE_EQ(bound.seconds(recomputing, 2), bound.seconds(dp, 2)) << "recomputation only adds work";
}

TEST_F(StepBoundTest, APipelineWaitsForItsMicroBatchesLessTheMoreThereAre) {
  const runtime::CanonicalGraph c = runtime::CanonicalGraph::build(step_.graph);
  const ProfileTiming timing(profile_);
  const StepBound bound(step_.graph, c, timing, 8);
  runtime::ParallelConfig dp;
  const double split = bound.seconds(dp, 2);
  double last = 0;
  for (int m : {8, 4, 2, 1}) {
    runtime::ParallelConfig pp;
    pp.num_stages = 2;
    pp.num_micro_batches = m;
    const double staged = bound.seconds(pp, 2);
    EXPECT_GT(staged, split) << m << " micro-batch(es): the second stage waits for the first";
    EXPECT_GE(staged, last) << "fewer micro-batches wait longer";
    last = staged;
  }
  runtime::ParallelConfig odd;
  odd.num_stages = 3;  // does not divide 2 devices
  EXPECT_EQ(bound.seconds(odd, 2), 0);
}

}  // namespace
}  // namespace moreh::scheduler
