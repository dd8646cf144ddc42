#include "runtime/memory/pinned_host_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstdint>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "runtime/base/errors.h"
#include "runtime/host/host_device.h"

namespace moreh::runtime {
namespace {

const uint64_t kPage = PinnedHostMemory::page_size();

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

TEST(PinnedHostMemoryTest, BlocksArePageAlignedWholePagesAndWritable) {
  HostPinnedMemory memory;
  for (uint64_t bytes : std::vector<uint64_t>{0, 1, kPage - 1, kPage, kPage + 1, 3 * kPage + 17}) {
    void* p = memory.allocate(bytes);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(addr(p) % kPage, 0u) << bytes;
    auto block = memory.find(p);
    ASSERT_TRUE(block.has_value()) << bytes;
    EXPECT_EQ(block->base, p);
    EXPECT_EQ(block->bytes, bytes == 0 ? kPage : (bytes + kPage - 1) / kPage * kPage) << bytes;
    std::memset(p, 0xab, block->bytes);  // the whole block is usable memory
    EXPECT_EQ(static_cast<unsigned char*>(p)[block->bytes - 1], 0xab);
    memory.free(p);
    EXPECT_FALSE(memory.contains(p)) << bytes;
  }
  EXPECT_EQ(memory.block_count(), 0u);
  EXPECT_EQ(memory.pinned_bytes(), 0u);
}

TEST(PinnedHostMemoryTest, AnyAddressInsideABlockIsFoundAndNothingOutside) {
  HostPinnedMemory memory;
  std::vector<void*> blocks;
  for (uint64_t bytes : std::vector<uint64_t>{kPage, 2 * kPage + 5, 5 * kPage}) blocks.push_back(memory.allocate(bytes));
  for (void* p : blocks) {
    auto block = memory.find(p);
    ASSERT_TRUE(block);
    const auto* base = static_cast<const char*>(p);
    for (uint64_t off : {uint64_t{0}, uint64_t{1}, block->bytes / 2, block->bytes - 1}) {
      auto inner = memory.find(base + off);
      ASSERT_TRUE(inner.has_value()) << off;
      EXPECT_EQ(inner->base, p) << off;
    }
    // One past the end belongs to this block only if another block starts right there.
    auto after = memory.find(base + block->bytes);
    if (after) { EXPECT_EQ(after->base, static_cast<const void*>(base + block->bytes)); }
  }
  int on_stack = 0;
  std::vector<char> on_heap(64);
  EXPECT_FALSE(memory.contains(&on_stack));
  EXPECT_FALSE(memory.contains(on_heap.data()));
  EXPECT_FALSE(memory.contains(nullptr));
  EXPECT_EQ(memory.block_count(), 3u);
  EXPECT_EQ(memory.pinned_bytes(), kPage + 3 * kPage + 5 * kPage);

  // Freeing the middle block forgets exactly its range.
  void* middle = blocks[1];
  const uint64_t middle_bytes = memory.find(middle)->bytes;
  memory.free(middle);
  EXPECT_FALSE(memory.contains(static_cast<char*>(middle) + middle_bytes / 2));
  EXPECT_TRUE(memory.contains(blocks[0]));
  EXPECT_TRUE(memory.contains(static_cast<char*>(blocks[2]) + 1));
  EXPECT_EQ(memory.pinned_bytes(), kPage + 5 * kPage);
  memory.free(blocks[0]);
  memory.free(blocks[2]);
  EXPECT_EQ(memory.block_count(), 0u);
}

TEST(PinnedHostMemoryTest, FreeingAnythingButABlockStartThrowsAndFreesNothing) {
  HostPinnedMemory memory;
  void* p = memory.allocate(2 * kPage);
  EXPECT_THROW(memory.free(static_cast<char*>(p) + 8), Error);
  int other = 0;
  EXPECT_THROW(memory.free(&other), Error);
  EXPECT_TRUE(memory.contains(p));
  memory.free(p);
  EXPECT_THROW(memory.free(p), Error);  // twice
}

TEST(PinnedHostMemoryTest, LockingIsReportedPerBlock) {
  HostPinnedMemory unlocked(/*try_lock=*/false);
  void* p = unlocked.allocate(kPage);
  EXPECT_FALSE(unlocked.find(p)->locked);
  EXPECT_EQ(unlocked.locked_bytes(), 0u);
  unlocked.free(p);

  HostPinnedMemory memory;  // locked when RLIMIT_MEMLOCK allows, either way counted consistently
  void* q = memory.allocate(kPage);
  EXPECT_EQ(memory.locked_bytes(), memory.find(q)->locked ? kPage : 0u);
  memory.free(q);
  EXPECT_EQ(memory.locked_bytes(), 0u);
}

TEST(PinnedHostMemoryTest, DestroyingTheMemoryFreesBlocksStillAllocated) {
  auto memory = std::make_unique<HostPinnedMemory>();
  void* p = memory->allocate(kPage);
  std::memset(p, 1, kPage);
  unsigned char resident = 0;
  ASSERT_EQ(mincore(p, kPage, &resident), 0);
  memory.reset();
  errno = 0;
  EXPECT_EQ(mincore(p, kPage, &resident), -1);  // unmapped: the block went with the memory
  EXPECT_EQ(errno, ENOMEM);
}

TEST(PinnedHostMemoryTest, AHostDeviceKeepsOnePinnedMemoryThatOutlivesIt) {
  std::shared_ptr<PinnedHostMemory> memory;
  void* p = nullptr;
  {
    HostDevice device(0, 1 << 20);
    memory = device.pinned_host_memory();
    EXPECT_EQ(memory, device.pinned_host_memory());
    p = memory->allocate(100);
  }
  EXPECT_TRUE(memory->contains(static_cast<char*>(p) + 99));  // blocks in use keep it alive
  memory->free(p);
}

}  // namespace
}  // namespace moreh::runtime
