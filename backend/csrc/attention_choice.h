// Which fused kernel scaled_dot_product_attention uses on moreh's CUDA devices. PyTorch asks the device
// (_fused_sdp_choice) while recording, before any GPU work: the answer is taken from the inputs' metadata
// and the GPU's compute capability alone.
//
// Memory-efficient attention where its CUDA kernel takes the inputs, else the math decomposition. Not
// flash attention, although native CUDA eager takes it for half types on sm80 and later: for any device but
// CUDA, PyTorch's scaled_dot_product_attention turns the flash choice into the CPU kernel
// (_scaled_dot_product_flash_attention_for_cpu), which has no CUDA kernel to run. Flash attention on moreh
// needs the route PyTorch gives out-of-tree devices instead (the "overrideable" choice and
// _scaled_dot_product_fused_attention_overrideable), run as the CUDA flash kernel at launch.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace moreh::backend {

// sdp::SDPBackend's numbering, which _fused_sdp_choice returns.
enum class AttentionKernel : int64_t { kMath = 0, kEfficient = 2 };

// `compute_capability` is major * 10 + minor (H100: 90). Reads only the tensors' metadata (dtype, sizes,
// strides): moreh, meta and CPU tensors all work.
AttentionKernel cuda_attention_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const std::optional<at::Tensor>& mask, double dropout_p, bool is_causal,
                                      bool enable_gqa, int compute_capability);

}  // namespace moreh::backend
