"""Trains one of the test models on moreh in this process and saves what the data-parallel tests compare.

Run as `python dp_worker.py KIND OUT` with MOREH_NUM_DEVICES set: the number of physical devices is fixed
when the engine starts, so every device count needs its own process. OUT gets a torch.save of
{"losses", "params", "stats", "buffers"}.
"""
import ctypes
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_moreh

from models import GPT, MLP
from training_loop import run_training

STEPS = 10


def classification_batches(batch, d_in=32, classes=10, steps=STEPS):
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(batch, d_in, generator=g), torch.randint(0, classes, (batch,), generator=g))
            for _ in range(steps)]


def token_batches(vocab, batch, seq, steps=STEPS):
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, vocab, (batch, seq), generator=g),) for _ in range(steps)]


def mlp(batch, dropout=0.0):
    torch.manual_seed(0)
    model = MLP(dropout=dropout)
    loss = lambda m, x, y: F.cross_entropy(m(x), y)
    return model, classification_batches(batch), loss, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)


def mlp_mse(batch):
    torch.manual_seed(0)
    model = MLP(d_out=4)
    g = torch.Generator().manual_seed(5)
    batches = [(torch.randn(batch, 32, generator=g), torch.randn(batch, 4, generator=g)) for _ in range(STEPS)]
    return model, batches, lambda m, x, y: F.mse_loss(m(x), y), lambda p: torch.optim.Adam(p, lr=1e-2)


def gpt(batch, dropout=0.0, **sizes):
    torch.manual_seed(0)
    model = GPT(dropout=dropout, **sizes)
    batches = [(x[:, :-1], x[:, 1:]) for (x,) in token_batches(96, batch, 33)]
    return model, batches, lambda m, x, y: m(x, y)[1], lambda p: torch.optim.AdamW(p, lr=1e-3)


def hf(kind, batch):
    import transformers

    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=256, n_positions=64, n_embd=128, n_layer=2, n_head=4,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        model = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        model = transformers.LlamaForCausalLM(cfg)
    loss = lambda m, ids: m(input_ids=ids, labels=ids).loss
    return model, token_batches(256, batch, 32), loss, lambda p: torch.optim.AdamW(p, lr=1e-3)


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return F.log_softmax(self.fc(x.flatten(1)), dim=1)


def convnet(batch):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(batch, 3, 8, 8, generator=g), torch.randint(0, 10, (batch,), generator=g))
               for _ in range(STEPS)]
    return ConvNet(), batches, lambda m, x, y: F.nll_loss(m(x), y), lambda p: torch.optim.SGD(p, lr=0.05)


def build(kind):
    name, _, arg = kind.partition(":")
    batch = int(arg) if arg else 8
    if name == "mlp":
        return mlp(batch)
    if name == "mlp_dropout":
        return mlp(batch, dropout=0.3)
    if name == "mlp_mse":
        return mlp_mse(batch)
    if name == "gpt":
        return gpt(batch)
    if name == "gpt_wide":  # parameters outweigh a small batch's activations (model parallelism saves memory)
        return gpt(batch, d_model=192, n_layer=4)
    if name == "gpt_dropout":
        return gpt(batch, dropout=0.1)
    if name == "gpt_clip":  # gradient clipping with foreach ops over every parameter's gradient
        model, batches, loss, make_opt = gpt(batch)

        def clipped(params):
            params = list(params)
            opt = make_opt(params)

            def clip(*_):  # returns None: the norm is not read on the host
                torch.nn.utils.clip_grad_norm_(params, 0.05, foreach=True)
            opt.register_step_pre_hook(clip)
            return opt
        return model, batches, loss, clipped
    if name == "gpt_bf16":  # mixed precision: the forward pass under bf16 autocast
        model, batches, loss, opt = gpt(batch)

        def autocast_loss(m, x, y):
            with torch.autocast("moreh", dtype=torch.bfloat16):
                return loss(m, x, y)
        return model, batches, autocast_loss, opt
    if name == "gpt_ignore":  # ignored targets, more in some rows: micro-batches weigh differently in the mean
        model, batches, loss, opt = gpt(batch)
        ragged = []
        for x, y in batches:
            y = y.clone()
            for i in range(y.shape[0]):
                y[i, (i * 11) % y.shape[1]:] = -100 if i % 3 else y[i, (i * 11) % y.shape[1]:]
            ragged.append((x, y))
        return model, ragged, loss, opt
    if name == "gpt_accum":  # two backward passes per optimizer step (main passes accumulate=2)
        return gpt(batch)
    if name == "mlp_aux":  # a second loss beside the mean cross entropy: its gradient is not the loss's
        model, batches, _, opt = mlp(batch)
        def two_losses(m, x, y):
            out = m(x)
            return F.cross_entropy(out, y) + F.mse_loss(out, torch.zeros_like(out))
        return model, batches, two_losses, opt
    if name in ("gpt2", "llama"):
        return hf(name, batch)
    if name == "llama_bf16":  # Llama under bf16 autocast: each layer casts its input, q, k, v pass through casts
        model, batches, loss, opt = hf("llama", batch)

        def autocast_lm_loss(m, ids):
            with torch.autocast("moreh", dtype=torch.bfloat16):
                return loss(m, ids)
        return model, batches, autocast_lm_loss, opt
    if name == "convnet":
        return convnet(batch)
    if name == "cumsum":  # an op with no sharding rule along the batch: runs replicated, still correct
        model, batches, _, opt = mlp(batch)
        return model, batches, lambda m, x, y: m(x).cumsum(0).square().mean() * 1e-2 + F.cross_entropy(m(x), y), opt
    raise SystemExit(f"unknown model {kind}")


def main():
    kind, out = sys.argv[1], sys.argv[2]
    torch.moreh.manual_seed(0)
    if os.environ.get("DP_WORKER_AP") == "1":  # Advanced Parallelization chooses the layout
        torch.moreh.option.enable_advanced_parallelization()
    model, batches, loss_fn, make_optimizer = build(kind)
    # What each physical device holds after the second step (parameters, gradients, optimizer state), before
    # the parameters are read back to the host.
    held = {}

    def recording_optimizer(params):
        opt = make_optimizer(params)
        held["opt"] = opt

        def after_step(*_):
            held["steps"] = held.get("steps", 0) + 1
            if held["steps"] == 2:
                torch.moreh.synchronize()
                held["devices"] = torch.moreh.physical_devices()
        opt.register_step_post_hook(after_step)
        return opt

    accumulate = 2 if kind.startswith("gpt_accum") else 1
    losses, params = run_training(model, "moreh", batches, loss_fn, recording_optimizer, accumulate=accumulate)
    buffers = {n: b.detach().cpu() for n, b in model.named_buffers()}
    # The optimizer's state as a state dict gives it (whole tensors, however the layout holds them).
    opt_state = {f"{i}.{k}": v.detach().cpu() for i, st in held["opt"].state_dict()["state"].items()
                 for k, v in st.items() if torch.is_tensor(v)}
    torch.save({"losses": losses, "params": params, "buffers": buffers, "opt_state": opt_state,
                "stats": torch.moreh.graph_stats(),
                "devices_after_step_2": held.get("devices"),
                "log_file": torch.moreh.log_file(), "fake_nccl_calls": fake_nccl_calls(),
                "parallelism": torch_moreh._C._parallelism(),
                "search": torch.moreh.option.advanced_parallelization_candidates()}, out)


def fake_nccl_calls():
    """The test stand-in for NCCL's call counts (docs: tests/cpp/runtime/comm/fake_nccl.cpp), when it is in use."""
    path = os.environ.get("MOREH_NCCL_LIBRARY")
    if not path or "fake_nccl" not in path:
        return {}
    lib = ctypes.CDLL(path)  # the copy moreh loaded: same counters
    lib.moreh_fake_nccl_count.argtypes = [ctypes.c_char_p]
    return {c: lib.moreh_fake_nccl_count(c.encode())
            for c in ("ncclAllReduce", "ncclGroupStart", "ncclAllGather", "ncclSend", "ncclRecv")}


if __name__ == "__main__":
    main()
