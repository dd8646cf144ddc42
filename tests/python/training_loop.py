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


def assert_same_training(ref, got, rel=1e-5, atol=1e-6):
    """`ref` and `got` are run_training results: losses within `rel` relative, parameters allclose."""
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
        torch.testing.assert_close(params[name], ref_params[name], rtol=rel, atol=atol, msg=name)
