// A GPU stand-in in CPU memory: a capacity, an in-order stream of work run by a worker thread (a
// WorkQueue: a thread that waits for the stream runs the queued work itself), bounded waits.
#pragma once
#include <map>
#include <mutex>
#include <vector>

#include "runtime/device/device.h"
#include "runtime/base/work_queue.h"

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
  bool busy() const override { return queue_.busy(); }
  uint64_t busy_ns() const override { return queue_.busy_ns(); }

  // Host memory: the host reads and writes it directly; copies are memmove/memset on the calling thread.
  bool host_accessible() const override { return true; }
  void copy_in_stream(void* dst, const void* src, uint64_t bytes) override;
  void zero_in_stream(void* dst, uint64_t bytes) override;
  void read(void* host_dst, const void* src, uint64_t bytes) override;
  void write(void* dst, const void* host_src, uint64_t bytes) override;

  // Freed blocks are kept for reuse by size (steps allocate the same sizes every time), up to a bound;
  // they do not count as used memory. release_cached() gives them back to the system.
  void release_cached() override;
  uint64_t cached_bytes() const override;
  uint64_t cache_hits() const { return cache_hits_.load(); }
  // Host memory a kernel allocates itself while it runs on this device (ATen's results and workspaces): from
  // the same cache of freed blocks, and back into it when the owner goes, so that steady steps neither fault
  // fresh pages in nor hand them back to the system, as a GPU's caching allocator does. Not charged: a result
  // the step keeps is charged when the device adopts it. Null when the host is out of memory.
  std::shared_ptr<void> allocate_scratch(uint64_t bytes);
  uint64_t scratch_allocations() const { return scratch_allocations_.load(); }
  // Page-aligned host memory, mlock'ed while RLIMIT_MEMLOCK allows (HostPinnedMemory).
  std::shared_ptr<PinnedHostMemory> pinned_host_memory() override { return pinned_; }

 private:
  struct BlockCache {
    std::mutex mu;
    std::map<uint64_t, std::vector<void*>> free;  // rounded size -> blocks
    uint64_t bytes = 0, limit = 0;
    ~BlockCache();
    void* take(uint64_t rounded);
    bool put(uint64_t rounded, void* p);  // false: over the limit, the caller frees it
    void clear();
  };
  // A block of at least `bytes` from the cache or the system, returned to the cache when its owner goes.
  std::shared_ptr<void> take_block(uint64_t bytes);
  std::shared_ptr<BlockCache> cache_;  // shared with the blocks' deleters, which may outlive the device
  std::atomic<uint64_t> cache_hits_{0}, scratch_allocations_{0};
  std::shared_ptr<PinnedHostMemory> pinned_ = std::make_shared<HostPinnedMemory>();

  WorkQueue queue_;  // last: its worker runs items that use the members above
};

}  // namespace moreh::runtime
