"""Steady-state training step of the example GPT on moreh, divided by CPU eager, in one process.

Both runs use the same model, data and optimizer; steps alternate between the two so that machine
noise hits both alike. Also reports the first step (recording + plan compile + run), the plan
compile time, ops recorded per step and how many of them ran eagerly (fell back to a flush).
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from train_gpt import GPT  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_timing import compare  # noqa: E402


def make(device, cfg):
    torch.manual_seed(0)
    model = GPT(cfg.vocab, cfg.block_size, cfg.d_model, cfg.n_head, cfg.n_layer, getattr(cfg, "dropout", 0.1)).to(device)
    return model, torch.optim.AdamW(model.parameters(), lr=3e-4)


def step(model, opt, x, y, device):
    x, y = x.to(device), y.to(device)
    logits = model(x)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--vocab", type=int, default=96)
    cfg = p.parse_args()

    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.block_size), generator=g),
             torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.block_size), generator=g))
            for _ in range(cfg.warmup + cfg.steps)]
    cpu_model, cpu_opt = make("cpu", cfg)
    dev_model, dev_opt = make("moreh", cfg)
    compare(f"GPT d_model={cfg.d_model} n_layer={cfg.n_layer} batch={cfg.batch_size}x{cfg.block_size}",
            lambda b: step(cpu_model, cpu_opt, *b, "cpu"), lambda b: step(dev_model, dev_opt, *b, "moreh"),
            data, cfg.warmup, cfg.batch_size * cfg.block_size)


if __name__ == "__main__":
    main()
