// The fused LSTM and GRU cells, for moreh.
//
// nn.LSTM and nn.GRU are composite ops. On CPU they run their cells from pointwise ops; on CUDA, XPU and
// PrivateUse1 devices they call the fused cells `_thnn_fused_{lstm,gru}_cell` (and, from autograd,
// their fused backwards), which PyTorch implements for CUDA only. moreh implements the four here as
// ordinary ATen ops on moreh tensors, which the recorder takes like any other: the step graph holds
// the cells' pointwise math, and moreh's host devices run CPU kernels for it.
//
// The workspaces are what the backwards read; they are private to the pair (autograd saves the
// forward's and passes it back), laid out as on CUDA:
//   LSTM (B, 4H): the activated gates i, f, g, o.
//   GRU  (B, 5H): r, z, n, hx and the hidden gates' n part with its bias (hn).
#include <ATen/ATen.h>
#include <torch/library.h>

namespace moreh::backend {
namespace {

using at::Tensor;

Tensor with_bias(const Tensor& gates, const std::optional<Tensor>& bias) {
  return bias && bias->defined() ? gates.add(*bias) : gates;
}

bool defined(const std::optional<Tensor>& t) { return t && t->defined(); }

std::tuple<Tensor, Tensor, Tensor> lstm_cell(const Tensor& input_gates, const Tensor& hidden_gates, const Tensor& cx,
                                             const std::optional<Tensor>& input_bias,
                                             const std::optional<Tensor>& hidden_bias) {
  TORCH_CHECK(defined(input_bias) == defined(hidden_bias),
              "_thnn_fused_lstm_cell: pass both biases or neither");
  Tensor gates = with_bias(with_bias(input_gates, input_bias), hidden_bias).add(hidden_gates);
  auto chunks = gates.chunk(4, 1);
  Tensor i = chunks[0].sigmoid(), f = chunks[1].sigmoid(), g = chunks[2].tanh(), o = chunks[3].sigmoid();
  Tensor cy = f.mul(cx).add(i.mul(g));
  Tensor hy = o.mul(cy.tanh());
  return {hy, cy, at::cat({i, f, g, o}, 1)};
}

// d(sigmoid)/dx from its value s: s * (1 - s); d(tanh)/dx from its value t: 1 - t^2.
Tensor sigmoid_slope(const Tensor& s) { return s.mul(s.neg().add(1)); }
Tensor tanh_slope(const Tensor& t) { return t.mul(t).neg().add(1); }

std::tuple<Tensor, Tensor, Tensor> lstm_cell_backward(const std::optional<Tensor>& grad_hy,
                                                      const std::optional<Tensor>& grad_cy, const Tensor& cx,
                                                      const Tensor& cy, const Tensor& workspace, bool has_bias) {
  if (!defined(grad_hy) && !defined(grad_cy)) return {Tensor(), Tensor(), Tensor()};
  auto chunks = workspace.chunk(4, 1);
  const Tensor &i = chunks[0], &f = chunks[1], &g = chunks[2], &o = chunks[3];
  Tensor tanh_cy = cy.tanh();
  // The gradient reaching the cell state: from cy directly and through hy = o * tanh(cy).
  Tensor grad_c = defined(grad_cy) ? *grad_cy : at::zeros_like(cx);
  Tensor grad_o = at::zeros_like(o);
  if (defined(grad_hy)) {
    grad_c = grad_c.add(grad_hy->mul(o).mul(tanh_slope(tanh_cy)));
    grad_o = grad_hy->mul(tanh_cy).mul(sigmoid_slope(o));
  }
  Tensor grad_i = grad_c.mul(g).mul(sigmoid_slope(i));
  Tensor grad_f = grad_c.mul(cx).mul(sigmoid_slope(f));
  Tensor grad_g = grad_c.mul(i).mul(tanh_slope(g));
  Tensor grad_gates = at::cat({grad_i, grad_f, grad_g, grad_o}, 1);
  Tensor grad_bias = has_bias ? grad_gates.sum(0) : Tensor();
  return {grad_gates, grad_c.mul(f), grad_bias};
}

std::tuple<Tensor, Tensor> gru_cell(const Tensor& input_gates, const Tensor& hidden_gates, const Tensor& hx,
                                    const std::optional<Tensor>& input_bias,
                                    const std::optional<Tensor>& hidden_bias) {
  TORCH_CHECK(defined(input_bias) == defined(hidden_bias), "_thnn_fused_gru_cell: pass both biases or neither");
  auto in = with_bias(input_gates, input_bias).chunk(3, 1);
  auto hid = with_bias(hidden_gates, hidden_bias).chunk(3, 1);
  Tensor r = in[0].add(hid[0]).sigmoid();
  Tensor z = in[1].add(hid[1]).sigmoid();
  const Tensor& hn = hid[2];
  Tensor n = in[2].add(r.mul(hn)).tanh();
  Tensor hy = n.add(z.mul(hx.sub(n)));  // (1 - z) * n + z * hx
  return {hy, at::cat({r, z, n, hx, hn}, 1)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> gru_cell_backward(const Tensor& grad_hy, const Tensor& workspace,
                                                                     bool has_bias) {
  auto chunks = workspace.chunk(5, 1);
  const Tensor &r = chunks[0], &z = chunks[1], &n = chunks[2], &hx = chunks[3], &hn = chunks[4];
  Tensor grad_z = grad_hy.mul(hx.sub(n)).mul(sigmoid_slope(z));
  Tensor grad_hx = grad_hy.mul(z);
  Tensor grad_n = grad_hy.mul(z.neg().add(1)).mul(tanh_slope(n));  // at the pre-activation of n
  Tensor grad_hn = grad_n.mul(r);
  Tensor grad_r = grad_n.mul(hn).mul(sigmoid_slope(r));
  Tensor grad_input_gates = at::cat({grad_r, grad_z, grad_n}, 1);
  Tensor grad_hidden_gates = at::cat({grad_r, grad_z, grad_hn}, 1);
  Tensor grad_input_bias = has_bias ? grad_input_gates.sum(0) : Tensor();
  Tensor grad_hidden_bias = has_bias ? grad_hidden_gates.sum(0) : Tensor();
  return {grad_input_gates, grad_hidden_gates, grad_hx, grad_input_bias, grad_hidden_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("_thnn_fused_lstm_cell", TORCH_FN(lstm_cell));
  m.impl("_thnn_fused_lstm_cell_backward_impl", TORCH_FN(lstm_cell_backward));
  m.impl("_thnn_fused_gru_cell", TORCH_FN(gru_cell));
  m.impl("_thnn_fused_gru_cell_backward", TORCH_FN(gru_cell_backward));
}

}  // namespace moreh::backend
