// The few ops moreh implements itself instead of recording: factories (a virtual buffer, no work),
// views (metadata over the same storage), copies that cross to the host, host reads, set_/resize_.
#include <ATen/EmptyTensor.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/unfold_native.h>
#include <ATen/ops/view_as_complex_native.h>
#include <ATen/ops/view_as_real_native.h>
#include <ATen/ops/view_native.h>
#include <ATen/native/transformers/attention.h>
#include <torch/library.h>

#include "backend/csrc/attention_choice.h"
#include "backend/csrc/layout_support.h"
#include "backend/csrc/lazy_fallback.h"
#include "backend/csrc/moreh_storage.h"
#ifdef MOREH_TORCH_CUDA
#include "backend/csrc/cuda_kernel_provider.h"
#endif

namespace moreh::backend {
namespace {

c10::DispatchKeySet moreh_keys() { return c10::DispatchKeySet(c10::DispatchKey::PrivateUse1); }

void check_layout(std::optional<c10::Layout> layout) {
  if (layout) check_strided_layout("creating a tensor", *layout);
}

void check_device(std::optional<c10::Device> device) {
  TORCH_CHECK(!device || !device->has_index() || device->index() == 0,
              "moreh has one (virtual) device, moreh:0; got ", *device);
}

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype,
                               std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                               std::optional<bool>, std::optional<c10::MemoryFormat> memory_format) {
  check_layout(layout);
  check_device(device);
  return at::detail::empty_generic(size, moreh_allocator(), moreh_keys(),
                                   c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride, std::optional<c10::ScalarType> dtype,
                         std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                         std::optional<bool>) {
  check_layout(layout);
  check_device(device);
  return at::detail::empty_strided_generic(size, stride, moreh_allocator(), moreh_keys(),
                                           c10::dtype_or_default(dtype));
}

void record_copy(const at::Tensor& dst, const at::Tensor& src, bool non_blocking) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("aten::copy_", "");
  // A source with a conjugate or negative bit: copy its plain values, then apply the bit to dst.
  at::Tensor plain = src;
  if (is_moreh(src) && (src.is_conj() || src.is_neg()))
    plain = moreh_view(src.storage(), src.sizes(), src.strides(), src.storage_offset(), src.scalar_type());
  torch::jit::Stack stack{dst, plain, non_blocking};
  lazy_fallback(op, moreh_keys(), &stack);
  if (plain.unsafeGetTensorImpl() != src.unsafeGetTensorImpl()) {
    if (src.is_conj() && !dst.is_conj()) at::conj_physical_(const_cast<at::Tensor&>(dst));
    if (src.is_neg() && !dst.is_neg()) const_cast<at::Tensor&>(dst).neg_();
  }
}

at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  if (is_moreh(dst) && (is_moreh(self) || self.device().is_cpu())) {
    record_copy(dst, self, non_blocking);  // moreh<-moreh, or an upload of a snapshot of the host tensor
  } else if (is_moreh(self) && dst.device().is_cpu()) {
    dst.copy_(host_value(self));  // a host read: the step ends here
  } else {
    TORCH_CHECK(false, "moreh cannot copy from ", self.device(), " to ", dst.device(),
                "; copy through the CPU (tensor.cpu())");
  }
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  dst.resize_(self.sizes());
  return copy_from(self, dst, false);
}

c10::Scalar local_scalar_dense(const at::Tensor& self) { return host_value(self).item(); }

void check_moreh_storage(const c10::Storage& storage) {
  TORCH_CHECK(storage.device_type() == kMoreh, "moreh: set_ needs a moreh storage, got one on ",
              storage.device());
  (void)buffer_of(storage);
}

at::Tensor& set_storage_offset(at::Tensor& self, c10::Storage source, int64_t offset, c10::IntArrayRef size,
                               c10::IntArrayRef stride) {
  check_moreh_storage(source);
  std::vector<int64_t> strides(stride.begin(), stride.end());
  if (strides.empty()) {
    auto contiguous = c10::contiguous_strides(size);
    strides.assign(contiguous.begin(), contiguous.end());
  }
  int64_t needed = static_cast<int64_t>(at::detail::computeStorageNbytes(size, strides, self.element_size(),
                                                                         offset));
  TORCH_CHECK(offset >= 0 && needed <= static_cast<int64_t>(source.nbytes()) ,
              "moreh: set_ geometry needs ", needed, " bytes but the storage has ", source.nbytes());
  self.unsafeGetTensorImpl()->set_storage_keep_dtype(std::move(source));
  self.unsafeGetTensorImpl()->set_sizes_and_strides(size, strides, offset);
  return self;
}

at::Tensor& set_storage(at::Tensor& self, c10::Storage source) {
  int64_t n = static_cast<int64_t>(source.nbytes()) / static_cast<int64_t>(self.element_size());
  return set_storage_offset(self, std::move(source), 0, {n}, {});
}

at::Tensor& set_tensor(at::Tensor& self, const at::Tensor& source) {
  if (self.unsafeGetTensorImpl() == source.unsafeGetTensorImpl()) return self;
  return set_storage_offset(self, source.storage(), source.storage_offset(), source.sizes(), source.strides());
}

at::Tensor& set_empty(at::Tensor& self) {
  c10::Storage fresh(c10::Storage::use_byte_size_t(), 0, moreh_allocator(), true);
  return set_storage_offset(self, fresh, 0, {0}, {});
}

const at::Tensor& resize(const at::Tensor& self, c10::IntArrayRef size, std::optional<c10::MemoryFormat> format) {
  int64_t needed = static_cast<int64_t>(
      at::detail::computeStorageNbytesContiguous(size, self.element_size(), self.storage_offset()));
  c10::Storage storage = self.storage();
  int64_t have = static_cast<int64_t>(storage.nbytes());
  if (needed > have) {
    c10::DataPtr fresh = moreh_allocator()->allocate(needed);
    if (have > 0 && buffer_of(storage)->defined()) {
      // Keep the contents: the grown buffer starts as a copy of the old one (recorded like any op).
      c10::DataPtr old = storage.set_data_ptr(std::move(fresh));
      storage.set_nbytes(needed);
      c10::Storage old_storage(c10::Storage::use_byte_size_t(), have, std::move(old), moreh_allocator(), false);
      record_copy(moreh_view(storage, {have}, {1}, 0, c10::kByte), moreh_view(old_storage, {have}, {1}, 0, c10::kByte),
                  false);
    } else {
      storage.set_data_ptr_noswap(std::move(fresh));
      storage.set_nbytes(needed);
    }
  }
  self.unsafeGetTensorImpl()->set_sizes_contiguous(size);
  if (format) self.unsafeGetTensorImpl()->empty_tensor_restride(*format);
  return self;
}

// nn.Module.to() sets `param.data = moved` (keeping each Parameter object, and so tied weights) only
// when this says the two tensors share an implementation. TensorImpl's own rule counts only built-in
// backends as dense, so for a CPU parameter and its moreh copy it says no, and Module.to("moreh") would
// make new Parameters and silently untie shared ones (GPT-2's wte/lm_head). Dense strided CPU and moreh
// tensors are both plain TensorImpls whose metadata copies over exactly.
bool has_compatible_shallow_copy_type(const at::Tensor& self, const at::Tensor& from) {
  auto plain_dense = [](const at::Tensor& t) {
    c10::TensorImpl* impl = t.unsafeGetTensorImpl();
    return t.layout() == c10::kStrided && (t.device().is_cpu() || t.device().type() == kMoreh) &&
           typeid(*impl) == typeid(c10::TensorImpl);
  };
  return self.unsafeGetTensorImpl()->has_compatible_shallow_copy_type(from.key_set()) ||
         (plain_dense(self) && plain_dense(from));
}

}  // namespace

// scaled_dot_product_attention asks the device which fused kernel to use (attention_choice.h). On host
// devices moreh takes what CPU eager chooses, so both run the same kernels (and match bit for bit), its
// flash kernel through the route CUDA devices take. On CUDA devices, what native CUDA eager would choose
// where moreh can record it.
int64_t fused_sdp_choice(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const std::optional<at::Tensor>& mask, double dropout_p, bool is_causal,
                         std::optional<double> scale, bool enable_gqa) {
#ifdef MOREH_TORCH_CUDA
  const runtime::PhysicalDevice& device = engine().device(0);
  if (device.kind() == runtime::DeviceKind::kCuda)
    return static_cast<int64_t>(
        cuda_attention_kernel(q, k, v, mask, dropout_p, is_causal, enable_gqa, cuda_compute_capability(device)));
#endif
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("aten::_fused_sdp_choice", "")
                       .typed<int64_t(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const std::optional<at::Tensor>&, double, bool, std::optional<double>, bool)>();
  const int64_t cpu = op.redispatch(c10::DispatchKeySet(c10::DispatchKey::CPU), q, k, v, mask, dropout_p,
                                    is_causal, scale, enable_gqa);
  return static_cast<int64_t>(host_attention_kernel(static_cast<AttentionKernel>(cpu), mask));
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", TORCH_FN(empty_memory_format));
  m.impl("empty_strided", TORCH_FN(empty_strided));
  m.impl("as_strided", TORCH_FN(at::native::as_strided_tensorimpl));
  m.impl("view", TORCH_FN(at::native::view));
  m.impl("_reshape_alias", TORCH_FN(at::native::_reshape_alias));
  m.impl("unfold", TORCH_FN(at::native::unfold));
  m.impl("view_as_real", TORCH_FN(at::native::view_as_real));
  m.impl("view_as_complex", TORCH_FN(at::native::view_as_complex));
  // The composite convolution would route a non-CPU device to convolution_overrideable, which has no
  // kernel; recorded whole, they run CPU's own convolution path (mkldnn or the slow kernels).
  m.impl("convolution", torch::CppFunction::makeFromBoxedFunction<&lazy_fallback>());
  m.impl("convolution_backward", torch::CppFunction::makeFromBoxedFunction<&lazy_fallback>());
  // Composites that call a device's DispatchStub directly (moreh has none): recorded whole.
  m.impl("conj_physical_", torch::CppFunction::makeFromBoxedFunction<&lazy_fallback>());
  m.impl("_conj_physical", torch::CppFunction::makeFromBoxedFunction<&lazy_fallback>());
  // clip_grad_norm_'s norms of every gradient: recorded as one node, so that a GPU runs ATen's multi-tensor
  // kernel (two launches) instead of one reduction per parameter; host devices run CPU's per-tensor loop,
  // as CPU eager does. (It has no CPU kernel, only the composite, so it is not among the recorded
  // composites.)
  m.impl("_foreach_norm.Scalar", torch::CppFunction::makeFromBoxedFunction<&lazy_fallback>());
  // Flash attention's route for out-of-tree devices (attention_choice.h): its default kernels only say
  // "not implemented"; recorded, they run as the device's flash kernels (overrideable_attention.h).
  m.impl("_scaled_dot_product_fused_attention_overrideable",
         torch::CppFunction::makeFromBoxedFunction<&lazy_fallback>());
  m.impl("_scaled_dot_product_fused_attention_overrideable_backward",
         torch::CppFunction::makeFromBoxedFunction<&lazy_fallback>());
  m.impl("_copy_from", TORCH_FN(copy_from));
  m.impl("_copy_from_and_resize", TORCH_FN(copy_from_and_resize));
  m.impl("_local_scalar_dense", TORCH_FN(local_scalar_dense));
  m.impl("set_.source_Storage_storage_offset", TORCH_FN(set_storage_offset));
  m.impl("set_.source_Storage", TORCH_FN(set_storage));
  m.impl("set_.source_Tensor", TORCH_FN(set_tensor));
  m.impl("set_", TORCH_FN(set_empty));
  m.impl("resize_", TORCH_FN(resize));
  m.impl("_fused_sdp_choice", TORCH_FN(fused_sdp_choice));
  m.impl("_has_compatible_shallow_copy_type", TORCH_FN(has_compatible_shallow_copy_type));
}

}  // namespace moreh::backend

// scaled_dot_product_attention consults this stub for the device itself (not the op registered above).
namespace at::native {
REGISTER_PRIVATEUSE1_DISPATCH(_fused_sdp_choice_stub, &moreh::backend::fused_sdp_choice)
}  // namespace at::native

// The conjugate and negative views' fallback would resolve _copy_from's source by cloning it, which
// copies through _copy_from again, forever; record_copy applies the bits itself.
TORCH_LIBRARY_IMPL(aten, Conjugate, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}
TORCH_LIBRARY_IMPL(aten, Negative, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}
