#include "backend/csrc/layout_support.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

namespace moreh::backend {

namespace {

// The name a PyTorch user knows the layout by.
const char* python_name(c10::Layout layout) {
  switch (layout) {
    case c10::kSparse: return "torch.sparse_coo";
    case c10::kSparseCsr: return "torch.sparse_csr";
    case c10::kSparseCsc: return "torch.sparse_csc";
    case c10::kSparseBsr: return "torch.sparse_bsr";
    case c10::kSparseBsc: return "torch.sparse_bsc";
    case c10::kMkldnn: return "torch._mkldnn";
    case c10::kJagged: return "torch.jagged";
    default: return "non-strided";
  }
}

}  // namespace

void throw_unsupported_layout(std::string_view what, c10::Layout layout) {
  TORCH_CHECK_NOT_IMPLEMENTED(false, "moreh does not support ", python_name(layout), " tensors: ", what,
                              " cannot run on moreh, whose tensors are dense and strided. Keep such tensors on "
                              "the CPU, or convert them with .to_dense() before moving them to moreh.");
}

namespace {

// Sparse tensors on moreh: the dispatcher routes every op that would make or use one here.
void reject_sparse(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack*) {
  // The compressed layouts (CSR, CSC, BSR, BSC) share one dispatch key; name the family by CSR.
  c10::Layout layout = keys.has(c10::DispatchKey::SparseCsrPrivateUse1) ? c10::kSparseCsr : c10::kSparse;
  throw_unsupported_layout(c10::toString(op.schema().operator_name()), layout);
}

}  // namespace

TORCH_LIBRARY_IMPL(_, SparsePrivateUse1, m) { m.fallback(torch::CppFunction::makeFromBoxedFunction<&reject_sparse>()); }
TORCH_LIBRARY_IMPL(_, SparseCsrPrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&reject_sparse>());
}

}  // namespace moreh::backend
