#include "runtime/comm/collective_kernels.h"

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

ElementwiseKernel reduce_kernel(DataType type, ReduceOp op, int count) {
  if (!is_reducible(type)) throw std::invalid_argument(fmt::format("cannot reduce {} elements", name_of(type)));
  if (count < 1 || count > kMaxReduceKernelInputs) {
    throw std::invalid_argument(
        fmt::format("a reduce kernel takes 1 to {} inputs, not {}", kMaxReduceKernelInputs, count));
  }
  const bool low_precision = type == DataType::kBFloat16 || type == DataType::kFloat16;
  const DataType acc_type = low_precision ? DataType::kFloat32 : type;
  ElementwiseOp combine = ElementwiseOp::kAdd;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: combine = ElementwiseOp::kAdd; break;
    case ReduceOp::kProd: combine = ElementwiseOp::kMul; break;
    case ReduceOp::kMax: combine = ElementwiseOp::kMaximum; break;
    case ReduceOp::kMin: combine = ElementwiseOp::kMinimum; break;
  }
  ElementwiseKernel k;
  ElementwiseValue acc = k.cast(k.input(type), acc_type);
  for (int i = 1; i < count; ++i) acc = k.binary(combine, acc, k.cast(k.input(type), acc_type));
  if (op == ReduceOp::kAvg) {
    const bool floating = acc_type == DataType::kFloat32 || acc_type == DataType::kFloat64;
    const DataType div_type = floating ? acc_type : DataType::kFloat64;
    acc = k.binary(ElementwiseOp::kDiv, k.cast(acc, div_type), k.constant(div_type, static_cast<double>(count)));
  }
  k.output(acc, type);
  return k;
}

ElementwiseKernel combine_scalars_kernel(DataType type, ScalarOp op) {
  if (type != DataType::kFloat32 && type != DataType::kFloat64 && type != DataType::kBFloat16 &&
      type != DataType::kFloat16) {
    throw std::invalid_argument(fmt::format("cannot combine {} scalars", name_of(type)));
  }
  const bool low_precision = type == DataType::kBFloat16 || type == DataType::kFloat16;
  ElementwiseKernel k;
  const ElementwiseValue x = k.cast(k.input(type), DataType::kFloat64);
  const ElementwiseValue y = k.cast(k.input(type), DataType::kFloat64);
  ElementwiseValue result;
  if (op == ScalarOp::kMultiply) {
    const ElementwiseValue zero = k.constant(DataType::kFloat64, 0.0);
    result = k.where(k.binary(ElementwiseOp::kEq, y, zero), zero, k.binary(ElementwiseOp::kMul, x, y));
  } else {
    result = k.binary(ElementwiseOp::kDiv, x, y);
  }
  // combine_scalars stores float16 and bfloat16 through float: round to float first, as it does.
  if (low_precision) result = k.cast(result, DataType::kFloat32);
  k.output(result, type);
  return k;
}

ElementwiseKernel divide_by_scalar_kernel(DataType type, DataType divisor) {
  const auto floating = [](DataType t) {
    return t == DataType::kFloat32 || t == DataType::kFloat64 || t == DataType::kBFloat16 || t == DataType::kFloat16;
  };
  if (!floating(type) || !floating(divisor))
    throw std::invalid_argument(fmt::format("cannot divide {} elements by a {} scalar", name_of(type), name_of(divisor)));
  const DataType math = type == DataType::kFloat32 && divisor == DataType::kFloat32 ? DataType::kFloat32
                                                                                    : DataType::kFloat64;
  ElementwiseKernel k(1);
  const ElementwiseValue x = k.cast(k.input(type), math);
  const ElementwiseValue y = k.cast(k.input(divisor, InputLayout::with_strides(1u)), math);
  k.output(k.binary(ElementwiseOp::kDiv, x, y), type);
  return k;
}

}  // namespace moreh::runtime
