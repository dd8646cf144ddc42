"""Per-op recording overhead on moreh, against dispatching the same op in CPU eager (same process).

Recording is what a script pays per op while it builds the step graph; the kernels run later.
Prints microseconds per op and the ratio to CPU eager, for cold (first sight of the op's shapes:
Meta inference) and warm (shape cache hit, the steady state of a training loop) recording.
"""
import argparse
import statistics
import time

import torch


def per_op_us(fn, n):
    t = time.perf_counter()
    fn(n)
    return (time.perf_counter() - t) / n * 1e6


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ops", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    cases = {
        "add": lambda x, w: x + x,
        "mul_scalar": lambda x, w: x * 0.5,
        "relu": lambda x, w: torch.relu(x),
        "linear": lambda x, w: torch.nn.functional.linear(x, w),
        "softmax": lambda x, w: torch.softmax(x, -1),
        "add_": lambda x, w: x.add_(1.0),
    }
    print(f"{'op':<12}{'cpu eager us':>14}{'moreh warm us':>15}{'ratio':>8}{'moreh cold us':>15}")
    for name, op in cases.items():
        cpu_x, cpu_w = torch.randn(8, 8), torch.randn(8, 8)
        dev_x, dev_w = cpu_x.to("moreh"), cpu_w.to("moreh")
        torch.moreh.synchronize()

        def loop(x, w):
            def run(n):
                for _ in range(n):
                    op(x, w)
            return run

        # cold: shapes never seen before (each iteration a new size) -> Meta inference every time
        cold = []
        for i in range(200):
            xs, ws = torch.randn(8, 9 + i).to("moreh"), torch.randn(9 + i, 9 + i).to("moreh")
            t = time.perf_counter()
            op(xs, ws)
            cold.append((time.perf_counter() - t) * 1e6)
        torch.moreh.synchronize()
        cpu, warm = [], []
        for _ in range(args.repeats):
            cpu.append(per_op_us(loop(cpu_x, cpu_w), args.ops))
            warm.append(per_op_us(loop(dev_x, dev_w), args.ops))
            torch.moreh.synchronize()  # run what was recorded (not timed)
        c, w = statistics.median(cpu), statistics.median(warm)
        print(f"{name:<12}{c:>14.2f}{w:>15.2f}{w / c:>8.2f}{statistics.median(cold):>15.2f}")


if __name__ == "__main__":
    main()
