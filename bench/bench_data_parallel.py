"""The example GPT with its batch split over N host devices: planning time, collective bytes against the
ring all-reduce ideal, replicated fallbacks, and the step time against CPU eager.

The number of devices is fixed when moreh's engine starts, so each N runs in its own process; inside
that process the baseline (CPU eager, same model, data and optimizer) runs alternately with moreh, as in
the other step benchmarks (bench/step_timing.py). Host devices share this machine's cores: the step-time
ratio shows the overhead of splitting, not a speedup (that needs real devices).
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(cfg):
    import contextlib
    import io

    import torch

    sys.path.insert(0, HERE)
    from bench_train_step import make, step
    from step_timing import compare

    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.block_size), generator=g),
             torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.block_size), generator=g))
            for _ in range(cfg.warmup + cfg.steps)]
    cpu_model, cpu_opt = make("cpu", cfg)
    dev_model, dev_opt = make("moreh", cfg)
    grad_bytes = sum(p.numel() * p.element_size() for p in dev_model.parameters())
    start = torch.moreh.graph_stats()
    seen = []

    def moreh_step(b):
        loss = step(dev_model, dev_opt, *b, "moreh")
        seen.append(torch.moreh.graph_stats())
        return loss

    with contextlib.redirect_stdout(io.StringIO()) as out:
        ratio = compare("GPT", lambda b: step(cpu_model, cpu_opt, *b, "cpu"), moreh_step, data, cfg.warmup,
                        cfg.batch_size * cfg.block_size)
    end = torch.moreh.graph_stats()
    steady = seen[cfg.warmup - 1]
    n = len(seen) - cfg.warmup
    misses = end["cache_misses"] - start["cache_misses"]
    print(json.dumps({
        "ratio_vs_cpu": ratio,
        "plan_ms_per_graph": (end["total_compile_ms"] - start["total_compile_ms"]) / max(misses, 1),
        "graphs_per_step": (end["flushes"] - steady["flushes"]) / n,
        "steady_cache_misses": end["cache_misses"] - steady["cache_misses"],
        # graph_stats counts the bytes every device sent; per device is that over the device count
        "collective_bytes_per_step": (end["collective_bytes"] - steady["collective_bytes"]) / n / cfg.num_devices,
        "grad_bytes": grad_bytes,
        "fallbacks_per_step": (end["replicated_fallbacks"] - steady["replicated_fallbacks"]) / n,
        "fallbacks_total": end["replicated_fallbacks"],
        "loss_gap": float(out.getvalue().rsplit(":", 1)[-1]),
    }))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--devices", default="1,2,4")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--vocab", type=int, default=96)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    cfg = p.parse_args()
    cfg.num_devices = int(os.environ.get("MOREH_NUM_DEVICES", "1"))
    if cfg.worker:
        return worker(cfg)

    print(f"example GPT d_model={cfg.d_model} n_layer={cfg.n_layer} batch={cfg.batch_size}x{cfg.block_size}, "
          f"dropout 0.1, AdamW, clip_grad_norm_; host devices on {os.cpu_count()} cores")
    print("coll bytes/step: bytes each device sends in a steady step; ideal: a ring all-reduce of the gradients, "
          "2(N-1)/N x gradient bytes")
    print(f"{'N':>2} {'plan ms/graph':>13} {'steady misses':>13} {'coll bytes/step':>15} {'ideal':>11} "
          f"{'coll/ideal':>10} {'fallbacks':>9} {'moreh/cpu':>9} {'loss gap':>9}")
    args = [a for a in sys.argv[1:] if not a.startswith("--devices")]
    for n in [int(x) for x in cfg.devices.split(",")]:
        env = dict(os.environ, MOREH_NUM_DEVICES=str(n))
        env.pop("MOREH_FLAVOR", None)
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", *args], env=env,
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            raise SystemExit(f"N={n} failed")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        ideal = 2 * (n - 1) / n * r["grad_bytes"]
        ratio = f"{r['collective_bytes_per_step'] / ideal:.3f}" if ideal else "-"
        print(f"{n:>2} {r['plan_ms_per_graph']:>13.3f} {r['steady_cache_misses']:>13} "
              f"{r['collective_bytes_per_step']:>15.0f} {ideal:>11.0f} {ratio:>10} {r['fallbacks_per_step']:>9.1f} "
              f"{r['ratio_vs_cpu']:>9.3f} {r['loss_gap']:>9.2e}")


if __name__ == "__main__":
    main()
