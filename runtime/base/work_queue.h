// An in-order stream of work items run by one worker thread: the host side of a device's stream.
// A thread that waits for the queue runs queued items itself (one runner at a time, so order holds): a
// script that waits every step runs its kernels on its own thread, as in eager mode, and the worker runs
// them while the script goes on recording.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace moreh::runtime {

class WorkQueue {
 public:
  // `name` names the queue in TimeoutError's text ("host:0"). `grace`: how long the worker leaves newly
  // queued work to a thread that is about to wait for it (two threads taking turns at running CPU kernels
  // would make two OpenMP teams compete for the cores; work that only enqueues asynchronous GPU work wants
  // 0). `worker_init` runs on the worker thread before it takes any work (e.g. making a CUDA context
  // current); if it throws, the constructor rethrows it. `fresh_thread_per_item`: the worker runs each item it
  // takes on a thread of its own that ends with the item. A thread that runs CPU kernels keeps an OpenMP team
  // for as long as it lives; a second team beside the script's (which CPU eager code and waited-for steps
  // use) makes both teams sleep in futexes between parallel regions (libgomp throttles its spinning once it
  // manages more threads than there are cores), slowing every CPU kernel in the process from then on.
  explicit WorkQueue(std::string name, std::chrono::milliseconds grace = std::chrono::milliseconds(2),
                     std::function<void()> worker_init = {}, bool fresh_thread_per_item = false);
  ~WorkQueue();  // runs what is still queued, then stops the worker
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `work`; an exception it throws is kept and rethrown by synchronize().
  void submit(std::function<void()> work);
  // Waits for every item submitted before the call, running queued items on this thread while nobody else
  // runs one. Throws TimeoutError past the bound, or the first error an item raised (reported once).
  void synchronize(std::chrono::milliseconds timeout);
  // True while submitted work has not finished.
  bool busy() const;
  // Nanoseconds spent running items, on any thread.
  uint64_t busy_ns() const { return busy_ns_.load(std::memory_order_relaxed); }
  const std::string& name() const { return name_; }

 private:
  void run();
  // Runs the next queued item if nobody else is running one; `lock` is held on entry and exit.
  bool run_one(std::unique_lock<std::mutex>& lock, bool on_fresh_thread = false);

  std::string name_;
  std::chrono::milliseconds grace_;
  std::function<void()> worker_init_;
  bool fresh_thread_per_item_;
  std::atomic<uint64_t> busy_ns_{0};
  mutable std::mutex mu_;
  std::condition_variable work_ready_, work_done_;
  std::deque<std::function<void()>> queue_;
  uint64_t submitted_ = 0, completed_ = 0;
  std::exception_ptr error_;
  bool stopping_ = false;
  bool running_ = false;  // an item is being run (by the worker or a waiting thread)
  std::thread worker_;    // last: starts once everything above is set up
};

}  // namespace moreh::runtime
