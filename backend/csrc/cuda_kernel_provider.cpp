#include "backend/csrc/cuda_kernel_provider.h"

#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "backend/csrc/aten_kernel_provider.h"
#include "runtime/cuda/cuda_device.h"

namespace moreh::backend {
namespace {

const runtime::CudaDevice& as_cuda(const runtime::PhysicalDevice& d) {
  TORCH_CHECK(d.kind() == runtime::DeviceKind::kCuda, "moreh: ", d.name(), " is not a CUDA device");
  return static_cast<const runtime::CudaDevice&>(d);
}

class CudaKernelProvider final : public AtenKernelProvider {
 protected:
  c10::DispatchKey dispatch_key() const override { return c10::DispatchKey::CUDA; }
  c10::Device torch_device(const runtime::PhysicalDevice& d) const override {
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(as_cuda(d).ordinal()));
  }
  at::Tensor view(runtime::PhysicalBlock& block, const runtime::TensorRef& ref) const override {
    auto& storage_slot = block.provider_view();
    if (!storage_slot) {
      storage_slot = std::make_shared<c10::Storage>(
          c10::Storage::use_byte_size_t(), block.bytes(),
          c10::DataPtr(block.data(), torch_device(block.device())), nullptr, false);
    }
    const auto& storage = *std::static_pointer_cast<c10::Storage>(storage_slot);
    auto t = at::detail::make_tensor<c10::TensorImpl>(c10::Storage(storage), c10::DispatchKeySet(c10::DispatchKey::CUDA),
                                                      c10::scalarTypeToTypeMeta(static_cast<c10::ScalarType>(ref.dtype)));
    t.unsafeGetTensorImpl()->set_sizes_and_strides(c10::IntArrayRef(ref.sizes.data(), ref.sizes.size()),
                                                   c10::IntArrayRef(ref.strides.data(), ref.strides.size()), ref.offset);
    return t;
  }
  at::Generator generator(uint64_t seed, const runtime::PhysicalDevice& d) const override {
    at::Generator g = at::cuda::detail::createCUDAGenerator(static_cast<c10::DeviceIndex>(as_cuda(d).ordinal()));
    g.set_current_seed(seed);
    return g;
  }
  at::Tensor host_argument(const at::Tensor& t, const runtime::PhysicalDevice& d) const override {
    // 0-dim host tensors are scalars to CUDA kernels. The others (a recorded upload's snapshot, which the
    // payload keeps and nobody writes) go over without a blocking copy's stream synchronization: the
    // stream orders the copy before the kernels that read it, and the host need not wait for the GPU.
    return t.dim() == 0 ? t : t.to(torch_device(d), /*non_blocking=*/true);
  }
  void on_device(runtime::PhysicalDevice& d, const std::function<void()>& kernels) const override {
    const auto& cuda = as_cuda(d);
    const auto index = static_cast<c10::DeviceIndex>(cuda.ordinal());
    c10::cuda::CUDAGuard device_guard(index);
    c10::cuda::CUDAStreamGuard stream_guard(
        c10::cuda::getStreamFromExternal(reinterpret_cast<cudaStream_t>(cuda.stream()), index));
    kernels();
  }
};

}  // namespace

int cuda_compute_capability(const runtime::PhysicalDevice& d) {
  const int ordinal = as_cuda(d).ordinal();
  int major = 0, minor = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ordinal));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, ordinal));
  return major * 10 + minor;
}

runtime::KernelProvider& cuda_kernel_provider() {
  static CudaKernelProvider provider;
  return provider;
}

}  // namespace moreh::backend
