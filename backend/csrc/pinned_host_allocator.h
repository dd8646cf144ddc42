// Pinned host memory as PyTorch sees it: the allocator behind tensor.pin_memory(), torch.empty(...,
// pin_memory=True) and DataLoader(pin_memory=True), and the "is this pointer pinned?" answer. The memory
// and its ranges are the moreh device's (runtime::PinnedHostMemory).
#pragma once
#include <c10/core/Allocator.h>

namespace moreh::backend {

c10::Allocator* pinned_host_allocator();
// True for any address inside a pinned block.
bool is_pinned_host_ptr(const void* p);

}  // namespace moreh::backend
