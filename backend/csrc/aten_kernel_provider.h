// Runs recorded ATen calls on physical memory through the dispatcher: the kernels of a device's dispatch
// key over views of runtime blocks, results adopted as the nodes' outputs. Host devices use ATen's CPU
// kernels (host_kernel_provider.cpp), CUDA devices its CUDA kernels (cuda_kernel_provider.cpp); what
// differs between them is below.
#pragma once
#include <ATen/ATen.h>

#include <functional>

#include "runtime/device/kernel_provider.h"

namespace moreh::backend {

class AtenKernelProvider : public runtime::KernelProvider {
 public:
  void launch(const runtime::Node& node, const runtime::LaunchContext& ctx) override;

 protected:
  // The kernels' dispatch key (CPU, CUDA) and the device their tensors live on.
  virtual c10::DispatchKey dispatch_key() const = 0;
  virtual c10::Device torch_device(const runtime::PhysicalDevice& d) const = 0;
  // A tensor over `block` with ref's geometry (no copy).
  virtual at::Tensor view(runtime::PhysicalBlock& block, const runtime::TensorRef& ref) const = 0;
  // A fresh generator of the device's kind seeded with `seed` (the node's Seed attribute).
  virtual at::Generator generator(uint64_t seed, const runtime::PhysicalDevice& d) const = 0;
  // A host tensor the recorded call holds as an argument (an upload's source, an index built on the CPU),
  // as the device's kernels take it: host kernels use it as is, CUDA kernels want non-scalar tensors on
  // the GPU. Called inside on_device().
  virtual at::Tensor host_argument(const at::Tensor& t, const runtime::PhysicalDevice&) const { return t; }
  // Runs `kernels` with the calling thread set up for d (CUDA: its device and the runtime's stream).
  virtual void on_device(runtime::PhysicalDevice& d, const std::function<void()>& kernels) const { kernels(); }

 private:
  void bind(const runtime::LaunchContext& ctx, size_t k, const runtime::TensorRef& ref, const at::Tensor& r) const;
};

}  // namespace moreh::backend
