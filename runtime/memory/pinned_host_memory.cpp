#include "runtime/memory/pinned_host_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>

#include "runtime/base/errors.h"

namespace moreh::runtime {

uint64_t PinnedHostMemory::page_size() {
  static const uint64_t size = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return size;
}

void* PinnedHostMemory::allocate(uint64_t bytes) {
  const uint64_t page = page_size();
  if (bytes > UINT64_MAX - page) throw Error("pinned host memory: cannot allocate " + std::to_string(bytes) + " bytes");
  const uint64_t rounded = bytes == 0 ? page : (bytes + page - 1) / page * page;
  Block block;
  block.bytes = rounded;
  block.base = pin(rounded, block.locked);
  std::unique_lock lock(mu_);
  blocks_.emplace(reinterpret_cast<uintptr_t>(block.base), block);
  pinned_bytes_ += block.bytes;
  if (block.locked) locked_bytes_ += block.bytes;
  return block.base;
}

void PinnedHostMemory::free(void* base) {
  Block block;
  {
    std::unique_lock lock(mu_);
    auto it = blocks_.find(reinterpret_cast<uintptr_t>(base));
    if (it == blocks_.end())
      throw Error("pinned host memory: " + std::to_string(reinterpret_cast<uintptr_t>(base)) +
                  " is not the start of a pinned block");
    block = it->second;
    blocks_.erase(it);
    pinned_bytes_ -= block.bytes;
    if (block.locked) locked_bytes_ -= block.bytes;
  }
  unpin(block);
}

std::optional<PinnedHostMemory::Block> PinnedHostMemory::find(const void* p) const {
  const auto address = reinterpret_cast<uintptr_t>(p);
  std::shared_lock lock(mu_);
  auto it = blocks_.upper_bound(address);  // the first block starting after p
  if (it == blocks_.begin()) return std::nullopt;
  --it;
  if (address - it->first >= it->second.bytes) return std::nullopt;
  return it->second;
}

uint64_t PinnedHostMemory::pinned_bytes() const {
  std::shared_lock lock(mu_);
  return pinned_bytes_;
}

uint64_t PinnedHostMemory::locked_bytes() const {
  std::shared_lock lock(mu_);
  return locked_bytes_;
}

size_t PinnedHostMemory::block_count() const {
  std::shared_lock lock(mu_);
  return blocks_.size();
}

void PinnedHostMemory::release_all() noexcept {
  std::map<uintptr_t, Block> blocks;
  {
    std::unique_lock lock(mu_);
    blocks.swap(blocks_);
    pinned_bytes_ = locked_bytes_ = 0;
  }
  for (auto& [address, block] : blocks) unpin(block);
}

void* HostPinnedMemory::pin(uint64_t bytes, bool& locked) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw Error("pinned host memory: cannot map " + std::to_string(bytes) + " bytes: " + std::strerror(errno));
  // Past RLIMIT_MEMLOCK mlock fails (EPERM/ENOMEM/EAGAIN); the block then stays pageable.
  locked = try_lock_ && mlock(p, bytes) == 0;
  return p;
}

void HostPinnedMemory::unpin(const Block& block) noexcept {
  if (block.locked) munlock(block.base, block.bytes);
  munmap(block.base, block.bytes);
}

}  // namespace moreh::runtime
