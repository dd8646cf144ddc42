#include "backend/csrc/overrideable_attention.h"

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

}  // namespace

bool is_overrideable_attention(const c10::OperatorHandle& op) { return op == forward_op() || op == backward_op(); }

void run_overrideable_attention(const c10::OperatorHandle& op, torch::jit::Stack& stack, c10::DeviceType device) {
  if (op == forward_op()) forward(stack, device);
  else backward(stack, device);
}

}  // namespace moreh::backend
