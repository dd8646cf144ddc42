#include "backend/csrc/moreh_storage.h"

#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "backend/csrc/interrupt_handler.h"
#include "runtime/base/errors.h"
#include "runtime/base/logging.h"
#include "runtime/base/fork_guard.h"

namespace moreh::backend {
namespace {

struct BufferContext {
  std::shared_ptr<runtime::Buffer> buffer;
};

void release_buffer_context(void* ctx) {
  // In a forked child the buffer's bookkeeping may be locked by a parent thread that no longer exists;
  // the child's copy is left alone (nothing in the child can run it anyway).
  if (runtime::in_forked_child()) return;
  auto* c = static_cast<BufferContext*>(ctx);
  c->buffer->release_frontend();
  delete c;
}

class MorehAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    auto buffer = engine().new_buffer(nbytes);
    void* address = reinterpret_cast<void*>(buffer->address());
    return {address, new BufferContext{std::move(buffer)}, &release_buffer_context, c10::Device(kMoreh, 0)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
  void copy_data(void*, const void*, std::size_t) const override {
    TORCH_CHECK(false, "moreh storages hold virtual addresses; copy tensors (tensor.copy_) instead of raw storage bytes");
  }
};

template <class F>
void translating_errors(F&& f) {
  try {
    f();
  } catch (const runtime::OutOfMemoryError& e) {
    TORCH_CHECK_WITH(OutOfMemoryError, false, e.what());
  } catch (const runtime::InterruptedError& e) {
    raise_pending_interrupt();  // Ctrl-C: Python's KeyboardInterrupt, not a RuntimeError beside it
    TORCH_CHECK(false, e.what());
  }
}

}  // namespace

void check_not_forked() {
  if (runtime::in_forked_child()) [[unlikely]]
    TORCH_CHECK(false, runtime::forked_child_message());
}

scheduler::Engine& engine() {
  check_not_forked();
  return scheduler::Engine::global();
}

c10::Allocator* moreh_allocator() {
  static MorehAllocator allocator;
  return &allocator;
}

namespace {
// PyTorch makes some storages itself from the device's registered allocator: torch.UntypedStorage(n,
// device="moreh"), which torch.load uses to move every loaded storage to moreh, and storage resizes.
// Unregistered, that allocator is null and those paths crash.
struct RegisterAllocator {
  RegisterAllocator() { c10::SetAllocator(kMoreh, moreh_allocator()); }
} g_register_allocator;
}  // namespace

bool is_moreh(const at::Tensor& t) { return t.defined() && t.device().type() == kMoreh; }

const std::shared_ptr<runtime::Buffer>& buffer_of(const c10::Storage& storage) {
  const c10::DataPtr& dp = storage.data_ptr();
  TORCH_CHECK(dp.get_deleter() == &release_buffer_context,
              "this tensor's storage was not allocated by moreh (a moreh tensor must come from moreh ops)");
  return static_cast<BufferContext*>(dp.get_context())->buffer;
}

runtime::TensorRef make_ref(const at::Tensor& t) {
  runtime::TensorRef r;
  r.buffer = buffer_of(t.storage());
  r.offset = t.storage_offset();
  r.sizes.assign(t.sizes().begin(), t.sizes().end());
  r.strides.assign(t.strides().begin(), t.strides().end());
  r.dtype = static_cast<int8_t>(t.scalar_type());
  r.itemsize = static_cast<uint8_t>(t.element_size());
  return r;
}

at::Tensor moreh_view(const c10::Storage& storage, c10::IntArrayRef sizes, c10::IntArrayRef strides, int64_t offset,
                      c10::ScalarType dtype) {
  auto t = at::detail::make_tensor<c10::TensorImpl>(c10::Storage(storage), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                                    c10::scalarTypeToTypeMeta(dtype));
  t.unsafeGetTensorImpl()->set_sizes_and_strides(sizes, strides, offset);
  return t;
}

at::Tensor new_moreh_tensor(int64_t nbytes, c10::IntArrayRef sizes, c10::IntArrayRef strides, int64_t offset,
                            c10::ScalarType dtype) {
  c10::Storage storage(c10::Storage::use_byte_size_t(), nbytes, moreh_allocator(), /*resizable=*/true);
  return moreh_view(storage, sizes, strides, offset, dtype);
}

void resize_storage_bytes(const c10::Storage& storage, size_t nbytes) {
  const bool defined = buffer_of(storage)->defined();  // also checks that the storage is moreh's
  TORCH_CHECK(storage.resizable(), "moreh: this storage is not resizable");
  const size_t have = storage.nbytes();
  c10::Storage self(storage);
  c10::DataPtr old = self.set_data_ptr(moreh_allocator()->allocate(nbytes));
  self.set_nbytes(nbytes);
  const int64_t kept = static_cast<int64_t>(std::min(have, nbytes));
  if (kept > 0 && defined) {
    c10::Storage old_storage(c10::Storage::use_byte_size_t(), have, std::move(old), moreh_allocator(), false);
    moreh_view(self, {kept}, {1}, 0, c10::kByte).copy_(moreh_view(old_storage, {kept}, {1}, 0, c10::kByte));
  }
}

namespace {

// A CPU tensor over `storage` with ref's sizes and strides, `offset` elements in.
at::Tensor cpu_tensor(c10::Storage storage, const runtime::TensorRef& ref, int64_t offset) {
  auto t = at::detail::make_tensor<c10::TensorImpl>(std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                                    c10::scalarTypeToTypeMeta(static_cast<c10::ScalarType>(ref.dtype)));
  t.unsafeGetTensorImpl()->set_sizes_and_strides(c10::IntArrayRef(ref.sizes.data(), ref.sizes.size()),
                                                 c10::IntArrayRef(ref.strides.data(), ref.strides.size()), offset);
  return t;
}

}  // namespace

at::Tensor cpu_view(runtime::PhysicalBlock& block, const runtime::TensorRef& ref) {
  auto& view = block.provider_view();
  if (!view) {
    auto storage = std::make_shared<c10::Storage>(c10::Storage::use_byte_size_t(), block.bytes(),
                                                  c10::DataPtr(block.data(), c10::Device(c10::kCPU)), nullptr, false);
    view = storage;
  }
  return cpu_tensor(*std::static_pointer_cast<c10::Storage>(view), ref, ref.offset);
}

int64_t view_span(const runtime::TensorRef& ref) {
  int64_t last = 0;  // the farthest element from the view's first
  for (size_t d = 0; d < ref.sizes.size(); ++d) {
    if (ref.sizes[d] == 0) return 0;
    last += (ref.sizes[d] - 1) * std::max<int64_t>(ref.strides[d], 0);
  }
  return last + 1;
}

// MOREH_PLAN_ONLY: nothing runs, so a value the host asks for is zeros of the tensor's geometry (said once).
static at::Tensor plan_only_zeros(const runtime::TensorRef& ref) {
  static std::once_flag warned;
  std::call_once(warned, [] {
    runtime::log_message(runtime::LogLevel::kWarning,
                         "moreh: MOREH_PLAN_ONLY: steps are planned, not run; values read on the host are zeros");
  });
  c10::Storage host(c10::Storage::use_byte_size_t(), static_cast<int64_t>(ref.buffer->bytes()),
                    c10::GetDefaultCPUAllocator(), false);
  if (ref.buffer->bytes() > 0) std::memset(host.mutable_data(), 0, ref.buffer->bytes());
  return cpu_tensor(std::move(host), ref, ref.offset);
}

at::Tensor materialized_cpu_view(const at::Tensor& t) {
  synchronize_device();
  runtime::TensorRef ref = make_ref(t);
  if (auto why = ref.buffer->failure()) TORCH_CHECK(false, "this moreh tensor's value is unavailable: ", *why);
  if (engine().plan_only()) return plan_only_zeros(ref);
  translating_errors([&] { engine().bring_home(*ref.buffer); });  // rows or partial sums on several devices
  if (!ref.buffer->memory()) {
    translating_errors([&] { ref.buffer->bind(engine().device(0).allocate(ref.buffer->bytes())); });
  }
  runtime::PhysicalBlock& block = *ref.buffer->memory();
  if (block.device().host_accessible()) return cpu_view(block, ref);
  // Device memory: a host copy of the bytes the view spans, viewed with the tensor's geometry.
  const int64_t item = static_cast<int64_t>(c10::elementSize(static_cast<c10::ScalarType>(ref.dtype)));
  const int64_t span = view_span(ref) * item;
  c10::Storage host(c10::Storage::use_byte_size_t(), span, c10::GetDefaultCPUAllocator(), false);
  if (span > 0) {
    translating_errors([&] {
      block.device().read(host.mutable_data(), static_cast<const char*>(block.data()) + ref.offset * item,
                          static_cast<uint64_t>(span));
    });
  }
  return cpu_tensor(std::move(host), ref, 0);
}

at::Tensor host_value(const at::Tensor& t) {
  synchronize_device();
  runtime::TensorRef ref = make_ref(t);
  if (auto why = ref.buffer->failure()) TORCH_CHECK(false, "this moreh tensor's value is unavailable: ", *why);
  if (engine().plan_only()) return plan_only_zeros(ref);
  c10::Storage host(c10::Storage::use_byte_size_t(), static_cast<int64_t>(ref.buffer->bytes()),
                    c10::GetDefaultCPUAllocator(), false);
  bool read = false;
  translating_errors([&] { read = engine().read_to_host(*ref.buffer, host.mutable_data()); });
  if (!read) return materialized_cpu_view(t);
  return cpu_tensor(std::move(host), ref, ref.offset);
}

void store_from_cpu(const at::Tensor& t, const at::Tensor& src) {
  if (engine().plan_only()) return;  // nothing holds values
  at::Tensor host = materialized_cpu_view(t);
  host.copy_(src);
  runtime::TensorRef ref = make_ref(t);
  runtime::PhysicalBlock& block = *ref.buffer->memory();
  if (block.device().host_accessible()) return;  // host was the memory itself
  const int64_t item = static_cast<int64_t>(c10::elementSize(static_cast<c10::ScalarType>(ref.dtype)));
  if (host.storage().nbytes() == 0) return;
  translating_errors([&] {
    block.device().write(static_cast<char*>(block.data()) + ref.offset * item, host.storage().data(),
                         host.storage().nbytes());
  });
}

void bind_cpu_storage(runtime::Buffer& buffer, const c10::Storage& storage) {
  runtime::PhysicalDevice& device = engine().device(0);
  if (device.host_accessible()) {
    auto owner = std::make_shared<c10::Storage>(storage);
    auto block = device.adopt(owner->mutable_data(), owner->nbytes(), owner);
    block->provider_view() = owner;
    buffer.bind(std::move(block));
    return;
  }
  auto block = device.allocate(std::max<uint64_t>(storage.nbytes(), buffer.bytes()));
  if (storage.nbytes() > 0) device.write(block->data(), storage.data(), storage.nbytes());
  buffer.bind(std::move(block));
}

void flush_step() {
  translating_errors([] { engine().flush(); });
}

void synchronize_device() {
  translating_errors([] { engine().synchronize(); });
}

}  // namespace moreh::backend
