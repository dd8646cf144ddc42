// Runs recorded nodes on CUDA devices with ATen's CUDA kernels over runtime-owned memory, on the runtime's
// streams. Built when the installed torch has CUDA.
#pragma once
#include "runtime/device/kernel_provider.h"

namespace moreh::backend {

runtime::KernelProvider& cuda_kernel_provider();

// The GPU's compute capability as major * 10 + minor (H100: 90); `d` must be a CUDA device.
int cuda_compute_capability(const runtime::PhysicalDevice& d);

}  // namespace moreh::backend
