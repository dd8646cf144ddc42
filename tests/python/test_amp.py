"""Mixed precision on moreh: torch.autocast("moreh") casts where CUDA's autocast casts, a bf16 Hugging Face
GPT-2 trains along the fp32 loss curve, and torch.amp.GradScaler("moreh") unscales, skips and rescales
exactly like GradScaler("cpu"), with its ops recorded on the device."""
import pytest
import torch
import torch.nn.functional as F

from models import MLP

BF16, FP32 = torch.bfloat16, torch.float32


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand(*shape, dtype=FP32, seed=0):
    return torch.randn(*shape, generator=gen(seed)).to(dtype)


# (name, op, inputs, policy, cpu_agrees). policy says what the op runs in under bf16 autocast:
# "lower" (bf16), "fp32", or "promote" (the widest floating input). Inputs are chosen so that the
# policy changes the dtype: fp32 inputs for "lower", bf16 inputs for "fp32", mixed for "promote".
# cpu_agrees: CPU autocast has the same policy for the op, so moreh is also compared against it.
def _cases():
    x, w, b = rand(8, 16), rand(12, 16, seed=1), rand(12, seed=2)
    a3, b3 = rand(3, 4, 5, seed=3), rand(3, 5, 6, seed=4)
    m, n, v = rand(4, 5, seed=5), rand(5, 6, seed=6), rand(5, seed=7)
    img, k2 = rand(2, 3, 8, 8, seed=8), rand(4, 3, 3, 3, seed=9)
    q, kk, vv = rand(2, 4, 8, 16, seed=10), rand(2, 4, 8, 16, seed=11), rand(2, 4, 8, 16, seed=12)
    hb = rand(6, 7, dtype=BF16, seed=13)
    pos = rand(6, 7, seed=14).abs().to(BF16) + 0.5
    tgt = torch.randint(0, 7, (6,), generator=gen(15))
    f_other = rand(6, 7, seed=16)
    lower = [
        ("mm", torch.mm, (m, n), True),
        ("matmul", torch.matmul, (a3, b3), True),
        ("bmm", torch.bmm, (a3, b3), True),
        ("linear", F.linear, (x, w, b), True),
        ("addmm", torch.addmm, (rand(4, 6), m, n), True),
        ("baddbmm", torch.baddbmm, (rand(3, 4, 6), a3, b3), True),
        ("addbmm", torch.addbmm, (rand(4, 6), a3, b3), True),
        ("conv1d", F.conv1d, (rand(2, 3, 10), rand(4, 3, 3, seed=1)), True),
        ("conv2d", F.conv2d, (img, k2), True),
        ("conv3d", F.conv3d, (rand(1, 2, 4, 4, 4), rand(3, 2, 2, 2, 2, seed=1)), True),
        ("conv_transpose2d", F.conv_transpose2d, (img, rand(3, 2, 3, 3, seed=1)), True),
        ("prelu", F.prelu, (x, rand(1, seed=3)), True),
        ("sdpa", F.scaled_dot_product_attention, (q, kk, vv), True),
        # CUDA's list only:
        ("mv", torch.mv, (m, v), False),
        ("addmv", torch.addmv, (rand(4), m, v), False),
        ("addr", torch.addr, (m, rand(4), v), False),
        ("einsum", lambda p, r: torch.einsum("ij,jk->ik", p, r), (m, n), False),
        ("chain_matmul", lambda p, r, s: torch.linalg.multi_dot([p, r, s]), (m, n, rand(6, 3)), False),
        ("convolution", lambda i, k: torch.convolution(i, k, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
         (img, k2), False),
    ]
    fp32 = [
        ("mse_loss", F.mse_loss, (hb, hb.flip(0)), True),
        ("l1_loss", F.l1_loss, (hb, hb.flip(0)), True),
        ("smooth_l1_loss", F.smooth_l1_loss, (hb, hb.flip(0)), True),
        ("nll_loss", F.nll_loss, (F.log_softmax(hb.float(), 1).to(BF16), tgt), True),
        ("cross_entropy", F.cross_entropy, (hb, tgt), True),
        ("bce_with_logits", F.binary_cross_entropy_with_logits, (hb, pos.sigmoid()), True),
        ("kl_div", lambda p, r: F.kl_div(p, r, reduction="batchmean"), (hb.log_softmax(1), pos.softmax(1)), True),
        ("cdist", torch.cdist, (hb, hb.flip(0)), True),
        # CUDA's list only:
        ("exp", torch.exp, (hb,), False),
        ("log", torch.log, (pos,), False),
        ("pow", torch.pow, (pos, 2.5), False),
        ("rsqrt", torch.rsqrt, (pos,), False),
        ("softplus", F.softplus, (hb,), False),
        ("softmax", lambda t: F.softmax(t, dim=-1), (hb,), False),
        ("log_softmax", lambda t: F.log_softmax(t, dim=-1), (hb,), False),
        ("layer_norm", lambda t: F.layer_norm(t, (7,)), (hb,), False),
        ("group_norm", lambda t: F.group_norm(t.view(2, 3, 7), 3), (hb,), False),
        ("sum", torch.sum, (hb,), False),
        ("cumsum", lambda t: torch.cumsum(t, 1), (hb,), False),
        ("norm", torch.norm, (hb,), False),
        ("logsumexp", lambda t: torch.logsumexp(t, 1), (hb,), False),
    ]
    idx = torch.tensor([0, 2, 4])
    promote = [
        ("cat", lambda p, r: torch.cat([p, r]), (hb, f_other), True),
        ("stack", lambda p, r: torch.stack([p, r]), (hb, f_other), True),
        ("index_copy", lambda p, r: p.index_copy(0, idx.to(p.device), r[:3]), (hb, f_other), True),
        # CUDA's list only:
        ("addcmul", torch.addcmul, (hb, f_other, hb.flip(0)), False),
        ("addcdiv", torch.addcdiv, (hb, f_other, pos), False),
        ("atan2", torch.atan2, (hb, f_other), False),
        ("dot", torch.dot, (hb[0], f_other[0]), False),
        ("scatter_add", lambda p, r: p.scatter_add(0, torch.zeros(2, 7, dtype=torch.long, device=p.device), r[:2]),
         (hb, f_other), False),
    ]
    return ([(name, op, args, "lower", agrees) for name, op, args, agrees in lower] +
            [(name, op, args, "fp32", agrees) for name, op, args, agrees in fp32] +
            [(name, op, args, "promote", agrees) for name, op, args, agrees in promote])


CASES = _cases()


def expected_dtype(policy, args):
    if policy == "lower":
        return BF16
    if policy == "fp32":
        return FP32
    floats = [a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
    return FP32 if FP32 in floats else BF16


def cast_floats(args, dtype):
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def to_moreh(args):
    return tuple(a.to("moreh") if isinstance(a, torch.Tensor) else a for a in args)


def close(actual, expected):
    tol = dict(rtol=1.6e-2, atol=1e-2) if expected.dtype == BF16 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(actual.cpu(), expected, **tol)


@pytest.mark.parametrize("name,op,args,policy,cpu_agrees", CASES, ids=[c[0] for c in CASES])
def test_op_runs_in_the_policy_dtype(name, op, args, policy, cpu_agrees):
    want = expected_dtype(policy, args)
    with torch.autocast("moreh", dtype=BF16):
        out = op(*to_moreh(args))
    assert out.device.type == "moreh"
    assert out.dtype == want, f"{name}: moreh autocast gave {out.dtype}, the {policy} policy gives {want}"
    # What the policy means: the op on inputs cast to the policy's dtype, without autocast, on CPU.
    close(out, op(*cast_floats(args, want)))
    if cpu_agrees:
        with torch.autocast("cpu", dtype=BF16):
            ref = op(*args)
        assert ref.dtype == out.dtype
        close(out, ref)


def test_ops_outside_the_lists_keep_their_dtype():
    x = rand(4, 5, dtype=BF16).to("moreh")
    with torch.autocast("moreh", dtype=BF16):
        y = torch.randn(4, 5, device="moreh")  # factories and random ops pass through the autocast layer
        assert y.dtype == FP32
        assert (x.relu() + 1).dtype == BF16
        assert (y * 2).dtype == FP32
    assert y.cpu().isfinite().all()


def test_binary_cross_entropy_is_refused_like_cuda():
    p = torch.rand(4, generator=gen()).to("moreh")
    with torch.autocast("moreh", dtype=BF16):
        with pytest.raises(RuntimeError, match="binary_cross_entropy_with_logits"):
            F.binary_cross_entropy(p, p)


def test_default_dtype_is_bfloat16_and_autocast_is_available():
    assert torch.amp.autocast_mode.is_autocast_available("moreh")
    assert torch.get_autocast_dtype("moreh") == BF16
    a = rand(4, 4).to("moreh")
    with torch.autocast("moreh"):
        assert torch.is_autocast_enabled("moreh")
        assert (a @ a).dtype == BF16
    assert not torch.is_autocast_enabled("moreh")
    assert (a @ a).dtype == FP32


def test_float16_autocast():
    a = rand(4, 4).to("moreh")
    with torch.autocast("moreh", dtype=torch.float16):
        assert (a @ a).dtype == torch.float16
        assert F.log_softmax(a.half(), -1).dtype == FP32


def test_autocast_ops_are_recorded_not_run_eagerly():
    torch.moreh.synchronize()
    before = torch.moreh.graph_stats()
    a = rand(8, 8).to("moreh").requires_grad_()
    with torch.autocast("moreh", dtype=BF16):
        loss = F.log_softmax(a @ a, -1).exp().sum()
    assert torch.moreh.graph_stats()["pending_ops"] > before["pending_ops"]
    loss.backward()
    assert a.grad.dtype == FP32 and a.grad.cpu().isfinite().all()
    assert torch.moreh.graph_stats()["eager_ops"] == before["eager_ops"]


# --- bf16 training of a Hugging Face GPT-2 --------------------------------------------------------
# GPT-2 as Hugging Face builds it (wte and lm_head tied); the fp32 CPU run is the exact reference.
GPT2_STEPS = 10


def gpt2_run(device, autocast_dtype):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=256, n_positions=64, n_embd=128, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # Sequences the model can learn in a few steps: each token is the previous one plus 7 (mod 256).
    start = torch.randint(0, 256, (4, 1), generator=gen(1234))
    ids = ((start + 7 * torch.arange(32)) % 256).to(device)
    losses, logit_dtypes = [], set()
    for _ in range(GPT2_STEPS):
        with torch.autocast(torch.device(device).type, dtype=autocast_dtype or FP32,
                            enabled=autocast_dtype is not None):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        logit_dtypes.add(out.logits.dtype)
        losses.append(out.loss.item())
    return losses, logit_dtypes


def test_bf16_gpt2_training_tracks_the_fp32_loss_curve():
    ref, ref_dtypes = gpt2_run("cpu", None)
    fp32, _ = gpt2_run("moreh", None)
    bf16, dtypes = gpt2_run("moreh", BF16)
    assert ref_dtypes == {FP32} and dtypes == {BF16}  # the bf16 run really ran its lm_head in bf16
    for step, (r, a) in enumerate(zip(ref, fp32)):
        assert abs(a - r) <= 1e-5 * r, f"step {step}: fp32 moreh {a} vs cpu {r}"
    for step, (r, a) in enumerate(zip(ref, bf16)):
        assert abs(a - r) <= 0.01 * r, f"step {step}: bf16 moreh {a} vs fp32 {r}"
    assert bf16 != fp32  # it did compute in lower precision
    assert bf16[-1] < bf16[0] - 1.0, bf16  # and learned


# --- GradScaler with float16 ------------------------------------------------------------------------
def scaler_run(device, steps, inject_inf_at=(), init_scale=2.0**16, growth_interval=3):
    torch.manual_seed(0)
    model = MLP().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(device, init_scale=init_scale, growth_interval=growth_interval)
    g = gen(7)
    scales, params_per_step = [], []
    for step in range(steps):
        x, y = torch.randn(16, 32, generator=g).to(device), torch.randint(0, 10, (16,), generator=g).to(device)
        with torch.autocast(device, dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        assert loss.dtype == FP32
        scaler.scale(loss).backward()
        if step in inject_inf_at:
            model.net[0].weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        scales.append(scaler.get_scale())
        params_per_step.append([p.detach().cpu().clone() for p in model.parameters()])
    return scales, params_per_step


def test_grad_scaler_matches_cpu():
    # A start scale of 2**24 overflows float16 gradients: the scaler must skip and halve until they fit,
    # then grow every growth_interval clean steps.
    kwargs = dict(steps=12, init_scale=2.0**24, growth_interval=3)
    ref_scales, ref_params = scaler_run("cpu", **kwargs)
    scales, params = scaler_run("moreh", **kwargs)
    assert scales == ref_scales
    assert min(scales) < 2.0**24 and any(b > a for a, b in zip(scales, scales[1:]))  # it halved and grew
    for step, (ps, rs) in enumerate(zip(params, ref_params)):
        for p, r in zip(ps, rs):
            torch.testing.assert_close(p, r, rtol=1e-3, atol=1e-4, msg=lambda m: f"step {step}: {m}")


def test_inf_gradient_skips_the_step_and_halves_the_scale_on_device():
    torch.moreh.synchronize()
    eager_before = torch.moreh.graph_stats()["eager_ops"]
    scales, params = scaler_run("moreh", steps=5, inject_inf_at=(3,))
    ref_scales, ref_params = scaler_run("cpu", steps=5, inject_inf_at=(3,))
    assert torch.moreh.graph_stats()["eager_ops"] == eager_before  # the _amp_* ops were recorded
    assert scales == ref_scales
    assert scales[3] == scales[2] / 2
    for p, before in zip(params[3], params[2]):  # step 3 was skipped: no parameter moved
        assert torch.equal(p, before)
    assert any(not torch.equal(p, q) for p, q in zip(params[4], params[3]))  # step 4 was taken
    for p, r in zip(params[4], ref_params[4]):
        torch.testing.assert_close(p, r, rtol=1e-3, atol=1e-4)


def test_scaler_reads_the_device_only_for_found_inf():
    torch.manual_seed(0)
    model = MLP().to("moreh")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("moreh")
    x, y = torch.randn(16, 32).to("moreh"), torch.randint(0, 10, (16,)).to("moreh")
    with torch.autocast("moreh", dtype=torch.float16):
        loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    torch.moreh.synchronize()
    stats = torch.moreh.graph_stats
    before = stats()
    scaler.unscale_(opt)  # _amp_foreach_non_finite_check_and_unscale_: recorded, not run
    assert stats()["pending_ops"] > 0 and stats()["flushes"] == before["flushes"]
    scaler.step(opt)  # one host read (found_inf.item()), then the optimizer step, whose hook ends the step
    assert stats()["flushes"] == before["flushes"] + 2
    scaler.update()  # _amp_update_scale_: recorded, not run
    assert stats()["pending_ops"] > 0 and stats()["flushes"] == before["flushes"] + 2
    assert stats()["eager_ops"] == before["eager_ops"]
    assert scaler.get_scale() == 65536.0
