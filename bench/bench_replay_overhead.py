"""Host cost of replaying a recorded step, per op, against CPU eager running the same ops in this process.

A chain of small ops (x * 0.5 + w, relu, x @ w, repeated) is one step graph; after warm-up, each timed
step records it, flushes with .item() and replays it on a host device. `replay_host_ms` (graph_stats) is
the time the device's stream spent replaying: moreh's per-node work (views over runtime memory, the
dispatcher call, adopting results) plus the CPU kernel itself. CPU eager runs the same kernels with
autograd off. Tiny tensors make the kernels cheap, so the figure is mostly overhead.

    python3 bench/bench_replay_overhead.py [--repeats 300] [--steps 10]
"""
import argparse
import time

import torch


def chain(x, w, n):
    for _ in range(n):
        x = x * 0.5 + w
        x = torch.relu(x)
        x = x @ w
    return x


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=300, help="chain links (4 ops each)")
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    import torch_moreh
    for shape in [(8, 8), (64, 64)]:
        wc, xc = torch.randn(*shape), torch.randn(*shape)
        with torch.no_grad():
            for _ in range(3):
                chain(xc, wc, args.repeats).sum().item()
            t = time.perf_counter()
            for _ in range(args.steps):
                chain(xc, wc, args.repeats).sum().item()
            eager_s = (time.perf_counter() - t) / args.steps
            w, x = wc.to("moreh"), xc.to("moreh")
            for _ in range(3):
                chain(x, w, args.repeats).sum().item()
            before = torch_moreh._C._stats()["replay_host_ms"]
            for _ in range(args.steps):
                chain(x, w, args.repeats).sum().item()
            stats = torch_moreh._C._stats()
        ops = stats["last_graph_ops"]
        replay_us = (stats["replay_host_ms"] - before) * 1e3 / args.steps / ops
        eager_us = eager_s * 1e6 / ops
        print(f"{shape[0]}x{shape[1]}: {ops} ops per step; replay {replay_us:.2f} us/op, CPU eager {eager_us:.2f} us/op, "
              f"ratio {replay_us / eager_us:.3f}")


if __name__ == "__main__":
    main()
