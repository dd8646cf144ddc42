"""Steady-state training step of the example GPT on moreh, divided by CPU eager, in one process.

Both runs use the same model, data and optimizer; steps alternate between the two so that machine
noise hits both alike. Also reports the first step (recording + plan compile + run), the plan
compile time, ops recorded per step and how many of them ran eagerly (fell back to a flush).
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from train_gpt import GPT  # noqa: E402


def make(device, cfg):
    torch.manual_seed(0)
    model = GPT(cfg.vocab, cfg.block_size, cfg.d_model, cfg.n_head, cfg.n_layer, 0.1).to(device)
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

    before = torch.moreh.graph_stats()
    t = time.perf_counter()
    step(dev_model, dev_opt, *data[0], "moreh")
    first_step = time.perf_counter() - t
    after_first = torch.moreh.graph_stats()
    t = time.perf_counter()
    step(cpu_model, cpu_opt, *data[0], "cpu")
    cpu_first = time.perf_counter() - t

    for x, y in data[1:cfg.warmup]:
        step(cpu_model, cpu_opt, x, y, "cpu")
        step(dev_model, dev_opt, x, y, "moreh")
    steady = torch.moreh.graph_stats()
    cpu_times, dev_times = [], []
    for x, y in data[cfg.warmup:]:
        t = time.perf_counter()
        step(cpu_model, cpu_opt, x, y, "cpu")
        cpu_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        step(dev_model, dev_opt, x, y, "moreh")
        dev_times.append(time.perf_counter() - t)
    end = torch.moreh.graph_stats()

    c, d = statistics.median(cpu_times), statistics.median(dev_times)
    n = cfg.steps
    tokens = cfg.batch_size * cfg.block_size
    print(f"model: GPT d_model={cfg.d_model} n_layer={cfg.n_layer} batch={cfg.batch_size}x{cfg.block_size} "
          f"threads={torch.get_num_threads()}")
    print(f"steady-state step: cpu eager {c * 1e3:.1f} ms, moreh {d * 1e3:.1f} ms, ratio moreh/cpu {d / c:.3f}")
    print(f"throughput: cpu eager {tokens / c:.0f} tokens/s, moreh {tokens / d:.0f} tokens/s")
    print(f"first step: moreh {first_step * 1e3:.1f} ms (cpu eager {cpu_first * 1e3:.1f} ms), "
          f"plan compile {after_first['total_compile_ms'] - before['total_compile_ms']:.3f} ms")
    print(f"per step: {(end['recorded_ops'] - steady['recorded_ops']) / n:.0f} recorded ops, "
          f"{(end['eager_ops'] - steady['eager_ops']) / n:.0f} eager (flush) ops, "
          f"plan cache hits {end['cache_hits'] - steady['cache_hits']}, misses {end['cache_misses'] - steady['cache_misses']}")


if __name__ == "__main__":
    main()
