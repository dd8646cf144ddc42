// Virtual addresses for moreh storages: each buffer gets a unique, never-dereferenced address range.
// Physical bytes are bound per device only when a plan places the buffer there.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>

namespace moreh::runtime {

struct VirtualRange {
  uint64_t address = 0;
  uint64_t bytes = 0;  // rounded up to the alignment
};

class VirtualMemory {
 public:
  static constexpr uint64_t kDefaultBase = 0x7d0000000000ull;
  static constexpr uint64_t kDefaultSize = 1ull << 44;  // 16 TiB of address space
  static constexpr uint64_t kAlignment = 512;

  explicit VirtualMemory(uint64_t base = kDefaultBase, uint64_t size = kDefaultSize);

  // Best-fit over the free ranges; throws OutOfMemoryError when the space is exhausted.
  VirtualRange reserve(uint64_t bytes);
  // Returns a range; adjacent free ranges coalesce.
  void release(VirtualRange range);

  uint64_t reserved_bytes() const;
  uint64_t live_ranges() const;
  uint64_t free_ranges() const;

 private:
  mutable std::mutex mu_;
  uint64_t base_, size_;
  std::map<uint64_t, uint64_t> free_by_address_;           // address -> bytes
  std::multimap<uint64_t, uint64_t> free_by_size_;         // bytes -> address
  uint64_t reserved_ = 0, live_ = 0;

  void insert_free(uint64_t address, uint64_t bytes);
  void erase_free(std::map<uint64_t, uint64_t>::iterator it);
};

}  // namespace moreh::runtime
