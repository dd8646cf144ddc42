"""nn.LSTM / nn.GRU / their cells on moreh: PyTorch sends a PrivateUse1 device to the fused cells
(`_thnn_fused_{lstm,gru}_cell` and their backwards, CUDA-only in PyTorch), which moreh provides. On host
devices nn.LSTM takes CPU eager's own path instead: one oneDNN op per layer and direction
(backend/csrc/host_lstm.cpp)."""
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


@pytest.mark.parametrize("batch_first,bidirectional,bias", [(False, False, True), (True, True, True), (False, False, False)])
def test_lstm_runs_whole_layers_as_cpu_eager_does(batch_first, bidirectional, bias):
    """Issue 15, item 3: nn.LSTM records one oneDNN layer op per layer and direction (and one backward each),
    as CPU eager runs it, not a fused cell per time step: a few dozen ops for a whole sequence, forward and
    backward, and the very results and gradients CPU eager gives."""
    torch.manual_seed(0)
    model = nn.LSTM(8, 16, num_layers=2, batch_first=batch_first, bidirectional=bidirectional, bias=bias)
    moved = copy.deepcopy(model).to("moreh")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3 if batch_first else 35, 35 if batch_first else 3, 8, generator=g)
    states = 2 * (2 if bidirectional else 1)
    h0 = (torch.randn(states, 3, 16, generator=g), torch.randn(states, 3, 16, generator=g))

    def run(m, device):
        out, (h, c) = m(x.to(device), tuple(t.to(device) for t in h0))
        (out.square().sum() + h.sum() * 2 + c.sum()).backward()
        return out.detach().cpu(), h.detach().cpu(), c.detach().cpu()

    ref = run(model, "cpu")
    before = torch.moreh.graph_stats()["recorded_ops"]
    got = run(moved, "moreh")
    assert torch.moreh.graph_stats()["recorded_ops"] - before < 80  # the cell path recorded thousands
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
    for (name, p), q in zip(model.named_parameters(), moved.parameters()):
        assert torch.equal(q.grad.cpu(), p.grad), name


def test_lstm_language_model_step_counts_and_no_grad_evaluation():
    """The word-language-model shape (35 x 20 tokens, 2 layers): training steps and a no_grad evaluation
    (oneDNN then keeps no workspace) both match CPU eager bit for bit."""
    torch.manual_seed(0)
    cpu = nn.LSTM(32, 32, num_layers=2)
    dev = copy.deepcopy(cpu).to("moreh")
    x = torch.randn(35, 20, 32, generator=torch.Generator().manual_seed(3))
    for m, device in ((cpu, "cpu"), (dev, "moreh")):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            m(x.to(device))[0].square().mean().backward()
            opt.step()
    with torch.no_grad():
        assert torch.equal(dev(x.to("moreh"))[0].cpu(), cpu(x)[0])
    for p, q in zip(cpu.parameters(), dev.parameters()):
        assert torch.equal(q.detach().cpu(), p.detach())
