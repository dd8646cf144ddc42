"""Times a training step on CPU eager and on moreh in one process, steps alternating so that machine noise
hits both alike, and prints the ratio with moreh's graph statistics (ops per step, eager fallbacks, plan
cache). Used by the training-step benchmarks."""
import statistics
import time

import torch


def compare(describe, cpu_step, moreh_step, data, warmup, tokens_per_step):
    """`cpu_step(batch)` / `moreh_step(batch)` run one training step and return the loss as a float."""
    before = torch.moreh.graph_stats()
    t = time.perf_counter()
    moreh_step(data[0])
    first_step = time.perf_counter() - t
    after_first = torch.moreh.graph_stats()
    t = time.perf_counter()
    cpu_step(data[0])
    cpu_first = time.perf_counter() - t

    for batch in data[1:warmup]:
        cpu_step(batch)
        moreh_step(batch)
    steady = torch.moreh.graph_stats()
    cpu_times, dev_times, loss_gap = [], [], 0.0
    for batch in data[warmup:]:
        t = time.perf_counter()
        a = cpu_step(batch)
        cpu_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = moreh_step(batch)
        dev_times.append(time.perf_counter() - t)
        loss_gap = max(loss_gap, abs(a - b) / abs(a))
    end = torch.moreh.graph_stats()

    c, d = statistics.median(cpu_times), statistics.median(dev_times)
    n = len(data) - warmup
    print(f"model: {describe} threads={torch.get_num_threads()}")
    print(f"steady-state step: cpu eager {c * 1e3:.1f} ms, moreh {d * 1e3:.1f} ms, ratio moreh/cpu {d / c:.3f}")
    print(f"throughput: cpu eager {tokens_per_step / c:.0f} tokens/s, moreh {tokens_per_step / d:.0f} tokens/s")
    print(f"first step: moreh {first_step * 1e3:.1f} ms (cpu eager {cpu_first * 1e3:.1f} ms), "
          f"plan compile {after_first['total_compile_ms'] - before['total_compile_ms']:.3f} ms")
    print(f"per step: {(end['recorded_ops'] - steady['recorded_ops']) / n:.0f} recorded ops, "
          f"{(end['eager_ops'] - steady['eager_ops']) / n:.0f} eager (flush) ops, "
          f"{(end['flushes'] - steady['flushes']) / n:.1f} step graphs, "
          f"plan cache hits {end['cache_hits'] - steady['cache_hits']}, "
          f"misses {end['cache_misses'] - steady['cache_misses']}")
    print(f"largest relative loss difference cpu vs moreh over the timed steps: {loss_gap:.2e}")
    return d / c
