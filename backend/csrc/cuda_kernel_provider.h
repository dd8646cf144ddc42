// Runs recorded nodes on CUDA devices with ATen's CUDA kernels over runtime-owned memory, on the runtime's
// streams. Built when the installed torch has CUDA.
#pragma once
#include "runtime/kernel_provider.h"

namespace moreh::backend {

runtime::KernelProvider& cuda_kernel_provider();

}  // namespace moreh::backend
