// Flash attention as moreh records it: SDPA's route for out-of-tree devices (attention_choice.h),
// _scaled_dot_product_fused_attention_overrideable and its backward, run at launch as the device's own
// flash kernels: _scaled_dot_product_flash_attention_for_cpu on host devices (the kernel CPU eager runs),
// _scaled_dot_product_flash_attention on CUDA devices (the kernel native CUDA eager runs).
//
// Those kernels return less than the overrideable ops declare (no sequence offsets, RNG state of another
// shape); moreh takes flash attention without dropout or a mask only, so the RNG state is never read: the
// forward leaves it unset (as CUDA's flash kernel does without dropout), and the backward hands it on.
#pragma once
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

namespace moreh::backend {

bool is_overrideable_attention(const c10::OperatorHandle& op);

// Runs the forward or backward with its arguments on `stack` (their tensors on `device`) and leaves the op's
// returns there, as a boxed kernel would.
void run_overrideable_attention(const c10::OperatorHandle& op, torch::jit::Stack& stack, c10::DeviceType device);

// The forward's or backward's Meta kernel in C++, shaped as torch's Python one shapes its results (whose
// empty_like calls import sympy on their first use): meta tensors of the returns replace the arguments.
void infer_overrideable_attention(const c10::OperatorHandle& op, torch::jit::Stack& stack);

}  // namespace moreh::backend
