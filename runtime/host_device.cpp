#include "runtime/host_device.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "runtime/errors.h"
#include "runtime/spdlog_logger.h"

namespace moreh::runtime {

HostDevice::HostDevice(int index, uint64_t capacity)
    : PhysicalDevice(index, capacity), cache_(std::make_shared<BlockCache>()), worker_([this] { run(); }) {
  cache_->limit = std::min<uint64_t>(capacity / 4, 4ull << 30);
}

HostDevice::~HostDevice() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  if (worker_.joinable()) worker_.join();
}

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

std::unique_ptr<PhysicalBlock> HostDevice::allocate(uint64_t bytes) {
  charge(bytes);
  allocations_.fetch_add(1, std::memory_order_relaxed);
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
    if (!p) {
      uncharge(bytes);
      throw OutOfMemoryError(name() + " (the host's allocator)", bytes, available(), capacity());
    }
  }
  std::shared_ptr<void> owner(p, [cache = cache_, rounded](void* q) {
    if (!cache->put(rounded, q)) std::free(q);
  });
  return std::make_unique<PhysicalBlock>(*this, p, bytes, std::move(owner));
}

void HostDevice::release_cached() { cache_->clear(); }

uint64_t HostDevice::cached_bytes() const {
  std::lock_guard<std::mutex> lock(cache_->mu);
  return cache_->bytes;
}

void HostDevice::submit(std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(work));
    ++submitted_;
  }
  work_ready_.notify_one();
}

bool HostDevice::busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return completed_ != submitted_;
}

void HostDevice::synchronize(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = submitted_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (completed_ < target) {
    if (run_one(lock)) continue;
    if (work_done_.wait_until(lock, deadline) == std::cv_status::timeout && completed_ < target)
      throw TimeoutError(name() + ": submitted work did not finish within " + std::to_string(timeout.count()) +
                         " ms (MOREH_SYNC_TIMEOUT)");
  }
  if (error_) {
    auto e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

bool HostDevice::run_one(std::unique_lock<std::mutex>& lock) {
  if (running_ || queue_.empty()) return false;
  std::function<void()> work = std::move(queue_.front());
  queue_.pop_front();
  running_ = true;
  lock.unlock();
  std::exception_ptr failure;
  const auto started = std::chrono::steady_clock::now();  // an item is a whole step's program: cheap
  try {
    work();
  } catch (...) {
    failure = std::current_exception();
  }
  busy_ns_.fetch_add(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count(),
      std::memory_order_relaxed);
  work = nullptr;  // release captured state before reporting completion
  lock.lock();
  if (failure && !error_) error_ = failure;
  running_ = false;
  ++completed_;
  work_done_.notify_all();
  work_ready_.notify_all();
  return true;
}

void HostDevice::run() {
  // After new work arrives the worker waits a moment: a script that waits for the device right away
  // (a host read after the optimizer step) runs the step on its own thread, like eager PyTorch, and one
  // that goes on recording gets the step run here. Two threads taking turns at running kernels would
  // make two OpenMP teams compete for the cores.
  constexpr auto kGrace = std::chrono::milliseconds(2);
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_ready_.wait(lock, [&] { return stopping_ || (!queue_.empty() && !running_); });
    if (stopping_ && queue_.empty()) return;
    const uint64_t seen = completed_;
    work_ready_.wait_for(lock, kGrace, [&] { return stopping_ || completed_ != seen; });
    run_one(lock);
  }
}

}  // namespace moreh::runtime
