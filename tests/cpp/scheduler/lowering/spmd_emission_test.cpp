// SPMD steps become one program per device: per-device launches, allocations and factors, and collectives
// over every device or (tensor parallelism beside batch splitting) over one axis of the mesh, with their own
// rows where they move less than the buffer.
#include "scheduler/lowering/spmd_emission.h"

#include <gtest/gtest.h>

#include <memory>

#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::scheduler {
namespace {

using moreh::testing::node;
using moreh::testing::shaped;
using runtime::Instruction;
using Kind = Instruction::Kind;

class SpmdEmissionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::register_data_type(6, runtime::DataType::kFloat32);
    a = std::make_shared<runtime::Buffer>(vm, 64, 4);
    b = std::make_shared<runtime::Buffer>(vm, 64, 4);
    graph.append(node("aten::relu", {shaped(a, {4, 4})}, {shaped(b, {4, 4})}));
    canonical = runtime::CanonicalGraph::build(graph);
  }
  // Two steps on slot 0: an all-reduce along `axis` (with its own rows when given), then a keep of rows along it.
  BatchSplit split(SplitStep::Axis axis, int tensor_ranks, bool geometry) {
    BatchSplit s;
    s.tensor_ranks = tensor_ranks;
    SplitStep reduce{Kind::kAllReduce, 0};
    reduce.axis = axis;
    if (geometry) reduce.geometry = runtime::SlotInfo{runtime::DataType::kFloat32, 32, 1, 1};
    s.steps.push_back(reduce);
    SplitStep keep{Kind::kKeepRows, 0};
    keep.axis = axis;
    s.steps.push_back(keep);
    s.final_placements.resize(canonical.buffers.size());
    s.known.assign(canonical.buffers.size(), true);
    s.slots.resize(canonical.buffers.size());
    return s;
  }
  runtime::VirtualMemory vm;
  std::shared_ptr<runtime::Buffer> a, b;
  runtime::StepGraph graph;
  runtime::CanonicalGraph canonical;
};

TEST_F(SpmdEmissionTest, OverEveryDeviceCollectivesNeedNoGroups) {
  const PlannedStep plan = emit_spmd_plan(graph, canonical, split(SplitStep::Axis::kAll, 1, false), 4);
  EXPECT_TRUE(plan.groups.empty());
  for (const auto& p : plan.programs) {
    EXPECT_EQ(p.code.at(0).group, 0);
    EXPECT_EQ(p.code.at(0).aux, 0u);
    EXPECT_TRUE(p.geometries.empty());
  }
  EXPECT_EQ(plan.report.collective_bytes_per_device, 96u);  // ring: 2 x 3/4 of 64 bytes
}

TEST_F(SpmdEmissionTest, OnAMeshEachAxisHasItsGroupsAndACollectiveItsRows) {
  // 2 pieces x 2 ranks: groups {0, 1} and {2, 3} along the tensor axis, {0, 2} and {1, 3} along the batch's.
  const PlannedStep tensor = emit_spmd_plan(graph, canonical, split(SplitStep::Axis::kTensor, 2, true), 4);
  EXPECT_EQ(tensor.groups, (std::vector<std::vector<int>>{{0, 1}, {2, 3}, {0, 2}, {1, 3}}));
  for (const auto& p : tensor.programs) {
    EXPECT_EQ(p.code.at(0).group, 1 + p.device / 2) << p.device;
    ASSERT_EQ(p.code.at(0).aux, 1u);
    EXPECT_EQ(runtime::whole_bytes(p.geometries.at(0), 64), 32u);  // a piece's half of the value
    EXPECT_EQ(p.code.at(1).aux, 0u);                               // the keep: the slot's own rows
  }
  EXPECT_EQ(tensor.report.collective_bytes_per_device, 32u);  // 2 x 1/2 of 32 bytes, within a pair of devices
  const PlannedStep batch = emit_spmd_plan(graph, canonical, split(SplitStep::Axis::kBatch, 2, false), 4);
  for (const auto& p : batch.programs) EXPECT_EQ(p.code.at(0).group, 3 + p.device % 2) << p.device;
}

}  // namespace
}  // namespace moreh::scheduler
