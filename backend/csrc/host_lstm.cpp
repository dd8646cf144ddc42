// nn.LSTM on host devices as CPU eager runs it: one oneDNN layer op (aten::mkldnn_rnn_layer) per layer and
// direction, recorded whole, whose autograd backward is one aten::mkldnn_rnn_layer_backward each.
//
// at::lstm is composite. On CPU tensors it takes oneDNN's path (lstm_mkldnn_stub) when oneDNN is enabled and
// the input is float32; on any other device it runs the recurrence cell by cell (a fused cell per time step
// and layer, about 35 recorded ops per step of a sequence, plus their backward). moreh's host devices run
// CPU kernels, so for them this takes CPU's own path: the same ops CPU eager runs, bit for bit, a few dozen
// recorded ops per layer instead of thousands. CUDA devices, batch splitting (the layer op has no sharding
// rule) and everything oneDNN's path does not take keep the composite.
#include <ATen/ATen.h>
#include <ATen/ops/lstm_native.h>
#include <torch/library.h>

#include "backend/csrc/moreh_storage.h"

namespace moreh::backend {
namespace {

using at::Tensor;
using at::TensorList;

bool one_host_device() {
  static const bool host = engine().device(0).kind() == runtime::DeviceKind::kHost && engine().num_devices() == 1;
  return host;
}

// The conditions of CPU's use_mkldnn (float32 only) and of lstm()'s oneDNN branch (no projections).
bool takes_cpu_path(const Tensor& input, TensorList hx, TensorList params, bool has_biases, int64_t num_layers,
                    bool bidirectional) {
  if (!one_host_device() || !at::globalContext().userEnabledMkldnn()) return false;
  if (hx.size() != 2 || input.scalar_type() != at::kFloat || input.numel() == 0 || input.dim() != 3) return false;
  const int64_t directions = bidirectional ? 2 : 1;
  if (static_cast<int64_t>(params.size()) != num_layers * directions * (has_biases ? 4 : 2)) return false;
  for (const Tensor& t : params)
    if (t.device().type() != kMoreh || t.scalar_type() != at::kFloat) return false;
  for (const Tensor& t : hx)
    if (t.device().type() != kMoreh || t.scalar_type() != at::kFloat || t.dim() != 3) return false;
  return input.device().type() == kMoreh;
}

std::tuple<Tensor, Tensor, Tensor> lstm(const Tensor& input_, TensorList hx_, TensorList params, bool has_biases,
                                        int64_t num_layers, double dropout_p, bool train, bool bidirectional,
                                        bool batch_first) {
  if (!takes_cpu_path(input_, hx_, params, has_biases, num_layers, bidirectional))
    return at::native::lstm(input_, hx_, params, has_biases, num_layers, dropout_p, train, bidirectional, batch_first);
  constexpr int64_t kLstmMode = 2;  // ideep::rnn_kind::LSTM
  Tensor input = (batch_first ? input_.transpose(0, 1) : input_).contiguous();
  const Tensor hx = hx_[0].contiguous(), cx = hx_[1].contiguous();
  const int64_t hidden_size = hx.size(2);
  const int64_t directions = bidirectional ? 2 : 1;
  const size_t per_layer = has_biases ? 4 : 2;
  Tensor layer_input = input;
  std::vector<Tensor> layer_output(directions), layer_hy(num_layers * directions), layer_cy(num_layers * directions);
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    for (int64_t direction = 0; direction < directions; ++direction) {
      const int64_t index = layer * directions + direction;
      const Tensor* w = params.data() + index * per_layer;
      auto outputs = at::mkldnn_rnn_layer(layer_input, w[0], w[1], has_biases ? w[2] : at::zeros(w[0].sizes(), w[0].options()),
                                          has_biases ? w[3] : at::zeros(w[1].sizes(), w[1].options()), hx[index],
                                          cx[index], direction > 0, /*batch_sizes=*/{}, kLstmMode, hidden_size,
                                          num_layers, has_biases, bidirectional, batch_first, train);
      layer_output[direction] = std::get<0>(outputs);
      layer_hy[index] = std::get<1>(outputs);
      layer_cy[index] = std::get<2>(outputs);
    }
    layer_input = directions == 1 ? layer_output[0] : at::cat(layer_output, -1);
    if (dropout_p != 0 && train && layer < num_layers - 1) layer_input = at::dropout(layer_input, dropout_p, true);
  }
  Tensor output = batch_first ? layer_input.transpose(0, 1) : layer_input;
  return {output, at::stack(layer_hy, 0), at::stack(layer_cy, 0)};
}

}  // namespace

// Above autograd, as composites are: the layer ops it calls build their own backward.
TORCH_LIBRARY_IMPL(aten, AutogradPrivateUse1, m) { m.impl("lstm.input", TORCH_FN(lstm)); }

}  // namespace moreh::backend
