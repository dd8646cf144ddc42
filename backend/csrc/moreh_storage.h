// moreh storages: a storage's data pointer is a runtime buffer's virtual address, and its context owns
// a reference to the buffer. Also the ways back from runtime memory to ATen CPU tensors.
#pragma once
#include <ATen/ATen.h>

#include "runtime/memory/buffer.h"
#include "runtime/graph/step_graph.h"
#include "scheduler/engine.h"

namespace moreh::backend {

constexpr c10::DeviceType kMoreh = c10::DeviceType::PrivateUse1;

// The process's engine. Every path into moreh goes through here (or check_not_forked()): in a process
// forked after moreh started it raises a RuntimeError saying to use 'spawn' instead.
scheduler::Engine& engine();
void check_not_forked();
c10::Allocator* moreh_allocator();

bool is_moreh(const at::Tensor& t);
// The buffer behind a moreh storage; throws for a storage that is not moreh's.
const std::shared_ptr<runtime::Buffer>& buffer_of(const c10::Storage& storage);
runtime::TensorRef make_ref(const at::Tensor& t);

// A moreh tensor over a fresh buffer of `nbytes`, with the given geometry.
at::Tensor new_moreh_tensor(int64_t nbytes, c10::IntArrayRef sizes, c10::IntArrayRef strides, int64_t offset,
                            c10::ScalarType dtype);
// A moreh tensor that views `storage` (a moreh storage) with the given geometry.
at::Tensor moreh_view(const c10::Storage& storage, c10::IntArrayRef sizes, c10::IntArrayRef strides, int64_t offset,
                      c10::ScalarType dtype);

// Resizes a moreh storage in place (UntypedStorage.resize_): it gets a fresh buffer of `nbytes` whose
// first min(old, new) bytes are a recorded copy of the old contents; the rest is uninitialized.
void resize_storage_bytes(const c10::Storage& storage, size_t nbytes);

// Elements from a view's first to one past its farthest (0 for an empty view): the storage it spans past
// its offset.
int64_t view_span(const runtime::TensorRef& ref);
// A CPU tensor over physical memory with a ref's geometry (no copy).
at::Tensor cpu_view(runtime::PhysicalBlock& block, const runtime::TensorRef& ref);
// Flushes and waits, then returns a CPU tensor with the moreh tensor's value: on host devices it aliases
// the physical memory, on CUDA devices it is a copy (write through store_from_cpu). Memory of a buffer
// that nothing ever wrote is allocated (uninitialized, like torch.empty).
at::Tensor materialized_cpu_view(const at::Tensor& t);
// A host read of t's value: like materialized_cpu_view, but a value a plan left over several devices (rows,
// partial sums) is assembled on the host and stays where it is (no room needed on device 0).
at::Tensor host_value(const at::Tensor& t);
// Writes a CPU tensor's values into a moreh tensor's physical memory (same shape), after materializing it.
void store_from_cpu(const at::Tensor& t, const at::Tensor& src);
// Binds a CPU storage's bytes as `buffer`'s memory on the first device: adopted where the device is
// host memory, uploaded otherwise. Throws runtime::OutOfMemoryError.
void bind_cpu_storage(runtime::Buffer& buffer, const c10::Storage& storage);

// Engine calls that translate runtime errors into PyTorch's (OUT_OF_MEMORY -> torch.OutOfMemoryError).
void flush_step();
void synchronize_device();

}  // namespace moreh::backend
