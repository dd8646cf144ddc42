// The fused elementwise kernels collectives need when logical devices share one GPU: scaling a buffer in
// place (averages, a device's share of the batch) and summing peers' buffers. Each computes exactly as its
// host counterpart (scale_elements, reduce_elements with kSum), so a GPU result matches the host's bits.
#pragma once
#include "runtime/kernels/elementwise_kernel.h"
#include "runtime/kernels/elementwise_reduction.h"
#include "runtime/host/host_arithmetic.h"

namespace moreh::runtime {

// Up to this many inputs per sum kernel (longer sums chain kernels, accumulating into the output).
inline constexpr int kMaxSumKernelInputs = 8;

// x *= factor, in place: input 0 and output 0 are the same buffer (contiguous, any count); scalar 0 is the
// factor (pass a double). A factor of 0 writes zeros, even over NaN. float32 multiplies in float; float64,
// float16 and bfloat16 in double, rounding once (as scale_elements); integers in double, truncating (exact
// while |x| < 2^53). Every reducible type.
ElementwiseKernel scale_in_place_kernel(DataType type);

// out = in0 + in1 + ... + in(k-1), added in that order: float16 and bfloat16 accumulate in float and round
// once, integers wrap (as reduce_elements). `out` may be one of the inputs. 1 <= k <= kMaxSumKernelInputs.
ElementwiseKernel sum_kernel(DataType type, int k);

// Up to this many inputs per reduce kernel: the most ranks one GPU's communicator reduces in one launch.
inline constexpr int kMaxReduceKernelInputs = 16;

// out = in0 op in1 op ... op in(k-1), combined in that order, as reduce_elements computes it: float16 and
// bfloat16 accumulate in float and round once; integer sums and products wrap; max and min propagate NaN;
// kAvg divides the sum by k (integers through double, truncating toward zero: exact while |sum| < 2^53).
// `out` may be one of the inputs. 1 <= k <= kMaxReduceKernelInputs.
ElementwiseKernel reduce_kernel(DataType type, ReduceOp op, int k);

// One element: x = x * y (0 when y is 0) or x / y, computed in double and stored as `type` (through float
// for float16 and bfloat16), as combine_scalars. Input 0 and output 0 are x (in place), input 1 is y.
// Floating types only.
ElementwiseKernel combine_scalars_kernel(DataType type, ScalarOp op);
// x[i] = x[i] / y[0] for `count` elements of `type` and the scalar y of `divisor` (input 1, read with stride 0 over
// a rank-1 shape): float32 divides in float, as a kernel of that type does; the others go through double.
ElementwiseKernel divide_by_scalar_kernel(DataType type, DataType divisor);

}  // namespace moreh::runtime
