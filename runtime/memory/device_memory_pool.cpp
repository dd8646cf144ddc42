#include "runtime/memory/device_memory_pool.h"

#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/errors.h"

namespace moreh::runtime {

struct DeviceMemoryPool::State {
  std::shared_ptr<RawDeviceAllocator> raw;
  uint64_t reserve_limit;
  mutable std::mutex mu;
  std::map<uint64_t, std::vector<void*>> free;  // rounded size -> cached blocks; no empty vectors
  bool open = true;                              // false once the pool is gone: returned blocks are freed
  DeviceMemoryPoolStats stats;

  // Takes cached blocks out, largest first, until `keep` bytes or fewer stay cached (0: all). The caller
  // frees them outside the lock: a raw free may wait for the device.
  std::vector<void*> take_cached_locked(uint64_t keep) {
    std::vector<void*> out;
    while (stats.cached_bytes > keep && !free.empty()) {
      auto last = std::prev(free.end());
      const uint64_t size = last->first;
      out.push_back(last->second.back());
      last->second.pop_back();
      if (last->second.empty()) free.erase(last);
      stats.cached_bytes -= size;
      stats.reserved_bytes -= size;
      ++stats.raw_frees;
    }
    return out;
  }

  void free_raw(const std::vector<void*>& blocks) {
    for (void* p : blocks) raw->free(p);
  }

  void give_back(void* p, uint64_t rounded) {
    std::unique_lock<std::mutex> lock(mu);
    stats.in_use_bytes -= rounded;
    if (!open) {
      stats.reserved_bytes -= rounded;
      ++stats.raw_frees;
      lock.unlock();
      raw->free(p);
      return;
    }
    free[rounded].push_back(p);
    stats.cached_bytes += rounded;
  }
};

DeviceMemoryPool::DeviceMemoryPool(std::shared_ptr<RawDeviceAllocator> raw, uint64_t reserve_limit)
    : state_(std::make_shared<State>()) {
  if (!raw) throw Error("DeviceMemoryPool needs a raw allocator");
  state_->raw = std::move(raw);
  state_->reserve_limit = reserve_limit;
}

DeviceMemoryPool::~DeviceMemoryPool() {
  std::vector<void*> blocks;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    state_->open = false;
    blocks = state_->take_cached_locked(0);
  }
  state_->free_raw(blocks);
}

uint64_t DeviceMemoryPool::round_size(uint64_t bytes) {
  if (bytes <= kSmallLimit) {
    if (bytes == 0) return kSmallGranularity;
    return (bytes + kSmallGranularity - 1) / kSmallGranularity * kSmallGranularity;
  }
  if (bytes > UINT64_MAX - kLargeGranularity)
    throw Error("device memory: cannot allocate " + std::to_string(bytes) + " bytes");
  return (bytes + kLargeGranularity - 1) / kLargeGranularity * kLargeGranularity;
}

std::shared_ptr<void> DeviceMemoryPool::allocate(uint64_t bytes) {
  const uint64_t rounded = round_size(bytes);
  State& s = *state_;
  void* p = nullptr;
  {
    std::unique_lock<std::mutex> lock(s.mu);
    auto it = s.free.find(rounded);
    if (it != s.free.end()) {
      p = it->second.back();
      it->second.pop_back();
      if (it->second.empty()) s.free.erase(it);
      s.stats.cached_bytes -= rounded;
      ++s.stats.cache_hits;
    } else {
      // Over the reserve limit: give back cached blocks first (they are of other sizes).
      if (s.stats.reserved_bytes + rounded > s.reserve_limit && s.stats.cached_bytes > 0) {
        const uint64_t room = s.reserve_limit > rounded ? s.reserve_limit - rounded : 0;
        const uint64_t others = s.stats.reserved_bytes - s.stats.cached_bytes;  // in use
        auto blocks = s.take_cached_locked(room > others ? room - others : 0);
        lock.unlock();
        s.free_raw(blocks);
        lock.lock();
      }
      // The raw allocator runs under the lock: reserved_bytes stays exact, and allocations are rare.
      p = s.raw->allocate(rounded);
      if (!p && s.stats.cached_bytes > 0) {
        ++s.stats.oom_retries;
        auto blocks = s.take_cached_locked(0);
        lock.unlock();
        s.free_raw(blocks);
        lock.lock();
        p = s.raw->allocate(rounded);
      }
      if (!p) return nullptr;
      ++s.stats.raw_allocations;
      s.stats.reserved_bytes += rounded;
    }
    s.stats.in_use_bytes += rounded;
    ++s.stats.allocations;
  }
  return std::shared_ptr<void>(p, [state = state_, rounded](void* q) { state->give_back(q, rounded); });
}

uint64_t DeviceMemoryPool::release_cached() {
  std::vector<void*> blocks;
  uint64_t released;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    released = state_->stats.cached_bytes;
    blocks = state_->take_cached_locked(0);
  }
  state_->free_raw(blocks);
  return released;
}

uint64_t DeviceMemoryPool::cached_bytes() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->stats.cached_bytes;
}

DeviceMemoryPoolStats DeviceMemoryPool::stats() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  DeviceMemoryPoolStats out = state_->stats;
  out.largest_cached_block = state_->free.empty() ? 0 : state_->free.rbegin()->first;
  out.fragmentation =
      out.reserved_bytes ? static_cast<double>(out.cached_bytes) / static_cast<double>(out.reserved_bytes) : 0.0;
  return out;
}

}  // namespace moreh::runtime
