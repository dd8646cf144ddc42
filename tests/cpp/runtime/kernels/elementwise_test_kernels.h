// Kernels that exercise every op on every type it takes, shared by the codegen, NVRTC and GPU tests.
#pragma once
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "runtime/kernels/elementwise_kernel.h"

namespace moreh::runtime::testing {

inline constexpr DataType kAllTypes[] = {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16, DataType::kFloat64,
                                         DataType::kInt64,   DataType::kInt32,   DataType::kBool};

inline constexpr ElementwiseOp kUnaryOps[] = {
    ElementwiseOp::kNeg,     ElementwiseOp::kAbs,  ElementwiseOp::kExp,     ElementwiseOp::kLog,
    ElementwiseOp::kSqrt,    ElementwiseOp::kRsqrt, ElementwiseOp::kTanh,   ElementwiseOp::kSigmoid,
    ElementwiseOp::kRelu,    ElementwiseOp::kGeluErf, ElementwiseOp::kGeluTanh, ElementwiseOp::kSilu,
    ElementwiseOp::kErf};
inline constexpr ElementwiseOp kBinaryOps[] = {
    ElementwiseOp::kAdd, ElementwiseOp::kSub, ElementwiseOp::kMul, ElementwiseOp::kDiv, ElementwiseOp::kMaximum,
    ElementwiseOp::kMinimum, ElementwiseOp::kLt, ElementwiseOp::kLe, ElementwiseOp::kGt, ElementwiseOp::kGe,
    ElementwiseOp::kEq, ElementwiseOp::kNe};

struct NamedKernel {
  std::string name;
  ElementwiseKernel kernel;
};

// One kernel per op (and per cast target, pow exponent kind, leaf kind) that takes `type`; ops that do not
// take it are left out (their builders throw).
inline std::vector<NamedKernel> every_op_kernels(DataType type) {
  std::vector<NamedKernel> kernels;
  const std::string t(name_of(type));
  auto add = [&](std::string name, auto build) {
    try {
      ElementwiseKernel k(2);
      build(k);
      kernels.push_back({std::move(name) + "/" + t, std::move(k)});
    } catch (const std::invalid_argument&) {
    }
  };
  add("copy", [&](ElementwiseKernel& k) { k.output(k.input(type)); });
  add("strided", [&](ElementwiseKernel& k) { k.output(k.input(type, InputLayout::with_strides(0))); });
  add("broadcast_rows", [&](ElementwiseKernel& k) { k.output(k.input(type, InputLayout::with_strides(0b01))); });
  add("broadcast_all", [&](ElementwiseKernel& k) { k.output(k.input(type, InputLayout::with_strides(0b11))); });
  add("scalar", [&](ElementwiseKernel& k) { k.output(k.where(k.input(DataType::kBool), k.input(type), k.scalar(type))); });
  add("constant", [&](ElementwiseKernel& k) {
    k.output(k.where(k.input(DataType::kBool), k.input(type), k.constant(type, -3.0)));
  });
  for (ElementwiseOp op : kUnaryOps) {
    add(std::string(name_of(op)), [&](ElementwiseKernel& k) { k.output(k.unary(op, k.input(type))); });
  }
  for (ElementwiseOp op : kBinaryOps) {
    add(std::string(name_of(op)), [&](ElementwiseKernel& k) {
      k.output(k.binary(op, k.input(type), k.input(type, InputLayout::with_strides(0b10))));
    });
  }
  add("pow_scalar", [&](ElementwiseKernel& k) { k.output(k.pow(k.input(type), k.scalar(DataType::kFloat32))); });
  add("pow_constant", [&](ElementwiseKernel& k) { k.output(k.pow(k.input(type), k.constant(DataType::kFloat64, 1.7))); });
  add("pow_square", [&](ElementwiseKernel& k) { k.output(k.pow(k.input(type), k.constant(type, 2.0))); });
  add("where", [&](ElementwiseKernel& k) { k.output(k.where(k.input(DataType::kBool), k.input(type), k.input(type))); });
  for (DataType to : kAllTypes) {
    add(std::string("cast_to_") + std::string(name_of(to)), [&](ElementwiseKernel& k) { k.output(k.input(type), to); });
  }
  return kernels;
}

}  // namespace moreh::runtime::testing
