#include "backend/csrc/overrideable_attention.h"

#include <algorithm>
#include <numeric>

#include "backend/csrc/meta_tensors.h"

namespace moreh::backend {
namespace {

// Handles compare by identity (a pointer), which the replay does for every launch.
const c10::OperatorHandle& forward_op() {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("aten::_scaled_dot_product_fused_attention_overrideable", "");
  return op;
}

const c10::OperatorHandle& backward_op() {
  static const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow(
      "aten::_scaled_dot_product_fused_attention_overrideable_backward", "");
  return op;
}

// What the flash kernels cannot honour, said before anything runs.
void check_supported(const c10::IValue& bias, double dropout_p) {
  TORCH_CHECK(!bias.isTensor() || !bias.toTensor().defined(),
              "moreh runs _scaled_dot_product_fused_attention_overrideable as flash attention, which takes no "
              "attention bias");
  TORCH_CHECK(dropout_p == 0.0,
              "moreh runs _scaled_dot_product_fused_attention_overrideable as flash attention without dropout; "
              "got dropout_p=", dropout_p);
}

// (query, key, value, attn_bias?, dropout_p, is_causal, return_debug_mask, *, scale?) ->
// (output, logsumexp, cum_seq_q, cum_seq_k, max_q, max_k, philox_seed, philox_offset, debug_attn_mask)
void forward(torch::jit::Stack& stack, c10::DeviceType device) {
  auto a = torch::jit::last(stack, 8);
  const at::Tensor q = a[0].toTensor(), k = a[1].toTensor(), v = a[2].toTensor();
  const double dropout_p = a[4].toDouble();
  const bool is_causal = a[5].toBool();
  const std::optional<double> scale = a[7].toOptional<double>();
  check_supported(a[3], dropout_p);
  TORCH_CHECK(!a[6].toBool(), "moreh's flash attention returns no debug mask");
  at::Tensor out, lse;
  if (device == c10::DeviceType::CUDA) {
    auto r = at::_scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, false, scale);
    out = std::get<0>(r);
    lse = std::get<1>(r);
  } else {
    std::tie(out, lse) = at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal,
                                                                          std::nullopt, scale);
  }
  const int64_t max_q = q.size(-2), max_k = k.size(-2);
  // Without dropout the RNG state means nothing and nothing reads it: left unset, as CUDA's flash kernel
  // leaves its own (no fill kernels per attention call).
  const auto rng = q.options().dtype(at::kLong);
  torch::jit::drop(stack, 8);
  torch::jit::push(stack, out, lse, at::Tensor(), at::Tensor(), max_q, max_k, at::empty({}, rng), at::empty({}, rng),
                   at::Tensor());
}

// (grad_out, query, key, value, attn_bias, grad_input_mask, out, logsumexp, cum_seq_q, cum_seq_k, max_q,
//  max_k, dropout_p, is_causal, philox_seed, philox_offset, *, scale?) -> (dq, dk, dv, dbias)
void backward(torch::jit::Stack& stack, c10::DeviceType device) {
  auto a = torch::jit::last(stack, 17);
  const at::Tensor g = a[0].toTensor(), q = a[1].toTensor(), k = a[2].toTensor(), v = a[3].toTensor();
  const at::Tensor out = a[6].toTensor(), lse = a[7].toTensor();
  const double dropout_p = a[12].toDouble();
  const bool is_causal = a[13].toBool();
  const std::optional<double> scale = a[16].toOptional<double>();
  check_supported(a[4], dropout_p);
  at::Tensor dq, dk, dv;
  if (device == c10::DeviceType::CUDA) {
    std::tie(dq, dk, dv) = at::_scaled_dot_product_flash_attention_backward(
        g, q, k, v, out, lse, a[8].toTensor(), a[9].toTensor(), a[10].toInt(), a[11].toInt(), dropout_p,
        is_causal, a[14].toTensor(), a[15].toTensor(), scale);
  } else {
    std::tie(dq, dk, dv) = at::_scaled_dot_product_flash_attention_for_cpu_backward(
        g, q, k, v, out, lse, dropout_p, is_causal, std::nullopt, scale);
  }
  torch::jit::drop(stack, 17);
  torch::jit::push(stack, dq, dk, dv, at::Tensor());
}

void forward_meta(torch::jit::Stack& stack) {
  auto a = torch::jit::last(stack, 8);
  const at::Tensor q = a[0].toTensor(), k = a[1].toTensor(), v = a[2].toTensor();
  TORCH_CHECK(q.dim() == 3 || q.dim() == 4, "query must be 3D or 4D");
  const int64_t batch = q.dim() == 4 ? q.size(0) : 1, heads = q.size(-3), s_q = q.size(-2), s_kv = k.size(-2);
  std::vector<int64_t> shape(q.sizes().begin(), q.sizes().end());
  shape.back() = v.size(-1);
  at::Tensor out;
  if (q.sizes().equals(shape)) {
    out = meta_like(q);
  } else {  // the query's dimension order (largest stride outermost), dense
    TORCH_CHECK(q.dim() == 4, "query must be 4D when the value's head size differs from the query's");
    std::vector<int64_t> order(4);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return q.stride(x) > q.stride(y); });
    out = meta_permuted(shape, order, q.scalar_type());
  }
  const at::Tensor lse = meta_contiguous({batch, heads, s_q}, at::kFloat);
  const at::Tensor seed = meta_strided({}, {}, at::kLong), offset = meta_strided({}, {}, at::kLong);
  torch::jit::drop(stack, 8);
  torch::jit::push(stack, out, lse, c10::IValue(), c10::IValue(), s_q, s_kv, seed, offset, c10::IValue());
}

void backward_meta(torch::jit::Stack& stack) {
  auto a = torch::jit::last(stack, 17);
  const at::Tensor dq = meta_like(a[1].toTensor()), dk = meta_like(a[2].toTensor()), dv = meta_like(a[3].toTensor());
  const bool bias = a[4].isTensor() && a[4].toTensor().defined();
  const c10::IValue dbias = bias ? c10::IValue(meta_like(a[4].toTensor())) : c10::IValue();
  torch::jit::drop(stack, 17);
  torch::jit::push(stack, dq, dk, dv, dbias);
}

}  // namespace

void infer_overrideable_attention(const c10::OperatorHandle& op, torch::jit::Stack& stack) {
  if (op == forward_op()) forward_meta(stack);
  else backward_meta(stack);
}

bool is_overrideable_attention(const c10::OperatorHandle& op) { return op == forward_op() || op == backward_op(); }

void run_overrideable_attention(const c10::OperatorHandle& op, torch::jit::Stack& stack, c10::DeviceType device) {
  if (op == forward_op()) forward(stack, device);
  else backward(stack, device);
}

}  // namespace moreh::backend
