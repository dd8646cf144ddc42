// A caching pool over a device's raw allocator (cuMemAlloc/cuMemFree on a GPU): raw allocations are slow
// and synchronize, and a training step asks for the same sizes every time, so freed blocks are kept by
// rounded size and handed out again. Capacity is not the pool's business: PhysicalDevice::charge refuses
// requests past the device's capacity before the pool is asked.
//
// Reuse is in the order blocks are returned, with no events: right for a device with one stream, where
// work that used a freed block is enqueued before any work that uses it again.
#pragma once
#include <cstdint>
#include <memory>

namespace moreh::runtime {

class RawDeviceAllocator {
 public:
  virtual ~RawDeviceAllocator() = default;
  // `bytes` of device memory, or nullptr when the device is out of memory; throws Error for other failures.
  virtual void* allocate(uint64_t bytes) = 0;
  virtual void free(void* p) noexcept = 0;
};

struct DeviceMemoryPoolStats {
  uint64_t reserved_bytes = 0;  // held from the raw allocator: in use + cached
  uint64_t cached_bytes = 0;    // free blocks kept for reuse
  uint64_t in_use_bytes = 0;    // handed out, by rounded size
  uint64_t allocations = 0;     // requests served
  uint64_t cache_hits = 0;      // requests served from the cache
  uint64_t raw_allocations = 0, raw_frees = 0;
  uint64_t oom_retries = 0;     // raw allocations that failed, retried after releasing the cache
  uint64_t largest_cached_block = 0;
  // cached_bytes / reserved_bytes (0 when nothing is reserved): the share of the memory taken from the
  // device that sits idle in the cache, unusable by anyone else (another logical device on the same GPU,
  // another process) and by requests of other sizes.
  double fragmentation = 0;
};

class DeviceMemoryPool {
 public:
  // `reserve_limit`: before a raw allocation that would take reserved_bytes past it, cached blocks are
  // given back (largest first) until it fits or none are left; the allocation goes ahead either way. A
  // logical device that shares a GPU sets it to its capacity so its cache does not crowd out the others.
  explicit DeviceMemoryPool(std::shared_ptr<RawDeviceAllocator> raw, uint64_t reserve_limit = UINT64_MAX);
  // Gives the cached blocks back. Blocks still handed out are freed when they are returned.
  ~DeviceMemoryPool();
  DeviceMemoryPool(const DeviceMemoryPool&) = delete;
  DeviceMemoryPool& operator=(const DeviceMemoryPool&) = delete;

  // At least `bytes` (rounded: round_size), as a handle whose release returns the block to the pool;
  // it may outlive the pool. nullptr when the raw allocator has no memory even after the cache was given
  // back. Thread-safe.
  std::shared_ptr<void> allocate(uint64_t bytes);
  // Gives every cached block back to the raw allocator; returns the bytes given back.
  uint64_t release_cached();
  uint64_t cached_bytes() const;
  DeviceMemoryPoolStats stats() const;

  // 512-byte granularity up to 1 MiB (at least 512 bytes, also for 0), 2 MiB above: small tensors pack
  // tightly, large ones fall into few size classes so they are reused across steps whose shapes vary a
  // little. Throws Error when the rounded size would overflow.
  static uint64_t round_size(uint64_t bytes);
  static constexpr uint64_t kSmallGranularity = 512;
  static constexpr uint64_t kSmallLimit = 1ull << 20;
  static constexpr uint64_t kLargeGranularity = 2ull << 20;

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with the handles' deleters
};

}  // namespace moreh::runtime
