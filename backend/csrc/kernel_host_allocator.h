// The CPU allocator while a host device runs a kernel: ATen's allocations come from that device's cache of
// freed blocks (runtime::HostDevice::allocate_scratch), so a steady step reuses its memory as on a GPU.
#pragma once
#include "runtime/host/host_device.h"

namespace moreh::backend {

// While it lives, CPU allocations made on this thread come from `device`'s block cache. The first scope
// installs the allocator (it wraps the CPU allocator found then; other threads keep using that one).
class KernelAllocationScope {
 public:
  explicit KernelAllocationScope(runtime::HostDevice& device);
  ~KernelAllocationScope();
  KernelAllocationScope(const KernelAllocationScope&) = delete;
  KernelAllocationScope& operator=(const KernelAllocationScope&) = delete;

 private:
  runtime::HostDevice* previous_;
};

}  // namespace moreh::backend
