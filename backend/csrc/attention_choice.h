// Which fused kernel scaled_dot_product_attention uses on moreh's devices. PyTorch asks the device
// (_fused_sdp_choice) while recording, before any GPU work: the answer is taken from the inputs' metadata,
// the GPU's compute capability and the user's torch.backends switches (torch.nn.attention.sdpa_kernel).
//
// Flash attention goes through the route PyTorch gives out-of-tree devices, the "overrideable" choice: SDPA
// then calls _scaled_dot_product_fused_attention_overrideable (and autograd its backward), which moreh
// records and runs as the device's own flash kernel (overrideable_attention.h). The plain flash choice
// would not do: for any device but CUDA, SDPA turns it into the CPU kernel
// (_scaled_dot_product_flash_attention_for_cpu), which has no CUDA kernel to run.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace moreh::backend {

// sdp::SDPBackend's numbering, which _fused_sdp_choice returns.
enum class AttentionKernel : int64_t { kMath = 0, kFlash = 1, kEfficient = 2, kOverrideable = 4 };

// The user's torch.backends.cuda.enable_*_sdp switches (torch.nn.attention.sdpa_kernel sets them).
struct AttentionSwitches {
  bool flash = true, efficient = true;
};
AttentionSwitches attention_switches();

// CUDA devices: flash attention (the overrideable route) where its kernel takes the inputs, else
// memory-efficient attention, else the math decomposition. `compute_capability` is major * 10 + minor
// (H100: 90). Reads only the tensors' metadata (dtype, sizes, strides): moreh, meta and CPU tensors all work.
AttentionKernel cuda_attention_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const std::optional<at::Tensor>& mask, double dropout_p, bool is_causal,
                                      bool enable_gqa, int compute_capability,
                                      AttentionSwitches switches = attention_switches());

// Host devices: what CPU eager chose (`cpu_choice`), its flash kernel taken through the overrideable route
// where there is no mask, as on CUDA devices: both kinds of device record and split the same ops, and
// host devices still run the kernel CPU eager runs.
AttentionKernel host_attention_kernel(AttentionKernel cpu_choice, const std::optional<at::Tensor>& mask);

}  // namespace moreh::backend
