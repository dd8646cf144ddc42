#include "runtime/plan/point_to_point.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include "runtime/base/errors.h"
#include "runtime/exec/executor.h"
#include "runtime/comm/hierarchical_communicator.h"
#include "runtime/comm/host_communicator.h"
#include "runtime/host/host_device.h"
#include "runtime/memory/virtual_memory.h"

namespace moreh::runtime {
namespace {

using Kind = Instruction::Kind;

Instruction send(uint32_t slot, uint32_t to, uint32_t tag) { return {Kind::kSend, slot, to, tag}; }
Instruction recv(uint32_t slot, uint32_t from, uint32_t tag) { return {Kind::kRecv, slot, from, tag}; }

Plan two_programs(std::vector<Instruction> a, std::vector<Instruction> b) {
  Plan plan;
  plan.num_devices = 2;
  plan.programs.resize(2);
  plan.programs[0].device = 0;
  plan.programs[0].code = std::move(a);
  plan.programs[1].device = 1;
  plan.programs[1].code = std::move(b);
  return plan;
}

uint64_t eight_bytes(uint32_t) { return 8; }

TEST(PointToPointTest, MessagesMeetInProgramOrderPerPairOfDevices) {
  // Two messages each way, interleaved with each other: per (sender, receiver) pair the order is what counts.
  Plan plan = two_programs({send(0, 1, 1), recv(1, 1, 7), send(2, 1, 2)}, {recv(3, 0, 1), send(4, 0, 7), recv(5, 0, 2)});
  EXPECT_EQ(point_to_point_mismatch(plan, eight_bytes), std::nullopt);
  EXPECT_EQ(point_to_point_mismatch(two_programs({}, {}), eight_bytes), std::nullopt);
}

TEST(PointToPointTest, AMismatchNamesBothDevices) {
  auto tag = point_to_point_mismatch(two_programs({send(0, 1, 1)}, {recv(3, 0, 2)}), eight_bytes);
  ASSERT_TRUE(tag);
  EXPECT_NE(tag->find("message 0 from device 0 to device 1 does not meet: device 0 sends slot 0 (8 bytes, tag 1, "
                      "instruction 0) to device 1, but device 1 receives slot 3 (8 bytes, tag 2, instruction 0) "
                      "from device 0"),
            std::string::npos) << *tag;
  auto size = point_to_point_mismatch(two_programs({send(0, 1, 1)}, {recv(3, 0, 1)}),
                                      [](uint32_t slot) -> uint64_t { return slot == 0 ? 8 : 4; });
  ASSERT_TRUE(size);
  EXPECT_NE(size->find("(8 bytes"), std::string::npos);
  EXPECT_NE(size->find("(4 bytes"), std::string::npos);
  auto lost = point_to_point_mismatch(two_programs({send(0, 1, 1), send(1, 1, 2)}, {recv(3, 0, 1)}), eight_bytes);
  ASSERT_TRUE(lost);
  EXPECT_NE(lost->find("device 0 sends slot 1 (8 bytes, tag 2, instruction 1) to device 1, which receives only 1 "
                       "message(s) from device 0"),
            std::string::npos) << *lost;
  auto waits = point_to_point_mismatch(two_programs({}, {recv(3, 0, 1)}), eight_bytes);
  ASSERT_TRUE(waits);
  EXPECT_NE(waits->find("device 1 receives slot 3 (8 bytes, tag 1, instruction 0) from device 0, which sends only 0 "
                        "message(s) to device 1"),
            std::string::npos) << *waits;
  auto self = point_to_point_mismatch(two_programs({send(0, 0, 1)}, {}), eight_bytes);
  ASSERT_TRUE(self);
  EXPECT_NE(self->find("device 0 sends to itself"), std::string::npos);
}

TEST(PointToPointTest, PairsWhoseMessagesNeedAGroupOfTheirOwnComeOnceInOrder) {
  Plan plan;
  plan.programs.resize(3);
  plan.programs[0] = {0, {send(0, 2, 1), recv(1, 2, 2)}};
  plan.programs[1] = {1, {send(0, 2, 3), send(0, 0, 4)}};
  plan.programs[2] = {2, {recv(0, 0, 1), send(1, 0, 2), recv(2, 1, 3)}};
  plan.programs[2].code.push_back(Instruction{Kind::kSend, 0, 1, 5, /*group=*/1});  // a group's: not counted
  const auto across = [](int a, int b) { return (a == 2) != (b == 2); };
  EXPECT_EQ(message_groups(plan, across), (std::vector<std::vector<int>>{{0, 2}, {1, 2}}));
  EXPECT_TRUE(message_groups(plan, [](int, int) { return false; }).empty());
}

// Two host devices run a plan in which device 0 sends a buffer's bytes to device 1 and device 1 sends them
// back into a third buffer: values arrive, an odd byte count included.
class PointToPointExecutorTest : public ::testing::Test {
 protected:
  PointToPointExecutorTest() {
    for (int d = 0; d < 2; ++d) devices.push_back(std::make_unique<HostDevice>(d, 1 << 20));
    for (auto& d : devices) raw.push_back(d.get());
    comm = std::make_unique<HostCommunicator>(raw, std::chrono::milliseconds(5000));
    executor = std::make_unique<Executor>(raw, nullptr);
    executor->set_communicator(comm.get());
  }
  std::shared_ptr<Buffer> buffer(uint64_t bytes) { return std::make_shared<Buffer>(vm, bytes, 2); }
  void run(Plan plan, std::vector<std::shared_ptr<Buffer>> bindings) {
    plan.slots.resize(bindings.size());  // what collectives would need to know about each slot
    StepExecution step{std::make_shared<Plan>(std::move(plan)), std::make_shared<StepGraph>(), std::move(bindings)};
    executor->submit(std::move(step));
    for (auto& d : devices) d->synchronize(std::chrono::milliseconds(10000));
  }
  VirtualMemory vm;
  std::vector<std::unique_ptr<PhysicalDevice>> devices;
  std::vector<PhysicalDevice*> raw;
  std::unique_ptr<HostCommunicator> comm;
  std::unique_ptr<Executor> executor;
};

TEST_F(PointToPointExecutorTest, ValuesTravelBetweenPrograms) {
  const char text[] = "pipeline";  // 9 bytes with the terminator: odd
  auto a = buffer(sizeof text), b = buffer(sizeof text), c = buffer(sizeof text);
  a->bind(0, devices[0]->allocate(sizeof text));
  std::memcpy(a->memory(0)->data(), text, sizeof text);
  run(two_programs({send(0, 1, 11), recv(2, 1, 12)}, {recv(1, 0, 11), send(1, 0, 12)}), {a, b, c});
  ASSERT_NE(b->memory(1), nullptr);
  EXPECT_STREQ(static_cast<const char*>(b->memory(1)->data()), text);
  ASSERT_NE(c->memory(0), nullptr);
  EXPECT_STREQ(static_cast<const char*>(c->memory(0)->data()), text);
}

TEST_F(PointToPointExecutorTest, APlanWhoseMessagesDoNotMeetFailsBeforeAnythingRuns) {
  auto a = buffer(8), b = buffer(8);
  a->bind(0, devices[0]->allocate(8));
  try {
    run(two_programs({send(0, 1, 1)}, {recv(1, 0, 2)}), {a, b});
    FAIL() << "the tags differ";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the step's plan cannot run: message 0 from device 0 to device 1"),
              std::string::npos) << e.what();
  }
  EXPECT_EQ(b->memory(1), nullptr);  // nothing ran
  EXPECT_FALSE(devices[1]->busy());
}

// Devices 0 and 1 share a node, device 2 is another's: 1 and 2 are not both their node's first, so their
// messages go over a group of the two, made when the step is submitted (once), not over the hierarchy.
TEST(PointToPointHierarchyTest, MessagesBetweenNodesThatAreNotBothLeadersGoOverAGroupOfTheTwo) {
  VirtualMemory vm;
  std::vector<std::unique_ptr<PhysicalDevice>> devices;
  std::vector<PhysicalDevice*> raw;
  for (int d = 0; d < 3; ++d) devices.push_back(std::make_unique<HostDevice>(d, 1 << 20));
  for (auto& d : devices) raw.push_back(d.get());
  const auto host = [](std::vector<PhysicalDevice*> d) -> std::unique_ptr<Communicator> {
    return std::make_unique<HostCommunicator>(std::move(d), std::chrono::milliseconds(5000));
  };
  HierarchicalCommunicator comm(raw, {0, 0, 1}, host, host);
  Executor executor(raw, nullptr);
  executor.set_communicator(&comm);
  const char text[] = "stage";
  auto a = std::make_shared<Buffer>(vm, sizeof text, 3), b = std::make_shared<Buffer>(vm, sizeof text, 3),
       c = std::make_shared<Buffer>(vm, sizeof text, 3);
  a->bind(1, devices[1]->allocate(sizeof text));
  std::memcpy(a->memory(1)->data(), text, sizeof text);
  auto run = [&] {
    Plan plan;
    plan.num_devices = 3;
    plan.programs.resize(3);
    plan.programs[0] = {0, {}};
    plan.programs[1] = {1, {send(0, 2, 11), recv(2, 2, 12)}};
    plan.programs[2] = {2, {recv(1, 1, 11), send(1, 1, 12)}};
    plan.slots.resize(3);
    executor.submit(StepExecution{std::make_shared<Plan>(std::move(plan)), std::make_shared<StepGraph>(), {a, b, c}});
    std::exception_ptr failed;  // every device finishes its program before the first failure is rethrown
    for (auto& d : devices) {
      try {
        d->synchronize(std::chrono::milliseconds(10000));
      } catch (...) {
        if (!failed) failed = std::current_exception();
      }
    }
    if (failed) std::rethrow_exception(failed);
  };
  // Without a way to form groups across nodes, the hierarchy refuses the message, naming why.
  EXPECT_FALSE(comm.messages_need_a_group(1, 2));
  try {
    run();
    ADD_FAILURE() << "a message between non-first ranks of two nodes ran over the hierarchy";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("go over the groups' first ranks, or over a group of the two"),
              std::string::npos) << e.what();
  }
  std::vector<std::vector<int>> made;
  comm.set_group_cross([&](const std::vector<int>& ranks, const std::vector<int>&, std::vector<PhysicalDevice*> d) {
    made.push_back(ranks);
    return host(std::move(d));
  });
  EXPECT_TRUE(comm.messages_need_a_group(1, 2));
  EXPECT_TRUE(comm.messages_need_a_group(2, 1));
  EXPECT_FALSE(comm.messages_need_a_group(0, 2));  // both leaders: the hierarchy's cross communicator
  EXPECT_FALSE(comm.messages_need_a_group(0, 1));  // one node
  ASSERT_TRUE(comm.recover());
  ASSERT_TRUE(executor.recover_groups());
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round);
    run();
    ASSERT_NE(c->memory(1), nullptr);
    EXPECT_STREQ(static_cast<const char*>(c->memory(1)->data()), text);
  }
  EXPECT_EQ(made, (std::vector<std::vector<int>>{{1, 2}}));  // once, for both steps
  EXPECT_EQ(comm.total_bytes_sent(), 0u);
  EXPECT_GT(executor.group_bytes_sent(), 0u);
}

}  // namespace
}  // namespace moreh::runtime
