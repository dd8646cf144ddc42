#include "runtime/host_device.h"

#include <cstdlib>
#include <new>

#include "runtime/errors.h"
#include "runtime/spdlog_logger.h"

namespace moreh::runtime {

HostDevice::HostDevice(int index, uint64_t capacity) : PhysicalDevice(index, capacity), worker_([this] { run(); }) {}

HostDevice::~HostDevice() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  if (worker_.joinable()) worker_.join();
}

std::string HostDevice::name() const { return "host:" + std::to_string(index()); }

std::unique_ptr<PhysicalBlock> HostDevice::allocate(uint64_t bytes) {
  charge(bytes);
  constexpr size_t kAlign = 64;
  size_t rounded = (std::max<uint64_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, rounded);
  if (!p) {
    uncharge(bytes);
    throw OutOfMemoryError(name() + " (the host's allocator)", bytes, available(), capacity());
  }
  std::shared_ptr<void> owner(p, [](void* q) { std::free(q); });
  return std::make_unique<PhysicalBlock>(*this, p, bytes, std::move(owner));
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
  uint64_t target = submitted_;
  if (!work_done_.wait_for(lock, timeout, [&] { return completed_ >= target; }))
    throw TimeoutError(name() + ": submitted work did not finish within " + std::to_string(timeout.count()) +
                       " ms (MOREH_SYNC_TIMEOUT)");
  if (error_) {
    auto e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

void HostDevice::run() {
  for (;;) {
    std::function<void()> work;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    std::exception_ptr failure;
    try {
      work();
    } catch (...) {
      failure = std::current_exception();
    }
    work = nullptr;  // release captured state before reporting completion
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (failure && !error_) error_ = failure;
      ++completed_;
    }
    work_done_.notify_all();
  }
}

}  // namespace moreh::runtime
