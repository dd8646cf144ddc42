// The host's evaluation of a fused elementwise kernel: the reference GPU results are checked against.
#pragma once
#include "runtime/kernels/elementwise_kernel.h"

namespace moreh::runtime {

// Runs `kernel` over host memory (the pointers in `args` are host pointers), computing as the generated CUDA
// code does: float for float32/float16/bfloat16 (rounded after every op), double for float64, wrapping
// integers, saturating float-to-integer casts with NaN -> 0. Only the math library differs (the host's libm
// against CUDA's), so exp, tanh, erf, pow, ... may differ from the GPU's in the last bits. Throws
// std::invalid_argument unless `args` fit the kernel.
void evaluate_on_host(const ElementwiseKernel& kernel, const ElementwiseArguments& args);

}  // namespace moreh::runtime
