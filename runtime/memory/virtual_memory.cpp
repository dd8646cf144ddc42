#include "runtime/memory/virtual_memory.h"

#include <stdexcept>

#include "runtime/base/errors.h"

namespace moreh::runtime {

VirtualMemory::VirtualMemory(uint64_t base, uint64_t size) : base_(base), size_(size) { insert_free(base, size); }

void VirtualMemory::insert_free(uint64_t address, uint64_t bytes) {
  free_by_address_.emplace(address, bytes);
  free_by_size_.emplace(bytes, address);
}

void VirtualMemory::erase_free(std::map<uint64_t, uint64_t>::iterator it) {
  auto [lo, hi] = free_by_size_.equal_range(it->second);
  for (auto s = lo; s != hi; ++s) {
    if (s->second == it->first) {
      free_by_size_.erase(s);
      break;
    }
  }
  free_by_address_.erase(it);
}

VirtualRange VirtualMemory::reserve(uint64_t bytes) {
  if (bytes > size_) throw OutOfMemoryError("virtual address space", bytes, size_, size_);
  uint64_t rounded = bytes == 0 ? kAlignment : (bytes + kAlignment - 1) / kAlignment * kAlignment;
  std::lock_guard<std::mutex> lock(mu_);
  auto fit = free_by_size_.lower_bound(rounded);
  if (fit == free_by_size_.end())
    throw OutOfMemoryError("virtual address space", rounded, free_by_size_.empty() ? 0 : free_by_size_.rbegin()->first,
                           size_);
  uint64_t address = fit->second, have = fit->first;
  erase_free(free_by_address_.find(address));
  if (have > rounded) insert_free(address + rounded, have - rounded);
  reserved_ += rounded;
  ++live_;
  return {address, rounded};
}

void VirtualMemory::release(VirtualRange range) {
  if (range.bytes == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (range.address < base_ || range.address + range.bytes > base_ + size_)
    throw std::logic_error("VirtualMemory::release: range outside the space");
  uint64_t address = range.address, bytes = range.bytes;
  auto next = free_by_address_.lower_bound(address);
  if (next != free_by_address_.end() && next->first < address + bytes)
    throw std::logic_error("VirtualMemory::release: range is already free");
  if (next != free_by_address_.end() && next->first == address + bytes) {
    bytes += next->second;
    erase_free(next);
  }
  auto prev = free_by_address_.lower_bound(address);
  if (prev != free_by_address_.begin()) {
    --prev;
    if (prev->first + prev->second > address) throw std::logic_error("VirtualMemory::release: range is already free");
    if (prev->first + prev->second == address) {
      address = prev->first;
      bytes += prev->second;
      erase_free(prev);
    }
  }
  insert_free(address, bytes);
  reserved_ -= range.bytes;
  --live_;
}

uint64_t VirtualMemory::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_;
}
uint64_t VirtualMemory::live_ranges() const {
  std::lock_guard<std::mutex> lock(mu_);
  return live_;
}
uint64_t VirtualMemory::free_ranges() const {
  std::lock_guard<std::mutex> lock(mu_);
  return free_by_address_.size();
}

}  // namespace moreh::runtime
