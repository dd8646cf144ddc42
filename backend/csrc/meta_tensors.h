// Meta tensors of a chosen geometry, made without the dispatcher (whose Meta kernels may be Python).
#pragma once
#include <ATen/ATen.h>

namespace moreh::backend {

at::Tensor meta_strided(c10::IntArrayRef sizes, c10::IntArrayRef strides, c10::ScalarType dtype);

at::Tensor meta_contiguous(c10::IntArrayRef sizes, c10::ScalarType dtype);

// empty_like(t): t's strides where they are dense, dense strides in t's dimension order otherwise.
at::Tensor meta_like(const at::Tensor& t);

// Dense, with its dimensions lying in memory in the order `perm` (outermost first): empty_permuted.
at::Tensor meta_permuted(c10::IntArrayRef sizes, c10::IntArrayRef perm, c10::ScalarType dtype);

// The computation dtype of torch's references: float for half and bfloat16, the dtype itself otherwise.
inline c10::ScalarType computation_dtype(c10::ScalarType t) {
  return at::isReducedFloatingType(t) ? at::kFloat : t;
}

}  // namespace moreh::backend
