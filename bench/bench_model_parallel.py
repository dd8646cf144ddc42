"""The example GPT under each parallel layout (MOREH_PARALLELISM) on 4 and 8 host devices: planning time,
predicted and measured peak bytes per device, parameter + optimizer bytes per device, bytes each device
sends per step, and the schedule's idle fraction against GPipe's (p - 1) / (m + p - 1). Pipelines run 1F1B (the
default) and, for two layouts, GPipe too: 1F1B holds fewer micro-batches' activations at a time. Batch splitting
runs with its optimizer sharded too (distribute_param : true). Recomputation (recomputation : 1) runs beside
the same layouts without it: its column is the measured peak as a share of theirs. Tensor parallelism (TP : N)
runs over 2 and 4 devices, beside data-parallel replicas (TP : 2 on 4 and 8 devices, TP : 4 on 8: dp x tp), and
beside 2 pipeline stages (pp 2 x tp 2 on 4 devices, with 4 micro-batches too, dp 2 x pp 2 x tp 2 on 8).
`--only "TP"` runs the layouts whose line holds a piece (and one device first).

The number of devices is fixed when moreh's engine starts, so each layout runs in its own process; the
baseline is the same training on one device, run first. Host devices share this machine's 2 cores, so time
is not the figure here (a pipeline's speedup needs devices that run at once): memory and bytes are. The idle
fraction is the plan's own schedule on a clock of node costs (scheduler/analysis/plan_timeline.h).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

RC = "recomputation : 1"
LAYOUTS = [  # (devices, MOREH_PARALLELISM)
    (1, ""),
    (1, RC),
    (1, "num_stages : 1, num_micro_batches : 4"),  # gradient accumulation: one micro-batch's activations at a time
    (1, "num_stages : 1, num_micro_batches : 8"),
    (4, "num_stages : 1"),
    (4, "num_stages : 1, num_micro_batches : 4"),
    (4, "num_stages : 1, " + RC),
    (4, "num_stages : 1, distribute_param : true"),
    (4, "num_stages : 2, num_micro_batches : 4"),
    (4, "num_stages : 2, num_micro_batches : 4, " + RC),
    (4, "num_stages : 2, num_micro_batches : 4, distribute_param : true"),
    (4, "num_stages : 2, num_micro_batches : 4, distribute_param : true, " + RC),
    (4, "num_stages : 4, num_micro_batches : 4"),
    (4, "num_stages : 4, num_micro_batches : 8"),
    (4, "num_stages : 4, num_micro_batches : 8, pipeline_schedule : gpipe"),
    (8, "num_stages : 1"),
    (8, "num_stages : 1, distribute_param : true"),
    (8, "num_stages : 2, num_micro_batches : 4"),
    (8, "num_stages : 4, num_micro_batches : 4"),
    (8, "num_stages : 8, num_micro_batches : 8"),
    (8, "num_stages : 8, num_micro_batches : 8, pipeline_schedule : gpipe"),
    (2, "TP : 2"),
    (2, "TP : 2, " + RC),
    (4, "TP : 4"),
    (4, "TP : 4, " + RC),
    (4, "TP : 2"),  # dp 2 x tp 2
    (4, "TP : 2, " + RC),
    (4, "TP : 2, distribute_param : true"),
    (8, "TP : 2"),  # dp 4 x tp 2
    (8, "TP : 4"),  # dp 2 x tp 4
    (4, "num_stages : 2, TP : 2"),  # pp 2 x tp 2
    (4, "num_stages : 2, TP : 2, " + RC),
    (8, "num_stages : 2, TP : 2"),  # dp 2 x pp 2 x tp 2
    (8, "num_stages : 2, TP : 2, distribute_param : true"),
    (4, "num_stages : 2, num_micro_batches : 4, TP : 2"),  # pp 2 x tp 2, GPipe's order beside TP
]


def worker(cfg):
    import torch

    sys.path.insert(0, HERE)
    from bench_train_step import make, step

    g = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.block_size), generator=g),
             torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.block_size), generator=g)) for _ in range(3)]
    model, opt = make("moreh", cfg)
    losses = [step(model, opt, *data[0], "moreh"), step(model, opt, *data[1], "moreh")]
    torch.moreh.synchronize()
    torch.moreh.reset_peak_memory_stats()
    before = torch.moreh.physical_devices()
    losses.append(step(model, opt, *data[2], "moreh"))
    after = torch.moreh.physical_devices()
    plan = torch.moreh.last_plan()
    print(json.dumps({
        "losses": losses,
        "compile_ms": plan.get("compile_ms"),
        "summary": plan.get("summary"),
        "predicted_peak": plan.get("peak_bytes"),
        "idle_fraction": plan.get("idle_fraction"),
        "recomputed_ops": plan.get("recomputed_ops"),
        "dropped_activation_bytes": plan.get("dropped_activation_bytes"),
        "measured_peak": [a["memory_peak"] - b["memory_used"] for a, b in zip(after, before)],
        "held": [a["memory_used"] for a in after],
        "sent": [a["bytes_sent"] - b["bytes_sent"] for a, b in zip(after, before)],
    }))


def run(devices, line, cfg):
    env = dict(os.environ, MOREH_NUM_DEVICES=str(devices))
    env.pop("MOREH_PARALLELISM", None)
    if line:
        env["MOREH_PARALLELISM"] = line
    args = [sys.executable, os.path.abspath(__file__), "--worker"] + [f"--{k.replace('_', '-')}={v}" for k, v in
                                                                       vars(cfg).items() if k not in ("worker", "only")]
    with tempfile.TemporaryDirectory() as cwd:  # the layout's dump file goes there
        proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{devices} devices, {line!r} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=8)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--vocab", type=int, default=96)
    p.add_argument("--dropout", type=float, default=0.1, help="the GPT's dropout (attention splits by heads under TP "
                                                               "only without it)")
    p.add_argument("--only", default="", help="run only the layouts whose line contains one of these comma-separated "
                                              "pieces (and one device, the baseline)")
    cfg = p.parse_args()
    if cfg.worker:
        return worker(cfg)
    kib = lambda b: f"{b / 1024:.0f}"
    one = None
    print(f"example GPT: {cfg.n_layer} layers, d_model {cfg.d_model}, dropout {cfg.dropout}, batch {cfg.batch_size} x {cfg.block_size}, "
          f"AdamW; one process per layout; KiB per device (max over devices; ratio to one device)")
    print(f"{'devices':>7} {'layout':40} {'plan ms':>7} {'held':>10} {'/1dev':>6} {'pred peak':>9} {'meas peak':>9} "
          f"{'/no rc':>6} {'sent/step':>9} {'idle':>5} {'gpipe':>5} {'loss diff':>9}")
    done = {}
    pieces = [x.strip() for x in cfg.only.split(",") if x.strip()]
    for devices, line in LAYOUTS:
        if pieces and (devices, line) != (1, "") and not any(x in line for x in pieces):
            continue
        r = done[(devices, line)] = run(devices, line, cfg)
        plain = done.get((devices, line.replace(", " + RC, "").replace(RC, "")))
        rc = f"{max(r['measured_peak']) / max(plain['measured_peak']):6.2f}" if RC in line and plain else f"{'':>6}"
        if one is None:
            one = r
        stages = int(line.split("num_stages : ")[1].split(",")[0]) if "num_stages" in line else 1
        micro = int(line.split("num_micro_batches : ")[1].split(",")[0]) if "num_micro_batches" in line else 1
        gpipe = (stages - 1) / (micro + stages - 1)
        held = max(r["held"])
        diff = max(abs(a - b) / abs(a) for a, b in zip(one["losses"], r["losses"]))
        tp = int(line.split("TP : ")[1].split(",")[0]) if "TP : " in line else 1
        dp = devices // (tp * stages)
        shown = (line.replace(", pipeline_schedule : gpipe", " GPipe")
                 .replace("TP : ", f"dp {dp} x tp " if tp > 1 and dp > 1 else "tp ")
                 .replace(", distribute_param : true", " + distribute_param").replace(", " + RC, " + recompute")
                 .replace(RC, "recompute") or "(one device)")
        print(f"{devices:>7} {shown:40} {r['compile_ms']:7.2f} {kib(held):>10} "
              f"{held / max(one['held']):6.2f} {kib(max(r['predicted_peak'])):>9} {kib(max(r['measured_peak'])):>9} "
              f"{rc} {kib(max(r['sent'])):>9} {r['idle_fraction'] or 0:5.2f} {gpipe:5.2f} {diff:9.1e}", flush=True)
        if devices > 1:
            print(f"{'':>7}   held per device: {' '.join(kib(h) for h in r['held'])}")


if __name__ == "__main__":
    main()
