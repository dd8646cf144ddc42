// Values split along a later dimension (Placement::outer > 1, tensor parallelism's columns): each device
// holds its columns of every row as [rows, its columns]; keeping a part, gathering the parts and
// reduce-scattering a sum re-lay the blocks, and a host read assembles them.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <vector>

#include "runtime/base/errors.h"
#include "runtime/comm/host_communicator.h"
#include "runtime/device/kernel_provider.h"
#include "runtime/exec/executor.h"
#include "runtime/exec/gather_home.h"
#include "runtime/host/host_device.h"
#include "runtime/memory/virtual_memory.h"

namespace moreh::runtime {
namespace {

using Kind = Instruction::Kind;

// A 4 x 5 float matrix whose 5 columns lie over 3 devices: 2, 2 and 1 columns of each of its 4 rows.
constexpr int kDevices = 3, kRows = 4, kCols = 5;
constexpr uint64_t kBytes = kRows * kCols * 4;

float entry(int r, int c) { return static_cast<float>(10 * r + c); }

class SplitDimsTest : public ::testing::Test {
 protected:
  SplitDimsTest() {
    for (int d = 0; d < kDevices; ++d) devices.push_back(std::make_unique<HostDevice>(d, 1 << 20));
    for (auto& d : devices) raw.push_back(d.get());
    comm = std::make_unique<HostCommunicator>(raw, std::chrono::milliseconds(5000));
    executor = std::make_unique<Executor>(raw, nullptr);
    executor->set_communicator(comm.get());
  }
  // Every device runs `code` on slot 0, a float32 value of 4 blocks of 5 one-float rows.
  void run(const std::vector<Instruction>& code, std::shared_ptr<Buffer> b) {
    Plan plan;
    plan.num_devices = kDevices;
    plan.slots.assign(1, SlotInfo{DataType::kFloat32, 4, kRows});
    for (int d = 0; d < kDevices; ++d) plan.programs.push_back(DeviceProgram{d, code});
    executor->submit({std::make_shared<Plan>(std::move(plan)), std::make_shared<StepGraph>(), {std::move(b)}});
    for (auto& d : devices) d->synchronize(std::chrono::milliseconds(10000));
  }
  std::shared_ptr<Buffer> whole_on_every_device(float scale = 1.0f) {
    auto b = std::make_shared<Buffer>(vm, kBytes, kDevices);
    for (int d = 0; d < kDevices; ++d) {
      b->bind(d, devices[d]->allocate(kBytes));
      float* f = data(*b, d);
      for (int r = 0; r < kRows; ++r)
        for (int c = 0; c < kCols; ++c) f[r * kCols + c] = scale * entry(r, c);
    }
    return b;
  }
  // Device d's columns, as a part of [4, its columns].
  std::shared_ptr<Buffer> parts() {
    auto b = std::make_shared<Buffer>(vm, kBytes, kDevices);
    for (int d = 0; d < kDevices; ++d) {
      const RowRange cols = split_rows(kCols, kDevices, d);
      b->bind(d, devices[d]->allocate(kRows * cols.count * 4));
      float* f = data(*b, d);
      for (int r = 0; r < kRows; ++r)
        for (int64_t c = 0; c < cols.count; ++c) f[r * cols.count + c] = entry(r, static_cast<int>(cols.begin + c));
    }
    b->set_placement(Placement{PlacementKind::kShard, kCols, DataType::kFloat32, 0, kRows});
    return b;
  }
  static float* data(Buffer& b, int d) { return static_cast<float*>(b.memory(d)->data()); }
  void expect_parts(Buffer& b, float scale) {
    for (int d = 0; d < kDevices; ++d) {
      const RowRange cols = split_rows(kCols, kDevices, d);
      ASSERT_EQ(b.memory(d)->bytes(), static_cast<uint64_t>(kRows * cols.count * 4)) << "device " << d;
      for (int r = 0; r < kRows; ++r)
        for (int64_t c = 0; c < cols.count; ++c)
          EXPECT_EQ(data(b, d)[r * cols.count + c], scale * entry(r, static_cast<int>(cols.begin + c)))
              << "device " << d << " row " << r << " column " << cols.begin + c;
    }
  }

  VirtualMemory vm;
  std::vector<std::unique_ptr<PhysicalDevice>> devices;
  std::vector<PhysicalDevice*> raw;
  std::unique_ptr<HostCommunicator> comm;
  std::unique_ptr<Executor> executor;
};

TEST_F(SplitDimsTest, KeepingAPartTakesTheDevicesColumnsOfEveryRow) {
  auto b = whole_on_every_device();
  run({{Kind::kKeepRows, 0}}, b);
  expect_parts(*b, 1.0f);
}

TEST_F(SplitDimsTest, GatheringThePartsLaysEachIntoItsColumns) {
  auto b = parts();
  for (auto& d : devices) d->reset_peak();
  const uint64_t before = devices[2]->used();  // its one column: 16 bytes
  run({{Kind::kAllGather, 0}}, b);
  for (int d = 0; d < kDevices; ++d) {
    ASSERT_EQ(b->memory(d)->bytes(), kBytes);
    for (int r = 0; r < kRows; ++r)
      for (int c = 0; c < kCols; ++c) EXPECT_EQ(data(*b, d)[r * kCols + c], entry(r, c)) << d << " " << r << " " << c;
  }
  // The parts arrive beside the value before they are laid into it: part + arrivals + whole at once, as
  // the memory model counts it (memory_model_test's LaterDimensions).
  EXPECT_EQ(devices[2]->peak(), before + 2 * kBytes);
}

TEST_F(SplitDimsTest, AReduceScatterLeavesEachDeviceItsColumnsOfTheSum) {
  auto b = whole_on_every_device();
  for (int d = 1; d < kDevices; ++d)  // addends 1x, 2x and 3x the matrix: the sum is 6x
    for (int i = 0; i < kRows * kCols; ++i) data(*b, d)[i] *= static_cast<float>(d + 1);
  for (auto& d : devices) d->reset_peak();
  const uint64_t before = devices[0]->used();
  run({{Kind::kReduceScatter, 0}}, b);
  expect_parts(*b, 6.0f);
  // The addend, its copy laid rank after rank, and the device's 2 columns of the sum: 80 + 80 + 32.
  EXPECT_EQ(devices[0]->peak(), before + kBytes + kRows * 2 * 4);
}

TEST_F(SplitDimsTest, AHostReadAndBringingHomeAssembleTheColumns) {
  auto b = parts();
  std::vector<float> host(kRows * kCols, -1.0f);
  ASSERT_TRUE(read_whole(*b, raw, host.data()));
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) EXPECT_EQ(host[r * kCols + c], entry(r, c));
  gather_home(*b, raw);
  EXPECT_EQ(b->placement().kind, PlacementKind::kHome);
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) EXPECT_EQ(data(*b, 0)[r * kCols + c], entry(r, c));
  EXPECT_EQ(b->memory(1), nullptr);
}

TEST_F(SplitDimsTest, AGroupKeepsItsPartsSplitAmongItsOwnDevices) {
  // Two of the three devices as a group (a tensor-parallel pair beside another device).
  auto b = whole_on_every_device();
  Plan plan;
  plan.num_devices = kDevices;
  plan.groups = {{0, 1}};
  plan.slots.assign(1, SlotInfo{DataType::kFloat32, 4, kRows});
  for (int d = 0; d < 2; ++d) {
    Instruction keep{Kind::kKeepRows, 0};
    keep.group = 1;
    plan.programs.push_back(DeviceProgram{d, {keep}});
  }
  plan.programs.push_back(DeviceProgram{2, {}});
  executor->submit({std::make_shared<Plan>(std::move(plan)), std::make_shared<StepGraph>(), {b}});
  for (auto& d : devices) d->synchronize(std::chrono::milliseconds(10000));
  for (int d = 0; d < 2; ++d) {
    const RowRange cols = split_rows(kCols, 2, d);  // 3 and 2 columns
    ASSERT_EQ(b->memory(d)->bytes(), static_cast<uint64_t>(kRows * cols.count * 4));
    for (int r = 0; r < kRows; ++r)
      for (int64_t c = 0; c < cols.count; ++c)
        EXPECT_EQ(data(*b, d)[r * cols.count + c], entry(r, static_cast<int>(cols.begin + c)));
  }
  EXPECT_EQ(b->memory(2)->bytes(), kBytes);  // untouched
}

// A device's view of its part must stay inside what it holds: a wrong plan is an error naming the input, not a
// kernel reading past the block.
TEST(LaunchContextTest, ADevicesViewPastItsBlockIsAnError) {
  VirtualMemory vm;
  HostDevice device(0, 1 << 16);
  auto b = std::make_shared<Buffer>(vm, kBytes, 1);
  b->bind(0, device.allocate(kRows * 2 * 4));  // its 2 columns of each of 4 rows
  Node n;
  TensorRef r;
  r.buffer = b;
  r.sizes = {kRows, 2};
  r.strides = {2, 1};
  r.itemsize = 4;
  n.inputs.push_back(r);
  LocalLaunch local;
  EXPECT_NO_THROW(LaunchContext(device, n, &local).input_memory(0));
  n.inputs[0].strides = {kCols, 1};  // the whole value's strides: reads past the device's 32 bytes
  try {
    LaunchContext(device, n, &local).input_memory(0);
    FAIL() << "read past the block";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("input 0 reads 68 bytes of buffer"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(LaunchContext(device, n).input_memory(0));  // as recorded (a whole launch): not checked here
}

TEST(CopyTwoDimensionsTest, TheDefaultCopiesRowByRowBetweenPitches) {
  HostDevice device(0, 1 << 16);
  std::vector<char> src(4 * 8), dst(4 * 5, 'x');
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>('a' + i % 26);
  device.submit([&] { device.PhysicalDevice::copy_2d_in_stream(dst.data(), 5, src.data() + 1, 8, 3, 4); });
  device.synchronize(std::chrono::milliseconds(5000));
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(dst[r * 5 + c], src[r * 8 + 1 + c]);
    EXPECT_EQ(dst[r * 5 + 3], 'x');  // outside the width: untouched
  }
}

}  // namespace
}  // namespace moreh::runtime
