"""nn.LSTM / nn.GRU / their cells on moreh: PyTorch sends a PrivateUse1 device to the fused cells
(`_thnn_fused_{lstm,gru}_cell` and their backwards, CUDA-only in PyTorch), which moreh provides."""
import copy

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def outputs_and_grads(make, forward, device):
    torch.manual_seed(0)
    model = make().to(device)
    x = torch.randn(7, 3, 10, generator=torch.Generator().manual_seed(1)).to(device)
    y = forward(model, x)
    y.square().sum().backward()
    return y.detach().cpu(), {n: p.grad.cpu() for n, p in model.named_parameters() if p.grad is not None}


def compare(make, forward):
    ref_y, ref_grads = outputs_and_grads(make, forward, "cpu")
    y, grads = outputs_and_grads(make, forward, "moreh")
    torch.testing.assert_close(y, ref_y, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=1e-5, msg=name)


LENGTHS = torch.tensor([7, 5, 2])


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("variant", ["two_layers_bidirectional", "no_bias", "packed", "last_hidden_only"])
def test_recurrent_layer_matches_cpu(cell, variant):
    if variant == "two_layers_bidirectional":
        compare(lambda: cell(10, 8, num_layers=2, bidirectional=True), lambda m, x: m(x)[0])
    elif variant == "no_bias":
        compare(lambda: cell(10, 8, bias=False), lambda m, x: m(x)[0])
    elif variant == "packed":
        compare(lambda: cell(10, 8, num_layers=2),
                lambda m, x: pad_packed_sequence(m(pack_padded_sequence(x, LENGTHS))[0])[0])
    else:  # the gradient reaches the cells through the final hidden state only (LSTM: no grad_cy)
        compare(lambda: cell(10, 8), lambda m, x: m(x)[1][0] if cell is nn.LSTM else m(x)[1])


def test_lstm_cell_state_only_and_given_initial_state():
    def forward(m, x):
        state = (torch.ones(3, 8, device=x.device), torch.full((3, 8), 0.5, device=x.device))
        for t in range(3):
            state = m(x[t], state)
        return state[1]  # backward gets grad_cy but no grad_hy from the last step
    compare(lambda: nn.LSTMCell(10, 8), forward)


def test_gru_cell_steps():
    compare(lambda: nn.GRUCell(10, 8), lambda m, x: m(x[1], m(x[0])))


def test_lstm_inference_records_without_flushing():
    torch.manual_seed(0)
    model = nn.LSTM(10, 8, num_layers=2)
    x = torch.randn(5, 2, 10)
    ref = model(x)[0].detach()
    moved = copy.deepcopy(model).to("moreh")
    eager = torch.moreh.graph_stats()["eager_ops"]
    with torch.no_grad():
        y = moved(x.to("moreh"))[0]
    assert torch.moreh.graph_stats()["eager_ops"] == eager
    torch.testing.assert_close(y.cpu(), ref, rtol=1e-5, atol=1e-6)
