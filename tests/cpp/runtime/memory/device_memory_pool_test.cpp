#include "runtime/memory/device_memory_pool.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <mutex>
#include <map>
#include <thread>
#include <vector>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

constexpr uint64_t kMiB = 1ull << 20;

// Host memory standing in for a device: counts calls, holds at most `limit` bytes, can be told to fail.
class FakeAllocator final : public RawDeviceAllocator {
 public:
  explicit FakeAllocator(uint64_t limit = UINT64_MAX) : limit_(limit) {}
  ~FakeAllocator() override { EXPECT_EQ(live_.size(), 0u) << "blocks leaked past the pool"; }

  void* allocate(uint64_t bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++allocations_;
    if (fail_next_ > 0) {
      --fail_next_;
      return nullptr;
    }
    if (held_ + bytes > limit_) return nullptr;
    void* p = std::malloc(bytes);
    live_[p] = bytes;
    sizes_.push_back(bytes);
    held_ += bytes;
    return p;
  }
  void free(void* p) noexcept override {
    std::lock_guard<std::mutex> lock(mu_);
    ++frees_;
    auto it = live_.find(p);
    EXPECT_NE(it, live_.end()) << "freed a pointer it did not hand out";
    if (it == live_.end()) return;
    held_ -= it->second;
    live_.erase(it);
    std::free(p);
  }

  void fail_next(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_next_ = n;
  }
  int allocations() const {
    std::lock_guard<std::mutex> lock(mu_);
    return allocations_;
  }
  int frees() const {
    std::lock_guard<std::mutex> lock(mu_);
    return frees_;
  }
  size_t live() const {
    std::lock_guard<std::mutex> lock(mu_);
    return live_.size();
  }
  std::vector<uint64_t> sizes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sizes_;
  }

 private:
  mutable std::mutex mu_;
  uint64_t limit_, held_ = 0;
  int allocations_ = 0, frees_ = 0, fail_next_ = 0;
  std::map<void*, uint64_t> live_;
  std::vector<uint64_t> sizes_;
};

TEST(DeviceMemoryPoolTest, RoundsSmallSizesTo512BytesAndLargeOnesTo2MiB) {
  EXPECT_EQ(DeviceMemoryPool::round_size(0), 512u);
  EXPECT_EQ(DeviceMemoryPool::round_size(1), 512u);
  EXPECT_EQ(DeviceMemoryPool::round_size(512), 512u);
  EXPECT_EQ(DeviceMemoryPool::round_size(513), 1024u);
  EXPECT_EQ(DeviceMemoryPool::round_size(kMiB), kMiB);
  EXPECT_EQ(DeviceMemoryPool::round_size(kMiB + 1), 2 * kMiB);
  EXPECT_EQ(DeviceMemoryPool::round_size(2 * kMiB), 2 * kMiB);
  EXPECT_EQ(DeviceMemoryPool::round_size(2 * kMiB + 1), 4 * kMiB);
  EXPECT_EQ(DeviceMemoryPool::round_size(100 * kMiB + 5), 102 * kMiB);
  EXPECT_THROW(DeviceMemoryPool::round_size(UINT64_MAX - 10), Error);

  auto raw = std::make_shared<FakeAllocator>();
  DeviceMemoryPool pool(raw);
  auto a = pool.allocate(1000), b = pool.allocate(3 * kMiB);
  EXPECT_EQ(raw->sizes(), (std::vector<uint64_t>{1024, 4 * kMiB}));  // the raw allocator sees rounded sizes
  EXPECT_EQ(pool.stats().in_use_bytes, 1024 + 4 * kMiB);
}

TEST(DeviceMemoryPoolTest, FreedBlocksAreReusedBySizeClass) {
  auto raw = std::make_shared<FakeAllocator>();
  DeviceMemoryPool pool(raw);
  void* first = nullptr;
  {
    auto a = pool.allocate(1000);
    first = a.get();
  }
  EXPECT_EQ(pool.cached_bytes(), 1024u);
  auto b = pool.allocate(1000);
  EXPECT_EQ(b.get(), first);
  auto c = pool.allocate(600);  // the same size class while b holds the cached one: a new block
  EXPECT_NE(c.get(), first);
  c.reset();
  auto d = pool.allocate(1024);  // 600, 1000 and 1024 all round to 1024
  EXPECT_EQ(raw->allocations(), 2);
  auto e = pool.allocate(2000);  // another class: a cached 1024-byte block is not used
  EXPECT_EQ(raw->allocations(), 3);
  EXPECT_EQ(pool.stats().cache_hits, 2u);
}

TEST(DeviceMemoryPoolTest, StatsFollowAllocationsAndFrees) {
  auto raw = std::make_shared<FakeAllocator>();
  DeviceMemoryPool pool(raw);
  auto s = pool.stats();
  EXPECT_EQ(s.reserved_bytes, 0u);
  EXPECT_EQ(s.fragmentation, 0.0);

  auto a = pool.allocate(3 * kMiB);  // 4 MiB
  auto b = pool.allocate(kMiB);      // 1 MiB
  auto c = pool.allocate(100);       // 512
  b.reset();
  c.reset();
  s = pool.stats();
  EXPECT_EQ(s.reserved_bytes, 5 * kMiB + 512);
  EXPECT_EQ(s.in_use_bytes, 4 * kMiB);
  EXPECT_EQ(s.cached_bytes, kMiB + 512);
  EXPECT_EQ(s.reserved_bytes, s.in_use_bytes + s.cached_bytes);
  EXPECT_EQ(s.allocations, 3u);
  EXPECT_EQ(s.raw_allocations, 3u);
  EXPECT_EQ(s.raw_frees, 0u);
  EXPECT_EQ(s.cache_hits, 0u);
  EXPECT_EQ(s.largest_cached_block, kMiB);
  EXPECT_DOUBLE_EQ(s.fragmentation, static_cast<double>(kMiB + 512) / static_cast<double>(5 * kMiB + 512));

  a.reset();
  s = pool.stats();
  EXPECT_EQ(s.largest_cached_block, 4 * kMiB);
  EXPECT_EQ(s.in_use_bytes, 0u);
  EXPECT_DOUBLE_EQ(s.fragmentation, 1.0);  // all of it idle
}

TEST(DeviceMemoryPoolTest, OutOfMemoryReleasesTheCacheAndRetriesOnce) {
  auto raw = std::make_shared<FakeAllocator>();
  DeviceMemoryPool pool(raw);
  { auto a = pool.allocate(1000), b = pool.allocate(3 * kMiB); }
  EXPECT_EQ(pool.cached_bytes(), 1024 + 4 * kMiB);

  raw->fail_next(1);  // the device is full until the cache is given back
  auto c = pool.allocate(10 * kMiB);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(raw->allocations(), 4);  // 2, the failure, the retry
  EXPECT_EQ(raw->frees(), 2);
  auto s = pool.stats();
  EXPECT_EQ(s.oom_retries, 1u);
  EXPECT_EQ(s.cached_bytes, 0u);
  EXPECT_EQ(s.reserved_bytes, 10 * kMiB);

  raw->fail_next(2);  // still full after the release: nullptr, nothing charged
  EXPECT_EQ(pool.allocate(kMiB), nullptr);
  s = pool.stats();
  EXPECT_EQ(s.reserved_bytes, 10 * kMiB);
  EXPECT_EQ(s.in_use_bytes, 10 * kMiB);
  EXPECT_EQ(s.allocations, 3u);
}

TEST(DeviceMemoryPoolTest, OutOfMemoryWithAnEmptyCacheDoesNotRetry) {
  auto raw = std::make_shared<FakeAllocator>();
  DeviceMemoryPool pool(raw);
  raw->fail_next(1);
  EXPECT_EQ(pool.allocate(kMiB), nullptr);
  EXPECT_EQ(raw->allocations(), 1);
  EXPECT_EQ(pool.stats().oom_retries, 0u);
  EXPECT_NE(pool.allocate(kMiB), nullptr);  // usable afterwards
}

TEST(DeviceMemoryPoolTest, ADeviceThatFillsUpGetsItsCacheBack) {
  auto raw = std::make_shared<FakeAllocator>(8 * kMiB);  // a device with 8 MiB
  DeviceMemoryPool pool(raw);
  { auto a = pool.allocate(4 * kMiB), b = pool.allocate(4 * kMiB); }  // full, all of it cached
  auto c = pool.allocate(6 * kMiB);
  ASSERT_NE(c, nullptr);
  auto s = pool.stats();
  EXPECT_EQ(s.oom_retries, 1u);
  EXPECT_EQ(s.reserved_bytes, 6 * kMiB);
  EXPECT_EQ(pool.allocate(4 * kMiB), nullptr);  // really out of memory: 6 + 4 > 8, nothing cached
}

TEST(DeviceMemoryPoolTest, ReleaseCachedGivesEverythingBack) {
  auto raw = std::make_shared<FakeAllocator>();
  DeviceMemoryPool pool(raw);
  auto keep = pool.allocate(kMiB);
  { auto a = pool.allocate(1000), b = pool.allocate(1000), c = pool.allocate(5 * kMiB); }
  EXPECT_EQ(pool.release_cached(), 2048 + 6 * kMiB);
  EXPECT_EQ(raw->frees(), 3);
  EXPECT_EQ(raw->live(), 1u);
  auto s = pool.stats();
  EXPECT_EQ(s.cached_bytes, 0u);
  EXPECT_EQ(s.largest_cached_block, 0u);
  EXPECT_EQ(s.reserved_bytes, kMiB);
  EXPECT_EQ(s.raw_frees, 3u);
  EXPECT_EQ(pool.release_cached(), 0u);
}

TEST(DeviceMemoryPoolTest, AReserveLimitGivesCachedBlocksBackBeforeGrowing) {
  auto raw = std::make_shared<FakeAllocator>();
  DeviceMemoryPool pool(raw, 10 * kMiB);
  auto in_use = pool.allocate(2 * kMiB);
  { auto a = pool.allocate(2 * kMiB), b = pool.allocate(4 * kMiB); }  // 6 MiB cached, 8 reserved
  auto c = pool.allocate(5 * kMiB);  // 6 MiB more: the largest cached block (4 MiB) goes back, 2 stay
  auto s = pool.stats();
  EXPECT_EQ(raw->frees(), 1);
  EXPECT_EQ(s.cached_bytes, 2 * kMiB);
  EXPECT_EQ(s.reserved_bytes, 10 * kMiB);
  auto d = pool.allocate(8 * kMiB);  // past the limit whatever is released: the cache goes, it still grows
  ASSERT_NE(d, nullptr);
  s = pool.stats();
  EXPECT_EQ(s.cached_bytes, 0u);
  EXPECT_EQ(s.reserved_bytes, 16 * kMiB);
  EXPECT_EQ(s.oom_retries, 0u);
}

TEST(DeviceMemoryPoolTest, BlocksReturnedAfterThePoolIsGoneAreFreed) {
  auto raw = std::make_shared<FakeAllocator>();
  std::shared_ptr<void> survivor;
  {
    DeviceMemoryPool pool(raw);
    survivor = pool.allocate(1000);
    { auto cached = pool.allocate(kMiB); }
  }  // the cached block goes with the pool
  EXPECT_EQ(raw->frees(), 1);
  EXPECT_EQ(raw->live(), 1u);
  survivor.reset();
  EXPECT_EQ(raw->frees(), 2);
  EXPECT_EQ(raw->live(), 0u);
}

TEST(DeviceMemoryPoolTest, ConcurrentUseKeepsTheBooksStraight) {
  auto raw = std::make_shared<FakeAllocator>();
  DeviceMemoryPool pool(raw);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&pool, t] {
      for (int i = 0; i < 500; ++i) {
        auto a = pool.allocate(512 * (1 + (i + t) % 7));
        auto b = pool.allocate(kMiB + 1);
        if (i % 100 == 0) pool.release_cached();
      }
    });
  for (auto& t : threads) t.join();
  auto s = pool.stats();
  EXPECT_EQ(s.in_use_bytes, 0u);
  EXPECT_EQ(s.reserved_bytes, s.cached_bytes);
  EXPECT_EQ(s.allocations, 4000u);
  EXPECT_EQ(s.raw_allocations - s.raw_frees, raw->live());
}

}  // namespace
}  // namespace moreh::runtime
