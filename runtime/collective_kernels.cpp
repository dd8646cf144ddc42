#include "runtime/collective_kernels.h"

#include <fmt/format.h>

#include <stdexcept>

namespace moreh::runtime {

ElementwiseKernel scale_in_place_kernel(DataType type) {
  if (!is_reducible(type)) throw std::invalid_argument(fmt::format("cannot scale {} elements", name_of(type)));
  // float32 keeps float's speed (scale_elements multiplies by the factor rounded to float); the rest go
  // through double.
  const DataType math = type == DataType::kFloat32 ? DataType::kFloat32 : DataType::kFloat64;
  ElementwiseKernel k;
  const ElementwiseValue x = k.cast(k.input(type), math);
  const ElementwiseValue factor = k.scalar(math);
  const ElementwiseValue zero = k.constant(math, 0.0);
  const ElementwiseValue product = k.binary(ElementwiseOp::kMul, x, factor);
  const ElementwiseValue result = k.where(k.binary(ElementwiseOp::kEq, factor, zero), zero, product);
  k.output(result, type);
  return k;
}

ElementwiseKernel sum_kernel(DataType type, int count) {
  if (!is_reducible(type)) throw std::invalid_argument(fmt::format("cannot sum {} elements", name_of(type)));
  if (count < 1 || count > kMaxSumKernelInputs) {
    throw std::invalid_argument(fmt::format("a sum kernel takes 1 to {} inputs, not {}", kMaxSumKernelInputs, count));
  }
  const bool low_precision = type == DataType::kBFloat16 || type == DataType::kFloat16;
  const DataType acc_type = low_precision ? DataType::kFloat32 : type;
  ElementwiseKernel k;
  ElementwiseValue acc = k.cast(k.input(type), acc_type);
  for (int i = 1; i < count; ++i) acc = k.binary(ElementwiseOp::kAdd, acc, k.cast(k.input(type), acc_type));
  k.output(acc, type);
  return k;
}

}  // namespace moreh::runtime
