"""Where a training step's time goes on a GPU: a few steps under torch.profiler, summed per step.

The question it answers is whether a step is bound by the GPU (its kernels keep it busy for about the whole
step) or by the host (the GPU waits between launches), and which kernels and which synchronizing calls
account for the difference between two runs (native eager and moreh) of the same model.

The summary is computed from plain event tuples, so it is the same for torch.profiler's events and for the
tests' hand-made ones:

    (name, on_gpu, start_ns, duration_ns)

GPU events are kernels, memory copies ("Memcpy ...") and memsets ("Memset ..."); host events are ATen
ops and, with a GPU, the CUDA runtime and driver calls CUPTI reports ("cudaLaunchKernel",
"cudaStreamSynchronize", "cuLaunchKernel", ...).
"""
import time

# Host calls that wait for the GPU: each one drains the device's queue, so the host stops running ahead.
SYNCHRONIZING_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
                       "cudaMemcpy2D", "cuStreamSynchronize", "cuCtxSynchronize", "cuEventSynchronize", "cuMemcpy",
                       "cuMemcpyDtoH_v2", "cuMemcpyHtoD_v2")
LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                "cudaGraphLaunch", "cuGraphLaunch")


def busy_ns(intervals):
    """Length of the union of [start, start + duration) intervals: GPU time with something running."""
    total, end = 0, None
    for start, dur in sorted(intervals):
        stop = start + dur
        if end is None or start >= end:
            total += dur
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def summarize(events, steps, top=12, wall_s=None):
    """Per-step figures from (name, on_gpu, start_ns, duration_ns) events of `steps` steps."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    gpu = [e for e in events if e[1]]
    host = [e for e in events if not e[1]]
    kernels = [e for e in gpu if not e[0].startswith(("Memcpy", "Memset"))]
    copies = [e for e in gpu if e[0].startswith("Memcpy")]
    out = {
        "steps": steps,
        "gpu_events": len(gpu) > 0,
        "gpu_busy_ms": busy_ns((e[2], e[3]) for e in gpu) / 1e6 / steps,
        "kernel_ms": sum(e[3] for e in kernels) / 1e6 / steps,
        "kernels": len(kernels) / steps,
        "copies": len(copies) / steps,
        "copy_ms": sum(e[3] for e in copies) / 1e6 / steps,
    }
    if gpu:
        out["gpu_span_ms"] = (max(e[2] + e[3] for e in gpu) - min(e[2] for e in gpu)) / 1e6 / steps
    if wall_s is not None:
        out["wall_ms"] = wall_s * 1e3 / steps
        if gpu:
            out["gpu_busy_fraction"] = out["gpu_busy_ms"] / out["wall_ms"] if out["wall_ms"] > 0 else 0.0
    syncs, launch_calls, launch_ns = {}, 0, 0
    for name, _, _, dur in host:
        if name in SYNCHRONIZING_CALLS:
            syncs[name] = syncs.get(name, 0) + 1
        elif name in LAUNCH_CALLS:
            launch_calls += 1
            launch_ns += dur
    out["synchronizing_calls"] = {k: v / steps for k, v in sorted(syncs.items())}
    out["launch_calls"] = launch_calls / steps
    out["launch_call_us"] = launch_ns / 1e3 / launch_calls if launch_calls else 0.0
    per_kernel = {}
    for name, _, _, dur in kernels:
        n, t = per_kernel.get(name, (0, 0))
        per_kernel[name] = (n + 1, t + dur)
    ranked = sorted(per_kernel.items(), key=lambda kv: -kv[1][1])[:top]
    out["top_kernels"] = [[name[:120], n / steps, t / 1e6 / steps] for name, (n, t) in ranked]
    return out


def profiler_events(prof):
    """(name, on_gpu, start_ns, duration_ns) for each event of a finished torch.profiler run."""
    from torch.autograd import DeviceType

    events = []
    for e in prof.profiler.kineto_results.events():
        on_gpu = e.device_type() == DeviceType.CUDA
        events.append((e.name(), on_gpu, e.start_ns(), e.duration_ns()))
    return events


def profile_steps(step, batches, steps, synchronize):
    """Runs `steps` calls of step(x, y) under torch.profiler (CUDA activity where there is a GPU); the
    per-step summary, with the wall time of the profiled steps (the profiler slows the host: compare
    GPU busy time with GPU busy time, not with an unprofiled run's step time)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    synchronize()
    with profile(activities=activities) as prof:
        t = time.perf_counter()
        for i in range(steps):
            step(*batches[i % len(batches)])
        synchronize()
        wall_s = time.perf_counter() - t
    return summarize(profiler_events(prof), steps, wall_s=wall_s)


def describe(p):
    """One paragraph for a run's log."""
    lines = []
    if p["gpu_events"]:
        lines.append(f"GPU busy {p['gpu_busy_ms']:.1f} ms of {p.get('wall_ms', 0):.1f} ms per profiled step "
                     f"({p.get('gpu_busy_fraction', 0) * 100:.0f} %); {p['kernels']:.0f} kernels "
                     f"({p['kernel_ms']:.1f} ms), {p['copies']:.0f} copies ({p['copy_ms']:.2f} ms)")
    else:
        lines.append(f"no GPU events ({p.get('wall_ms', 0):.1f} ms per profiled step)")
    syncs = ", ".join(f"{k} {v:g}" for k, v in p["synchronizing_calls"].items()) or "none"
    lines.append(f"synchronizing calls per step: {syncs}; launch calls {p['launch_calls']:.0f} "
                 f"({p['launch_call_us']:.1f} us each)")
    for name, n, ms in p["top_kernels"][:8]:
        lines.append(f"  {ms:7.2f} ms {n:6.0f}x  {name[:90]}")
    return "\n".join(lines)
