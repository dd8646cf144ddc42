#include "backend/csrc/cpp_meta_kernels.h"

#include <ATen/Operators.h>
#include <ATen/ops/clamp_min_meta_dispatch.h>

#include <string>
#include <unordered_map>

#include "backend/csrc/meta_tensors.h"
#include "backend/csrc/overrideable_attention.h"
#include "cpp_meta_kernels_table.inc"  // generated: includes and MOREH_CPP_META_TABLE

namespace moreh::backend {
namespace {

using Table = std::unordered_map<c10::OperatorName, c10::KernelFunction>;

// The static_cast picks the at::meta overload whose type is the op's schema: a mismatch does not compile.
#define MOREH_CPP_META_ENTRY(fn, op)                                                  \
  t.emplace(c10::OperatorName(at::_ops::op::name, at::_ops::op::overload_name),       \
            c10::KernelFunction::makeFromUnboxedRuntimeFunction(                      \
                static_cast<at::_ops::op::schema*>(&at::meta::fn)));

void attention_meta(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  infer_overrideable_attention(op, *stack);
}

// What torch._refs.native_layer_norm gives on a device other than the CPU: a contiguous output of the
// input's dtype; mean and rstd of the input's shape with the normalized dimensions kept as 1, in the
// computation dtype (float for half and bfloat16 inputs).
void layer_norm_meta(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  auto a = torch::jit::last(*stack, 5);
  const at::Tensor input = a[0].toTensor();
  const std::vector<int64_t> normalized = a[1].toIntVector();
  const int64_t axis = input.dim() - static_cast<int64_t>(normalized.size());
  TORCH_CHECK(!normalized.empty(), "Expected normalized_shape to be at least 1-dimensional, i.e., containing at "
              "least one element, but got normalized_shape = ", normalized);
  TORCH_CHECK(axis >= 0 && input.sizes().slice(axis).equals(normalized), "Given normalized_shape=", normalized,
              ", expected input with shape [*", c10::IntArrayRef(normalized), "], but got input of size",
              input.sizes());
  for (int i : {2, 3}) {
    const at::Tensor p = a[i].isNone() ? at::Tensor() : a[i].toTensor();
    TORCH_CHECK(!p.defined() || p.sizes().equals(normalized), "Expected ", i == 2 ? "weight" : "bias",
                " to be of same shape as normalized_shape, but got ", i == 2 ? "weight" : "bias", " of shape ",
                p.sizes(), " and normalized_shape = ", normalized);
  }
  TORCH_CHECK(!input.is_complex(), "native_layer_norm does not support complex inputs");
  std::vector<int64_t> stat(input.sizes().begin(), input.sizes().end());
  std::fill(stat.begin() + axis, stat.end(), 1);
  const c10::ScalarType acc = computation_dtype(input.scalar_type());
  at::Tensor out = meta_contiguous(input.sizes(), input.scalar_type());
  at::Tensor mean = meta_contiguous(stat, acc), rstd = meta_contiguous(stat, acc);
  torch::jit::drop(*stack, 5);
  torch::jit::push(*stack, out, mean, rstd);
}

// (grad_out, input, normalized_shape, mean, rstd, weight?, bias?, output_mask) -> contiguous gradients of the
// input, weight and bias (each of its own dtype) where the mask asks for them and the parameter exists.
void layer_norm_backward_meta(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  auto a = torch::jit::last(*stack, 8);
  const at::Tensor input = a[1].toTensor();
  const at::Tensor weight = a[5].isNone() ? at::Tensor() : a[5].toTensor();
  const at::Tensor bias = a[6].isNone() ? at::Tensor() : a[6].toTensor();
  const std::vector<bool> mask = a[7].toBoolList().vec();
  const std::vector<int64_t> normalized = a[2].toIntVector();
  c10::IValue d_input, d_weight, d_bias;
  if (mask[0]) d_input = meta_contiguous(input.sizes(), input.scalar_type());
  if (mask[1] && weight.defined()) d_weight = meta_contiguous(normalized, weight.scalar_type());
  if (mask[2] && bias.defined()) d_bias = meta_contiguous(normalized, bias.scalar_type());
  torch::jit::drop(*stack, 8);
  torch::jit::push(*stack, d_input, d_weight, d_bias);
}

// The CPU flash kernel (SDPA with a mask on host devices), as torch's Python Meta kernels shape it: the
// output like the query, logsumexp (batch, heads, length) laid out as (batch, length, heads) in the
// computation dtype; the backward's gradients laid out (batch, length, heads, dim).
void cpu_flash_attention_meta(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  auto a = torch::jit::last(*stack, 7);
  const at::Tensor q = a[0].toTensor();
  TORCH_CHECK(q.dim() == 4, "_scaled_dot_product_flash_attention_for_cpu: query must be 4D");
  at::Tensor out = meta_like(q);
  at::Tensor lse = meta_permuted({q.size(0), q.size(1), q.size(2)}, {0, 2, 1}, computation_dtype(q.scalar_type()));
  torch::jit::drop(*stack, 7);
  torch::jit::push(*stack, out, lse);
}

void cpu_flash_attention_backward_meta(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  auto a = torch::jit::last(*stack, 10);
  std::vector<at::Tensor> grads;
  for (int i : {1, 2, 3}) {
    const at::Tensor t = a[i].toTensor();
    TORCH_CHECK(t.dim() == 4, "_scaled_dot_product_flash_attention_for_cpu_backward: inputs must be 4D");
    grads.push_back(meta_permuted(t.sizes(), {0, 2, 1, 3}, t.scalar_type()));
  }
  torch::jit::drop(*stack, 10);
  torch::jit::push(*stack, grads[0], grads[1], grads[2]);
}

// relu is clamp_min(self, 0) on CPU and CUDA: that op's C++ Meta kernel gives the kernels' own layout.
void relu_meta(const c10::OperatorHandle&, torch::jit::Stack* stack) {
  const at::Tensor self = torch::jit::pop(*stack).toTensor();
  torch::jit::push(*stack, at::meta::clamp_min(self, 0));
}

Table build() {
  Table t;
  MOREH_CPP_META_TABLE(MOREH_CPP_META_ENTRY)
  // Ops whose only Meta kernel is Python and that a transformer step records, in C++.
  auto own = [&t](const char* name, c10::KernelFunction k) { t.emplace(c10::OperatorName(name, ""), std::move(k)); };
  own("aten::_scaled_dot_product_fused_attention_overrideable",
      c10::KernelFunction::makeFromBoxedFunction<&attention_meta>());
  own("aten::_scaled_dot_product_fused_attention_overrideable_backward",
      c10::KernelFunction::makeFromBoxedFunction<&attention_meta>());
  own("aten::native_layer_norm", c10::KernelFunction::makeFromBoxedFunction<&layer_norm_meta>());
  own("aten::native_layer_norm_backward", c10::KernelFunction::makeFromBoxedFunction<&layer_norm_backward_meta>());
  own("aten::relu", c10::KernelFunction::makeFromBoxedFunction<&relu_meta>());
  own("aten::_scaled_dot_product_flash_attention_for_cpu",
      c10::KernelFunction::makeFromBoxedFunction<&cpu_flash_attention_meta>());
  own("aten::_scaled_dot_product_flash_attention_for_cpu_backward",
      c10::KernelFunction::makeFromBoxedFunction<&cpu_flash_attention_backward_meta>());
  return t;
}

}  // namespace

const c10::KernelFunction* cpp_meta_kernel(const c10::OperatorName& op) {
  static const Table table = build();
  auto it = table.find(op);
  return it == table.end() ? nullptr : &it->second;
}

}  // namespace moreh::backend
