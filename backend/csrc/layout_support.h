// moreh tensors are dense and strided. Everything that would put another layout (sparse COO/CSR/...,
// mkldnn) on moreh, or feed one to a moreh op, stops with a NotImplementedError that names the op and
// says what to do, before anything is recorded, so the rest of the process is untouched.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/operator_name.h>
#include <c10/core/Layout.h>
#include <string_view>

namespace moreh::backend {

// Throws the NotImplementedError; `what` names the op or the action.
[[noreturn]] void throw_unsupported_layout(std::string_view what, c10::Layout layout);

inline void check_strided_layout(std::string_view what, c10::Layout layout) {
  if (layout != c10::kStrided) [[unlikely]] throw_unsupported_layout(what, layout);
}
inline void check_strided_layout(const c10::OperatorName& op, c10::Layout layout) {
  if (layout != c10::kStrided) [[unlikely]] throw_unsupported_layout(c10::toString(op), layout);
}

}  // namespace moreh::backend
