#include "runtime/host/host_device.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

using namespace std::chrono_literals;
constexpr std::chrono::milliseconds kWait = 5s;

TEST(HostDeviceTest, Identity) {
  HostDevice dev(3, 1000);
  EXPECT_EQ(dev.kind(), DeviceKind::kHost);
  EXPECT_EQ(dev.index(), 3);
  EXPECT_EQ(dev.name(), "host:3");
  EXPECT_EQ(dev.capacity(), 1000u);
  EXPECT_EQ(dev.available(), 1000u);
  EXPECT_FALSE(dev.busy());
}

TEST(HostDeviceTest, AllocateChargesAndBlockDestructionUncharges) {
  HostDevice dev(0, 1000);
  auto a = dev.allocate(300);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(a->data(), nullptr);
  EXPECT_EQ(a->bytes(), 300u);
  EXPECT_EQ(&a->device(), &dev);
  std::memset(a->data(), 0xab, 300);  // the memory is really there
  EXPECT_EQ(dev.used(), 300u);
  EXPECT_EQ(dev.available(), 700u);

  auto b = dev.allocate(700);  // exactly up to capacity
  EXPECT_EQ(dev.used(), 1000u);
  EXPECT_EQ(dev.available(), 0u);
  EXPECT_EQ(dev.peak(), 1000u);

  a.reset();
  EXPECT_EQ(dev.used(), 700u);
  EXPECT_EQ(dev.peak(), 1000u);  // the peak stays
  b.reset();
  EXPECT_EQ(dev.used(), 0u);
  EXPECT_EQ(dev.peak(), 1000u);
  dev.reset_peak();
  EXPECT_EQ(dev.peak(), 0u);

  auto z = dev.allocate(0);  // a zero-byte block is still a valid pointer
  EXPECT_NE(z->data(), nullptr);
  EXPECT_EQ(dev.used(), 0u);
}

TEST(HostDeviceTest, AllocatingPastCapacityThrowsOutOfMemoryAndLeavesTheDeviceUsable) {
  HostDevice dev(0, 1000);
  auto a = dev.allocate(600);
  try {
    dev.allocate(500);
    FAIL() << "allocate past the capacity did not throw";
  } catch (const OutOfMemoryError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("OUT_OF_MEMORY"), std::string::npos) << what;
    EXPECT_NE(what.find("Memory requested : 500 bytes"), std::string::npos) << what;
    EXPECT_NE(what.find("Memory available : 400 bytes"), std::string::npos) << what;
    EXPECT_NE(what.find("host:0"), std::string::npos) << what;
    EXPECT_EQ(e.requested(), 500u);
    EXPECT_EQ(e.available(), 400u);
  }
  EXPECT_EQ(dev.used(), 600u);
  EXPECT_EQ(dev.peak(), 600u);
  auto b = dev.allocate(400);
  EXPECT_EQ(dev.used(), 1000u);
  EXPECT_THROW(dev.allocate(1), OutOfMemoryError);
  EXPECT_EQ(dev.used(), 1000u);
}

TEST(HostDeviceTest, OutOfMemoryIsAMorehError) {
  HostDevice dev(0, 10);
  EXPECT_THROW(dev.allocate(11), Error);
}

TEST(HostDeviceTest, AdoptChargesUnchargesAndRunsTheOwnersDeleter) {
  HostDevice dev(0, 1000);
  static char storage[256];
  int deleted = 0;
  {
    std::shared_ptr<void> owner(static_cast<void*>(storage), [&deleted](void*) { ++deleted; });
    auto block = dev.adopt(storage, 256, std::move(owner));
    EXPECT_EQ(block->data(), storage);
    EXPECT_EQ(block->bytes(), 256u);
    EXPECT_EQ(dev.used(), 256u);
    EXPECT_EQ(deleted, 0);
  }
  EXPECT_EQ(deleted, 1);
  EXPECT_EQ(dev.used(), 0u);

  // Adopting past the capacity throws, charges nothing; the owner is dropped by the caller.
  std::shared_ptr<void> big(static_cast<void*>(storage), [&deleted](void*) { ++deleted; });
  EXPECT_THROW(dev.adopt(storage, 2000, big), OutOfMemoryError);
  EXPECT_EQ(dev.used(), 0u);
  big.reset();
  EXPECT_EQ(deleted, 2);
}

TEST(HostDeviceTest, ProviderViewIsReleasedWithTheBlock) {
  HostDevice dev(0, 1000);
  auto view = std::make_shared<int>(7);
  std::weak_ptr<int> weak = view;
  {
    auto block = dev.allocate(16);
    block->provider_view() = std::move(view);
    EXPECT_FALSE(weak.expired());
  }
  EXPECT_TRUE(weak.expired());
}

TEST(HostDeviceTest, SubmitRunsWorkInFifoOrderOneItemAtATime) {
  HostDevice dev(0, 1000);
  std::mutex mu;
  std::vector<int> order;
  std::atomic<int> running{0}, most{0};
  for (int i = 0; i < 50; ++i) {
    dev.submit([&, i] {
      int now = ++running;
      most = std::max(most.load(), now);
      if (i == 0) std::this_thread::sleep_for(20ms);  // later items queue up behind a slow one
      {
        std::lock_guard<std::mutex> lock(mu);
        order.push_back(i);
      }
      --running;
    });
  }
  dev.synchronize(kWait);  // the waiting thread helps run the queue; the order still holds
  EXPECT_FALSE(dev.busy());
  ASSERT_EQ(order.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(order[i], i);
  EXPECT_EQ(most.load(), 1);  // one stream: never two items at once
}

TEST(HostDeviceTest, WorkerRunsSubmittedWorkWithoutAWaiter) {
  HostDevice dev(0, 1000);
  std::atomic<bool> done{false};
  std::thread::id ran_on;
  dev.submit([&] {
    ran_on = std::this_thread::get_id();
    done = true;
  });
  for (int i = 0; i < 500 && !done; ++i) std::this_thread::sleep_for(1ms);  // nobody synchronizes
  ASSERT_TRUE(done.load());
  EXPECT_NE(ran_on, std::this_thread::get_id());
  dev.synchronize(kWait);
}

TEST(HostDeviceTest, BusyWhileWorkIsPending) {
  HostDevice dev(0, 1000);
  std::atomic<bool> go{false};
  dev.submit([&] {
    while (!go.load()) std::this_thread::sleep_for(1ms);
  });
  EXPECT_TRUE(dev.busy());
  go.store(true);
  dev.synchronize(kWait);
  EXPECT_FALSE(dev.busy());
}

TEST(HostDeviceTest, SynchronizeRethrowsTheFirstErrorOnceThenKeepsWorking) {
  HostDevice dev(0, 1000);
  std::atomic<int> ran{0};
  dev.submit([&] { ++ran; });
  dev.submit([] { throw std::runtime_error("first failure"); });
  dev.submit([&] { ++ran; });
  dev.submit([] { throw std::runtime_error("second failure"); });
  dev.submit([&] { ++ran; });
  try {
    dev.synchronize(kWait);
    FAIL() << "synchronize did not rethrow";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "first failure");
  }
  EXPECT_EQ(ran.load(), 3);  // work after a failure still runs
  EXPECT_NO_THROW(dev.synchronize(kWait));  // reported once

  dev.submit([&] { ++ran; });
  EXPECT_NO_THROW(dev.synchronize(kWait));
  EXPECT_EQ(ran.load(), 4);

  dev.submit([] { throw std::logic_error("later failure"); });
  EXPECT_THROW(dev.synchronize(kWait), std::logic_error);
  EXPECT_NO_THROW(dev.synchronize(kWait));
}

TEST(HostDeviceTest, SynchronizeTimesOut) {
  HostDevice dev(0, 1000);
  std::atomic<bool> started{false}, done{false};
  dev.submit([&] {
    started = true;
    std::this_thread::sleep_for(200ms);
    done.store(true);
  });
  while (!started) std::this_thread::sleep_for(1ms);  // the worker runs it: synchronize can only wait
  auto start = std::chrono::steady_clock::now();
  try {
    dev.synchronize(10ms);
    FAIL() << "synchronize did not time out";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("host:0"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 150ms);
  EXPECT_FALSE(done.load());
  EXPECT_NO_THROW(dev.synchronize(kWait));
  EXPECT_TRUE(done.load());
}

TEST(HostDeviceTest, DestructorDrainsTheQueue) {
  std::atomic<int> ran{0};
  {
    HostDevice dev(0, 1000);
    for (int i = 0; i < 10; ++i)
      dev.submit([&] {
        std::this_thread::sleep_for(1ms);
        ++ran;
      });
  }
  EXPECT_EQ(ran.load(), 10);
}

TEST(HostDeviceTest, WorkCanAllocateOnTheStream) {
  HostDevice dev(0, 1000);
  std::unique_ptr<PhysicalBlock> block;
  dev.submit([&] { block = dev.allocate(128); });
  dev.synchronize(kWait);
  ASSERT_NE(block, nullptr);
  EXPECT_EQ(dev.used(), 128u);
  block.reset();
  EXPECT_EQ(dev.used(), 0u);
}

}  // namespace
}  // namespace moreh::runtime

namespace {

TEST(HostDeviceEventTest, EventCompletesAfterEarlierWorkInStreamOrder) {
  moreh::runtime::HostDevice device(0, 1 << 20);
  std::atomic<int> done{0};
  device.submit([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    done = 1;
  });
  auto event = device.record_event();
  event->wait(std::chrono::milliseconds(5000));
  EXPECT_TRUE(event->query());
  EXPECT_EQ(done.load(), 1);
}

TEST(HostDeviceEventTest, WaitIsBoundedAndElapsedTimeIsMeasured) {
  moreh::runtime::HostDevice device(0, 1 << 20);
  auto start = device.record_event();
  device.submit([] { std::this_thread::sleep_for(std::chrono::milliseconds(100)); });
  auto end = device.record_event();
  EXPECT_THROW(end->wait(std::chrono::milliseconds(5)), moreh::runtime::TimeoutError);
  EXPECT_THROW(end->elapsed_ms_since(*start), moreh::runtime::Error);  // not complete yet
  end->wait(std::chrono::milliseconds(5000));
  EXPECT_GE(end->elapsed_ms_since(*start), 90.0);
}

TEST(HostDeviceEventTest, EventCompletesEvenAfterFailedWork) {
  moreh::runtime::HostDevice device(0, 1 << 20);
  device.submit([] { throw std::runtime_error("boom"); });
  auto event = device.record_event();
  event->wait(std::chrono::milliseconds(5000));
  EXPECT_THROW(device.synchronize(std::chrono::milliseconds(5000)), std::runtime_error);
}

}  // namespace

namespace {

TEST(HostDeviceCacheTest, FreedBlocksAreReusedAndNotCountedAsUsed) {
  moreh::runtime::HostDevice device(0, 1 << 24);
  void* first = nullptr;
  {
    auto block = device.allocate(100000);
    first = block->data();
  }
  EXPECT_EQ(device.used(), 0u);
  EXPECT_GE(device.cached_bytes(), 100000u);
  auto again = device.allocate(100000);
  EXPECT_EQ(again->data(), first);
  EXPECT_EQ(device.cache_hits(), 1u);
  EXPECT_EQ(device.cached_bytes(), 0u);
}

// What kernels allocate themselves (ATen's results and workspaces) comes from the same cache, uncharged, and
// goes back to it: a steady step reuses the blocks of the one before, as a GPU's caching allocator does.
TEST(HostDeviceCacheTest, KernelScratchSharesTheCacheUncharged) {
  moreh::runtime::HostDevice device(0, 1 << 24);
  void* first = nullptr;
  {
    auto scratch = device.allocate_scratch(70000);
    ASSERT_NE(scratch, nullptr);
    first = scratch.get();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 64, 0u);
    EXPECT_EQ(device.used(), 0u);  // charged only if a step keeps it (PhysicalDevice::adopt)
  }
  EXPECT_GE(device.cached_bytes(), 70000u);
  EXPECT_EQ(device.allocate_scratch(70000).get(), first);  // the next step's kernel gets the same block
  {
    auto block = device.allocate(70000);  // and so does a device allocation of that size
    EXPECT_EQ(block->data(), first);
    EXPECT_EQ(device.used(), 70000u);
  }
  EXPECT_EQ(device.cache_hits(), 2u);
  EXPECT_EQ(device.scratch_allocations(), 2u);
}

TEST(HostDeviceCacheTest, CacheIsBoundedAndCanBeReleased) {
  moreh::runtime::HostDevice device(0, 1 << 20);  // cache limit: a quarter of the capacity
  { auto a = device.allocate(200000), b = device.allocate(200000); }
  EXPECT_LE(device.cached_bytes(), (1u << 20) / 4);
  device.release_cached();
  EXPECT_EQ(device.cached_bytes(), 0u);
}

TEST(HostDeviceCacheTest, DestroyingTheDeviceFreesItsCache) {
  auto device = std::make_unique<moreh::runtime::HostDevice>(0, 1 << 20);
  { auto block = device->allocate(4096); }  // cached
  EXPECT_GT(device->cached_bytes(), 0u);
  device.reset();  // frees the cached block (LeakSanitizer / valgrind would flag a leak)
}

}  // namespace

namespace {

TEST(HostDeviceCopyTest, HostMemoryIsCopiedWithMemcpy) {
  moreh::runtime::HostDevice device(0, 1 << 20);
  EXPECT_TRUE(device.host_accessible());
  auto a = device.allocate(64), b = device.allocate(64);
  const std::vector<unsigned char> pattern = [] {
    std::vector<unsigned char> v(64);
    for (int i = 0; i < 64; ++i) v[i] = static_cast<unsigned char>(i * 3 + 1);
    return v;
  }();
  device.write(a->data(), pattern.data(), 64);
  device.submit([&] { device.copy_in_stream(b->data(), a->data(), 64); });
  device.synchronize(std::chrono::seconds(5));
  std::vector<unsigned char> back(64);
  device.read(back.data(), b->data(), 64);
  EXPECT_EQ(back, pattern);
  device.submit([&] { device.zero_in_stream(b->data(), 32); });
  device.synchronize(std::chrono::seconds(5));
  device.read(back.data(), b->data(), 64);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(back[i], i < 32 ? 0 : pattern[i]) << i;
  device.read(nullptr, nullptr, 0);  // nothing to copy: no pointer is touched
}

}  // namespace
