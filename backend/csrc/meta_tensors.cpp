#include "backend/csrc/meta_tensors.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ExpandUtils.h>

#include <vector>

namespace moreh::backend {

at::Tensor meta_strided(c10::IntArrayRef sizes, c10::IntArrayRef strides, c10::ScalarType dtype) {
  return at::detail::empty_strided_meta(sizes, strides, dtype, std::nullopt, c10::Device(c10::kMeta), std::nullopt);
}

at::Tensor meta_contiguous(c10::IntArrayRef sizes, c10::ScalarType dtype) {
  return at::detail::empty_meta(sizes, dtype, std::nullopt, c10::Device(c10::kMeta), std::nullopt, std::nullopt);
}

at::Tensor meta_like(const at::Tensor& t) {
  if (t.is_non_overlapping_and_dense()) return meta_strided(t.sizes(), t.strides(), t.scalar_type());
  return meta_strided(t.sizes(), at::infer_dense_strides(t.sizes(), t.strides()), t.scalar_type());
}

at::Tensor meta_permuted(c10::IntArrayRef sizes, c10::IntArrayRef perm, c10::ScalarType dtype) {
  std::vector<int64_t> strides(sizes.size());
  int64_t stride = 1;
  for (auto it = perm.rbegin(); it != perm.rend(); ++it) {
    strides[*it] = stride;
    stride *= sizes[*it];
  }
  return meta_strided(sizes, strides, dtype);
}

}  // namespace moreh::backend
