#include "backend/csrc/attention_choice.h"

#include <ATen/Context.h>

namespace moreh::backend {
namespace {

bool has_mask(const std::optional<at::Tensor>& mask) { return mask && mask->defined(); }

// Flash attention on CUDA (PyTorch's FlashAttention-2 kernels): half types on sm80 and later, head sizes a
// multiple of 8 up to 256 alike for q, k and v, no mask. A causal mask with fewer queries than keys would
// be aligned differently by the kernel than SDPA's rule says, so such calls take another kernel.
bool flash_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const std::optional<at::Tensor>& mask, bool is_causal, int compute_capability) {
  const auto t = q.scalar_type();
  if ((t != at::kHalf && t != at::kBFloat16) || compute_capability < 80 || has_mask(mask)) return false;
  const int64_t d = q.size(-1);
  if (d > 256 || k.size(-1) != d || v.size(-1) != d) return false;
  return !is_causal || q.size(2) == k.size(2);
}

}  // namespace

AttentionSwitches attention_switches() {
  const auto& ctx = at::globalContext();
  return {ctx.userEnabledFlashSDP(), ctx.userEnabledMemEfficientSDP()};
}

// Both fused kernels take 4-D float inputs of one dtype with heads and batch alike (no grouped-query
// broadcast), non-empty sequences, head sizes a multiple of 8 and the last dimension contiguous. The
// memory-efficient one also takes a mask of the query's type or boolean, on sm50 and later. Dropout goes
// to the math path: the CUDA kernels keep their RNG state in tensors a recorded graph would hold on the
// device, while the math path's dropout draws from moreh's seeded generator.
AttentionKernel cuda_attention_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const std::optional<at::Tensor>& mask, double dropout_p, bool is_causal,
                                      bool enable_gqa, int compute_capability, AttentionSwitches switches) {
  constexpr auto kMath = AttentionKernel::kMath;
  const auto t = q.scalar_type();
  const bool floating = t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
  if (!floating || k.scalar_type() != t || v.scalar_type() != t || compute_capability < 50) return kMath;
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || enable_gqa || dropout_p != 0.0) return kMath;
  if (q.size(0) != k.size(0) || k.size(0) != v.size(0) || q.size(1) != k.size(1) || k.size(1) != v.size(1))
    return kMath;
  if (q.size(2) == 0 || k.size(2) == 0 || k.size(2) != v.size(2)) return kMath;
  if (q.size(-1) % 8 != 0 || v.size(-1) % 8 != 0 || k.size(-1) != q.size(-1)) return kMath;
  if (q.stride(-1) != 1 || k.stride(-1) != 1 || v.stride(-1) != 1) return kMath;
  if (switches.flash && flash_takes(q, k, v, mask, is_causal, compute_capability))
    return AttentionKernel::kOverrideable;
  if (has_mask(mask) && mask->scalar_type() != t && mask->scalar_type() != at::kBool) return kMath;
  return switches.efficient ? AttentionKernel::kEfficient : kMath;
}

AttentionKernel host_attention_kernel(AttentionKernel cpu_choice, const std::optional<at::Tensor>& mask) {
  return cpu_choice == AttentionKernel::kFlash && !has_mask(mask) ? AttentionKernel::kOverrideable : cpu_choice;
}

}  // namespace moreh::backend
