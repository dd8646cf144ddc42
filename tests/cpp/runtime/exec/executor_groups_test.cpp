// Collectives over a group of devices (Plan::groups): a pipeline stage's data-parallel replicas reduce
// among themselves while the other stage does the same, on one communicator per group.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include "runtime/base/errors.h"
#include "runtime/exec/executor.h"
#include "runtime/comm/host_communicator.h"
#include "runtime/host/host_device.h"
#include "runtime/memory/virtual_memory.h"

namespace moreh::runtime {
namespace {

using Kind = Instruction::Kind;

Instruction in_group(Kind kind, uint32_t slot, uint16_t group) {
  Instruction i{kind, slot};
  i.group = group;
  return i;
}

class ExecutorGroupsTest : public ::testing::Test {
 protected:
  static constexpr int kDevices = 4;
  ExecutorGroupsTest() {
    for (int d = 0; d < kDevices; ++d) devices.push_back(std::make_unique<HostDevice>(d, 1 << 20));
    for (auto& d : devices) raw.push_back(d.get());
    comm = std::make_unique<HostCommunicator>(raw, std::chrono::milliseconds(5000));
    executor = std::make_unique<Executor>(raw, nullptr);
    executor->set_communicator(comm.get());
  }
  // A float32 buffer holding `value(device)` in each of its 3 elements on every device.
  std::shared_ptr<Buffer> filled(float (*value)(int)) {
    auto b = std::make_shared<Buffer>(vm, 12, kDevices);
    for (int d = 0; d < kDevices; ++d) {
      b->bind(d, devices[d]->allocate(12));
      float* f = static_cast<float*>(b->memory(d)->data());
      for (int i = 0; i < 3; ++i) f[i] = value(d);
    }
    return b;
  }
  // Stages {0, 2} and {1, 3}: group 1 and group 2; every device runs `code` with its stage's group.
  Plan stages(const std::vector<Instruction>& code, size_t slots) {
    Plan plan;
    plan.num_devices = kDevices;
    plan.groups = {{0, 2}, {1, 3}};
    plan.slots.assign(slots, SlotInfo{DataType::kFloat32, 0});
    for (int d = 0; d < kDevices; ++d) {
      DeviceProgram p;
      p.device = d;
      for (Instruction i : code) {
        if (i.group) i.group = static_cast<uint16_t>(d % 2 + 1);
        p.code.push_back(i);
      }
      plan.programs.push_back(std::move(p));
    }
    return plan;
  }
  void run(Plan plan, std::vector<std::shared_ptr<Buffer>> bindings) {
    executor->submit({std::make_shared<Plan>(std::move(plan)), std::make_shared<StepGraph>(), std::move(bindings)});
    for (auto& d : devices) d->synchronize(std::chrono::milliseconds(10000));
  }
  static float at(const Buffer& b, int device) { return static_cast<const float*>(b.memory(device)->data())[2]; }

  VirtualMemory vm;
  std::vector<std::unique_ptr<PhysicalDevice>> devices;
  std::vector<PhysicalDevice*> raw;
  std::unique_ptr<HostCommunicator> comm;
  std::unique_ptr<Executor> executor;
};

// A reduce-scatter over a stage's replicas: each keeps its rows of the sum (3 rows of one float: 2 + 1).
TEST_F(ExecutorGroupsTest, AReduceScatterLeavesEachReplicaItsRowsOfTheSum) {
  auto a = filled([](int d) { return float(d + 1); });
  for (int d = 0; d < kDevices; ++d) static_cast<float*>(a->memory(d)->data())[1] = float(10 * (d + 1));
  Plan plan = stages({in_group(Kind::kReduceScatter, 0, 1)}, 1);
  plan.slots[0].row_bytes = 4;
  run(std::move(plan), {a});
  // Stage {0, 2}: rows 0 and 1 on device 0, row 2 on device 2; stage {1, 3} alike.
  ASSERT_EQ(a->memory(0)->bytes(), 8u);
  ASSERT_EQ(a->memory(2)->bytes(), 4u);
  EXPECT_EQ(static_cast<const float*>(a->memory(0)->data())[0], 1 + 3);
  EXPECT_EQ(static_cast<const float*>(a->memory(0)->data())[1], 10 + 30);
  EXPECT_EQ(static_cast<const float*>(a->memory(2)->data())[0], 1 + 3);
  EXPECT_EQ(static_cast<const float*>(a->memory(1)->data())[1], 20 + 40);
  EXPECT_EQ(static_cast<const float*>(a->memory(3)->data())[0], 2 + 4);
}

TEST_F(ExecutorGroupsTest, EachGroupReducesAndBroadcastsAmongItsOwnDevices) {
  auto a = filled([](int d) { return float(d + 1); });
  auto b = filled([](int d) { return float(10 * (d + 1)); });
  auto c = filled([](int d) { return float(100 + d); });
  // Two all-reduces in a row (one meeting per group), then a broadcast from each group's first device.
  run(stages({in_group(Kind::kAllReduce, 0, 1), in_group(Kind::kAllReduce, 1, 1), in_group(Kind::kBroadcast, 2, 1)}, 3),
      {a, b, c});
  for (int d : {0, 2}) {
    EXPECT_EQ(at(*a, d), 1 + 3);
    EXPECT_EQ(at(*b, d), 10 + 30);
    EXPECT_EQ(at(*c, d), 100);  // device 0's
  }
  for (int d : {1, 3}) {
    EXPECT_EQ(at(*a, d), 2 + 4);
    EXPECT_EQ(at(*b, d), 20 + 40);
    EXPECT_EQ(at(*c, d), 101);  // device 1's
  }
  EXPECT_GT(executor->group_bytes_sent(), 0u);
  EXPECT_EQ(comm->total_bytes_sent(), 0u);  // nothing went over every device's communicator
}

TEST_F(ExecutorGroupsTest, AllDevicesStillReduceTogetherBesideGroups) {
  auto a = filled([](int d) { return float(d + 1); });
  run(stages({in_group(Kind::kAllReduce, 0, 1), in_group(Kind::kAllReduce, 0, 0)}, 1), {a});
  for (int d = 0; d < kDevices; ++d) EXPECT_EQ(at(*a, d), (1 + 3) * 2 + (2 + 4) * 2);
}

TEST_F(ExecutorGroupsTest, ADeviceOutsideTheGroupItReducesInFailsTheStep) {
  auto a = filled([](int d) { return float(d); });
  Plan plan = stages({in_group(Kind::kAllReduce, 0, 1)}, 1);
  plan.programs[0].code[0].group = 2;  // device 0 is not in {1, 3}
  executor->submit({std::make_shared<Plan>(std::move(plan)), std::make_shared<StepGraph>(), {a}});
  EXPECT_THROW(devices[0]->synchronize(std::chrono::milliseconds(10000)), Error);
  // Device 2, which waits for device 0 in group {0, 2}, is stopped at once rather than at its 5 s bound;
  // devices 1 and 3 may have met before the failure or been stopped too.
  const auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(devices[2]->synchronize(std::chrono::milliseconds(10000)), Error);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(4));
  for (int d : {1, 3}) {
    try {
      devices[d]->synchronize(std::chrono::milliseconds(10000));
    } catch (const Error&) {
    }
  }
  EXPECT_TRUE(executor->recover_groups());
  EXPECT_TRUE(comm->recover());
  run(stages({in_group(Kind::kAllReduce, 0, 1)}, 1), {a});  // the groups run again
}

TEST_F(ExecutorGroupsTest, WithoutACommunicatorThatFormsGroupsThePlanFailsBeforeRunning) {
  Executor lone(raw, nullptr);  // no communicator
  auto a = filled([](int d) { return float(d); });
  try {
    lone.submit({std::make_shared<Plan>(stages({in_group(Kind::kAllReduce, 0, 1)}, 1)), std::make_shared<StepGraph>(),
                 {a}});
    FAIL() << "no communicator";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("collectives or messages over devices 0, 2 need a group of devices"), std::string::npos)
        << e.what();
  }
  for (int d = 0; d < kDevices; ++d) EXPECT_FALSE(devices[d]->busy());
}

}  // namespace
}  // namespace moreh::runtime
