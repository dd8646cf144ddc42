#include "backend/csrc/kernel_host_allocator.h"

#include <c10/core/CPUAllocator.h>

#include <memory>
#include <mutex>
#include <unordered_map>

namespace moreh::backend {
namespace {

thread_local runtime::HostDevice* t_device = nullptr;

// Blocks handed to ATen, by address: the deleter is a plain function, and ATen may free through
// raw_deleter() too, so the owner (which returns the block to its cache) is found by the pointer.
class Owners {
 public:
  void add(void* p, std::shared_ptr<void> owner) {
    std::lock_guard<std::mutex> lock(mu_);
    owners_.emplace(p, std::move(owner));
  }
  // True when `p` was one of ours (its block is back in its cache).
  bool release(void* p) {
    std::shared_ptr<void> owner;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = owners_.find(p);
      if (it == owners_.end()) return false;
      owner = std::move(it->second);
      owners_.erase(it);
    }
    return true;  // `owner` goes here, outside the lock
  }

 private:
  std::mutex mu_;
  std::unordered_map<void*, std::shared_ptr<void>> owners_;
};

Owners& owners() {
  static auto* o = new Owners;  // lives for the process: tensors may be freed during exit
  return *o;
}

c10::Allocator*& next_allocator() {
  static c10::Allocator* next = nullptr;
  return next;
}

void release(void* p) {
  if (!owners().release(p)) next_allocator()->raw_deleter()(p);
}

class KernelHostAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    runtime::HostDevice* device = t_device;
    if (!device || n == 0) return next_allocator()->allocate(n);
    std::shared_ptr<void> owner = device->allocate_scratch(n);
    if (!owner) return next_allocator()->allocate(n);  // out of host memory: CPU's own error
    void* p = owner.get();
    owners().add(p, std::move(owner));
    return {p, p, &release, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

void install_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    c10::Allocator* current = c10::GetCPUAllocator();
    // Without a raw deleter the allocations we pass on could not be freed by pointer: leave CPU's alone.
    if (!current || !current->raw_deleter()) return;
    next_allocator() = current;
    static KernelHostAllocator allocator;
    c10::SetCPUAllocator(&allocator, /*priority=*/0);
  });
}

}  // namespace

KernelAllocationScope::KernelAllocationScope(runtime::HostDevice& device) : previous_(t_device) {
  install_once();
  if (next_allocator()) t_device = &device;
}

KernelAllocationScope::~KernelAllocationScope() { t_device = previous_; }

}  // namespace moreh::backend
