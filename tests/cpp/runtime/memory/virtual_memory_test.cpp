#include "runtime/memory/virtual_memory.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <vector>

#include "runtime/base/errors.h"

namespace moreh::runtime {
namespace {

constexpr uint64_t kAlign = VirtualMemory::kAlignment;

TEST(VirtualMemoryTest, ReserveGivesUniqueAlignedNonOverlappingRanges) {
  VirtualMemory vm;
  std::vector<VirtualRange> ranges;
  for (uint64_t bytes : {1ull, 511ull, 512ull, 513ull, 4096ull, 100000ull, 7ull, 1ull << 20})
    ranges.push_back(vm.reserve(bytes));
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(ranges[i].address % kAlign, 0u) << i;
    EXPECT_EQ(ranges[i].bytes % kAlign, 0u) << i;
    EXPECT_GE(ranges[i].address, VirtualMemory::kDefaultBase);
  }
  EXPECT_EQ(ranges[0].bytes, 512u);
  EXPECT_EQ(ranges[1].bytes, 512u);
  EXPECT_EQ(ranges[2].bytes, 512u);
  EXPECT_EQ(ranges[3].bytes, 1024u);
  EXPECT_EQ(ranges[4].bytes, 4096u);
  EXPECT_EQ(ranges[5].bytes, 100352u);  // 196 * 512

  auto sorted = ranges;
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.address < b.address; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    EXPECT_LT(sorted[i - 1].address, sorted[i].address) << "duplicate address";
    EXPECT_LE(sorted[i - 1].address + sorted[i - 1].bytes, sorted[i].address) << "overlap";
  }
  uint64_t total = 0;
  for (auto& r : ranges) total += r.bytes;
  EXPECT_EQ(vm.reserved_bytes(), total);
  EXPECT_EQ(vm.live_ranges(), ranges.size());
}

TEST(VirtualMemoryTest, ZeroByteReserveStillGetsARange) {
  VirtualMemory vm;
  VirtualRange a = vm.reserve(0);
  VirtualRange b = vm.reserve(0);
  EXPECT_EQ(a.bytes, kAlign);
  EXPECT_EQ(b.bytes, kAlign);
  EXPECT_NE(a.address, b.address);
  EXPECT_EQ(vm.live_ranges(), 2u);
  vm.release(a);
  vm.release(b);
  EXPECT_EQ(vm.live_ranges(), 0u);
  EXPECT_EQ(vm.reserved_bytes(), 0u);
  EXPECT_EQ(vm.free_ranges(), 1u);
}

TEST(VirtualMemoryTest, ReleaseCoalescesNeighbours) {
  VirtualMemory vm;
  VirtualRange a = vm.reserve(1000), b = vm.reserve(2000), c = vm.reserve(3000);
  EXPECT_EQ(vm.free_ranges(), 1u);  // the tail
  vm.release(b);
  EXPECT_EQ(vm.free_ranges(), 2u);  // hole + tail
  vm.release(a);
  EXPECT_EQ(vm.free_ranges(), 2u);  // a merged into b's hole
  vm.release(c);
  EXPECT_EQ(vm.free_ranges(), 1u);  // everything merged back into one range
  EXPECT_EQ(vm.reserved_bytes(), 0u);
  EXPECT_EQ(vm.live_ranges(), 0u);
  // The whole space is usable again, from the base.
  VirtualRange again = vm.reserve(1000);
  EXPECT_EQ(again.address, VirtualMemory::kDefaultBase);
}

TEST(VirtualMemoryTest, DoubleReleaseThrowsLogicError) {
  VirtualMemory vm;
  VirtualRange a = vm.reserve(1000);
  VirtualRange b = vm.reserve(1000);
  vm.release(a);
  EXPECT_THROW(vm.release(a), std::logic_error);
  // The failed release leaves the accounting alone.
  EXPECT_EQ(vm.live_ranges(), 1u);
  EXPECT_EQ(vm.reserved_bytes(), b.bytes);
  vm.release(b);
  EXPECT_THROW(vm.release(b), std::logic_error);
  EXPECT_EQ(vm.reserved_bytes(), 0u);
  EXPECT_EQ(vm.free_ranges(), 1u);
}

TEST(VirtualMemoryTest, ReleaseOutsideTheSpaceThrows) {
  VirtualMemory vm(1 << 20, 4096);
  EXPECT_THROW(vm.release({0, 512}), std::logic_error);
  EXPECT_THROW(vm.release({(1 << 20) + 4096, 512}), std::logic_error);
  EXPECT_THROW(vm.release({(1 << 20) + 3584, 1024}), std::logic_error);  // runs past the end
}

TEST(VirtualMemoryTest, ExhaustingTheSpaceThrowsOutOfMemory) {
  const uint64_t base = 1 << 20;
  VirtualMemory vm(base, 4096);
  EXPECT_THROW(vm.reserve(4097), OutOfMemoryError);
  std::vector<VirtualRange> ranges;
  for (int i = 0; i < 8; ++i) ranges.push_back(vm.reserve(512));
  EXPECT_EQ(vm.reserved_bytes(), 4096u);
  EXPECT_EQ(vm.free_ranges(), 0u);
  try {
    vm.reserve(1);
    FAIL() << "reserve past the space did not throw";
  } catch (const OutOfMemoryError& e) {
    EXPECT_EQ(e.requested(), 512u);
    EXPECT_EQ(e.available(), 0u);
    EXPECT_NE(std::string(e.what()).find("virtual address space"), std::string::npos);
  }
  // After releasing one slot the space is usable again and hands that slot back.
  vm.release(ranges[3]);
  VirtualRange r = vm.reserve(100);
  EXPECT_EQ(r.address, ranges[3].address);
  EXPECT_THROW(vm.reserve(1), OutOfMemoryError);
}

TEST(VirtualMemoryTest, BestFitReusesTheSmallestHoleThatFits) {
  const uint64_t base = 1 << 20;
  VirtualMemory vm(base, 64 * kAlign);
  VirtualRange a = vm.reserve(4 * kAlign);    // big hole to be
  VirtualRange s1 = vm.reserve(kAlign);       // separator
  VirtualRange b = vm.reserve(2 * kAlign);    // small hole to be
  VirtualRange s2 = vm.reserve(kAlign);       // separator
  vm.release(a);
  vm.release(b);
  EXPECT_EQ(vm.free_ranges(), 3u);  // a's hole, b's hole, the tail

  // 2 blocks fit a's hole (4) and b's hole (2) and the tail: best fit takes b's hole exactly.
  VirtualRange c = vm.reserve(2 * kAlign);
  EXPECT_EQ(c.address, b.address);
  EXPECT_EQ(vm.free_ranges(), 2u);
  // 3 blocks: only a's hole (4) and the tail; a's hole is smaller.
  VirtualRange d = vm.reserve(3 * kAlign);
  EXPECT_EQ(d.address, a.address);
  EXPECT_EQ(vm.free_ranges(), 2u);  // a's leftover block and the tail
  // 1 block: the leftover of a's hole, right after d.
  VirtualRange e = vm.reserve(kAlign);
  EXPECT_EQ(e.address, a.address + 3 * kAlign);
  (void)s1;
  (void)s2;
}

// A request so large that rounding it up to the alignment wraps around must be refused, not turned
// into a zero-byte range. See the report: VirtualMemory::reserve overflows in its rounding.
TEST(VirtualMemoryTest, HugeReserveThrowsInsteadOfWrapping) {
  VirtualMemory vm(1 << 20, 4096);
  EXPECT_THROW(vm.reserve(std::numeric_limits<uint64_t>::max()), OutOfMemoryError);
  EXPECT_THROW(vm.reserve(std::numeric_limits<uint64_t>::max() - 100), OutOfMemoryError);
  EXPECT_EQ(vm.live_ranges(), 0u);
}

}  // namespace
}  // namespace moreh::runtime
