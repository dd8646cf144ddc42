"""Ops are recorded, not run, until a step boundary; views, in-place and out= keep eager semantics."""
import copy

import pytest
import torch

from conftest import run_python

ON_GPU = torch.moreh.get_device_properties().physical_device.startswith("cuda")


def pending():
    return torch.moreh.graph_stats()["pending_ops"]


def test_ops_are_recorded_until_a_host_read():
    torch.moreh.synchronize()
    x = torch.ones(4, device="moreh")
    before = pending()
    y = (x * 3 + 1).relu()
    assert pending() >= before + 3  # recorded, not run
    assert y.shape == (4,) and y.dtype == torch.float32 and y.device.type == "moreh"  # shapes from Meta
    assert y.cpu().tolist() == [4.0] * 4  # the host read ran them
    assert pending() == 0


def test_mark_step_and_synchronize_flush():
    x = torch.ones(3, device="moreh") * 2
    assert pending() > 0
    torch.moreh.mark_step()
    assert pending() == 0
    x = x + 1
    torch.moreh.synchronize()
    assert pending() == 0 and x.cpu().tolist() == [3.0] * 3


def test_views_share_storage_and_in_place_writes_show_through():
    base = torch.arange(12.0).to("moreh")
    view = base.view(3, 4)[:, 1]
    view.mul_(10)
    expected = torch.arange(12.0)
    expected.view(3, 4)[:, 1] *= 10
    assert torch.equal(base.cpu(), expected)
    t = base.view(3, 4).t()
    assert t.data_ptr() == base.data_ptr() and t.stride() == (1, 4)


def test_out_arguments_and_resizing():
    a, b = torch.randn(5), torch.randn(5)
    out = torch.empty(0, device="moreh")
    torch.add(a.to("moreh"), b.to("moreh"), out=out)
    assert out.shape == (5,)
    torch.testing.assert_close(out.cpu(), a + b)


def test_cpu_scalars_and_python_numbers_mix_with_moreh_tensors():
    x = torch.randn(6)
    y = x.to("moreh") * torch.tensor(2.5) + 1
    torch.testing.assert_close(y.cpu(), x * 2.5 + 1)


def test_data_dependent_ops_flush_and_run_eagerly():
    x = torch.tensor([0.0, 1.0, 0.0, 3.0]).to("moreh")
    eager = torch.moreh.graph_stats()["eager_ops"]
    idx = torch.nonzero(x)
    assert idx.device.type == "moreh"
    assert idx.cpu().flatten().tolist() == [1, 3]
    assert torch.moreh.graph_stats()["eager_ops"] > eager
    assert torch.masked_select(x, x > 0).cpu().tolist() == [1.0, 3.0]


def test_indexing_with_integer_tensors_is_recorded_and_a_boolean_mask_flushes():
    # index.Tensor is tagged data-dependent, but only boolean masks make it so: integer indices (how
    # Hugging Face builds every attention mask) must not end the step graph.
    x = torch.arange(120.0).reshape(4, 5, 6)
    i, j = torch.tensor([[0], [3]]), torch.tensor([[1, 4]])
    m = x.to("moreh")
    stats = torch.moreh.graph_stats()
    got = [m[i.to("moreh"), j.to("moreh")], m[:, j.to("moreh")], m[i, :, j], m[..., torch.tensor([5, 0])],
           torch.repeat_interleave(torch.tensor([1, 2, 3]).to("moreh"), output_size=6)]
    after = torch.moreh.graph_stats()
    assert after["eager_ops"] == stats["eager_ops"] and after["flushes"] == stats["flushes"]
    want = [x[i, j], x[:, j], x[i, :, j], x[..., torch.tensor([5, 0])], torch.tensor([0, 1, 1, 2, 2, 2])]
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b)
    mask = torch.tensor([True, False, True, False])
    assert torch.equal(m[mask.to("moreh")].cpu(), x[mask])
    assert torch.equal(torch.repeat_interleave(torch.tensor([2, 1]).to("moreh")).cpu(), torch.tensor([0, 0, 1]))
    assert torch.moreh.graph_stats()["eager_ops"] == stats["eager_ops"] + 2
    if not ON_GPU:  # on a GPU it is a device-side assert, which poisons the CUDA context for the process
        with pytest.raises(RuntimeError, match="index.Tensor.*out of bounds"):
            m[torch.tensor([7]).to("moreh")].cpu()


def test_printing_a_moreh_tensor():
    text = str(torch.tensor([1.5, -2.0]).to("moreh"))
    assert "1.5000" in text and "moreh" in text


def test_pending_op_cap_flushes():
    proc = run_python(
        "import torch\n"
        "x = torch.zeros(4, device='moreh')\n"
        "for _ in range(25): x = x + 1\n"
        "s = torch.moreh.graph_stats()\n"
        "assert s['flushes'] >= 2 and s['pending_ops'] < 10, s\n"
        "assert x.cpu().tolist() == [25.0] * 4\n",
        env={"MOREH_MAX_PENDING_OPS": "10"})
    assert proc.returncode == 0, proc.stderr


# On a GPU the out-of-bounds index is a device-side assert, which leaves the CUDA context unusable for the
# rest of the process (as in native PyTorch): there the error names the device, not the op.
@pytest.mark.skipif(ON_GPU, reason="a device-side assert poisons the CUDA context for the rest of the process")
def test_a_failing_kernel_raises_at_the_boundary_and_names_the_op():
    emb = torch.nn.Embedding(4, 2).to("moreh")
    bad = torch.tensor([7]).to("moreh")
    out = emb(bad)  # recorded: the index is only checked when the kernel runs
    try:
        out.cpu()
    except RuntimeError as e:
        assert "aten::" in str(e) and "index" in str(e).lower()
    else:
        raise AssertionError("an out-of-range embedding index did not raise")
    ok = emb(torch.tensor([1]).to("moreh"))  # the device keeps working
    assert ok.cpu().shape == (1, 2)


def test_conjugate_and_negative_views_keep_their_meaning():
    a = torch.randn(3, 3, dtype=torch.cfloat)
    b = torch.randn(3, 3, dtype=torch.cfloat)
    am, bm = a.to("moreh"), b.to("moreh")
    for _ in range(2):  # the second time shapes come from the meta cache
        torch.testing.assert_close((am.mH @ bm).cpu(), a.mH @ b)  # mm takes conj views as they are
        torch.testing.assert_close((am.conj() + 1).cpu(), a.conj() + 1)
        torch.testing.assert_close(torch._neg_view(am).cpu(), -a)
        torch.testing.assert_close(am.conj().resolve_conj().cpu(), a.conj())


_meta_calls = []
_lib = torch.library.Library("moreh_recording_test", "DEF")
_lib.define("doubled_and_rows(Tensor x) -> (Tensor, SymInt)")
_lib.impl("doubled_and_rows", lambda x: (x * 2, x.shape[0] + 1), "CPU")
_lib.impl("doubled_and_rows", lambda x: (_meta_calls.append(tuple(x.shape)), (torch.empty_like(x), x.shape[0] + 1))[1],
          "Meta")
_lib.define("doubled_and_nothing(Tensor x) -> (Tensor, Tensor)")
_lib.impl("doubled_and_nothing", lambda x: (x * 2, torch.Tensor()), "CPU")
_lib.impl("doubled_and_nothing", lambda x: (_meta_calls.append("nothing"), (torch.empty_like(x), None))[1], "Meta")


def test_numbers_an_op_returns_come_from_the_meta_cache_too():
    # Flash attention returns its sequence lengths as SymInts: the meta cache keeps them with the shapes,
    # so only the first call on a shape runs the (Python) Meta kernel.
    x = torch.arange(6.0).reshape(3, 2).to("moreh")
    for _ in range(3):
        y, n = torch.ops.moreh_recording_test.doubled_and_rows(x)
        assert n == 4 and isinstance(n, int)
        assert torch.equal(y.cpu(), torch.arange(6.0).reshape(3, 2) * 2)
    z, m = torch.ops.moreh_recording_test.doubled_and_rows(torch.zeros(5, 2).to("moreh"))
    assert m == 6 and z.shape == (5, 2)
    assert _meta_calls == [(3, 2), (5, 2)]
    # A declared Tensor the Meta kernel leaves out (a gradient its mask turned off) is None, and cached.
    for _ in range(2):
        y, nothing = torch.ops.moreh_recording_test.doubled_and_nothing(x)
        assert nothing is None and torch.equal(y.cpu(), torch.arange(6.0).reshape(3, 2) * 2)
    assert _meta_calls == [(3, 2), (5, 2), "nothing"]
    # What autograd calls from C++ (unboxing every result as a Tensor): layer_norm without affine weights
    # asks for the input's gradient only.
    a = torch.randn(4, 8)
    for _ in range(2):
        am = a.to("moreh").requires_grad_()
        torch.nn.functional.layer_norm(am, (8,)).square().sum().backward()
        ac = a.clone().requires_grad_()
        torch.nn.functional.layer_norm(ac, (8,)).square().sum().backward()
        torch.testing.assert_close(am.grad.cpu(), ac.grad)


def test_exit_right_after_an_optimizer_step_is_clean():
    # The last step is still running when the script ends: moreh lets it finish before teardown
    # (without that, about half of these runs aborted in libtorch's teardown).
    code = (
        "import sys, torch\n"
        "sys.path.insert(0, 'examples')\n"
        "from train_gpt import GPT\n"
        "m = GPT(72, 128, 256, 4, 4, 0.1).to('moreh'); opt = torch.optim.AdamW(m.parameters())\n"
        "x = torch.randint(0, 72, (8, 128)).to('moreh')\n"
        "for _ in range(2):\n"
        "    m(x).sum().backward(); opt.step(); opt.zero_grad()\n")
    for _ in range(5):
        proc = run_python(code)
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_steady_step_reuses_the_memory_of_the_step_before():
    """Host devices hold their memory as a GPU's caching allocator does (issue 15, item 2): what the kernels
    allocate themselves (ATen's results, workspaces) comes from the device's cache of freed blocks, so once the
    steps repeat every allocation is served from the cache and none goes to the system (whose pages would be
    faulted in again every step)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Tanh(), torch.nn.Linear(256, 8)).to("moreh")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 64).to("moreh"), torch.randint(0, 8, (32,)).to("moreh")

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(3):
        step()
    before = torch.moreh.graph_stats()
    for _ in range(4):
        step()
    after = torch.moreh.graph_stats()
    grew = {k: after[k] - before[k] for k in ("device_allocations", "device_scratch_allocations", "device_cache_hits")}
    assert grew["device_scratch_allocations"] > 0  # the kernels' own results go through the device
    assert grew["device_cache_hits"] == grew["device_allocations"] + grew["device_scratch_allocations"], grew


def test_a_step_the_worker_runs_leaves_no_second_openmp_team():
    """A step nobody waits for runs on the device's worker (issue 15, item 1). Its OpenMP team must end with
    the step: a second team beside the script's makes libgomp stop spinning, and every CPU kernel of the
    process (CPU eager's too) then sleeps in futexes between parallel regions. Counted as threads: once the
    step is done the process has as many as before it."""
    code = r"""
import os, time, torch
def threads(): return len(os.listdir("/proc/self/task"))
a = torch.randn(256, 256)
for _ in range(20): a @ a               # the script's own team
x = torch.randn(256, 256).to("moreh")
(x @ x).sum().item()                      # a step the script waits for: its own thread runs it
base = threads()
y = x @ x
for _ in range(5): y = torch.tanh(y @ x)
torch.moreh.mark_step()                  # nobody waits: the worker takes it after its grace period
time.sleep(1.0)
print(base, threads(), torch.get_num_threads())
y.sum().item()
"""
    proc = run_python(code, env={"OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    base, after, omp = (int(v) for v in proc.stdout.split())
    assert omp == 2 and after == base, proc.stdout


def test_a_small_host_read_inside_a_step_does_not_end_it():
    """Issue 15, item 5: nn.TransformerEncoder checks `bool((mask == causal).all())` in every forward. A host
    read that needs only a few pending ops (the mask's upload, the causal mask built on the device) over values
    the host has is answered on the host; the step goes on and ends once, at the optimizer step."""
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
    cpu_model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    model = copy.deepcopy(cpu_model).to("moreh")
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(7, 3, 16, generator=g) for _ in range(4)]

    def train(m, device):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        losses = []
        for x in batches:
            mask = nn.Transformer.generate_square_subsequent_mask(7).to(device)  # uploaded every step
            opt.zero_grad()
            loss = m(x.to(device), mask=mask).square().mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    ref = train(cpu_model, "cpu")
    before = torch.moreh.graph_stats()
    got = train(model, "moreh")
    after = torch.moreh.graph_stats()
    assert got == ref
    assert after["flushes"] - before["flushes"] == len(batches)  # one step graph per training step
    assert after["reads_without_step"] - before["reads_without_step"] >= len(batches)
    for p, q in zip(cpu_model.parameters(), model.parameters()):
        assert torch.equal(q.detach().cpu(), p.detach())


def test_a_read_that_needs_the_whole_pending_step_still_ends_it():
    x = torch.arange(6.0).to("moreh")
    flushes = torch.moreh.graph_stats()["flushes"]
    assert (x * 2).sum().item() == 30.0
    assert torch.moreh.graph_stats()["flushes"] == flushes + 1
    # A read that needs a small part of the pending ops, from a value an earlier step left on the device.
    big = torch.ones(64, 64).to("moreh")
    y = big @ big                           # pending, not needed by the read below
    known = (x > 2).all()
    stats = torch.moreh.graph_stats()
    assert bool(known) is False and bool((x >= 0).all()) is True
    after = torch.moreh.graph_stats()
    assert after["flushes"] == stats["flushes"] and after["reads_without_step"] == stats["reads_without_step"] + 2
    assert y[0, 0].item() == 64.0            # the pending ops still run, with their step


def test_a_training_step_runs_no_python_meta_kernel_that_imports_sympy():
    """Issue 15, item 7: Python Meta kernels (torch._refs, decompositions) import sympy through
    torch.fx.experimental.symbolic_shapes on their first call, ~0.3 s of a first step that CPU eager never
    pays. moreh infers shapes with ATen's C++ Meta kernels where Python ones shadow them, and with its own
    for the rest of such a step (layer norm, relu, flash attention): an LSTM and a transformer layer train
    a step (manual SGD, no torch.optim, which imports Dynamo on CPU too) without importing either."""
    code = r"""
import sys, torch
import torch.nn as nn, torch.nn.functional as F
class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.lstm = nn.Embedding(50, 16), nn.LSTM(16, 16, 2)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
        self.out = nn.Linear(16, 50)
    def forward(self, x):
        h, _ = self.lstm(self.emb(x))
        mask = nn.Transformer.generate_square_subsequent_mask(x.size(0)).to(x.device)
        return F.log_softmax(self.out(F.gelu(self.layer(h, src_mask=mask))), dim=-1)
model = M().to("moreh")
x = torch.randint(0, 50, (9, 3)).to("moreh")
loss = F.nll_loss(model(x[:-1]).reshape(-1, 50), x[1:].reshape(-1))
loss.backward()
nn.utils.clip_grad_norm_(model.parameters(), 0.25)
with torch.no_grad():
    for p in model.parameters():
        p.add_(p.grad, alpha=-0.1)
print(loss.item() > 0, "sympy" in sys.modules, "torch.fx.experimental.symbolic_shapes" in sys.modules)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "False", "False"], proc.stdout


def test_the_first_step_does_not_import_dynamo():
    """Issue 15, item 7: Python Meta kernels wrapped by torch._compile._disable_dynamo imported torch._dynamo
    on their first call (~0.8 s of a small model's first step; CPU eager never pays it). moreh defers that
    wrapper while Dynamo is not imported; torch.compile afterwards still works."""
    code = r"""
import sys, torch
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3)).to("moreh")
x = torch.randn(4, 8).to("moreh")
torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0]).to("moreh")).backward()
print(model[0].weight.grad.sum().item() != 0, "torch._dynamo" in sys.modules)
compiled = torch.compile(model)
print(torch.allclose(compiled(x).cpu(), model(x).cpu()), "torch._dynamo" in sys.modules)
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "False", "True", "True"], proc.stdout
