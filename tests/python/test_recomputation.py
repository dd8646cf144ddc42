"""recomputation : 1 (MOREH_PARALLELISM / set_parallelism): activations between the forward pass's checkpoints are
dropped after their last forward use and their nodes run again before the backward pass reads them
(scheduler/lowering/recomputation.cpp). A node runs again only where that gives the same bits, so training
under any layout is bit-identical with and without recomputation, and the peak drops."""
import os
import subprocess
import sys

import pytest

from test_data_parallel import assert_same, bitwise_pair, train

RC = "recomputation : 1"
PP2 = "num_stages : 2, num_micro_batches : 2"
# (kind, devices, layout without recomputation)
CASES = [
    ("gpt:8", 1, ""), ("gpt_dropout:4", 1, ""),  # dropout runs again from its recorded seed: the same mask
    ("gpt_bf16:8", 1, ""), ("gpt_accum:8", 1, ""),  # autocast's casts; two backward passes in a step
    ("gpt2:4", 1, ""), ("llama:4", 1, ""),  # Hugging Face GPT-2 and Llama (GQA, rotary tables)
    ("gpt_dropout:4", 4, "num_stages : 1"), ("gpt_clip:8", 4, "distribute_param : true"),
    ("gpt:8", 4, PP2), ("gpt_ignore:8", 4, PP2 + ", pipeline_schedule : gpipe"),
    ("gpt:8", 4, PP2 + ", distribute_param : true"),  # dp 2 x pp 2, sharded optimizer
    ("llama:4", 2, "num_stages : 1"),
    ("llama:4", 4, PP2), ("mlp_aux:8", 4, PP2),  # a loss summed over micro-batches is not made again
    # bf16 autocast with the optimizer and autocast's copies sharded; 8 devices as dp 4 x pp 2.
    ("gpt_bf16:8", 4, "distribute_param : true, distribute_low_prec_param : true"),
    ("gpt:8", 8, PP2 + ", distribute_param : true"),
]


def ran_again(result):
    with open(result["log_file"]) as f:
        return [line for line in f if "op(s) run again in the backward pass" in line]


@pytest.mark.parametrize("kind,devices,line", CASES, ids=[f"{k}-{d}-{l or 'one'}" for k, d, l in CASES])
def test_recomputation_changes_no_bit(kind, devices, line):
    if kind.startswith(("gpt2", "llama")):
        pytest.importorskip("transformers")
    plain, again = bitwise_pair(dict(kind=kind, devices=devices, parallelism=line or "num_stages : 1"),
                                dict(kind=kind, devices=devices, parallelism=(line + ", " if line else "") + RC))
    assert again["losses"] == plain["losses"]
    for name, p in plain["params"].items():
        assert again["params"][name].equal(p), name
    if not kind.startswith("mlp"):  # the MLP narrows to one value after every layer: little to drop
        assert ran_again(again), "nothing was recomputed"


def test_dp2_pp2_with_distribute_param_and_recomputation_trains_like_one_device():
    ref = train("gpt:8", 1)
    got = train("gpt:8", 4, parallelism=PP2 + ", distribute_param : true, " + RC)
    assert_same(ref, got, rtol=1e-4, atol=1e-4)
    assert ran_again(got)


def test_recomputation_halves_the_example_gpts_peak(tmp_path):
    """One device, the bench's example GPT: the step's peak beyond what the device held before it (the
    activations and the gradients) is predicted exactly and falls by more than half."""
    from test_pipeline_parallel import peaks

    plain = peaks(1, "", tmp_path)
    again = peaks(1, RC, tmp_path)
    assert again["losses"] == plain["losses"]
    assert again["predicted_peak"] == again["measured_peak"], again["summary"]
    assert again["measured_peak"][0] <= 0.5 * plain["measured_peak"][0], (again["summary"], plain["summary"])
    assert "op(s) run again in the backward pass" in again["summary"]
    assert again["recomputed_ops"] > 0 and again["dropped_activation_bytes"] > 0  # torch.moreh.last_plan()
    assert plain["recomputed_ops"] == 0 and plain["dropped_activation_bytes"] == 0


@pytest.mark.parametrize("devices,line", [(4, "num_stages : 1, " + RC), (4, PP2 + ", " + RC),
                                          (4, PP2 + ", distribute_param : true, " + RC)])
def test_the_predicted_peak_is_the_measured_peak_with_recomputation(devices, line, tmp_path):
    from test_pipeline_parallel import peaks

    got = peaks(devices, line, tmp_path)
    assert got["predicted_peak"] == got["measured_peak"], got["summary"]


def test_a_model_too_big_for_the_device_trains_with_recomputation(tmp_path):
    """With each device's memory set below what the example GPT's step needs, the step is refused before it
    runs (OUT_OF_MEMORY, naming the need); recomputation brings the need under the capacity and it trains."""
    here = os.path.dirname(os.path.abspath(__file__))
    bench = os.path.join(here, "..", "..", "bench", "bench_model_parallel.py")

    def run(line):
        env = dict(os.environ, MOREH_NUM_DEVICES="1", MOREH_HOST_MEMORY_CAPACITY="6MiB")
        env.pop("MOREH_PARALLELISM", None)
        if line:
            env["MOREH_PARALLELISM"] = line
        return subprocess.run([sys.executable, bench, "--worker", "--n-layer", "4", "--d-model", "64", "--block-size", "32"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)

    plain = run("")
    assert plain.returncode != 0
    assert "OUT_OF_MEMORY" in plain.stderr or "out of memory" in plain.stderr.lower(), plain.stderr[-2000:]
    again = run(RC)
    assert again.returncode == 0, again.stderr[-3000:]


BIG_MODEL = r"""
import argparse, json, sys, torch
sys.path.insert(0, %r)
from bench_train_step import make, step
cfg = argparse.Namespace(vocab=96, block_size=32, d_model=64, n_head=4, n_layer=4)
g = torch.Generator().manual_seed(0)
data = [(torch.randint(0, 96, (8, 32), generator=g), torch.randint(0, 96, (8, 32), generator=g)) for _ in range(5)]
model, opt = make("moreh", cfg)
losses = [step(model, opt, x, y, "moreh") for x, y in data]
torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, sys.argv[1])
print(json.dumps({"losses": losses, "summary": torch.moreh.last_plan()["summary"]}))
"""


def test_a_model_over_one_devices_capacity_trains_on_four_with_a_layout_chosen_by_hand(tmp_path):
    """Each device's memory set (MOREH_HOST_MEMORY_CAPACITY) below what one device needs for the example GPT
    (parameters, gradients, AdamW state and the step's activations): one device refuses the step before it
    runs; four, as dp 2 x pp 2 with the optimizer sharded and recomputation, train it like one device with
    room, and the state dict they save (taken whole from the stages and the replicas' rows) loads on the
    host as one device's."""
    import json
    import torch

    here = os.path.dirname(os.path.abspath(__file__))
    code = BIG_MODEL % os.path.join(here, "..", "..", "bench")

    def run(devices, capacity=None, line=None):
        env = dict(os.environ, MOREH_NUM_DEVICES=str(devices))
        for k in ("MOREH_PARALLELISM", "MOREH_HOST_MEMORY_CAPACITY"):
            env.pop(k, None)
        if capacity:
            env["MOREH_HOST_MEMORY_CAPACITY"] = capacity
        if line:
            env["MOREH_PARALLELISM"] = line
        out = tmp_path / f"state-{devices}-{capacity}.pt"
        proc = subprocess.run([sys.executable, "-c", code, str(out)], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        return proc, out

    ref, ref_state = run(1)
    assert ref.returncode == 0, ref.stderr[-3000:]
    small, _ = run(1, capacity="4MiB")
    assert small.returncode != 0 and "OUT_OF_MEMORY" in small.stderr, small.stderr[-2000:]
    got, got_state = run(4, capacity="4MiB",
                         line="num_stages : 2, num_micro_batches : 2, distribute_param : true, " + RC)
    assert got.returncode == 0, got.stderr[-3000:]
    want, have = json.loads(ref.stdout.splitlines()[-1]), json.loads(got.stdout.splitlines()[-1])
    assert have["losses"] == pytest.approx(want["losses"], rel=1e-5)
    a, b = torch.load(ref_state, map_location="cpu"), torch.load(got_state, map_location="cpu")
    for name, p in a["model"].items():
        torch.testing.assert_close(b["model"][name], p, rtol=1e-4, atol=1e-4, msg=name)
    for i, st in a["opt"]["state"].items():
        for k, v in st.items():
            torch.testing.assert_close(b["opt"]["state"][i][k], v, rtol=1e-4, atol=1e-4, msg=f"{i}.{k}")


@pytest.mark.parametrize("kind,devices", [("gpt_dropout:4", 1), ("llama:4", 2)])
def test_recomputation_with_elementwise_fusion_trains_alike(kind, devices, monkeypatch, tmp_path):
    """With fusion on (MOREH_FUSION=on, as CUDA devices have it by default), a recomputing plan is fused over
    each device's program as it runs, reruns too, and the fused plan's peak is the one the device reaches.
    Its kernels group the ops otherwise than the plan without recomputation (reruns stand between them), and
    a generated kernel may contract a multiply and an add: the results agree to rounding (as batch splitting's
    do: 1e-4 on the parameters), not always to the bit."""
    if kind.startswith("llama"):
        pytest.importorskip("transformers")
    monkeypatch.setenv("MOREH_FUSION", "on")
    plain = train(kind, devices, parallelism="num_stages : 1")
    again = train(kind, devices, parallelism="num_stages : 1, " + RC)
    # Seen: losses within 1e-7, parameters within 4e-5 (AdamW's normalised steps carry a last-bit difference of
    # a small gradient), where the kernels were compiled in another order; bit for bit where they were not.
    assert_same(plain, again, loss_rel=1e-5, rtol=1e-4, atol=1e-4)
    with open(again["log_file"]) as f:
        log = f.read()
    assert "op(s) run again in the backward pass" in log, log[-3000:]
    from test_pipeline_parallel import peaks

    got = peaks(1, RC, tmp_path)
    assert got["predicted_peak"] == got["measured_peak"], got["summary"]
    assert "once fused" in got["summary"]
