"""Advanced Parallelization's figures on the example GPT (examples/train_gpt.py's model).

Planning: on 8 host devices, the time AP takes to enumerate, lower (on a thread pool) and time every candidate,
against MoAI's published 6.9 s for 30 candidates (seed 000), and the whole step flush that contains it.

Prediction: on 4 host devices, every feasible candidate runs a few steps under its layout; the simulator's
predicted step time (the plan's programs on the host profile's clock) is set against the measured time the
devices took (from the step's submission at optimizer.step() to its end, the script waiting), and the
memory model's peak per device against the devices' measured high-water mark. Then: the selected candidate's
measured time against the fastest measured one (brute force). Candidates with recomputation that AP did not
compile (their twin without recomputation fits) are run and measured too, their prediction from their own
plan: the brute force covers every layout that fits, and each is set against its twin.

Host devices share this machine's cores; the host profile is measured once (~/.moreh/profiles, here a fresh
directory) and says how many devices' kernels run at full speed at once. Each device count runs in its own
process (the engine's device count is fixed when it starts).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def model_and_data(args):
    import torch
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import train_gpt
    torch.manual_seed(0)
    text = open(os.path.join(ROOT, "examples", "train_gpt.py"), encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    model = train_gpt.GPT(len(chars), args.block_size, args.d_model, args.n_head, args.n_layer, 0.0)
    loader = train_gpt.batches(data, args.batch_size, args.block_size, torch.Generator().manual_seed(0))
    return model, loader


def worker(args):
    import torch
    import torch.nn.functional as F
    import torch_moreh
    from torch_moreh import _C
    dev = torch.device("moreh")
    profile = torch.moreh.option.device_profile()  # measured before anything is timed
    model, loader = model_and_data(args)
    model = model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        x, y = next(loader)
        x, y = x.to(dev), y.to(dev)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        t0 = time.perf_counter()
        opt.step()  # ends the step graph: planned (AP's search included) and submitted
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.moreh.synchronize()
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, loss

    out = {"profile": profile}
    if args.mode == "plan":
        torch.moreh.option.enable_advanced_parallelization()
        flush_s, _, _ = step()
        search = torch.moreh.option.advanced_parallelization_candidates()
        out.update(flush_ms=flush_s * 1e3, candidates=len(search["candidates"]), compile_ms=search["compile_ms"],
                   cost_ms=search["cost_ms"])
        print(json.dumps(out))
        return
    for _ in range(2):  # the default layout's steps first: AP then searches the steady-state step graph
        step()
    torch.moreh.option.enable_advanced_parallelization()
    step()
    search = torch.moreh.option.advanced_parallelization_candidates()
    rows = []
    for i, c in enumerate(search["candidates"]):
        if c["dropped"] and c.get("dominance") != "slower":  # (a twin without recomputation that fits: run it too)
            continue
        torch.moreh.option.set_parallelism(c["config"])
        for _ in range(args.warmup):
            step()
        times, predicted, peak_ok = [], [], True
        worst_peak = 0
        for _ in range(args.steps):
            torch.moreh.synchronize()
            before = [d["memory_used"] for d in _C._physical_devices()]
            _C._reset_peak_memory_stats()
            _, device_s, _ = step()
            plan = _C._last_plan()
            measured_peak = [d["memory_peak"] for d in _C._physical_devices()]
            predicted_peak = [b + p for b, p in zip(before, plan["peak_bytes"])]
            worst_peak = max(worst_peak, max(abs(m - p) for m, p in zip(measured_peak, predicted_peak)))
            times.append(device_s * 1e3)
            predicted.append(plan["predicted_ms"])
        rows.append({"index": i, "config": c["config"], "selected": c["selected"], "twin": c.get("dominated_by"),
                     "search_predicted_ms": c["step_ms"], "predicted_ms": statistics.median(predicted),
                     "measured_ms": statistics.median(times), "peak_error_bytes": worst_peak})
    out["rows"] = rows
    print(json.dumps(out))


def run(mode, devices, args, config_dir):
    env = dict(os.environ, MOREH_NUM_DEVICES=str(devices), MOREH_CONFIG_DIR=config_dir, MOREH_LOG_LEVEL="warning",
               MOREH_AP_CACHE="0")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--block-size", str(args.block_size),
           "--d-model", str(args.d_model), "--n-layer", str(args.n_layer), "--n-head", str(args.n_head)]
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"worker ({mode}, {devices} devices) failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["plan", "measure"])
    p.add_argument("--mode", default="measure")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--skip-measure", action="store_true", help="only the planning figure")
    args = p.parse_args()
    if args.worker:
        args.mode = args.worker
        worker(args)
        return
    with tempfile.TemporaryDirectory() as config_dir:
        plan = run("plan", 8, args, config_dir)
        print(f"planning, 8 host devices: {plan['candidates']} candidates lowered in {plan['compile_ms']:.0f} ms, "
              f"timed in {plan['cost_ms']:.0f} ms; the step's whole flush {plan['flush_ms']:.0f} ms "
              f"(MoAI: 30 candidates, 6103 + 808 ms); ratio MoAI / moreh = {6911 / plan['flush_ms']:.1f}x")
        if args.skip_measure:
            return
        res = run("measure", 4, args, config_dir)
    prof = res["profile"]
    print(f"host profile: {prof['fp32_flops'] / 1e9:.0f} GFLOP/s fp32, {prof['memory_bytes_per_s'] / 1e9:.1f} GB/s, "
          f"launch {prof['launch_s'] * 1e6:.1f} us, streams 2, 4, 8: speedup {[round(s, 2) for s in prof['stream_speedup']]}, launch us {[round(s * 1e6, 1) for s in prof['stream_launch_s']]}")
    rows = res["rows"]
    print(f"{'#':>3} {'predicted ms':>12} {'measured ms':>12} {'error':>7} {'peak err B':>10}  config")
    errors = []
    for r in rows:
        err = (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"]
        errors.append(abs(err))
        mark = " <- selected" if r["selected"] else (f" (not compiled: #{r['twin']} fits)" if r.get("twin") is not None else "")
        print(f"{r['index']:>3} {r['predicted_ms']:>12.2f} {r['measured_ms']:>12.2f} {err:>+7.1%} "
              f"{r['peak_error_bytes']:>10}  {r['config']}{mark}")
    fastest = min(rows, key=lambda r: r["measured_ms"])
    chosen = next(r for r in rows if r["selected"])
    print(f"median |error| {statistics.median(errors):.1%} over {len(rows)} feasible candidates (target <= 15%)")
    by_index = {r["index"]: r for r in rows}
    pairs = [(r, by_index[r["twin"]]) for r in rows if r.get("twin") is not None and r["twin"] in by_index]
    if pairs:
        faster = [r["index"] for r, t in pairs if r["measured_ms"] < t["measured_ms"]]
        print(f"with recomputation, not compiled by AP: {len(pairs)}; measured faster than their twin without it: "
              f"{len(faster)} {faster if faster else ''}; predicted faster: "
              f"{sum(1 for r, t in pairs if r['predicted_ms'] < t['predicted_ms'])}")
    print(f"selected measured {chosen['measured_ms']:.2f} ms vs fastest measured {fastest['measured_ms']:.2f} ms "
          f"(#{fastest['index']}): ratio {chosen['measured_ms'] / fastest['measured_ms']:.3f} (target <= 1.10)")
    print(f"peak memory: predicted - measured, worst over every step and device: "
          f"{max(r['peak_error_bytes'] for r in rows)} bytes")


if __name__ == "__main__":
    main()
