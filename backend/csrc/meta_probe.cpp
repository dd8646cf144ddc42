#include "backend/csrc/meta_probe.h"

#include <ATen/ATen.h>

namespace moreh::backend {
namespace {

bool is_rnn_layer(const c10::OperatorHandle& op) {
  static const auto handle = c10::Dispatcher::singleton().findSchema({"aten::mkldnn_rnn_layer", ""});
  return handle && op == *handle;
}

}  // namespace

void probe_meta_result(const c10::OperatorHandle& op, const c10::IValue* args, MetaEntry& entry) {
  if (!is_rnn_layer(op) || entry.returns.size() != 4 || entry.returns[3].items.size() != 1) return;
  const size_t n = op.schema().arguments().size();
  torch::jit::Stack stack;
  stack.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (args[i].isTensor() && args[i].toTensor().defined()) {
      const at::Tensor& t = args[i].toTensor();
      stack.emplace_back(at::zeros(t.sizes(), at::TensorOptions().dtype(t.scalar_type())));
    } else {
      stack.push_back(args[i]);
    }
  }
  op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), &stack);
  const at::Tensor workspace = stack.at(3).toTensor();
  OutSpec& o = entry.returns[3].items[0];
  if (!workspace.defined()) {  // without gradients the kernel keeps none
    o = OutSpec();
    return;
  }
  TORCH_CHECK(workspace.dim() == 1, "moreh: oneDNN's RNN workspace is not the flat buffer its Meta kernel describes");
  o.kind = OutSpec::Kind::kFresh;
  o.dtype = workspace.scalar_type();
  o.sizes = {workspace.numel()};
  o.strides = {1};
  o.offset = 0;
  o.nbytes = static_cast<int64_t>(workspace.nbytes());
}

}  // namespace moreh::backend
