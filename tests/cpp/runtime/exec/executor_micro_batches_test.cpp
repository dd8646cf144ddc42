// A pipeline stage's device runs a node once per micro-batch (LocalLaunch::joins) and moves one micro-batch's
// rows at a time (ByteRange sends): the executor joins each result to what the device holds.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <vector>

#include "runtime/base/data_type.h"
#include "runtime/base/errors.h"
#include "runtime/comm/host_communicator.h"
#include "runtime/exec/executor.h"
#include "runtime/host/host_device.h"
#include "runtime/memory/virtual_memory.h"
#include "test_graph.h"

namespace moreh::runtime {
namespace {

using moreh::testing::node;
using moreh::testing::shaped;
using Kind = Instruction::Kind;

// Writes 1 + (the micro-batch's first row) into every element of each output's local view.
class RowsProvider : public KernelProvider {
 public:
  void launch(const Node& n, const LaunchContext& ctx) override {
    const float value = 1.0f + static_cast<float>(ctx.local() ? ctx.local()->rows.begin : 0);
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      const TensorRef& r = n.outputs[k];
      int64_t count = 1;
      for (int64_t s : r.sizes) count *= s;
      auto block = ctx.device().allocate(static_cast<uint64_t>(r.offset + count) * 4);
      float* f = static_cast<float*>(block->data()) + r.offset;
      for (int64_t i = 0; i < count; ++i) f[i] = value;
      ctx.bind_output(k, std::move(block));
    }
  }
};

class ExecutorMicroBatchesTest : public ::testing::Test {
 protected:
  void SetUp() override { register_data_type(6, DataType::kFloat32); }
  ExecutorMicroBatchesTest() {
    for (int d = 0; d < 2; ++d) devices.push_back(std::make_unique<HostDevice>(d, 1 << 20));
    for (auto& d : devices) raw.push_back(d.get());
    comm = std::make_unique<HostCommunicator>(raw, std::chrono::milliseconds(5000));
    executor = std::make_unique<Executor>(raw, &provider);
    executor->set_communicator(comm.get());
  }
  // Runs `program` on device 0 of a one-node step.
  void run(Node n, DeviceProgram program, std::vector<std::shared_ptr<Buffer>> bindings) {
    auto graph = std::make_shared<StepGraph>();
    graph->append(std::move(n));
    auto plan = std::make_shared<Plan>();
    plan->num_devices = 1;
    plan->programs.push_back(std::move(program));
    executor->submit({plan, graph, std::move(bindings)});
    devices[0]->synchronize(std::chrono::milliseconds(10000));
  }
  static std::vector<float> values(const Buffer& b, int device = 0) {
    const float* f = static_cast<const float*>(b.memory(device)->data());
    return std::vector<float>(f, f + b.memory(device)->bytes() / 4);
  }
  static LocalLaunch micro(int64_t begin, int64_t rows, LocalLaunch::Join join, int64_t into = 0) {
    LocalLaunch l;
    l.rows = {begin, rows};
    l.batch_rows = 8;
    l.outputs = {{0, {rows}}};
    l.joins = {join};
    l.into = {into};
    return l;
  }

  RowsProvider provider;
  VirtualMemory vm;
  std::vector<std::unique_ptr<PhysicalDevice>> devices;
  std::vector<PhysicalDevice*> raw;
  std::unique_ptr<HostCommunicator> comm;
  std::unique_ptr<Executor> executor;
};

TEST_F(ExecutorMicroBatchesTest, EachMicroBatchsRowsGoIntoTheBlock) {
  auto y = std::make_shared<Buffer>(vm, 32, 2);
  DeviceProgram p;
  p.sizes = {32};
  p.launches = {micro(0, 4, LocalLaunch::Join::kInto, 0), micro(4, 4, LocalLaunch::Join::kInto, 4)};
  p.code = {{Kind::kAllocate, 0, 0}, {Kind::kLaunch, 0, 1}, {Kind::kLaunch, 0, 2}};
  run(node("test::rows", {}, {shaped(y, {8})}), p, {y});
  EXPECT_EQ(values(*y), (std::vector<float>{1, 1, 1, 1, 5, 5, 5, 5}));
}

TEST_F(ExecutorMicroBatchesTest, PartialResultsAreScaledAndSummed) {
  auto g = std::make_shared<Buffer>(vm, 8, 2);
  DeviceProgram p;
  LocalLaunch a = micro(0, 2, LocalLaunch::Join::kAccumulate), b = micro(4, 2, LocalLaunch::Join::kAccumulate);
  a.factors = b.factors = {0.5};
  p.launches = {a, b};
  p.code = {{Kind::kLaunch, 0, 1}, {Kind::kLaunch, 0, 2}};
  run(node("test::rows", {}, {shaped(g, {2})}), p, {g});
  EXPECT_EQ(values(*g), (std::vector<float>{3, 3}));  // 0.5 · 1 + 0.5 · 5
}

TEST_F(ExecutorMicroBatchesTest, ALossMeanIsWeightedByItsWeightBeforeTheSum) {
  auto loss = std::make_shared<Buffer>(vm, 4, 2), weight = std::make_shared<Buffer>(vm, 4, 2);
  DeviceProgram p;
  for (int64_t begin : {0, 4}) {
    LocalLaunch l;
    l.rows = {begin, 4};
    l.outputs = {{0, {}}, {0, {}}};
    l.joins = {LocalLaunch::Join::kAccumulate, LocalLaunch::Join::kAccumulate};
    l.weighted = 0;
    l.weight = 1;
    p.launches.push_back(l);
  }
  p.code = {{Kind::kLaunch, 0, 1}, {Kind::kLaunch, 0, 2}};
  run(node("test::rows", {}, {shaped(loss, {}), shaped(weight, {})}), p, {loss, weight});
  EXPECT_EQ(values(*loss), (std::vector<float>{26}));  // 1 · 1 + 5 · 5
  EXPECT_EQ(values(*weight), (std::vector<float>{6}));
}

TEST_F(ExecutorMicroBatchesTest, ARowsIntoWithoutABlockFailsAndKeepsWhatWasThere) {
  auto y = std::make_shared<Buffer>(vm, 32, 2);
  DeviceProgram p;
  p.launches = {micro(4, 4, LocalLaunch::Join::kInto, 4)};
  p.code = {{Kind::kLaunch, 0, 1}};
  auto graph = std::make_shared<StepGraph>();
  graph->append(node("test::rows", {}, {shaped(y, {8})}));
  auto plan = std::make_shared<Plan>();
  plan->programs.push_back(std::move(p));
  executor->submit({plan, graph, {y}});
  EXPECT_THROW(devices[0]->synchronize(std::chrono::milliseconds(10000)), Error);
  ASSERT_TRUE(y->failure());
  EXPECT_NE(y->failure()->find("no block to go into"), std::string::npos);
}

TEST_F(ExecutorMicroBatchesTest, ARangeOfABlockTravelsAndTheReceiverBindsTheWholeBlock) {
  auto z = std::make_shared<Buffer>(vm, 16, 2);
  z->bind(0, devices[0]->allocate(16));
  float* f = static_cast<float*>(z->memory(0)->data());
  for (int i = 0; i < 4; ++i) f[i] = static_cast<float>(i + 1);
  auto plan = std::make_shared<Plan>();
  plan->num_devices = 2;
  plan->slots.assign(1, SlotInfo{});
  for (int d = 0; d < 2; ++d) {
    DeviceProgram p;
    p.device = d;
    p.ranges = {{8, 8, 16}};
    Instruction i{d == 0 ? Kind::kSend : Kind::kRecv, 0, static_cast<uint32_t>(1 - d)};
    i.tag = 7;
    i.range = 1;
    p.code = {i};
    plan->programs.push_back(std::move(p));
  }
  executor->submit({plan, std::make_shared<StepGraph>(), {z}});
  for (auto& d : devices) d->synchronize(std::chrono::milliseconds(10000));
  ASSERT_EQ(z->memory(1)->bytes(), 16u);
  const float* got = static_cast<const float*>(z->memory(1)->data());
  EXPECT_EQ(got[2], 3.0f);
  EXPECT_EQ(got[3], 4.0f);
}

}  // namespace
}  // namespace moreh::runtime
