"""Elementwise fusion on a GPT-2-small-shaped training step: kernel launches per step, planning time and
peak step memory, with fusion against without it in the same process (torch_moreh._C._set_fusion).

The model has GPT-2 small's structure (12 blocks, tied embeddings, GELU-tanh MLP, AdamW with weight decay,
gradient clipping, optionally bf16 autocast) at a width a CPU trains in seconds (d_model 256, vocab 1000,
seq 64): the step graph has GPT-2 small's ops, so its launch counts are GPT-2 small's. On host devices the
fused kernels run on the host evaluator, which is slower than ATen's vectorized CPU kernels: the host step
time printed here is not what fusion is for (bench_gpu_gpt2.py measures that on a GPU).

    python3 bench/bench_fusion.py [--dtype fp32|bf16|both] [--steps 3]
"""
import argparse
import importlib.util
import json
import os
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


def load_model_module():
    spec = importlib.util.spec_from_file_location("bench_gpu_gpt2", os.path.join(HERE, "bench_gpu_gpt2.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure(model_mod, fusion, bf16, args):
    import torch_moreh
    torch_moreh._C._set_fusion(fusion)
    torch.manual_seed(0)
    model = model_mod.GPT(args.vocab, args.seq, args.d_model, args.n_head, 12).to("moreh")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randint(0, args.vocab, (args.batch, args.seq), generator=g).to("moreh"),
             torch.randint(0, args.vocab, (args.batch, args.seq), generator=g).to("moreh")) for _ in range(args.steps)]
    torch.moreh.synchronize()
    losses, times, compile_ms = [], [], []
    misses = torch_moreh._C._stats()["cache_misses"]
    for i, (x, y) in enumerate(data):
        if i == args.steps - 1:  # the steady step: its plan is cached, its memory measured
            torch.moreh.synchronize()
            torch.moreh.reset_peak_memory_stats()
            base = torch.moreh.memory_allocated()
        t = time.perf_counter()
        with torch.autocast(device_type="moreh", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x).view(-1, args.vocab), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(time.perf_counter() - t)
        s = torch_moreh._C._stats()
        if s["cache_misses"] > misses:  # this step compiled a plan (with the fusion pass when on)
            compile_ms.append(s["last_compile_ms"])
            misses = s["cache_misses"]
    s = torch_moreh._C._stats()
    kernels = torch_moreh._C._fused_kernels()
    try:  # what the first step on a GPU adds: NVRTC compiling each fused kernel (no GPU needed here)
        nvrtc_ms = torch_moreh._C._compile_fused_kernels(90) if kernels else []
    except Exception:  # noqa: BLE001 - a build without NVRTC
        nvrtc_ms = None
    out = {"kernels": len(kernels), "max_parameter_bytes": max((k["parameter_bytes"] for k in kernels), default=0),
           "max_kernel_nodes": max((k["nodes"] for k in kernels), default=0),
           "nvrtc_ms_total": sum(nvrtc_ms) if nvrtc_ms else None, "nvrtc_ms_max": max(nvrtc_ms) if nvrtc_ms else None,"ops": s["last_graph_ops"], "launches": s["last_launches"], "fused_ops": s["last_fused_ops"],
           "peak_step_bytes": torch.moreh.max_memory_allocated() - base, "losses": losses,
           "steady_step_s": times[-1], "compile_ms": max(compile_ms, default=0.0)}
    del model, opt, data
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtype", choices=["fp32", "bf16", "both"], default="both")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    import torch_moreh
    model_mod = load_model_module()
    results = {}
    for dtype in (["fp32", "bf16"] if args.dtype == "both" else [args.dtype]):
        bf16 = dtype == "bf16"
        off = measure(model_mod, False, bf16, args)   # the baseline, in this process
        on = measure(model_mod, True, bf16, args)
        loss_diff = max(abs(a - b) / abs(a) for a, b in zip(off["losses"], on["losses"]))
        results[dtype] = {"unfused": off, "fused": on, "launch_ratio": on["launches"] / off["launches"],
                          "peak_ratio": on["peak_step_bytes"] / max(off["peak_step_bytes"], 1),
                          "max_loss_rel_diff": loss_diff}
        print(f"{dtype}: step graph {off['ops']} ops; launches per step {off['launches']} -> {on['launches']} "
              f"(ratio {on['launches'] / off['launches']:.3f}, {on['fused_ops']} ops in fused kernels); "
              f"peak step memory {off['peak_step_bytes'] / 2**20:.1f} -> {on['peak_step_bytes'] / 2**20:.1f} MiB "
              f"(ratio {results[dtype]['peak_ratio']:.3f}); planning {off['compile_ms']:.2f} -> {on['compile_ms']:.2f} ms "
              f"per graph; losses agree to {loss_diff:.1e} relative; "
              f"host step {off['steady_step_s']:.2f} s -> {on['steady_step_s']:.2f} s (host evaluator)", flush=True)
        if on["nvrtc_ms_total"] is not None:
            print(f"{dtype}: {on['kernels']} fused kernels (up to {on['max_kernel_nodes']} ops, "
                  f"{on['max_parameter_bytes']} parameter bytes); NVRTC compiles them for sm_90 in "
                  f"{on['nvrtc_ms_total']:.0f} ms (slowest {on['nvrtc_ms_max']:.0f} ms), once per process", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
