// Runs recorded nodes on host devices with ATen's CPU kernels over runtime-owned memory.
#pragma once
#include "runtime/device/kernel_provider.h"

namespace moreh::backend {

runtime::KernelProvider& host_kernel_provider();

}  // namespace moreh::backend
