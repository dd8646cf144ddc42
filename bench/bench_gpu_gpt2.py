"""GPT-2 small training steps: native PyTorch eager on a GPU ("cuda") against moreh, in one process.

The same model (GPT-2 small: 12 layers, d_model 768, 12 heads, 1024 tokens, vocab 50257, tied LM head,
124M parameters, dropout 0, F.scaled_dot_product_attention), the same initial weights and the same
batches run as AdamW training steps (gradient clipping at 1.0) on the baseline device and on
torch.device("moreh"), in fp32 and under bf16 autocast. For each: warm-up steps, then timed steady-state
steps between two synchronizations (torch.cuda.synchronize() / torch.moreh.synchronize()), giving
tokens/s, the ratio moreh/native (target >= 1.0) and the model FLOPs utilization (MFU) of each against a
bf16 matmul peak measured here (8192^3 torch.matmul on the baseline device, 3 warm-ups, mean of 10).

FLOPs per token (the usual training estimate, as in the PaLM paper's MFU):
    6 * N  +  12 * n_layer * d_model * seq
N counts every parameter that multiplies a token's activations: all parameters except the position
embedding (the token embedding is counted once, as the tied LM head's matmul; its lookup is free).
6N = 2N forward + 4N backward. The attention term is QK^T and attention x V: 2 * 2 * seq * d_model FLOPs
per token and layer forward, times 3 with the backward; it counts the full seq x seq score matrix even
though the causal mask lets flash attention skip half of it (so MFU reads slightly high, for both runs
alike). fp32 runs are also measured against the bf16 peak, so their MFU reads low.

Batches are staged on each device before the steps (the timed loop measures training, not host copies).
moreh is loaded with `import torch_moreh` inside a try (the bench turns off the autoload at `import
torch`), then run in this order: matmul peak, every native run, every moreh run, so that the native
numbers are printed (and written to --json) even if moreh fails to start or run; a moreh exception is
printed and recorded. When
moreh's steps would take longer than --moreh-budget-s (e.g. moreh on host devices), its warm-up and timed
steps are cut to fit and the JSON says so.

    python3 bench/bench_gpu_gpt2.py                              # on the GPU machine: fp32 and bf16
    python3 bench/bench_gpu_gpt2.py --tiny --baseline-device cpu # a smoke test on a machine without a GPU

--profile N adds N steps under torch.profiler after each run's timed steps (bench/gpu_profile.py): GPU busy
time per step against the profiled step's wall time, kernels and copies per step, the calls that made the
host wait for the GPU, and the costliest kernels; which says whether a run is bound by the GPU or the host.
"""
import argparse
import copy
import gc
import json
import math
import os
import platform
import sys
import time
import traceback

# moreh is loaded by `import torch_moreh` in main(), inside a try, not by `import torch`: a moreh that fails
# to start then cannot take the native numbers with it. It must still load before the first backward pass
# (PyTorch's autograd engine sizes its per-device queues then; a device registered later fails an
# internal assert in engine.cpp), so it is loaded before the native runs, and its engine sits idle during them.
os.environ["TORCH_DEVICE_BACKEND_AUTOLOAD"] = "0"

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

CONFIGS = {
    "gpt2-small": dict(n_layer=12, d_model=768, n_head=12, seq=1024, vocab=50257, batch=8),
    "tiny": dict(n_layer=2, d_model=128, n_head=4, seq=128, vocab=1024, batch=4),
}


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model, n_head):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, d_model, n_head):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, seq, d_model, n_head, n_layer):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied, as in GPT-2
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("proj.weight") or name.endswith("out.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx):
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def synchronize(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device.startswith("moreh"):
        torch.moreh.synchronize()


def measure_peak(device, n, warmup=3, iters=10):
    """Mean TFLOP/s of an n x n x n bf16 matmul on random data."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=torch.bfloat16)
    for _ in range(warmup):
        torch.matmul(a, b)
    synchronize(device)
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            torch.matmul(a, b)
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1e3 / iters
    else:
        t = time.perf_counter()
        for _ in range(iters):
            torch.matmul(a, b)
        synchronize(device)
        seconds = (time.perf_counter() - t) / iters
    del a, b
    return 2 * n ** 3 / seconds / 1e12


def moreh_stats():
    try:
        return torch.moreh.graph_stats()
    except Exception:  # noqa: BLE001
        return None


def run(device, dtype, base_model, batches, cfg, args, budget_s=None):
    """Trains a copy of base_model on `device`; returns a dict of timings and losses."""
    dev_type = torch.device(device).type
    bf16 = dtype == "bf16"
    if dev_type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_setup = time.perf_counter()
    model = copy.deepcopy(base_model).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    data = [(x.to(device), y.to(device)) for x, y in batches]
    synchronize(device)
    setup_s = time.perf_counter() - t_setup

    def step(x, y):
        with torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    losses = []
    t_run = t = time.perf_counter()
    losses.append(step(*data[0]))
    synchronize(device)
    first_step_s = time.perf_counter() - t
    last_warmup_s = first_step_s
    warmup = args.warmup
    for i in range(1, args.warmup):
        if budget_s is not None and time.perf_counter() - t_run > budget_s / 2:
            warmup = i  # slow steps: keep the rest of the budget for timed steps
            break
        t = time.perf_counter()
        losses.append(step(*data[i]))
        synchronize(device)
        last_warmup_s = time.perf_counter() - t

    steps, note = args.steps, None
    left = None if budget_s is None else budget_s - (time.perf_counter() - t_run)
    if left is not None and last_warmup_s * steps > left:
        steps = max(1, int(left / last_warmup_s))
        note = (f"{warmup} warm-up and {steps} timed steps instead of {args.warmup} and {args.steps}: a warm-up "
                f"step took {last_warmup_s:.1f} s and the run's budget is {budget_s:.1f} s")
        print(f"  [{device} {dtype}] {note}", flush=True)

    stats0 = moreh_stats() if dev_type == "moreh" else None
    synchronize(device)
    t = time.perf_counter()
    for i in range(warmup, warmup + steps):
        losses.append(step(*data[i]))
    synchronize(device)
    elapsed = time.perf_counter() - t
    stats1 = moreh_stats() if dev_type == "moreh" else None

    tokens = cfg["batch"] * cfg["seq"] * steps
    out = {
        "device": device, "dtype": dtype, "ok": True, "timed_steps": steps, "warmup_steps": warmup,
        "setup_s": setup_s, "first_step_s": first_step_s, "last_warmup_step_s": last_warmup_s,
        "step_s": elapsed / steps, "tokens_per_s": tokens / elapsed,
        "losses": [float(v) for v in torch.stack([v.float().cpu() for v in losses]).tolist()],
    }
    if note:
        out["note"] = note
    if dev_type == "cuda":
        out["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    if stats1:
        out["moreh_graph"] = {k: stats1.get(k) for k in ("last_graph_ops", "last_launches", "last_fused_ops", "fusion")}
    if stats0 and stats1:
        # Counters only (the last_* entries describe one graph, pending_ops is a level).
        out["moreh_per_step"] = {k: (stats1[k] - stats0[k]) / steps for k in stats1
                                 if isinstance(stats1[k], (int, float)) and k in stats0
                                 and not k.startswith("last_") and k != "pending_ops"}
    if args.profile:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import gpu_profile

        try:  # the timings above stand even if the profiler cannot run here
            out["profile"] = gpu_profile.profile_steps(step, data, args.profile, lambda: synchronize(device))
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            out["profile_error"] = f"{type(e).__name__}: {e}"
    del model, opt, data, losses
    gc.collect()
    if dev_type == "cuda":
        torch.cuda.empty_cache()
    return out


def rel(a, b):
    return abs(a - b) / max(abs(a), 1e-12)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default 8; --tiny: 4)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="warm-up steps (the first compiles moreh's plan)")
    p.add_argument("--dtype", choices=["fp32", "bf16", "both"], default="both")
    p.add_argument("--tiny", action="store_true", help="a small model (2 layers, d 128, seq 128, vocab 1024)")
    p.add_argument("--baseline-device", default="cuda", help="native eager device: cuda (default) or cpu")
    p.add_argument("--no-moreh", action="store_true", help="only the native runs")
    p.add_argument("--moreh-budget-s", type=float, default=None,
                   help="fit each moreh run's warm-up and timed steps into about this many seconds (fewer steps)")
    p.add_argument("--moreh-unfused", action="store_true",
                   help="also run moreh with elementwise fusion off (row moreh-nf): fusion's own effect, same process")
    p.add_argument("--peak-size", type=int, default=None, help="matmul size for the peak (default 8192; cpu 1024)")
    p.add_argument("--tf32", action="store_true", help="let native fp32 matmuls use TF32 (PyTorch's default: off)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after each run's timed steps, N steps under torch.profiler: GPU busy time, kernels, syncs")
    p.add_argument("--json", default=None, help="write the results here (rewritten after every run)")
    p.add_argument("--moreh-load-error", default=None, help=argparse.SUPPRESS)  # set by the re-run without moreh
    p.add_argument("--only-moreh", action="store_true", help=argparse.SUPPRESS)  # the child process's part
    p.add_argument("--peak-tflops", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    # PyTorch's autograd engine takes one accelerator per process: with moreh (PrivateUse1) loaded, backward on
    # native CUDA tensors fails an internal assert (torch 2.11). So the native runs happen here without moreh,
    # and moreh's runs in a child process of this one (same arguments, same seed and data), whose results are
    # merged into this run's table and JSON.
    child_argv = [a for a in sys.argv[1:]]
    spawn_moreh = not args.no_moreh and not args.only_moreh and args.baseline_device.startswith("cuda")
    if spawn_moreh:
        args.no_moreh = True
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be at least 1")
    if args.profile < 0:
        p.error("--profile must be 0 (off) or a number of steps")

    cfg = dict(CONFIGS["tiny" if args.tiny else "gpt2-small"])
    if args.batch:
        cfg["batch"] = args.batch
    base = args.baseline_device
    if base.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device here: use --baseline-device cpu (with --tiny)")
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    dtypes = ["fp32", "bf16"] if args.dtype == "both" else [args.dtype]

    if not args.no_moreh:
        try:
            import torch_moreh  # noqa: F401  starts moreh's engine (devices: MOREH_DEVICE_KIND, MOREH_NUM_DEVICES)
        except Exception as e:  # noqa: BLE001
            # A half-loaded backend (PrivateUse1 hooks registered, no torch.moreh) breaks torch.optim on every
            # device, so the native runs go on in a fresh process without moreh, which records this error.
            traceback.print_exc()
            print("moreh failed to load: running the native part again without it", flush=True)
            sys.stdout.flush()
            os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--no-moreh",
                                      "--moreh-load-error", f"{type(e).__name__}: {e}"])

    torch.manual_seed(0)
    model = GPT(cfg["vocab"], cfg["seq"], cfg["d_model"], cfg["n_head"], cfg["n_layer"])
    n_params = sum(p.numel() for p in model.parameters())  # tied weight counted once
    n_matmul = n_params - model.pos.weight.numel()
    flops_per_token = 6 * n_matmul + 12 * cfg["n_layer"] * cfg["d_model"] * cfg["seq"]
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.warmup + args.steps):
        ids = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"] + 1), generator=g)
        batches.append((ids[:, :-1].contiguous(), ids[:, 1:].contiguous()))

    result = {
        "model": ("tiny" if args.tiny else "gpt2-small"), "config": cfg, "params": n_params,
        "params_in_flops": n_matmul, "flops_per_token": flops_per_token,
        "flops_formula": "6*N + 12*n_layer*d_model*seq, N = parameters except the position embedding",
        "tokens_per_step": cfg["batch"] * cfg["seq"], "optimizer": "AdamW lr 3e-4 wd 0.1, clip_grad_norm 1.0",
        "baseline_device": base, "tf32": bool(args.tf32),
        "env": {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                "host": platform.node(), "MOREH_DEVICE_KIND": os.environ.get("MOREH_DEVICE_KIND"),
                "MOREH_NUM_DEVICES": os.environ.get("MOREH_NUM_DEVICES")},
        "runs": [], "errors": [], "warnings": [],
    }
    if args.moreh_load_error:
        result["errors"].append(f"moreh unavailable: {args.moreh_load_error}")
    if base.startswith("cuda"):
        result["env"]["gpu"] = torch.cuda.get_device_name(0)

    def save():
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)

    print(f"model: {result['model']} {cfg['n_layer']} layers, d_model {cfg['d_model']}, {cfg['n_head']} heads, "
          f"seq {cfg['seq']}, vocab {cfg['vocab']}: {n_params / 1e6:.1f}M parameters; batch {cfg['batch']} "
          f"({result['tokens_per_step']} tokens/step); {flops_per_token / 1e9:.3f} GFLOP/token; AdamW; "
          f"{args.warmup} warm-up + {args.steps} timed steps", flush=True)

    peak_n = args.peak_size or (8192 if base.startswith("cuda") else 1024)
    peak = args.peak_tflops if args.peak_tflops else measure_peak(base, peak_n)
    result["peak_tflops"] = peak
    result["peak_how"] = f"bf16 torch.matmul {peak_n}^3 on {base}, random data, 3 warm-ups, mean of 10"
    print(f"peak: {peak:.1f} TFLOP/s ({result['peak_how']})", flush=True)
    save()

    def record(r):
        if r.get("ok"):
            r["mfu"] = r["tokens_per_s"] * flops_per_token / (peak * 1e12)
            print(f"  {r['device']:>6} {r['dtype']}: {r['step_s'] * 1e3:9.1f} ms/step  {r['tokens_per_s']:10.0f} tokens/s  "
                  f"MFU {r['mfu'] * 100:5.1f}%  first step {r['first_step_s'] * 1e3:.0f} ms  loss@1 {r['losses'][0]:.4f}",
                  flush=True)
            if r.get("profile"):
                import gpu_profile

                print("    profile: " + gpu_profile.describe(r["profile"]).replace("\n", "\n    "), flush=True)
        result["runs"].append(r)
        save()

    for dtype in dtypes if not args.only_moreh else []:
        try:
            record(run(base, dtype, model, batches, cfg, args))
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            result["errors"].append(f"{base} {dtype}: {type(e).__name__}: {e}")
            record({"device": base, "dtype": dtype, "ok": False, "error": f"{type(e).__name__}: {e}"})

    if not args.no_moreh:
        try:
            torch.device("moreh")
            phys = torch.moreh.physical_devices()
            result["env"]["moreh_physical_devices"] = [d.get("name") for d in phys]
            result["env"]["moreh_flavor"] = list(torch.moreh.flavor())
            print(f"moreh: {len(phys)} physical device(s): {', '.join(str(d.get('name')) for d in phys)}", flush=True)
            if base.startswith("cuda") and all(str(d.get("name", "")).startswith("host") for d in phys):
                print("  WARNING: moreh runs on host (CPU) devices, not on the GPU (is MOREH_DEVICE_KIND=cuda "
                      "implemented in this build?): its numbers are CPU numbers", flush=True)
                result["warnings"].append("moreh ran on host devices, not the GPU")
            moreh_ok = True
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            result["errors"].append(f"moreh unavailable: {type(e).__name__}: {e}")
            moreh_ok = False
        variants = [("moreh", None)] + ([("moreh-nf", False)] if args.moreh_unfused else [])
        for dtype in dtypes if moreh_ok else []:
            for label, fusion in variants:
                import torch_moreh
                fusion_before = torch_moreh._C._stats()["fusion"]  # MOREH_FUSION's choice for this device
                try:
                    if fusion is not None:
                        torch_moreh._C._set_fusion(fusion)
                    r = run("moreh", dtype, model, batches, cfg, args, budget_s=args.moreh_budget_s)
                    r["device"] = label
                    record(r)
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    result["errors"].append(f"{label} {dtype}: {type(e).__name__}: {e}")
                    record({"device": label, "dtype": dtype, "ok": False, "error": f"{type(e).__name__}: {e}"})
                finally:
                    torch_moreh._C._set_fusion(fusion_before)

    if spawn_moreh:
        import subprocess
        import tempfile
        child_json = os.path.join(tempfile.mkdtemp(prefix="bench-moreh-"), "moreh.json")
        cmd = [sys.executable, os.path.abspath(__file__), *child_argv, "--only-moreh", "--peak-tflops", str(peak),
               "--json", child_json]
        print(f"moreh runs in a child process: {' '.join(cmd[1:])}", flush=True)
        rc = subprocess.call(cmd)
        if os.path.exists(child_json):
            with open(child_json) as f:
                child = json.load(f)
            for r in child.get("runs", []):
                if r.get("device", "").startswith("moreh"):
                    result["runs"].append(r)
            result["errors"] += child.get("errors", [])
            result["warnings"] += child.get("warnings", [])
            for k in ("moreh_physical_devices", "moreh_flavor"):
                if k in child.get("env", {}):
                    result["env"][k] = child["env"][k]
        if rc != 0:
            result["errors"].append(f"the moreh child process exited with {rc}")
        save()

    # Comparison.
    by = {(r["device"], r["dtype"]): r for r in result["runs"]}
    result["comparison"] = {}
    print()
    print(f"{'dtype':<5} {'device':<7} {'ms/step':>9} {'tokens/s':>10} {'MFU':>6} {'first ms':>9} {'loss@1':>8}")
    for dtype in dtypes:
        for dev in (base, "moreh", "moreh-nf"):
            r = by.get((dev, dtype))
            if r is None:
                continue
            if not r["ok"]:
                print(f"{dtype:<5} {dev:<7} FAILED: {r['error'][:100]}")
                continue
            print(f"{dtype:<5} {dev:<7} {r['step_s'] * 1e3:9.1f} {r['tokens_per_s']:10.0f} {r['mfu'] * 100:5.1f}% "
                  f"{r['first_step_s'] * 1e3:9.0f} {r['losses'][0]:8.4f}" + (" *" if r.get("note") else ""))
    for dtype in dtypes:
        a, b = by.get((base, dtype)), by.get(("moreh", dtype))
        if a and b and a["ok"] and b["ok"]:
            n = min(len(a["losses"]), len(b["losses"]))
            c = {"ratio_tokens_per_s": b["tokens_per_s"] / a["tokens_per_s"],
                 "first_loss_rel_diff": rel(a["losses"][0], b["losses"][0]),
                 "max_loss_rel_diff": max(rel(x, y) for x, y in zip(a["losses"][:n], b["losses"][:n])),
                 "steps_compared": n}
            result["comparison"][dtype] = c
            print(f"{dtype}: moreh/{base} tokens/s = {c['ratio_tokens_per_s']:.3f} (target >= 1.0); loss at step 1: "
                  f"relative difference {c['first_loss_rel_diff']:.2e}, largest over {n} steps {c['max_loss_rel_diff']:.2e}")
    for dtype in dtypes:
        a, b = by.get(("moreh-nf", dtype)), by.get(("moreh", dtype))
        if a and b and a["ok"] and b["ok"]:
            result["comparison"].setdefault(dtype, {})["fusion_speedup"] = b["tokens_per_s"] / a["tokens_per_s"]
            print(f"{dtype}: moreh with fusion / without: tokens/s = {b['tokens_per_s'] / a['tokens_per_s']:.3f}")
    for r in result["runs"]:
        g = r.get("moreh_graph")
        if g and g.get("last_graph_ops"):
            print(f"{r['device']} {r['dtype']} step graph: {g['last_graph_ops']} ops, {g['last_launches']} launches "
                  f"({g['last_fused_ops']} ops in fused kernels; fusion {'on' if g['fusion'] else 'off'})")
        m = r.get("moreh_per_step")
        if m:
            print(f"{r['device']} {r['dtype']} per timed step: {m.get('recorded_ops', 0):.0f} recorded ops, "
                  f"{m.get('eager_ops', 0):.0f} eager (flush) ops, {m.get('flushes', 0):.1f} step graphs, "
                  f"plan cache {m.get('cache_hits', 0):.1f} hits / {m.get('cache_misses', 0):.1f} misses, "
                  f"replay on the host {m.get('replay_host_ms', 0):.1f} ms; blocks from moreh's pool "
                  f"{m.get('device_allocations', 0):.0f}, kernel results adopted {m.get('device_adoptions', 0):.0f} "
                  f"(a result in another layout than recorded is copied into a pool block)")
    for r in result["runs"]:
        pr = r.get("profile")
        if pr:
            gpu = (f"GPU busy {pr['gpu_busy_ms']:.1f} ms of {pr.get('wall_ms', 0):.1f} ms, {pr['kernels']:.0f} kernels"
                   if pr["gpu_events"] else f"no GPU events, {pr.get('wall_ms', 0):.1f} ms")
            print(f"{r['device']} {r['dtype']} profiled step: {gpu}, "
                  f"{sum(pr['synchronizing_calls'].values()):g} synchronizing calls")
    if any(r.get("note") for r in result["runs"]):
        print("* timed steps cut to the budget (see the run's note)")
    print(f"peak {peak:.1f} TFLOP/s; FLOPs/token = 6*N + 12*n_layer*d_model*seq = {flops_per_token:.4g}")
    for kind in ("warnings", "errors"):
        if result[kind]:
            print(f"{kind}:\n  " + "\n  ".join(result[kind]))
    save()
    if args.json:
        print(f"json: {args.json}")
    # Non-zero when any run failed or moreh could not be used, so that tools/gpu-check.sh reports it.
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
