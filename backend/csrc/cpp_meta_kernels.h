// ATen's C++ Meta kernels for the ops whose Meta dispatch key Python registrations took over.
#pragma once

#include <ATen/core/boxing/KernelFunction.h>
#include <ATen/core/operator_name.h>

namespace moreh::backend {

// The C++ Meta kernel of `op`, or nullptr when there is none to use instead of the dispatcher's: ATen's own
// (a boxed at::meta::<op>) where a Python registration shadows it, and moreh's for the few ops it records
// every step whose only Meta kernel is Python (flash attention). Each computes what the Python Meta kernel
// does, without Python (no GIL, no first-call import of sympy). Call it with callBoxed(op, Meta, stack).
const c10::KernelFunction* cpp_meta_kernel(const c10::OperatorName& op);

}  // namespace moreh::backend
