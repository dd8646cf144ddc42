#include "runtime/base/work_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

using namespace std::chrono_literals;
constexpr std::chrono::milliseconds kWait = 5s;

TEST(WorkQueueTest, RunsItemsInOrderAndWaitersHelp) {
  WorkQueue queue("q");
  std::vector<int> order;
  for (int i = 0; i < 20; ++i) queue.submit([&order, i] { order.push_back(i); });  // one runner at a time
  queue.synchronize(kWait);
  ASSERT_EQ(order.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(order[i], i);
  EXPECT_FALSE(queue.busy());
}

thread_local int tls_marker = 0;

TEST(WorkQueueTest, WorkerInitRunsOnTheWorkerThreadBeforeAnyItem) {
  std::thread::id init_thread;
  WorkQueue queue("q", 0ms, [&] {
    init_thread = std::this_thread::get_id();
    tls_marker = 42;
  });
  std::atomic<int> seen{-1};
  std::atomic<bool> done{false};
  std::thread::id item_thread;
  queue.submit([&] {
    item_thread = std::this_thread::get_id();
    seen = tls_marker;
    done = true;
  });
  for (int i = 0; i < 2000 && !done; ++i) std::this_thread::sleep_for(1ms);  // the worker runs it: no waiter
  ASSERT_TRUE(done.load());
  queue.synchronize(kWait);
  EXPECT_EQ(item_thread, init_thread);
  EXPECT_NE(item_thread, std::this_thread::get_id());
  EXPECT_EQ(seen.load(), 42);
}

TEST(WorkQueueTest, AFailingWorkerInitFailsTheConstructor) {
  auto make = [] { WorkQueue queue("q", 0ms, [] { throw Error("no context"); }); };
  EXPECT_THROW(make(), Error);
}

TEST(WorkQueueTest, TimeoutNamesTheQueueAndErrorsAreReportedOnce) {
  WorkQueue queue("cuda:7");
  std::atomic<bool> started{false}, go{false};
  queue.submit([&] {
    started = true;
    while (!go) std::this_thread::sleep_for(1ms);
    throw std::runtime_error("late failure");
  });
  while (!started) std::this_thread::sleep_for(1ms);
  try {
    queue.synchronize(10ms);
    FAIL() << "no timeout";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:7"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(queue.busy());
  go = true;
  EXPECT_THROW(queue.synchronize(kWait), std::runtime_error);
  EXPECT_NO_THROW(queue.synchronize(kWait));
}

TEST(WorkQueueTest, BusyTimeIsAccounted) {
  WorkQueue queue("q");
  queue.submit([] { std::this_thread::sleep_for(20ms); });
  queue.synchronize(kWait);
  EXPECT_GE(queue.busy_ns(), 15'000'000u);
}

// With fresh_thread_per_item, what the worker takes runs on a thread that ends with the item (so thread-owned
// state such as an OpenMP team does not outlive it); a thread that waits still runs items on itself.
TEST(WorkQueueTest, FreshThreadPerItemGivesEveryWorkerItemANewThread) {
  for (bool fresh : {false, true}) {
    WorkQueue queue("q", 0ms, {}, fresh);
    std::vector<int> seen;  // how many items the running thread had run before, itself included
    std::mutex mu;
    for (int i = 0; i < 3; ++i) {
      queue.submit([&] {
        thread_local int items = 0;
        std::lock_guard<std::mutex> lock(mu);
        seen.push_back(++items);
      });
      while (queue.busy()) std::this_thread::sleep_for(1ms);  // the worker takes it (no grace, nobody waits)
    }
    EXPECT_EQ(seen, fresh ? (std::vector<int>{1, 1, 1}) : (std::vector<int>{1, 2, 3})) << fresh;
  }
}

TEST(WorkQueueTest, DestructorRunsWhatIsQueued) {
  std::atomic<int> ran{0};
  {
    WorkQueue queue("q", 0ms);
    for (int i = 0; i < 10; ++i) queue.submit([&] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 10);
}

}  // namespace
}  // namespace moreh::runtime
