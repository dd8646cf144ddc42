// Pinned host memory: host buffers that a device can copy to and from directly (what
// tensor.pin_memory() and DataLoader(pin_memory=True) ask for), with their ranges known so that "is this
// pointer pinned?" is answered for any address inside a block, not only its start.
//
// PinnedHostMemory keeps the ranges; how memory is pinned is the device's: HostPinnedMemory below serves
// HostDevice, and a CUDA device implements pin()/unpin() with cuMemHostAlloc/cuMemFreeHost.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <shared_mutex>

namespace moreh::runtime {

class PinnedHostMemory {
 public:
  struct Block {
    void* base = nullptr;
    uint64_t bytes = 0;   // the whole block: what was asked for, rounded up to whole pages
    bool locked = false;  // page-locked (the OS will not page it out)
  };

  virtual ~PinnedHostMemory() = default;
  PinnedHostMemory() = default;
  PinnedHostMemory(const PinnedHostMemory&) = delete;
  PinnedHostMemory& operator=(const PinnedHostMemory&) = delete;

  // A new pinned block of at least `bytes` (at least one page, page-aligned); throws Error when the
  // system has no memory for it.
  void* allocate(uint64_t bytes);
  // Frees a block by its start; throws Error for any other pointer (nothing is freed then).
  void free(void* base);
  // The block that holds address `p` (any byte of it), if any.
  std::optional<Block> find(const void* p) const;
  bool contains(const void* p) const { return find(p).has_value(); }

  uint64_t pinned_bytes() const;
  uint64_t locked_bytes() const;
  size_t block_count() const;
  static uint64_t page_size();

 protected:
  // Pins `bytes` (a multiple of page_size()) of fresh host memory; says whether it is page-locked.
  // Throws Error on failure.
  virtual void* pin(uint64_t bytes, bool& locked) = 0;
  virtual void unpin(const Block& block) noexcept = 0;
  // Unpins every block still allocated; a derived class's destructor calls it (the base's cannot).
  void release_all() noexcept;

 private:
  mutable std::shared_mutex mu_;
  std::map<uintptr_t, Block> blocks_;  // by start address
  uint64_t pinned_bytes_ = 0, locked_bytes_ = 0;
};

// HostDevice has no DMA engine, so "pinned" is what can be had without one: page-aligned anonymous
// memory (mmap), page-locked with mlock while the process's RLIMIT_MEMLOCK allows it and left pageable
// (still pinned as far as PyTorch is concerned, still tracked) once it does not.
class HostPinnedMemory final : public PinnedHostMemory {
 public:
  explicit HostPinnedMemory(bool try_lock = true) : try_lock_(try_lock) {}
  ~HostPinnedMemory() override { release_all(); }

 protected:
  void* pin(uint64_t bytes, bool& locked) override;
  void unpin(const Block& block) noexcept override;

 private:
  bool try_lock_;
};

}  // namespace moreh::runtime
