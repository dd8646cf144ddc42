"""Why the host profile times kernels over a working set larger than the caches.

A streaming add (`torch.add(out=)`, three tensors of one size) and a matmul of a small transformer's shape
(1024x256 . 256x512), timed on one set of operands (which stays in cache, as the first host calibration
timed them) and on several sets taken in turn, up to sets that together fill 256 MiB (as a training step
streams through its activations, parameters, gradients and optimizer state; backend/csrc/host_calibration.cpp).
The ratio in-cache / 256 MiB is how much faster a profile timed in cache says kernels run than they do in a step.
"""
import time

import torch


def rate(calls, work_per_call, budget=0.3):
    for c in calls:
        c()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        for c in calls:
            c()
            n += 1
    return work_per_call * n / (time.perf_counter() - start)


def main():
    print("streaming add, GB/s (sets of 3 tensors taken in turn)")
    print(f"{'tensor':>8} {'1 set':>8} {'4 sets':>8} {'16 sets':>8} {'256 MiB':>8} {'ratio':>6}")
    for numel in (1 << 16, 1 << 18, 1 << 20, 1 << 22):
        row = []
        for count in (1, 4, 16, max(1, (256 << 20) // (12 * numel))):
            sets = [(torch.ones(numel), torch.ones(numel), torch.empty(numel)) for _ in range(count)]
            row.append(rate([lambda s=s: torch.add(s[0], s[1], out=s[2]) for s in sets], 12 * numel) / 1e9)
        print(f"{numel * 4 >> 10:>5} KiB" + "".join(f" {v:>8.1f}" for v in row) + f" {row[0] / row[-1]:>6.2f}")
    m, k, n = 1024, 256, 512
    print("matmul 1024x256 . 256x512, GFLOP/s")
    row = []
    for count in (1, 4, 16, (256 << 20) // (4 * (m * k + k * n + m * n))):
        sets = [(torch.full((m, k), 0.5), torch.full((k, n), 0.5)) for _ in range(count)]
        row.append(rate([lambda s=s: torch.mm(*s) for s in sets], 2 * m * k * n) / 1e9)
    print(f"{'':>8}" + "".join(f" {v:>8.1f}" for v in row) + f" {row[0] / row[-1]:>6.2f}")


if __name__ == "__main__":
    main()
