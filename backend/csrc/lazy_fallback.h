// Records every op on moreh tensors into the pending step graph (one boxed kernel for all of them),
// with output shapes from the Meta kernels; data-dependent ops end the step and run eagerly.
#pragma once
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

namespace moreh::backend {

void lazy_fallback(const c10::OperatorHandle& op, c10::DispatchKeySet ks, torch::jit::Stack* stack);
// Sends ops that have both a CPU kernel and a composite kernel to the recorder too, so moreh runs the
// very kernel CPU eager runs (the composite would otherwise decompose them differently). Idempotent.
void register_recorded_composites();
// How many ops register_recorded_composites() took over.
size_t recorded_composite_count();
// Recorded ops whose output geometry was not in the Meta-result cache (their Meta kernel ran), all threads.
uint64_t meta_cache_misses();

}  // namespace moreh::backend
