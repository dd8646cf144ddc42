#include "runtime/base/work_queue.h"

#include <future>

#include "runtime/base/errors.h"

namespace moreh::runtime {

WorkQueue::WorkQueue(std::string name, std::chrono::milliseconds grace, std::function<void()> worker_init,
                     bool fresh_thread_per_item)
    : name_(std::move(name)),
      grace_(grace),
      worker_init_(std::move(worker_init)),
      fresh_thread_per_item_(fresh_thread_per_item) {
  std::promise<void> started;
  std::future<void> init_done = started.get_future();
  worker_ = std::thread([this, started = std::move(started)]() mutable {  // the thread owns the promise
    if (worker_init_) {
      try {
        worker_init_();
      } catch (...) {
        started.set_exception(std::current_exception());
        return;
      }
    }
    started.set_value();
    run();
  });
  try {
    init_done.get();
  } catch (...) {
    worker_.join();
    throw;
  }
}

WorkQueue::~WorkQueue() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void WorkQueue::submit(std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(work));
    ++submitted_;
  }
  work_ready_.notify_one();
}

bool WorkQueue::busy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return completed_ != submitted_;
}

void WorkQueue::synchronize(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = submitted_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (completed_ < target) {
    if (run_one(lock)) continue;
    if (work_done_.wait_until(lock, deadline) == std::cv_status::timeout && completed_ < target)
      throw TimeoutError(name_ + ": submitted work did not finish within " + std::to_string(timeout.count()) +
                         " ms (MOREH_SYNC_TIMEOUT)");
  }
  if (error_) {
    auto e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

bool WorkQueue::run_one(std::unique_lock<std::mutex>& lock, bool on_fresh_thread) {
  if (running_ || queue_.empty()) return false;
  std::function<void()> work = std::move(queue_.front());
  queue_.pop_front();
  running_ = true;
  lock.unlock();
  std::exception_ptr failure;
  const auto started = std::chrono::steady_clock::now();  // an item is a whole step's program: cheap
  auto run = [&] {
    try {
      work();
    } catch (...) {
      failure = std::current_exception();
    }
  };
  if (on_fresh_thread) {
    std::thread item(run);  // its OpenMP team (if the item makes one) ends with it
    item.join();
  } else {
    run();
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

void WorkQueue::run() {
  // After new work arrives the worker waits a moment (grace_): a script that waits for the device
  // right away (a host read after the optimizer step) runs the step on its own thread, like eager PyTorch,
  // and one that goes on recording gets the step run here.
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_ready_.wait(lock, [&] { return !running_ && (stopping_ || !queue_.empty()); });
    if (stopping_ && queue_.empty()) return;
    if (grace_.count() > 0) {
      const uint64_t seen = completed_;
      work_ready_.wait_for(lock, grace_, [&] { return stopping_ || completed_ != seen; });
    }
    run_one(lock, fresh_thread_per_item_);
  }
}

}  // namespace moreh::runtime
