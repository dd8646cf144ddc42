#include "backend/csrc/host_kernel_provider.h"

#include <ATen/CPUGeneratorImpl.h>

#include "backend/csrc/aten_kernel_provider.h"
#include "backend/csrc/kernel_host_allocator.h"
#include "backend/csrc/moreh_storage.h"

namespace moreh::backend {
namespace {

class HostKernelProvider final : public AtenKernelProvider {
 protected:
  c10::DispatchKey dispatch_key() const override { return c10::DispatchKey::CPU; }
  c10::Device torch_device(const runtime::PhysicalDevice&) const override { return c10::Device(c10::kCPU); }
  at::Tensor view(runtime::PhysicalBlock& block, const runtime::TensorRef& ref) const override {
    return cpu_view(block, ref);
  }
  at::Generator generator(uint64_t seed, const runtime::PhysicalDevice&) const override {
    return at::make_generator<at::CPUGeneratorImpl>(seed);
  }
  // What the kernel allocates (its results, its workspace) comes from the device's cache of freed blocks.
  void on_device(runtime::PhysicalDevice& d, const std::function<void()>& kernels) const override {
    auto* host = dynamic_cast<runtime::HostDevice*>(&d);
    if (!host) return kernels();
    KernelAllocationScope scope(*host);
    kernels();
  }
};

}  // namespace

runtime::KernelProvider& host_kernel_provider() {
  static HostKernelProvider provider;
  return provider;
}

}  // namespace moreh::backend
