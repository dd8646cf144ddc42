#include "backend/csrc/attention_choice.h"

namespace moreh::backend {

// The memory-efficient kernel takes 4-D float inputs of one dtype with heads and batch alike (no
// grouped-query broadcast), non-empty sequences, head sizes a multiple of 8, the last dimension
// contiguous, a mask of the query's type or boolean, on sm50 and later. Dropout goes to the math path:
// the CUDA kernel keeps its RNG state in tensors a recorded graph would hold on the device, while the math
// path's dropout draws from moreh's seeded generator.
AttentionKernel cuda_attention_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const std::optional<at::Tensor>& mask, double dropout_p, bool /*is_causal*/,
                                      bool enable_gqa, int compute_capability) {
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
  if (mask && mask->defined() && mask->scalar_type() != t && mask->scalar_type() != at::kBool) return kMath;
  return AttentionKernel::kEfficient;
}

}  // namespace moreh::backend
