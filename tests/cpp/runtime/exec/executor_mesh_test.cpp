// Collectives on a mesh (tensor parallelism beside batch splitting, 2 pieces x 2 ranks): a group's value may
// be its piece of the batch, smaller than the buffer, so a collective carries its own rows
// (DeviceProgram::geometries); a value resting split along one axis is read back from the group of device 0.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <vector>

#include "runtime/comm/host_communicator.h"
#include "runtime/exec/executor.h"
#include "runtime/exec/gather_home.h"
#include "runtime/host/host_device.h"
#include "runtime/memory/virtual_memory.h"

namespace moreh::runtime {
namespace {

using Kind = Instruction::Kind;

// A [4, 6] float matrix: batch rows 0-1 on piece 0 (devices 0, 1), rows 2-3 on piece 1 (devices 2, 3); within a
// piece, rank 0 holds columns 0-2 and rank 1 columns 3-5.
constexpr int kDevices = 4, kTensor = 2, kRows = 4, kCols = 6;
constexpr uint64_t kBytes = kRows * kCols * 4;
float entry(int r, int c) { return static_cast<float>(10 * r + c); }

class ExecutorMeshTest : public ::testing::Test {
 protected:
  ExecutorMeshTest() {
    for (int d = 0; d < kDevices; ++d) devices.push_back(std::make_unique<HostDevice>(d, 1 << 20));
    for (auto& d : devices) raw.push_back(d.get());
    comm = std::make_unique<HostCommunicator>(raw, std::chrono::milliseconds(5000));
    executor = std::make_unique<Executor>(raw, nullptr);
    executor->set_communicator(comm.get());
  }
  static int piece(int d) { return d / kTensor; }
  static int rank(int d) { return d % kTensor; }
  // Device d's block: its piece's 2 rows, its rank's 3 columns of each.
  std::shared_ptr<Buffer> parts() {
    auto b = std::make_shared<Buffer>(vm, kBytes, kDevices);
    for (int d = 0; d < kDevices; ++d) {
      b->bind(d, devices[d]->allocate(2 * 3 * 4));
      float* f = data(*b, d);
      for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 3; ++c) f[r * 3 + c] = entry(2 * piece(d) + r, 3 * rank(d) + c);
    }
    return b;
  }
  static float* data(Buffer& b, int d) { return static_cast<float*>(b.memory(d)->data()); }
  // Every device runs `kind` on slot 0 with `geometry`, over its tensor group (1, 2) or its piece group (3, 4).
  void run(Kind kind, const SlotInfo& geometry, bool tensor_axis, std::shared_ptr<Buffer> b) {
    Plan plan;
    plan.num_devices = kDevices;
    plan.groups = {{0, 1}, {2, 3}, {0, 2}, {1, 3}};
    plan.slots.assign(1, SlotInfo{DataType::kFloat32});
    for (int d = 0; d < kDevices; ++d) {
      Instruction ins{kind, 0, 1};
      ins.group = static_cast<uint16_t>(tensor_axis ? 1 + piece(d) : 3 + rank(d));
      DeviceProgram p{d, {ins}};
      p.geometries.push_back(geometry);
      plan.programs.push_back(std::move(p));
    }
    executor->submit({std::make_shared<Plan>(std::move(plan)), std::make_shared<StepGraph>(), {std::move(b)}});
    for (auto& d : devices) d->synchronize(std::chrono::milliseconds(10000));
  }

  VirtualMemory vm;
  std::vector<std::unique_ptr<PhysicalDevice>> devices;
  std::vector<PhysicalDevice*> raw;
  std::unique_ptr<HostCommunicator> comm;
  std::unique_ptr<Executor> executor;
};

TEST_F(ExecutorMeshTest, AGatherOverATensorGroupAssemblesItsPieceOnly) {
  auto b = parts();
  // The piece's value: 6 columns of 2 rows, split by columns: 6 rows of 4 bytes in 2 blocks.
  run(Kind::kAllGather, SlotInfo{DataType::kFloat32, 4, 2, 6}, true, b);
  for (int d = 0; d < kDevices; ++d) {
    ASSERT_EQ(b->memory(d)->bytes(), kBytes / 2) << "device " << d;
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < kCols; ++c)
        EXPECT_EQ(data(*b, d)[r * kCols + c], entry(2 * piece(d) + r, c)) << d << " " << r << " " << c;
  }
}

TEST_F(ExecutorMeshTest, KeepingRowsWithinAPieceTakesTheRanksColumns) {
  auto b = std::make_shared<Buffer>(vm, kBytes, kDevices);
  for (int d = 0; d < kDevices; ++d) {  // each device holds its piece whole: 2 rows of 6
    b->bind(d, devices[d]->allocate(kBytes / 2));
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < kCols; ++c) data(*b, d)[r * kCols + c] = entry(2 * piece(d) + r, c);
  }
  run(Kind::kKeepRows, SlotInfo{DataType::kFloat32, 4, 2, 6}, true, b);
  for (int d = 0; d < kDevices; ++d) {
    ASSERT_EQ(b->memory(d)->bytes(), 2u * 3 * 4);
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 3; ++c) EXPECT_EQ(data(*b, d)[r * 3 + c], entry(2 * piece(d) + r, 3 * rank(d) + c));
  }
}

TEST_F(ExecutorMeshTest, AnAllReduceOverThePiecesSumsTheRanksParts) {
  // Each device's 6 floats: an addend of its rank's part of a gradient, summed over the pieces (devices 0 and 2,
  // 1 and 3) and never across ranks.
  auto b = std::make_shared<Buffer>(vm, kBytes, kDevices);
  for (int d = 0; d < kDevices; ++d) {
    b->bind(d, devices[d]->allocate(6 * 4));
    for (int i = 0; i < 6; ++i) data(*b, d)[i] = static_cast<float>(100 * rank(d) + (piece(d) + 1) * i);
  }
  SlotInfo sum{DataType::kFloat32, 6 * 4};
  sum.rows = 1;
  run(Kind::kAllReduce, sum, false, b);
  for (int d = 0; d < kDevices; ++d)
    for (int i = 0; i < 6; ++i) EXPECT_EQ(data(*b, d)[i], static_cast<float>(200 * rank(d) + 3 * i)) << d << " " << i;
}

TEST_F(ExecutorMeshTest, AnAllReduceOfMoreThanTheDeviceHoldsIsAnError) {
  auto b = std::make_shared<Buffer>(vm, kBytes, kDevices);
  for (int d = 0; d < kDevices; ++d) b->bind(d, devices[d]->allocate(6 * 4));
  SlotInfo sum{DataType::kFloat32, kBytes};
  sum.rows = 1;
  // Every device fails before it sends a byte: each says what it was asked to sum.
  int failed = 0;
  try {
    run(Kind::kAllReduce, sum, false, b);
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("fewer than the 96 to sum"), std::string::npos) << e.what();
    ++failed;
  }
  for (int d = 1; d < kDevices; ++d) {
    try {
      devices[d]->synchronize(std::chrono::milliseconds(10000));
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("fewer than the 96 to sum"), std::string::npos) << e.what();
      ++failed;
    }
  }
  EXPECT_EQ(failed, kDevices);
}

TEST_F(ExecutorMeshTest, AValueSplitAlongOneAxisReadsBackFromDeviceZerosGroup) {
  // Split by columns over the tensor ranks (stride 1), the same in both pieces: devices 0 and 1 are read.
  auto b = std::make_shared<Buffer>(vm, kBytes, kDevices);
  for (int d = 0; d < kDevices; ++d) {
    b->bind(d, devices[d]->allocate(kRows * 3 * 4));
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < 3; ++c) data(*b, d)[r * 3 + c] = d < 2 ? entry(r, 3 * rank(d) + c) : -1.0f;
  }
  Placement columns{PlacementKind::kShard, kCols, DataType::kFloat32, 0, kRows};
  columns.ranks = kTensor;
  b->set_placement(columns);
  std::vector<float> host(kRows * kCols, 0.0f);
  ASSERT_TRUE(read_whole(*b, raw, host.data()));
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) EXPECT_EQ(host[r * kCols + c], entry(r, c));
  // Split by the batch's rows over the pieces (stride 2): devices 0 and 2 hold rows 0-1 and 2-3, whole.
  auto rows = std::make_shared<Buffer>(vm, kBytes, kDevices);
  for (int d = 0; d < kDevices; ++d) {
    rows->bind(d, devices[d]->allocate(kBytes / 2));
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < kCols; ++c) data(*rows, d)[r * kCols + c] = d % 2 == 0 ? entry(2 * piece(d) + r, c) : -1.0f;
  }
  Placement batch{PlacementKind::kShard, kRows};
  batch.ranks = 2;
  batch.stride = kTensor;
  rows->set_placement(batch);
  gather_home(*rows, raw);
  EXPECT_EQ(rows->placement().kind, PlacementKind::kHome);
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) EXPECT_EQ(data(*rows, 0)[r * kCols + c], entry(r, c));
  EXPECT_EQ(rows->memory(2), nullptr);
}

}  // namespace
}  // namespace moreh::runtime
