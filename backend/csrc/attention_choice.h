// Which fused kernel scaled_dot_product_attention uses on moreh's CUDA devices. PyTorch asks the device
// (_fused_sdp_choice) while recording, before any GPU work: the answer is taken from the inputs' metadata
// and the GPU's compute capability alone, with the rules of PyTorch's CUDA choice for the cases moreh
// records, so that moreh runs the kernel native CUDA eager would run (flash attention for half and
// bfloat16 on sm80 and later, memory-efficient attention for the other float inputs it takes, else the
// math decomposition).
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace moreh::backend {

// sdp::SDPBackend's numbering, which _fused_sdp_choice returns.
enum class AttentionKernel : int64_t { kMath = 0, kFlash = 1, kEfficient = 2 };

// `compute_capability` is major * 10 + minor (H100: 90). Reads only the tensors' metadata (dtype, sizes,
// strides, requires_grad): moreh, meta and CPU tensors all work.
AttentionKernel cuda_attention_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const std::optional<at::Tensor>& mask, double dropout_p, bool is_causal,
                                      bool enable_gqa, int compute_capability);

}  // namespace moreh::backend
