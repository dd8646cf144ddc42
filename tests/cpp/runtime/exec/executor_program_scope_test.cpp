// The program scope (Executor::set_program_scope): asked on the submitting thread once per step, opened around
// each device's program on the thread that runs it, closed before the device reports the step done.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/exec/executor.h"
#include "runtime/host/host_device.h"

namespace moreh::runtime {
namespace {

class ExecutorProgramScopeTest : public ::testing::Test {
 protected:
  static constexpr int kDevices = 2;
  ExecutorProgramScopeTest() {
    for (int d = 0; d < kDevices; ++d) devices.push_back(std::make_unique<HostDevice>(d, 1 << 20));
    for (auto& d : devices) raw.push_back(d.get());
    executor = std::make_unique<Executor>(raw, nullptr);
  }
  // Every device runs an empty program; waits for them after `pause` (longer than the streams' grace, the
  // devices' own threads take the work; zero, the waiting thread may run it itself).
  void run(uint64_t step, std::chrono::milliseconds pause) {
    auto plan = std::make_shared<Plan>();
    plan->num_devices = kDevices;
    for (int d = 0; d < kDevices; ++d) {
      DeviceProgram p;
      p.device = d;
      plan->programs.push_back(std::move(p));
    }
    StepExecution s{plan, std::make_shared<StepGraph>(), {}};
    s.step = step;
    executor->submit(std::move(s));
    std::this_thread::sleep_for(pause);
    for (auto& d : devices) d->synchronize(std::chrono::milliseconds(10000));
  }

  std::vector<std::unique_ptr<PhysicalDevice>> devices;
  std::vector<PhysicalDevice*> raw;
  std::unique_ptr<Executor> executor;
};

TEST_F(ExecutorProgramScopeTest, AskedOnTheSubmittingThreadOpenedAndClosedOnEachDevicesThread) {
  struct Seen {
    std::mutex mu;
    std::vector<std::pair<uint64_t, std::thread::id>> asked;       // step, thread
    std::vector<std::pair<int, std::thread::id>> opened, closed;  // device, thread
  };
  auto seen = std::make_shared<Seen>();
  executor->set_program_scope([seen](uint64_t step) -> Executor::ProgramOpener {
    std::lock_guard<std::mutex> lock(seen->mu);
    seen->asked.emplace_back(step, std::this_thread::get_id());
    return [seen](int device) -> std::shared_ptr<void> {
      std::lock_guard<std::mutex> lock(seen->mu);
      seen->opened.emplace_back(device, std::this_thread::get_id());
      return std::shared_ptr<void>(new int(device), [seen](void* p) {
        std::lock_guard<std::mutex> lock(seen->mu);
        seen->closed.emplace_back(*static_cast<int*>(p), std::this_thread::get_id());
        delete static_cast<int*>(p);
      });
    };
  });
  run(7, std::chrono::milliseconds(200));
  std::lock_guard<std::mutex> lock(seen->mu);  // every device is done: so is every range
  ASSERT_EQ(seen->asked.size(), 1u);
  EXPECT_EQ(seen->asked[0], std::make_pair(uint64_t{7}, std::this_thread::get_id()));
  ASSERT_EQ(seen->opened.size(), 2u);
  ASSERT_EQ(seen->closed.size(), 2u);
  std::vector<bool> devices_opened(kDevices, false);
  for (const auto& [device, thread] : seen->opened) {
    devices_opened.at(device) = true;
    EXPECT_NE(thread, std::this_thread::get_id());  // the device's own thread ran it
    EXPECT_NE(std::find(seen->closed.begin(), seen->closed.end(), std::make_pair(device, thread)),
              seen->closed.end());  // closed on the thread that opened it
  }
  EXPECT_EQ(devices_opened, std::vector<bool>(kDevices, true));
}

TEST_F(ExecutorProgramScopeTest, AHookThatReturnsNothingOpensNothingAndTheStepRuns) {
  int asked = 0;
  executor->set_program_scope([&asked](uint64_t) -> Executor::ProgramOpener {
    ++asked;
    return nullptr;  // the backend's answer when no profiler listens
  });
  run(1, std::chrono::milliseconds(0));
  run(2, std::chrono::milliseconds(0));
  EXPECT_EQ(asked, 2);
  for (auto& d : devices) EXPECT_FALSE(d->busy());
}

}  // namespace
}  // namespace moreh::runtime
