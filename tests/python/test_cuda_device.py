"""CUDA physical devices: moreh on a GPU matches native PyTorch CUDA eager; without one, moreh says once why
it uses host devices. The GPU tests run where torch has CUDA and a GPU is present (tools/gpu-check.sh); the
fallback tests run everywhere else."""
import pytest
import torch


ON_GPU = torch.cuda.is_available() and torch.moreh.get_device_properties().physical_device.startswith("cuda")
needs_gpu = pytest.mark.skipif(not ON_GPU, reason="moreh runs on host devices here (no CUDA GPU or no CUDA torch)")
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@needs_no_gpu
def test_without_a_gpu_moreh_says_once_that_host_devices_stand_in(moreh_subprocess):
    p = moreh_subprocess("import torch; torch.ones(2, device='moreh').sum().item()",
                         env={"MOREH_LOG_LEVEL": "info", "MOREH_DEVICE_KIND": "auto"})
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("no CUDA device is used") == 1, p.stderr
    assert "host device(s) stand in" in p.stderr


@needs_no_gpu
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(moreh_subprocess):
    p = moreh_subprocess("import torch; torch.ones(2, device='moreh')", env={"MOREH_DEVICE_KIND": "cuda"})
    assert p.returncode != 0
    assert "MOREH_DEVICE_KIND=cuda, but no CUDA device can be used" in p.stderr, p.stderr


def test_host_kind_never_mentions_cuda(moreh_subprocess):
    p = moreh_subprocess("import torch; print(torch.moreh.get_device_properties().physical_device)",
                         env={"MOREH_LOG_LEVEL": "info", "MOREH_DEVICE_KIND": "host"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().startswith("host")
    assert "CUDA" not in p.stderr


# PyTorch's autograd engine takes one accelerator per process: with moreh (PrivateUse1) loaded, backward
# on native CUDA tensors fails an internal assert (torch 2.11). So the native CUDA reference runs in a
# process without moreh, and sends back its losses, gradients and parameters.
TRAIN = """
import copy, sys, torch, torch.nn.functional as F
sys.path.insert(0, "tests/python")
from models import GPT, MLP
device, kind, out = sys.argv[1], sys.argv[2], sys.argv[3]
torch.manual_seed(0)
g = torch.Generator().manual_seed(7)
result = {"losses": []}
if kind == "bf16":
    model = MLP(32, 64, 10).to(device)
    x, y = torch.randn(16, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
    loss.backward()
    result["losses"].append(loss.item())
    result["grads"] = {n: p.grad.cpu() for n, p in model.named_parameters()}
else:
    model = GPT(vocab=96, block_size=32, d_model=64, n_head=2, n_layer=2, dropout=0.0).to(device)
    fused = kind == "fused"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused, foreach=None if fused else True)
    for _ in range(10):
        x, y = torch.randint(0, 96, (4, 32), generator=g), torch.randint(0, 96, (4, 32), generator=g)
        _, loss = model(x.to(device), y.to(device))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        result["losses"].append(loss.item())
    result["params"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
torch.save(result, out)
"""


def run_training(device, kind, tmp_path, moreh_subprocess):
    out = tmp_path / f"{device}-{kind}.pt"
    env = {"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"} if device == "cuda" else {}
    code = f"import sys; sys.argv = ['train', {device!r}, {kind!r}, {str(out)!r}]\n" + TRAIN
    p = moreh_subprocess(code, env=env)
    assert p.returncode == 0, p.stderr[-4000:]
    return torch.load(out)


@needs_gpu
@pytest.mark.parametrize("kind", ["foreach", "fused"])
def test_gpt_training_matches_native_cuda(kind, tmp_path, moreh_subprocess):
    ref = run_training("cuda", kind, tmp_path, moreh_subprocess)
    got = run_training("moreh", kind, tmp_path, moreh_subprocess)
    assert got["losses"] == pytest.approx(ref["losses"], rel=1e-4)
    for k in ref["params"]:
        # The attention key bias gets a zero gradient up to rounding, which Adam turns into steps of either
        # sign: those parameters differ by up to ~1e-4 between any two kernel orders.
        torch.testing.assert_close(got["params"][k], ref["params"][k], rtol=1e-4, atol=2e-4, msg=k)


@needs_gpu
def test_bf16_autocast_matches_native_cuda(tmp_path, moreh_subprocess):
    ref = run_training("cuda", "bf16", tmp_path, moreh_subprocess)
    got = run_training("moreh", "bf16", tmp_path, moreh_subprocess)
    assert got["losses"][0] == pytest.approx(ref["losses"][0], rel=1e-2)
    for k in ref["grads"]:
        torch.testing.assert_close(got["grads"][k], ref["grads"][k], rtol=2e-2, atol=1e-3, msg=k)


MATH, EFFICIENT, OVERRIDEABLE = 0, 2, 4  # sdp::SDPBackend


def cuda_attention_kernel(q, k=None, v=None, mask=None, dropout=0.0, causal=True, gqa=False, cc=90):
    from torch_moreh import _C
    return _C._cuda_attention_kernel(q, q if k is None else k, q if v is None else v, mask, dropout, causal, gqa, cc)


def test_attention_kernel_choice_on_cuda_devices():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # The rules only read metadata: CPU tensors stand for the moreh tensors being recorded.
    def qkv(dtype=torch.bfloat16, b=2, h=4, s=16, d=64):
        return torch.empty(b, h, s, d, dtype=dtype)

    q = qkv()
    # Flash attention where native CUDA eager takes it (half types on sm80+, no mask), through the route
    # PyTorch gives out-of-tree devices: a plain flash choice would become the CPU kernel (attention_choice.h).
    assert cuda_attention_kernel(q) == OVERRIDEABLE
    assert cuda_attention_kernel(qkv(torch.float16), cc=80) == OVERRIDEABLE
    assert cuda_attention_kernel(qkv(d=256), causal=False) == OVERRIDEABLE
    assert cuda_attention_kernel(q, k=qkv(s=8), v=qkv(s=8), causal=False) == OVERRIDEABLE
    # Memory-efficient attention where flash cannot: fp32, older GPUs, a mask, big heads, a causal mask over
    # fewer queries than keys (flash aligns it differently), or flash switched off by the user.
    assert cuda_attention_kernel(qkv(torch.float32)) == EFFICIENT
    assert cuda_attention_kernel(qkv(torch.float32), cc=75) == EFFICIENT
    assert cuda_attention_kernel(q, cc=75) == EFFICIENT
    assert cuda_attention_kernel(q, mask=torch.zeros(16, 16, dtype=torch.bfloat16), causal=False) == EFFICIENT
    assert cuda_attention_kernel(q, mask=torch.zeros(16, 16, dtype=torch.bool), causal=False) == EFFICIENT
    assert cuda_attention_kernel(qkv(d=264)) == EFFICIENT
    assert cuda_attention_kernel(q, k=qkv(s=8), v=qkv(s=8)) == EFFICIENT
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
        assert cuda_attention_kernel(q) == EFFICIENT
    with sdpa_kernel(SDPBackend.MATH):
        assert cuda_attention_kernel(q) == MATH
        assert cuda_attention_kernel(qkv(torch.float32)) == MATH
    # Otherwise the math decomposition (dropout draws from moreh's seeded generator there).
    assert cuda_attention_kernel(q, mask=torch.zeros(16, 16, dtype=torch.float64), causal=False) == MATH
    assert cuda_attention_kernel(q, dropout=0.1) == MATH
    assert cuda_attention_kernel(q, gqa=True) == MATH
    assert cuda_attention_kernel(q, cc=37) == MATH
    assert cuda_attention_kernel(qkv(d=60)) == MATH  # head size not a multiple of 8
    assert cuda_attention_kernel(qkv(torch.float64)) == MATH
    assert cuda_attention_kernel(q, k=qkv(h=2), v=qkv(h=2)) == MATH  # heads differ
    assert cuda_attention_kernel(q, k=qkv(s=0), v=qkv(s=0)) == MATH  # no keys
    assert cuda_attention_kernel(qkv().transpose(-1, -2).contiguous().transpose(-1, -2)) == MATH  # last dim strided
    assert cuda_attention_kernel(torch.empty(2, 16, 64, dtype=torch.bfloat16)) == MATH  # 3-D


# Forward and backward of causal attention, q, k and v being views of one packed projection (as in GPT-2):
# the results, the output's strides and the gradient of the projection.
ATTENTION = """
import sys, torch, torch.nn.functional as F
device, out, dtype = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
g = torch.Generator().manual_seed(3)
qkv = torch.randn(2, 128, 3 * 256, generator=g).to(dtype).to(device).requires_grad_()
q, k, v = (t.view(2, 128, 4, 64).transpose(1, 2) for t in qkv.split(256, dim=2))
o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
y = o.transpose(1, 2).contiguous().view(2, 128, 256)  # GPT's merge of the heads
(y.float() ** 2).sum().backward()
torch.save({"o": o.detach().cpu(), "stride": list(o.stride()), "grad": qkv.grad.cpu()}, out)
"""


@needs_gpu
@pytest.mark.parametrize("dtype, kernel", [("bfloat16", "_scaled_dot_product_fused_attention_overrideable"),
                                           ("float32", "_scaled_dot_product_efficient_attention")])
def test_attention_matches_native_cuda(tmp_path, moreh_subprocess, dtype, kernel):
    results = {}
    log = tmp_path / "moreh.log"
    for device in ("cuda", "moreh"):
        out = tmp_path / f"{device}.pt"
        env = {"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"} if device == "cuda" else {
            "MOREH_LOG_LEVEL": "trace", "MOREH_LOG_FILE": str(log)}
        p = moreh_subprocess(f"import sys; sys.argv = ['a', {device!r}, {str(out)!r}, {dtype!r}]\n" + ATTENTION,
                             env=env)
        assert p.returncode == 0, p.stderr[-4000:]
        results[device] = torch.load(out)
    text = log.read_text()
    # bf16 on an sm80+ GPU: flash attention, as native CUDA eager takes, through the overrideable route;
    # fp32: memory-efficient attention.
    assert f"aten::{kernel} (" in text and f"aten::{kernel}_backward (" in text
    # The recorded output has the layout the kernel returns (its Meta kernel agrees), so no copy is made.
    assert results["moreh"]["stride"] == results["cuda"]["stride"]
    for key in ("o", "grad"):
        torch.testing.assert_close(results["moreh"][key], results["cuda"][key], rtol=2e-2, atol=2e-2, msg=key)


@needs_gpu
def test_host_reads_writes_and_eager_ops_on_gpu_memory():
    a = torch.arange(12.0).reshape(3, 4)
    m = a.to("moreh")
    assert torch.equal(m.cpu(), a)
    assert torch.equal(m.t().contiguous().cpu(), a.t())  # a strided view read back
    assert m[1, 2].item() == 6.0
    m[0].fill_(-1)  # a write into part of the buffer
    assert torch.equal(m.cpu()[0], torch.full((4,), -1.0))
    assert torch.equal(m.cpu()[1:], a[1:])
    # nonzero is data-dependent: it runs eagerly on a host copy and its result goes back to the GPU
    nz = torch.nonzero(m > 5)
    assert torch.equal(nz.cpu(), torch.nonzero(m.cpu() > 5))
    assert torch.equal((nz * 2).cpu(), torch.nonzero(m.cpu() > 5) * 2)


@needs_gpu
def test_device_reports_the_gpu_and_its_memory():
    props = torch.moreh.get_device_properties()
    assert props.physical_device.startswith("cuda")
    free, total = torch.moreh.mem_get_info()
    gpu_total = torch.cuda.get_device_properties(0).total_memory
    assert 0 < total <= gpu_total
    assert 0 <= free <= total


def test_out_of_memory_keeps_earlier_values_and_names_the_lost_ones(moreh_subprocess):
    # On a GPU share or a host device alike, as on a GPU: the ops before the one that does not fit run (z,
    # recorded before it in the same step, keeps its value) and the ones from it on do not (y, w).
    code = (
        "import torch\n"
        "x = torch.ones(8, device='moreh')\n"
        "print('before', x.sum().item())\n"
        "z = torch.zeros(4, device='moreh')  # recorded in the step that will not fit\n"
        "try:\n"
        "    y = torch.empty(1 << 40, dtype=torch.uint8, device='moreh').fill_(1); w = x * 2; y.sum().item()\n"
        "except torch.OutOfMemoryError as e:\n"
        "    print('OOM', 'OUT_OF_MEMORY' in str(e))\n"
        "print('after', x.sum().item())\n"
        "print('z kept', z.tolist())\n"
        "try:\n"
        "    w.sum().item()\n"
        "except RuntimeError as e:\n"
        "    print('w unavailable', 'OUT_OF_MEMORY' in str(e))\n"
    )
    p = moreh_subprocess(code)
    assert p.returncode == 0, p.stderr
    assert "OOM True" in p.stdout, p.stdout + p.stderr
    assert "after 8.0" in p.stdout
    assert "z kept [0.0, 0.0, 0.0, 0.0]" in p.stdout, p.stdout + p.stderr
    assert "w unavailable True" in p.stdout, p.stdout + p.stderr
