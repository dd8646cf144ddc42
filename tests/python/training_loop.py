"""One training loop for the tests that train a model on CPU and on moreh and compare the two runs."""
import torch


def run_training(model, device, batches, loss_fn, make_optimizer, scheduler_fn=None, accumulate=1,
                 zero_to_none=True):
    """Trains `model` on `device`: for each batch, `loss_fn(model, *batch)` → backward; every `accumulate`
    batches one optimizer step (and scheduler step). Returns (losses, {name: parameter on the CPU})."""
    model = model.to(device)
    model.train()
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad])
    sched = scheduler_fn(opt) if scheduler_fn else None
    losses = []
    for i, batch in enumerate(batches):
        loss = loss_fn(model, *(t.to(device) for t in batch))
        (loss / accumulate).backward()
        losses.append(loss.item())
        if (i + 1) % accumulate == 0:
            opt.step()
            if sched:
                sched.step()
            opt.zero_grad(set_to_none=zero_to_none)
    return losses, {n: p.detach().cpu() for n, p in model.named_parameters()}


def key_bias_rows(name, param):
    """The entries of `param` that are the key projection's bias of a softmax attention, or None. Adding a
    bias b to every key adds q·b to all of a query's scores alike, and softmax ignores that: the loss does
    not depend on these entries, their gradient is zero up to rounding, and Adam turns that rounding noise
    into steps of about ±lr whose sign depends on the summation order of the attention backward. Not so
    with rotary position embeddings (the bias is rotated by each key's position): don't pass
    key_bias_atol for those models."""
    if name.endswith(("in_proj_bias", "attn.c_attn.bias")):  # packed q, k, v: MultiheadAttention, GPT-2
        e = param.shape[0] // 3
        return slice(e, 2 * e)
    if name.endswith((".key.bias", ".k_lin.bias", ".k_proj.bias")):  # BERT/ViT, DistilBERT, BART/Wav2Vec2
        return slice(None)
    return None


def assert_same_training(ref, got, rel=1e-5, atol=1e-6, key_bias_atol=None):
    """`ref` and `got` are run_training results: losses within `rel` relative, parameters allclose. With
    `key_bias_atol`, attention key biases (key_bias_rows) are compared within that absolute bound instead:
    pass about lr x steps for Adam, which moves those loss-free entries by rounding noise of up to lr a
    step. (Any kernel that sums in another order, e.g. a BLAS whose blocking depends on the CPU, changes
    that noise while every loss stays bit for bit the same.)"""
    (ref_losses, ref_params), (losses, params) = ref, got
    if torch.moreh.get_device_properties().physical_device.startswith("cuda"):
        # CUDA kernels (and fused ones, which round as CUDA's do) sum in another order than CPU's: a looser
        # bound when moreh runs on a GPU. Adam turns a gradient that is zero up to rounding (a bias before a
        # norm, attention's key bias) into steps of either sign, so such parameters differ by up to ~1e-4
        # between any two kernel libraries (the bound test_training.py uses on GPUs).
        rel, atol = max(rel, 1e-4), max(atol, 2e-4)
    assert len(ref_losses) == len(losses)
    for step, (a, b) in enumerate(zip(ref_losses, losses)):
        assert abs(a - b) <= rel * abs(a), f"step {step}: cpu {a} vs moreh {b}"
    assert ref_params.keys() == params.keys()
    for name in ref_params:
        want, have = ref_params[name], params[name]
        rows = key_bias_rows(name, want) if key_bias_atol is not None else None
        if rows is not None:
            torch.testing.assert_close(have[rows], want[rows], rtol=0, atol=key_bias_atol,
                                       msg=lambda m, n=name: f"{n} (key bias rows): {m}")
            have, want = have.clone(), want.clone()
            have[rows] = want[rows] = 0
        torch.testing.assert_close(have, want, rtol=rel, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
