"""bench/gpu_profile.py: the per-step summary the GPU benchmark prints (GPU busy time, kernels, syncs)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import gpu_profile  # noqa: E402


def test_busy_time_counts_overlapping_work_once():
    assert gpu_profile.busy_ns([]) == 0
    assert gpu_profile.busy_ns([(0, 10), (5, 10), (20, 5)]) == 20  # [0,15) and [20,25)
    assert gpu_profile.busy_ns([(20, 5), (0, 30)]) == 30  # unsorted, one inside another
    assert gpu_profile.busy_ns([(0, 10), (10, 10)]) == 20  # touching


def test_summary_per_step():
    ms = 1_000_000
    events = [
        # step 1: two kernels overlapping by 1 ms, a copy; step 2: the same kernels back to back
        ("gemm", True, 0, 4 * ms), ("add", True, 3 * ms, 2 * ms), ("Memcpy HtoD (Pageable -> Device)", True, 6 * ms, ms),
        ("gemm", True, 10 * ms, 4 * ms), ("add", True, 14 * ms, 2 * ms),
        ("cudaLaunchKernel", False, 0, 5000), ("cudaLaunchKernel", False, 1, 7000), ("cuLaunchKernel", False, 2, 3000),
        ("cudaStreamSynchronize", False, 9, 100), ("cudaStreamSynchronize", False, 19, 100), ("cudaMemcpy", False, 5, 1),
        ("aten::add", False, 3, 10),
    ]
    s = gpu_profile.summarize(events, steps=2, wall_s=0.020)
    assert s["gpu_events"]
    assert s["gpu_busy_ms"] == pytest.approx((5 + 1 + 6) / 2)
    assert s["kernel_ms"] == pytest.approx((4 + 2 + 4 + 2) / 2)
    assert s["kernels"] == 2 and s["copies"] == 0.5 and s["copy_ms"] == pytest.approx(0.5)
    assert s["gpu_span_ms"] == pytest.approx(16 / 2)
    assert s["wall_ms"] == pytest.approx(10) and s["gpu_busy_fraction"] == pytest.approx(0.6)
    assert s["synchronizing_calls"] == {"cudaMemcpy": 0.5, "cudaStreamSynchronize": 1}
    assert s["launch_calls"] == 1.5 and s["launch_call_us"] == pytest.approx(5)
    assert s["top_kernels"] == [["gemm", 1, 4], ["add", 1, 2]]
    text = gpu_profile.describe(s)
    assert "GPU busy 6.0 ms of 10.0 ms" in text and "cudaStreamSynchronize 1" in text and "gemm" in text


def test_summary_without_a_gpu_and_bad_step_counts():
    s = gpu_profile.summarize([("aten::mm", False, 0, 10)], steps=1, wall_s=0.001)
    assert not s["gpu_events"] and s["gpu_busy_ms"] == 0 and "gpu_busy_fraction" not in s
    assert "no GPU events" in gpu_profile.describe(s)
    with pytest.raises(ValueError):
        gpu_profile.summarize([], steps=0)


def test_profiling_steps_with_this_torch():
    # The profiler API the benchmark reads (kineto events) as installed here: a CPU run of two steps.
    w = torch.randn(16, 16, requires_grad=True)
    calls = []

    def step(x, y):
        calls.append(1)
        ((x @ w - y) ** 2).sum().backward()

    batches = [(torch.randn(4, 16), torch.randn(4, 16))]
    s = gpu_profile.profile_steps(step, batches, 2, lambda: None)
    assert len(calls) == 2 and s["steps"] == 2 and s["wall_ms"] > 0
    assert not s["gpu_events"]  # CPU tensors only, even where there is a GPU
