#include "runtime/host/host_device.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "runtime/base/errors.h"
#include "runtime/base/spdlog_logger.h"

namespace moreh::runtime {

HostDevice::HostDevice(int index, uint64_t capacity)
    : PhysicalDevice(index, capacity),
      cache_(std::make_shared<BlockCache>()),
      queue_("host:" + std::to_string(index), std::chrono::milliseconds(2), {}, /*fresh_thread_per_item=*/true) {
  cache_->limit = std::min<uint64_t>(capacity / 4, 4ull << 30);
}

HostDevice::~HostDevice() = default;  // the queue runs what is left before the cache goes

std::string HostDevice::name() const { return "host:" + std::to_string(index()); }

HostDevice::BlockCache::~BlockCache() { clear(); }

void* HostDevice::BlockCache::take(uint64_t rounded) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = free.find(rounded);
  if (it == free.end() || it->second.empty()) return nullptr;
  void* p = it->second.back();
  it->second.pop_back();
  bytes -= rounded;
  return p;
}

bool HostDevice::BlockCache::put(uint64_t rounded, void* p) {
  std::lock_guard<std::mutex> lock(mu);
  if (bytes + rounded > limit) return false;
  free[rounded].push_back(p);
  bytes += rounded;
  return true;
}

void HostDevice::BlockCache::clear() {
  std::lock_guard<std::mutex> lock(mu);
  for (auto& [size, blocks] : free)
    for (void* p : blocks) std::free(p);
  free.clear();
  bytes = 0;
}

std::shared_ptr<void> HostDevice::take_block(uint64_t bytes) {
  constexpr uint64_t kAlign = 64, kPage = 4096;
  uint64_t rounded = std::max<uint64_t>(bytes, 1);
  rounded = rounded < kPage ? (rounded + kAlign - 1) / kAlign * kAlign : (rounded + kPage - 1) / kPage * kPage;
  void* p = cache_->take(rounded);
  if (p) {
    cache_hits_.fetch_add(1, std::memory_order_relaxed);
  } else {
    p = std::aligned_alloc(kAlign, rounded);
    if (!p) {
      cache_->clear();  // give cached blocks back and try once more
      p = std::aligned_alloc(kAlign, rounded);
    }
    if (!p) return nullptr;
  }
  return std::shared_ptr<void>(p, [cache = cache_, rounded](void* q) {
    if (!cache->put(rounded, q)) std::free(q);
  });
}

std::unique_ptr<PhysicalBlock> HostDevice::allocate(uint64_t bytes) {
  charge(bytes);
  allocations_.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<void> owner = take_block(bytes);
  if (!owner) {
    uncharge(bytes);
    throw OutOfMemoryError(name() + " (the host's allocator)", bytes, available(), capacity());
  }
  void* p = owner.get();
  return std::make_unique<PhysicalBlock>(*this, p, bytes, std::move(owner));
}

std::shared_ptr<void> HostDevice::allocate_scratch(uint64_t bytes) {
  scratch_allocations_.fetch_add(1, std::memory_order_relaxed);
  return take_block(bytes);
}

void HostDevice::release_cached() { cache_->clear(); }

uint64_t HostDevice::cached_bytes() const {
  std::lock_guard<std::mutex> lock(cache_->mu);
  return cache_->bytes;
}

void HostDevice::submit(std::function<void()> work) { queue_.submit(std::move(work)); }

void HostDevice::synchronize(std::chrono::milliseconds timeout) { queue_.synchronize(timeout); }

void HostDevice::copy_in_stream(void* dst, const void* src, uint64_t bytes) {
  if (bytes) std::memmove(dst, src, bytes);
}

void HostDevice::zero_in_stream(void* dst, uint64_t bytes) {
  if (bytes) std::memset(dst, 0, bytes);
}

void HostDevice::read(void* host_dst, const void* src, uint64_t bytes) {
  if (bytes) std::memmove(host_dst, src, bytes);
}

void HostDevice::write(void* dst, const void* host_src, uint64_t bytes) {
  if (bytes) std::memmove(dst, host_src, bytes);
}

}  // namespace moreh::runtime
