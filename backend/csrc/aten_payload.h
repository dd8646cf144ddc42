// How a recorded ATen call is kept so the kernel provider can replay it on CPU kernels: the argument
// stack with moreh tensors taken out (they travel as the node's TensorRefs), and where results go.
#pragma once
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <ATen/core/stack.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <functional>

#include "runtime/graph/step_graph.h"

namespace moreh::backend {

struct AtenPayload final : runtime::KernelPayload {
  // Where node input i goes: argument `arg`, list element `elem` (-1 for a plain tensor argument).
  struct InputSlot {
    uint16_t arg;
    int32_t elem;
  };
  // Where node output k comes from: return `ret`, list element `elem` (-1 for a plain tensor).
  struct OutputSlot {
    uint16_t ret;
    int32_t elem;
  };

  explicit AtenPayload(c10::OperatorHandle handle) : op(std::move(handle)) {}

  c10::OperatorHandle op;
  std::vector<c10::IValue> args;  // moreh tensors replaced by undefined tensors; devices by CPU
  std::vector<InputSlot> inputs;
  std::vector<OutputSlot> outputs;
  int generator_arg = -1;  // argument that takes a Generator
  bool seeded = false;     // draws random numbers: the node's Seed attribute seeds a fresh CPU generator
  uint64_t seed = 0;
  // Whether gradients were enabled where the op was recorded: some kernels return other results without
  // (oneDNN's RNN layer leaves out its workspace), so the kernel runs in the mode the script ran it in.
  bool grad_mode = true;
  // On a worker: host tensor arguments that came as some rows of the batch (runtime::RowWindow), not all of it.
  // A launch on rows [b, b + n) of the batch reads rows [b - begin, b - begin + n) of argument `arg`.
  struct RowCut {
    uint16_t arg;
    int64_t begin, whole;
  };
  std::vector<RowCut> row_cuts;
};

// Converts a non-tensor argument to a runtime attribute (floating-point values become step data).
runtime::Attribute to_attribute(const c10::IValue& v);

// The op's argument stack for one run of a recorded node: the recorded arguments (lists copied, they are
// shared by reference), `device` for a Device argument, and node input i as `input(i)`. With `elements`
// (runtime::LocalLaunch::elements), every list of the op's length keeps those elements only, and the node's
// inputs are the kept ones.
torch::jit::Stack payload_stack(const AtenPayload& p, const c10::Device& device,
                                const std::function<at::Tensor(size_t)>& input,
                                const std::vector<uint32_t>& elements = {});
// While it lives, kernels run as a recorded node's kernel must: below autograd, in the grad mode the op was
// recorded in, and away from the calling thread's autocast and Python modes (kernels may run on the script's
// thread when it waits for the device).
class PayloadKernelScope {
 public:
  explicit PayloadKernelScope(const AtenPayload& p)
      : grad_mode_(p.grad_mode),
        no_modes_(c10::autocast_dispatch_keyset |
                  c10::DispatchKeySet({c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot})) {}

 private:
  at::AutoDispatchBelowADInplaceOrView below_autograd_;
  c10::AutoGradMode grad_mode_;
  c10::impl::ExcludeDispatchKeyGuard no_modes_;
};

// Node output k from the stack the op returned (of the kept outputs, with `elements`).
at::Tensor payload_result(const AtenPayload& p, const torch::jit::Stack& stack, size_t k,
                          const std::vector<uint32_t>& elements = {});

}  // namespace moreh::backend
