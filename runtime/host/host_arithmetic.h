// The little arithmetic a plan does itself between kernels on host devices: scaling a partial sum by a
// device's share of the batch, dividing gradients by a loss's weight, and combining scalar loss parts.
// Floating-point types only.
#pragma once
#include <cstdint>

#include "runtime/base/data_type.h"

namespace moreh::runtime {

// data[i] *= factor for i < count; a factor of 0 writes zeros (a device with no rows contributes 0, even
// where its local mean is NaN).
void scale_elements(DataType type, void* data, uint64_t count, double factor);
// data[i] /= *y for i < count, y a scalar of type `divisor`: the bits of collective_kernels.h's
// divide_by_scalar_kernel (in float when both are float, else in double, rounded to `type` through float).
void divide_elements(DataType type, void* data, uint64_t count, DataType divisor, const void* y);
// *x = *x * *y (kMultiply) or *x / *y (kDivide) for two scalars of `type`; multiplying by 0 gives 0.
enum class ScalarOp : uint8_t { kMultiply, kDivide };
void combine_scalars(DataType type, void* x, const void* y, ScalarOp op);

}  // namespace moreh::runtime
