#include "backend/csrc/attention_choice.h"

namespace moreh::backend {
namespace {

bool same_heads_and_batch(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  return q.size(0) == k.size(0) && k.size(0) == v.size(0) && q.size(1) == k.size(1) && k.size(1) == v.size(1);
}

// What both fused kernels need: 4-D float inputs of one dtype, heads and batch alike (no grouped-query
// broadcast), non-empty sequences, head sizes a multiple of 8, the last dimension contiguous, no dropout
// (the CUDA kernels keep their RNG state in tensors a recorded graph would hold on the device; the math
// path's dropout draws from moreh's seeded generator instead).
bool fused_kernels_take(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double dropout_p,
                        bool enable_gqa) {
  const auto t = q.scalar_type();
  const bool floating = t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
  if (!floating || k.scalar_type() != t || v.scalar_type() != t) return false;
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || enable_gqa || dropout_p != 0.0) return false;
  if (!same_heads_and_batch(q, k, v)) return false;
  if (q.size(2) == 0 || k.size(2) == 0 || k.size(2) != v.size(2)) return false;
  if (q.size(-1) % 8 != 0 || v.size(-1) % 8 != 0 || k.size(-1) != q.size(-1)) return false;
  return q.stride(-1) == 1 && k.stride(-1) == 1 && v.stride(-1) == 1;
}

bool flash_takes(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const std::optional<at::Tensor>& mask, bool is_causal, int cc) {
  if (cc < 80 || cc > 90) return false;  // the GPUs PyTorch's flash kernels are built and chosen for
  if (q.scalar_type() != at::kHalf && q.scalar_type() != at::kBFloat16) return false;
  if (mask && mask->defined()) return false;  // no arbitrary masks, only is_causal
  const int64_t d = q.size(-1);
  if (v.size(-1) != d || d > 256) return false;
  // A causal mask over a non-square score matrix is aligned differently by the flash kernel.
  if (is_causal && q.size(2) != k.size(2)) return false;
  // sm86/sm89 have too little shared memory for the backward with head sizes above 192.
  const bool grad = q.requires_grad() || k.requires_grad() || v.requires_grad();
  if ((cc == 86 || cc == 89) && grad && d > 192) return false;
  return true;
}

bool efficient_takes(const at::Tensor& q, const std::optional<at::Tensor>& mask, int cc) {
  if (cc < 50) return false;
  return !mask || !mask->defined() || mask->scalar_type() == q.scalar_type() || mask->scalar_type() == at::kBool;
}

}  // namespace

AttentionKernel cuda_attention_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const std::optional<at::Tensor>& mask, double dropout_p, bool is_causal,
                                      bool enable_gqa, int compute_capability) {
  if (!fused_kernels_take(q, k, v, dropout_p, enable_gqa)) return AttentionKernel::kMath;
  if (flash_takes(q, k, v, mask, is_causal, compute_capability)) return AttentionKernel::kFlash;
  if (efficient_takes(q, mask, compute_capability)) return AttentionKernel::kEfficient;
  return AttentionKernel::kMath;
}

}  // namespace moreh::backend
