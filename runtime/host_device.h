// A GPU stand-in in CPU memory: a capacity, one worker thread as its stream, bounded waits.
#pragma once
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "runtime/device.h"

namespace moreh::runtime {

class HostDevice final : public PhysicalDevice {
 public:
  HostDevice(int index, uint64_t capacity);
  ~HostDevice() override;

  DeviceKind kind() const override { return DeviceKind::kHost; }
  std::string name() const override;
  std::unique_ptr<PhysicalBlock> allocate(uint64_t bytes) override;
  void submit(std::function<void()> work) override;
  void synchronize(std::chrono::milliseconds timeout) override;
  bool busy() const override;

 private:
  void run();

  mutable std::mutex mu_;
  std::condition_variable work_ready_, work_done_;
  std::deque<std::function<void()>> queue_;
  uint64_t submitted_ = 0, completed_ = 0;
  std::exception_ptr error_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace moreh::runtime
