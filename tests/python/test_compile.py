"""torch.compile on moreh (issue 15, item 12): Dynamo captures, moreh's step graph runs what it captured.

With the default backend (Inductor) a model on moreh used to fail with ``InductorError: KeyError: 'moreh'``.
Graphs whose values are moreh tensors now run as captured, so a compiled model trains exactly as the eager
model does on CPU; graphs on CPU tensors still go to Inductor.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from training_loop import assert_same_training, run_training

torch_moreh = pytest.importorskip("torch_moreh")
from torch_moreh.compile_support import graph_uses_moreh  # noqa: E402


def batches(n=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 16, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)]


def test_compiled_model_trains_on_moreh_like_eager_cpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 4))
    ref = run_training(copy.deepcopy(model), "cpu", batches(), lambda m, x, y: F.cross_entropy(m(x), y),
                       lambda p: torch.optim.AdamW(p, lr=1e-2))
    torch._dynamo.reset()
    compiled = torch.compile(model.to("moreh"))
    flushes = torch.moreh.graph_stats()["flushes"]
    got = run_training(compiled, "moreh", batches(), lambda m, x, y: F.cross_entropy(m(x), y),
                       lambda p: torch.optim.AdamW(p, lr=1e-2))
    got = (got[0], {k.removeprefix("_orig_mod."): v for k, v in got[1].items()})
    assert_same_training(ref, got, rel=0, atol=0)  # the same kernels as eager: bit for bit
    # The compiled forward records into the step graph like eager code: one graph per step (the loss read).
    assert torch.moreh.graph_stats()["flushes"] - flushes <= 2 * len(batches()) + 1


def test_compiled_function_creating_moreh_tensors_runs():
    torch._dynamo.reset()

    @torch.compile
    def f(x):
        return torch.ones(3, device="moreh") * x.sum()

    assert f(torch.arange(4.0, device="moreh")).tolist() == [6.0, 6.0, 6.0]


def test_graphs_on_cpu_still_go_to_inductor():
    gm = torch.fx.symbolic_trace(nn.Linear(2, 2))
    assert not graph_uses_moreh(gm, [torch.ones(2)])
    assert graph_uses_moreh(gm, [torch.ones(2, device="moreh")])
