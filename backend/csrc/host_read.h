// A condition checked in the middle of a step (`if tensor:`, `bool(...)`) that needs only a small part of the
// pending step is answered on the host, without ending the step: nn.TransformerEncoder checks
// `bool((mask == causal).all())` in every forward, which otherwise splits each training step in two.
// Reads of values (`.item()`, `.cpu()`) still end the step: in a script that updates its parameters by hand,
// `loss.item()` is where each step ends.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace moreh::backend {

// `self`'s value as a CPU tensor, computed on the CPU from the pending ops it depends on (at most a few dozen,
// over a bounded number of bytes, none random) and from values earlier steps left on the devices, when the
// pending step holds other work too; nullopt when the read should end the step as usual. The pending ops
// stay pending and run with their step.
std::optional<at::Tensor> value_without_ending_the_step(const at::Tensor& self);

}  // namespace moreh::backend
