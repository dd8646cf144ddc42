"""scaled_dot_product_attention on moreh: which kernel each call records (backend/csrc/attention_choice.h) and
that host devices match CPU eager bit for bit whichever route the call takes. Flash attention goes through
PyTorch's route for out-of-tree devices, _scaled_dot_product_fused_attention_overrideable, on host devices
as on CUDA ones; the choices for CUDA devices are in test_cuda_device.py."""
import os
import re

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from torch_moreh import _C

ON_HOST = not torch.moreh.get_device_properties().physical_device.startswith("cuda")
host_only = pytest.mark.skipif(not ON_HOST, reason="CUDA devices run CUDA's kernels, not CPU eager's")


class RecordedOps:
    """The ops recorded while the block runs, from moreh's trace log."""

    def __enter__(self):
        self.path = _C._log_file()
        self.start = os.path.getsize(self.path)
        _C._set_log_level("trace")
        return self

    def __exit__(self, *exc):
        torch.moreh.synchronize()
        _C._set_log_level(os.environ.get("MOREH_LOG_LEVEL", "info"))
        _C._flush_log()
        with open(self.path) as f:
            f.seek(self.start)
            self.text = f.read()

    def count(self, op):
        return len(re.findall(re.escape(f"aten::{op} ("), self.text))


def attention(device, qkv, **kwargs):
    """GPT-2's attention: q, k and v are head views of one packed projection. Returns the output and the
    projection's gradient, on the CPU."""
    x = qkv.clone().to(device).requires_grad_()
    b, s, three_e = x.shape
    e = three_e // 3
    q, k, v = (t.view(b, s, 4, e // 4).transpose(1, 2) for t in x.split(e, dim=2))
    o = F.scaled_dot_product_attention(q, k, v, **kwargs)
    (o.float() ** 2).sum().backward()
    return o.detach().cpu(), x.grad.cpu(), o.stride()


@host_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kwargs", [dict(is_causal=True), dict(is_causal=False, scale=0.3)])
def test_attention_without_a_mask_is_flash_through_the_overrideable_route(dtype, kwargs):
    qkv = torch.randn(2, 16, 96, generator=torch.Generator().manual_seed(1)).to(dtype)
    with RecordedOps() as ops:
        got = attention("moreh", qkv, **kwargs)
    want = attention("cpu", qkv, **kwargs)
    assert ops.count("_scaled_dot_product_fused_attention_overrideable") == 1, ops.text[-3000:]
    assert ops.count("_scaled_dot_product_fused_attention_overrideable_backward") == 1
    assert ops.count("_scaled_dot_product_flash_attention_for_cpu") == 0
    # The same CPU flash kernel runs: the output, its layout and the gradient are CPU eager's exactly.
    assert torch.equal(got[0], want[0]) and got[2] == want[2]
    assert torch.equal(got[1], want[1])


@host_only
def test_grouped_query_attention_takes_the_same_route():
    g = torch.Generator().manual_seed(4)
    q, k, v = torch.randn(2, 4, 16, 8, generator=g), torch.randn(2, 2, 16, 8, generator=g), torch.randn(2, 2, 16, 8, generator=g)
    results = {}
    for device in ("cpu", "moreh"):
        with RecordedOps() as ops:
            x = [t.clone().to(device).requires_grad_() for t in (q, k, v)]
            o = F.scaled_dot_product_attention(*x, is_causal=True, enable_gqa=True)
            o.square().sum().backward()
        results[device] = [o.detach().cpu()] + [t.grad.cpu() for t in x]
    assert ops.count("_scaled_dot_product_fused_attention_overrideable_backward") == 1
    for got, want in zip(results["moreh"], results["cpu"]):
        assert torch.equal(got, want)


@host_only
def test_attention_with_a_mask_or_math_only_keeps_cpu_eagers_choice():
    qkv = torch.randn(2, 16, 96, generator=torch.Generator().manual_seed(2))
    mask = torch.randn(16, 16, generator=torch.Generator().manual_seed(3))
    with RecordedOps() as ops:
        got = attention("moreh", qkv, attn_mask=mask.to("moreh"))
    assert ops.count("_scaled_dot_product_flash_attention_for_cpu") == 1, ops.text[-3000:]
    assert ops.count("_scaled_dot_product_fused_attention_overrideable") == 0
    want = attention("cpu", qkv, attn_mask=mask)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # The user's switches (sdpa_kernel) are CPU eager's: math only records no fused kernel.
    with sdpa_kernel(SDPBackend.MATH), RecordedOps() as ops:
        got = attention("moreh", qkv, is_causal=True)
    assert ops.count("_scaled_dot_product_fused_attention_overrideable") == 0
    assert ops.count("_scaled_dot_product_flash_attention_for_cpu") == 0
    with sdpa_kernel(SDPBackend.MATH):
        want = attention("cpu", qkv, is_causal=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_the_overrideable_op_called_with_what_flash_cannot_take_is_a_clear_error():
    q = torch.randn(1, 2, 8, 8).to("moreh")
    bias = torch.zeros(8, 8).to("moreh")
    out = torch.ops.aten._scaled_dot_product_fused_attention_overrideable(q, q, q, bias)[0]
    with pytest.raises(RuntimeError, match="takes no attention bias"):
        out.cpu()
    out = torch.ops.aten._scaled_dot_product_fused_attention_overrideable(q, q, q, None, 0.5)[0]
    with pytest.raises(RuntimeError, match="without dropout; got dropout_p=0.5"):
        out.cpu()
    # The failed calls lose nothing else: the inputs still hold their values.
    assert torch.isfinite(q.cpu()).all()
