"""moreh infers what an op returns with ATen's C++ Meta kernels where Python ones shadow them, and with its
own C++ ones for layer norm, relu and attention (backend/csrc/cpp_meta_kernels.cpp): each result recorded on
moreh has the geometry CPU eager's has (shape, strides, dtype, offset) and the same values. Its storage is
what the view reaches: CPU's can be larger (mse_loss with a reduction keeps the batch-sized storage its
kernel first allocated under a 0-dim result), which nothing but untyped_storage().nbytes() can see."""
import pytest
import torch
import torch.nn.functional as F


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=gen(seed))


def geometry(t):
    return tuple(t.shape), t.stride(), t.dtype, t.storage_offset()


def extent_bytes(t):
    """Bytes from the storage's start to the view's last element."""
    if t.numel() == 0:
        return 0
    last = t.storage_offset() + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return (last + 1) * t.element_size()


def layer_norm_with_grads(x, w, b):
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    out, mean, rstd = torch.native_layer_norm(x, [x.shape[-1]], w, b, 1e-5)
    (out * torch.arange(out.numel(), device=out.device).reshape(out.shape)).sum().backward()
    return out, mean, rstd, x.grad, w.grad, b.grad


def attention_with_grads(q, k, v, mask=None, causal=False):
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    (out * out).sum().backward()
    return out, q.grad, k.grad, v.grad


QKV = (rand(2, 3, 5, 4, seed=1), rand(2, 3, 7, 4, seed=2), rand(2, 3, 7, 4, seed=3))
CASES = {
    "add_broadcast": lambda d: torch.add(rand(4, 1, 3).to(d), rand(5, 1).to(d), alpha=2),
    "mul_transposed": lambda d: rand(3, 4).to(d).t() * rand(4, 3).to(d),
    "sum_dim": lambda d: rand(3, 4, 5).to(d).sum(dim=(0, 2), keepdim=True),
    "addmm": lambda d: torch.addmm(rand(3).to(d), rand(2, 4).to(d), rand(4, 3).to(d)),
    "log_softmax_nll": lambda d: F.nll_loss(F.log_softmax(rand(6, 5).to(d), 1), torch.arange(6).remainder(5).to(d)),
    "gelu": lambda d: F.gelu(rand(4, 6).to(d)[:, ::2]),
    # A 0-dim result whose C++ Meta kernel first sizes the storage for the whole batch.
    "mse_loss_mean": lambda d: F.mse_loss(rand(6, 4).to(d), rand(6, 4, seed=1).to(d)),
    "mse_loss_sum": lambda d: F.mse_loss(rand(6, 4).to(d), rand(6, 4, seed=1).to(d), reduction="sum"),
    "mse_loss_none": lambda d: F.mse_loss(rand(6, 4).to(d), rand(6, 4, seed=1).to(d), reduction="none"),
    "relu_transposed": lambda d: torch.relu(rand(4, 3).to(d).t()),
    "layer_norm": lambda d: layer_norm_with_grads(rand(2, 3, 8).to(d), rand(8, seed=1).to(d), rand(8, seed=2).to(d)),
    "attention_causal": lambda d: attention_with_grads(*(t.to(d) for t in QKV[:1] * 3), causal=True),
    "attention_masked": lambda d: attention_with_grads(*(t.to(d) for t in QKV), mask=rand(5, 7, seed=4).to(d)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_results_have_cpu_geometry_and_values(name):
    ref, got = CASES[name]("cpu"), CASES[name]("moreh")
    ref, got = (ref,) if isinstance(ref, torch.Tensor) else ref, (got,) if isinstance(got, torch.Tensor) else got
    assert len(ref) == len(got)
    for i, (r, g) in enumerate(zip(ref, got)):
        assert geometry(g) == geometry(r), f"result {i}"
        assert g.untyped_storage().nbytes() == min(r.untyped_storage().nbytes(), extent_bytes(r)), f"result {i}"
        torch.testing.assert_close(g.detach().cpu(), r.detach(), rtol=1e-5, atol=1e-5, msg=lambda m: f"result {i}: {m}")


def test_layer_norm_checks_its_arguments_like_torch():
    x = torch.randn(2, 3).to("moreh")
    with pytest.raises(RuntimeError, match="normalized_shape"):
        torch.native_layer_norm(x, [4], None, None, 1e-5)
    with pytest.raises(RuntimeError, match="weight"):
        torch.native_layer_norm(x, [3], torch.ones(4).to("moreh"), None, 1e-5)
    assert x.cpu().shape == (2, 3)  # nothing lost
