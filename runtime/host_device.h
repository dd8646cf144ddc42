// A GPU stand-in in CPU memory: a capacity, an in-order stream of work run by a worker thread, bounded
// waits. A thread that waits for the stream runs the queued work itself (one runner at a time, so order
// holds): a script that waits every step runs kernels on its own thread, as in eager mode, and the
// worker runs them while the script goes on recording.
#pragma once
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <map>
#include <thread>
#include <vector>

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

  // Freed blocks are kept for reuse by size (steps allocate the same sizes every time), up to a bound;
  // they do not count as used memory. release_cached() gives them back to the system.
  void release_cached() override;
  uint64_t cached_bytes() const override;
  uint64_t cache_hits() const { return cache_hits_.load(); }
  // Page-aligned host memory, mlock'ed while RLIMIT_MEMLOCK allows (HostPinnedMemory).
  std::shared_ptr<PinnedHostMemory> pinned_host_memory() override { return pinned_; }

 private:
  void run();
  // Runs the next queued item if nobody else is running one; `lock` is held on entry and exit.
  bool run_one(std::unique_lock<std::mutex>& lock);

  struct BlockCache {
    std::mutex mu;
    std::map<uint64_t, std::vector<void*>> free;  // rounded size -> blocks
    uint64_t bytes = 0, limit = 0;
    ~BlockCache();
    void* take(uint64_t rounded);
    bool put(uint64_t rounded, void* p);  // false: over the limit, the caller frees it
    void clear();
  };
  std::shared_ptr<BlockCache> cache_;  // shared with the blocks' deleters, which may outlive the device
  std::atomic<uint64_t> cache_hits_{0};
  std::shared_ptr<PinnedHostMemory> pinned_ = std::make_shared<HostPinnedMemory>();

  mutable std::mutex mu_;
  std::condition_variable work_ready_, work_done_;
  std::deque<std::function<void()>> queue_;
  uint64_t submitted_ = 0, completed_ = 0;
  std::exception_ptr error_;
  bool stopping_ = false;
  bool running_ = false;  // an item is being run (by the worker or a waiting thread)
  std::thread worker_;
};

}  // namespace moreh::runtime
