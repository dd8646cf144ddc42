// CudaDevice on a real GPU. Every test skips, saying why, where the CUDA driver or a GPU is missing.
#include "runtime/cuda/cuda_device.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "runtime/cuda/cuda_discovery.h"
#include "runtime/cuda/cuda_driver.h"
#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

using namespace std::chrono_literals;
constexpr std::chrono::milliseconds kWait = 10s;
constexpr uint64_t kMiB = 1ull << 20;

#define MOREH_REQUIRE_GPU()                                                              \
  do {                                                                                   \
    if (!cuda::driver()) GTEST_SKIP() << "no CUDA driver: " << cuda::driver_unavailable_reason(); \
  } while (0)

std::vector<unsigned char> pattern(size_t n, int seed) {
  std::vector<unsigned char> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<unsigned char>((i * 131 + seed) % 251);
  return v;
}

std::vector<unsigned char> read_back(CudaDevice& device, const PhysicalBlock& block, size_t n) {
  std::vector<unsigned char> out(n, 0xee);
  device.read(out.data(), block.data(), n);
  return out;
}

// A host function on the stream that holds the GPU's queue until opened: GPU work that is still running.
// Opens when it goes (a failed assertion must not leave the stream stuck); the flag lives as long as the
// host function needs it.
class Gate {
 public:
  ~Gate() { open(); }
  void open() { flag_->store(true); }
  void close_on(CudaDevice& device) {
    device.submit([flag = flag_, &device] {
      auto* holder = new std::shared_ptr<std::atomic<bool>>(flag);
      const CUresult r = cuda::require_driver().LaunchHostFunc(device.stream(), &Gate::wait, holder);
      if (r != CUDA_SUCCESS) delete holder;
      cuda::check(r, "cuLaunchHostFunc");
    });
  }

 private:
  static void CUDA_CB wait(void* holder) {
    auto* flag = static_cast<std::shared_ptr<std::atomic<bool>>*>(holder);
    const auto give_up = std::chrono::steady_clock::now() + 30s;  // never hang the suite
    while (!(*flag)->load() && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(1ms);
    delete flag;
  }
  std::shared_ptr<std::atomic<bool>> flag_ = std::make_shared<std::atomic<bool>>(false);
};

TEST(CudaDeviceTest, DiscoveryListsTheGpus) {
  MOREH_REQUIRE_GPU();
  const cuda::GpuDiscovery found = cuda::discover_gpus();
  ASSERT_FALSE(found.gpus.empty()) << found.unavailable_reason;
  EXPECT_EQ(found.unavailable_reason, "");
  for (size_t i = 0; i < found.gpus.size(); ++i) {
    const cuda::GpuInfo& gpu = found.gpus[i];
    EXPECT_EQ(gpu.ordinal, static_cast<int>(i));
    EXPECT_FALSE(gpu.name.empty());
    EXPECT_GT(gpu.total_memory, 256 * kMiB);
    EXPECT_GE(gpu.compute_capability_major, 3);
    EXPECT_GE(gpu.compute_capability_minor, 0);
    EXPECT_GT(gpu.multiprocessor_count, 0);
  }
}

TEST(CudaDeviceTest, Identity) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(2, 0, 64 * kMiB);
  const cuda::GpuInfo gpu = cuda::discover_gpus().gpus.at(0);
  EXPECT_EQ(device.kind(), DeviceKind::kCuda);
  EXPECT_EQ(device.index(), 2);
  EXPECT_EQ(device.ordinal(), 0);
  EXPECT_EQ(device.gpu_name(), gpu.name);
  EXPECT_EQ(device.name(), "cuda:2 (GPU 0, " + gpu.name + ")");
  EXPECT_FALSE(device.host_accessible());
  EXPECT_NE(device.stream(), nullptr);
  EXPECT_NE(device.context(), nullptr);
  EXPECT_FALSE(device.busy());
  EXPECT_THROW(CudaDevice(0, 1 << 20, kMiB), Error);  // no such GPU
}

TEST(CudaDeviceTest, AllocateChargesAndOutOfMemoryPastTheCapacity) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(0, 0, 64 * kMiB);
  auto a = device.allocate(10 * kMiB);
  ASSERT_NE(a->data(), nullptr);
  EXPECT_EQ(a->bytes(), 10 * kMiB);
  EXPECT_EQ(device.used(), 10 * kMiB);
  EXPECT_EQ(device.allocations(), 1u);
  try {
    device.allocate(60 * kMiB);
    FAIL() << "allocate past the capacity did not throw";
  } catch (const OutOfMemoryError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("OUT_OF_MEMORY"), std::string::npos) << what;
    EXPECT_NE(what.find("cuda:0"), std::string::npos) << what;
    EXPECT_EQ(e.requested(), 60 * kMiB);
    EXPECT_EQ(e.available(), 54 * kMiB);
  }
  EXPECT_EQ(device.used(), 10 * kMiB);
  auto b = device.allocate(54 * kMiB);  // exactly up to the capacity
  EXPECT_EQ(device.used(), 64 * kMiB);
  auto z = device.allocate(0);
  EXPECT_NE(z->data(), nullptr);
  a.reset();
  b.reset();
  EXPECT_EQ(device.used(), 0u);
  EXPECT_EQ(device.peak(), 64 * kMiB);
}

TEST(CudaDeviceTest, WriteThenReadRoundTrips) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(0, 0, 64 * kMiB);
  for (size_t n : {size_t{1}, size_t{4097}, size_t{3 * kMiB + 5}}) {
    auto block = device.allocate(n);
    const auto data = pattern(n, static_cast<int>(n));
    device.write(block->data(), data.data(), n);
    EXPECT_EQ(read_back(device, *block, n), data) << n << " bytes";
  }
}

TEST(CudaDeviceTest, ReadAndWriteWorkFromAnyThread) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(0, 0, 64 * kMiB);
  auto block = device.allocate(kMiB);
  const auto data = pattern(kMiB, 7);
  std::thread([&] { device.write(block->data(), data.data(), kMiB); }).join();  // no context current there
  std::vector<unsigned char> back;
  std::thread([&] { back = read_back(device, *block, kMiB); }).join();
  EXPECT_EQ(back, data);
}

TEST(CudaDeviceTest, CopyInStreamHostToDeviceAndDeviceToDevice) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(0, 0, 64 * kMiB);
  const size_t n = 2 * kMiB + 3;
  auto a = device.allocate(n), b = device.allocate(n);
  const auto data = pattern(n, 1);
  auto pinned = device.pinned_host_memory();
  void* staging = pinned->allocate(n);
  std::memcpy(staging, data.data(), n);
  device.submit([&] {
    device.copy_in_stream(a->data(), data.data(), n / 2);                    // pageable host -> device
    device.copy_in_stream(static_cast<char*>(a->data()) + n / 2,             // pinned host -> device
                          static_cast<const char*>(staging) + n / 2, n - n / 2);
    device.copy_in_stream(b->data(), a->data(), n);                          // device -> device, in order
  });
  device.synchronize(kWait);
  EXPECT_EQ(read_back(device, *b, n), data);

  std::vector<unsigned char> host(n, 0);
  device.submit([&] { device.copy_in_stream(host.data(), b->data(), n); });  // device -> host
  device.synchronize(kWait);
  EXPECT_EQ(host, data);
  pinned->free(staging);
}

TEST(CudaDeviceTest, ZeroInStream) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(0, 0, 64 * kMiB);
  const size_t n = 10000;
  auto block = device.allocate(n);
  const auto data = pattern(n, 3);
  device.write(block->data(), data.data(), n);
  device.submit([&] { device.zero_in_stream(static_cast<char*>(block->data()) + 100, 5000); });
  device.synchronize(kWait);
  const auto back = read_back(device, *block, n);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char expected = i >= 100 && i < 5100 ? 0 : data[i];
    ASSERT_EQ(back[i], expected) << "byte " << i;
  }
}

TEST(CudaDeviceTest, EventCompletesWhenTheGpuGetsThere) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(0, 0, 64 * kMiB);
  Gate gate;
  auto before = device.record_event();
  gate.close_on(device);
  auto after = device.record_event();
  before->wait(kWait);
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(after->query());  // the item that records it has run; the GPU has not got there
  EXPECT_TRUE(device.busy());
  EXPECT_THROW(after->wait(10ms), TimeoutError);
  gate.open();
  after->wait(kWait);
  EXPECT_GE(after->elapsed_ms_since(*before), 40.0);
  device.synchronize(kWait);
  EXPECT_FALSE(device.busy());
  EXPECT_GE(device.busy_ns(), 40'000'000u);  // the stream had work outstanding while the gate was shut
}

TEST(CudaDeviceTest, SynchronizeWaitsForTheGpuWithABound) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(3, 0, 64 * kMiB);
  Gate gate;
  gate.close_on(device);
  const auto start = std::chrono::steady_clock::now();
  try {
    device.synchronize(20ms);
    FAIL() << "synchronize did not time out";
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:3"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  gate.open();
  EXPECT_NO_THROW(device.synchronize(kWait));
  EXPECT_FALSE(device.busy());
}

TEST(CudaDeviceTest, SynchronizeRethrowsTheWorksErrorOnce) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(0, 0, 64 * kMiB);
  std::atomic<int> ran{0};
  device.submit([] { throw std::runtime_error("kernel refused"); });
  device.submit([&] { ++ran; });
  EXPECT_THROW(device.synchronize(kWait), std::runtime_error);
  EXPECT_EQ(ran.load(), 1);
  EXPECT_NO_THROW(device.synchronize(kWait));
  auto block = device.allocate(kMiB);  // still usable
  const auto data = pattern(kMiB, 9);
  device.write(block->data(), data.data(), kMiB);
  EXPECT_EQ(read_back(device, *block, kMiB), data);
}

TEST(CudaDeviceTest, PinnedHostMemoryIsPageLockedAndShared) {
  MOREH_REQUIRE_GPU();
  CudaDevice first(0, 0, 64 * kMiB), second(1, 0, 64 * kMiB);
  auto pinned = first.pinned_host_memory();
  EXPECT_EQ(pinned, second.pinned_host_memory());  // one answer to "is it pinned?" whichever device asks
  void* p = pinned->allocate(10000);
  ASSERT_NE(p, nullptr);
  auto block = pinned->find(static_cast<char*>(p) + 9999);
  ASSERT_TRUE(block.has_value());
  EXPECT_EQ(block->base, p);
  EXPECT_GE(block->bytes, 10000u);
  EXPECT_TRUE(block->locked);
  EXPECT_EQ(pinned->locked_bytes(), block->bytes);
  std::memset(p, 0x5a, 10000);  // host memory the host can use
  auto device_block = first.allocate(10000);
  first.write(device_block->data(), p, 10000);
  EXPECT_EQ(read_back(first, *device_block, 10000), std::vector<unsigned char>(10000, 0x5a));
  pinned->free(p);
  EXPECT_FALSE(pinned->contains(p));
  EXPECT_EQ(pinned->pinned_bytes(), 0u);
}

TEST(CudaDeviceTest, TwoLogicalDevicesShareOneGpuWithTheirOwnCapacities) {
  MOREH_REQUIRE_GPU();
  CudaDevice small(0, 0, 32 * kMiB), large(1, 0, 64 * kMiB);
  EXPECT_EQ(small.context(), large.context());  // the GPU's primary context
  EXPECT_NE(small.stream(), large.stream());
  EXPECT_THROW(small.allocate(40 * kMiB), OutOfMemoryError);
  auto a = large.allocate(40 * kMiB);
  auto b = small.allocate(30 * kMiB);
  EXPECT_EQ(small.used(), 30 * kMiB);
  EXPECT_EQ(large.used(), 40 * kMiB);

  const auto data = pattern(kMiB, 5);
  small.write(b->data(), data.data(), kMiB);
  large.submit([&] { large.copy_in_stream(a->data(), b->data(), kMiB); });  // the other device's memory
  large.synchronize(kWait);
  EXPECT_EQ(read_back(large, *a, kMiB), data);
}

TEST(CudaDeviceTest, FreedMemoryIsCachedAndCanBeReleased) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(0, 0, 64 * kMiB);
  void* first = nullptr;
  {
    auto block = device.allocate(3 * kMiB);
    first = block->data();
  }
  EXPECT_EQ(device.used(), 0u);
  EXPECT_EQ(device.cached_bytes(), 4 * kMiB);  // 3 MiB rounds to 4
  {
    auto again = device.allocate(3 * kMiB + 100);
    EXPECT_EQ(again->data(), first);
  }
  auto stats = device.pool_stats();
  EXPECT_EQ(stats.cache_hits, 1u);
  EXPECT_EQ(stats.raw_allocations, 1u);
  EXPECT_EQ(stats.reserved_bytes, 4 * kMiB);
  EXPECT_DOUBLE_EQ(stats.fragmentation, 1.0);
  device.release_cached();
  EXPECT_EQ(device.cached_bytes(), 0u);
  stats = device.pool_stats();
  EXPECT_EQ(stats.raw_frees, 1u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
}

TEST(CudaDeviceTest, DestructorRunsQueuedWorkAndWaitsForTheGpu) {
  MOREH_REQUIRE_GPU();
  std::atomic<int> ran{0};
  auto reached = std::make_shared<std::atomic<bool>>(false);
  {
    CudaDevice device(0, 0, 64 * kMiB);
    for (int i = 0; i < 5; ++i) device.submit([&] { ++ran; });
    device.submit([&device, reached] {
      auto* holder = new std::shared_ptr<std::atomic<bool>>(reached);
      cuda::check(cuda::require_driver().LaunchHostFunc(
                      device.stream(),
                      [](void* h) {
                        auto* flag = static_cast<std::shared_ptr<std::atomic<bool>>*>(h);
                        std::this_thread::sleep_for(std::chrono::milliseconds(20));
                        (*flag)->store(true);
                        delete flag;
                      },
                      holder),
                  "cuLaunchHostFunc");
    });
  }  // no synchronize
  EXPECT_EQ(ran.load(), 5);
  EXPECT_TRUE(reached->load());
}

TEST(CudaDeviceTest, AWaitingThreadRunsQueuedWorkWithTheContextCurrent) {
  MOREH_REQUIRE_GPU();
  CudaDevice device(0, 0, 64 * kMiB);
  auto block = device.allocate(kMiB);
  std::atomic<int> wrong_context{0};
  for (int i = 0; i < 200; ++i)
    device.submit([&] {
      CUcontext current = nullptr;
      cuda::require_driver().CtxGetCurrent(&current);
      if (current != device.context()) ++wrong_context;
      device.zero_in_stream(block->data(), kMiB);
    });
  std::thread waiter([&] { device.synchronize(kWait); });  // may run some of the items itself
  waiter.join();
  device.synchronize(kWait);
  EXPECT_EQ(wrong_context.load(), 0);
}

}  // namespace
}  // namespace moreh::runtime
