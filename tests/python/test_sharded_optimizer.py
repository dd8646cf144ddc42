"""distribute_param : true (MOREH_PARALLELISM / set_parallelism) over batch splitting: ZeRO-2 on N host devices.
A gradient that only the optimizer reads is reduce-scattered, each device updates its rows of every parameter
and keeps its rows of the optimizer state, and the parameters are all-gathered after the update
(scheduler/lowering/optimizer_sharding.cpp). The updates are elementwise, so training matches one device as
batch splitting does: losses to 1e-5, parameters to 1e-4 under AdamW and 1e-5 under SGD."""
import pytest
import torch

from test_data_parallel import assert_same, bitwise_pair, train

ZERO = "distribute_param : true"
PP2 = "num_stages : 2, num_micro_batches : 2, "
CASES = [
    ("mlp:8", 2, ZERO, 1e-5), ("mlp:5", 4, ZERO, 1e-5),  # SGD with momentum (the momentum buffer is the state)
    ("gpt:8", 4, ZERO, 1e-4), ("gpt_accum:8", 4, ZERO, 1e-4), ("gpt_clip:8", 4, ZERO, 1e-4), ("gpt:8", 8, ZERO, 1e-4),
    ("llama:4", 4, ZERO, 1e-4),
    # With pipeline stages: each stage's replicas shard their stage's optimizer (dp 2 x pp 2, dp 2 x pp 4).
    ("gpt:8", 4, PP2 + ZERO, 1e-4), ("gpt_clip:8", 4, PP2 + ZERO, 1e-4), ("mlp:8", 4, PP2 + ZERO, 1e-5),
    ("gpt:8", 8, "num_stages : 4, num_micro_batches : 4, " + ZERO, 1e-4),
]


@pytest.mark.parametrize("kind,devices,line,tol", CASES,
                         ids=[f"{k}-{d}-{'pp' if 'stages' in l else 'dp'}" for k, d, l, _ in CASES])
def test_sharded_optimizer_trains_like_one_device(kind, devices, line, tol):
    if kind.startswith("llama"):
        pytest.importorskip("transformers")
    ref, got = train(kind, 1), train(kind, devices, parallelism=line)
    assert_same(ref, got, rtol=tol, atol=tol)
    # The state a state dict gives is the whole tensor, as one device's.
    assert ref["opt_state"].keys() == got["opt_state"].keys()
    for name, want in ref["opt_state"].items():
        assert got["opt_state"][name].shape == want.shape, name
        assert (got["opt_state"][name] - want).abs().max().item() <= 10 * tol, name
    with open(got["log_file"]) as f:
        log = f.read()
    replicas = devices // (int(line.split("num_stages : ")[1].split(",")[0]) if "num_stages" in line else 1)
    assert f"optimizer sharded over the {replicas} replicas" in log
    assert "distribute_param : true" in log  # the chosen layout's line


def state_bytes(result):
    return sum(t.numel() * t.element_size() for t in result["opt_state"].values() if t.dim() > 0)


def test_each_device_holds_a_share_of_the_optimizer_state():
    """Right after the second optimizer step (parameters, gradients and AdamW state held; the training loop
    reads the loss between backward() and step(), so the update is a step of its own): with 4 replicas each
    holds a quarter of all three. The parameters are gathered whole at the next forward pass."""
    plain = train("gpt:8", 4)
    zero = train("gpt:8", 4, parallelism="distribute_param : true")
    params = sum(p.numel() * p.element_size() for p in plain["params"].values())
    state = state_bytes(plain)
    held_plain = [d["memory_used"] for d in plain["devices_after_step_2"]]
    held_zero = [d["memory_used"] for d in zero["devices_after_step_2"]]
    # Batch splitting: parameters, gradients and state on every device.
    assert all(h >= params + params + state for h in held_plain), (held_plain, params, state)
    # Sharded: at most 30% of that on each device (a quarter, and a few bytes of scalars).
    for h in held_zero:
        assert h <= 0.3 * (params + params + state), (held_zero, params, state)


def test_changing_distribute_param_between_steps_keeps_training(tmp_path):
    """The state left in rows by a sharded step is gathered when the next layout wants it whole, and
    sharded again after."""
    from test_pipeline_parallel import switching_layouts_trains_like_one_device

    switching_layouts_trains_like_one_device(tmp_path, 4, "distribute_param : true",
                                             {2: "distribute_param : false", 4: "distribute_param : true"})


def test_the_predicted_peak_is_the_measured_peak(tmp_path):
    """The memory model counts the reduce-scatters, the rows each device keeps and the all-gathers: each
    device's predicted peak for the bench's GPT step (AdamW, clip_grad_norm_) is what it measures."""
    from test_pipeline_parallel import peaks

    got = peaks(4, "distribute_param : true", tmp_path)
    assert got["predicted_peak"] == got["measured_peak"], got["summary"]
    assert "optimizer sharded over the 4 replicas" in got["summary"]


@pytest.mark.parametrize("kind", ["gpt_bf16:8", "convnet:8"])
def test_sharding_the_optimizer_changes_no_bit_of_batch_splitting(kind):
    """The updates are elementwise and the reduce-scatter sums as the all-reduce does: under bf16 autocast,
    and with batch norm (whose running statistics are buffers, not optimizer state), the sharded optimizer
    trains exactly as plain batch splitting does."""
    plain, zero = bitwise_pair(dict(kind=kind, devices=4), dict(kind=kind, devices=4, parallelism="distribute_param : true"))
    assert plain["losses"] == zero["losses"]
    for name, p in plain["params"].items():
        assert torch.equal(p, zero["params"][name]), name
    for name, b in plain["buffers"].items():
        assert torch.equal(b, zero["buffers"][name]), name


def test_parameters_rest_in_rows_when_memory_demands_it(tmp_path):
    """ZeRO-3: with each device's memory below what the ZeRO-2 plan needs (parameters whole on every device
    through the step), the memory model rests the parameters in rows: each pass gathers them before its first
    use and lets them go after its last, and the update leaves them in rows. Gathers are copies: the losses
    are ZeRO-2's to the last bit, and each device holds half of what it did."""
    from test_pipeline_parallel import peaks

    zero2 = peaks(4, ZERO, tmp_path)
    zero3 = peaks(4, ZERO, tmp_path, capacity="2400KiB")
    assert "ZeRO-2" in zero2["summary"] and "ZeRO-3" not in zero2["summary"]
    assert "ZeRO-3" in zero3["summary"] and "is over the" in zero3["summary"], zero3["summary"]
    assert zero3["losses"] == zero2["losses"]
    one = peaks(1, "", tmp_path)
    assert zero3["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert zero3["predicted_peak"] == zero3["measured_peak"]
    assert max(zero3["held"]) <= 0.55 * max(zero2["held"]), (zero3["held"], zero2["held"])
    # ZeRO-2 would not fit: held + peak over the capacity; ZeRO-3 does.
    capacity = 2400 * 1024
    assert max(zero2["held"]) + max(zero2["measured_peak"]) > capacity
    assert max(zero3["held"]) + max(zero3["measured_peak"]) <= capacity


def step_peaks(result):
    """The peaks the log gives the plans of batch-split steps (forward, backward and update), in order."""
    import re

    with open(result["log_file"]) as f:
        return [int(m) for m in re.findall(r"batch \d+ split by rows.*?peak \+(\d+) bytes per device", f.read())]


@pytest.mark.parametrize("devices,line,replicas", [(2, "num_stages : 1", 2), (4, ZERO, 4),
                                                   (4, "num_stages : 2, num_micro_batches : 2", 2),
                                                   (8, "num_stages : 2, TP : 2", 2)])
def test_low_precision_copies_of_the_parameters_are_sharded(devices, line, replicas):
    """distribute_low_prec_param : true under bf16 autocast: each device casts its rows of every parameter
    autocast copies, and gathers the copy before each pass's first use (forward, backward) and lets it go
    after the pass's last. Casts are elementwise and gathers are copies: no bit changes, and the peak falls.
    Beside pipeline stages each stage's replicas share its parameters' copies (beside TP, those TP keeps whole)."""
    plain, low = bitwise_pair(dict(kind="gpt_bf16:8", devices=devices, parallelism=line),
                              dict(kind="gpt_bf16:8", devices=devices,
                                   parallelism=line + ", distribute_low_prec_param : true"))
    assert low["losses"] == plain["losses"]
    for name, p in plain["params"].items():
        assert torch.equal(p, low["params"][name]), name
    with open(low["log_file"]) as f:
        log = f.read()
    assert f"low-precision copies of parameters made on each of the {replicas} replicas' rows" in log
    # The steady step's plan (the first also uploads the parameters, which it casts from the host's copies).
    if "num_micro_batches" in line:
        # 1F1B runs each micro-batch's backward pass before the next one's forward pass: the copies either stay
        # whole through the micro-batches (as without sharding) or are let go after each pass, which ends the
        # phase there and holds every micro-batch's activations. The memory model keeps the lower peak: here
        # the first, no higher than without sharding.
        assert step_peaks(low)[-1] <= step_peaks(plain)[-1], (step_peaks(low), step_peaks(plain))
        assert "kept whole through the micro-batches" in log
    else:
        assert step_peaks(low)[-1] < step_peaks(plain)[-1], (step_peaks(low), step_peaks(plain))


def test_low_precision_sharding_without_autocast_says_there_is_nothing_to_shard():
    got = train("gpt:8", 2, parallelism="distribute_low_prec_param : true")
    with open(got["log_file"]) as f:
        assert "no low-precision copies of parameters to shard" in f.read()


def test_a_state_dict_saved_under_zero3_is_whole_and_loads_as_zero2s(tmp_path):
    """The parameters rest in rows under ZeRO-3: torch.save of the model's and the optimizer's state dicts
    gathers each whole, and they equal what ZeRO-2 saves, bit for bit."""
    import json
    import os
    import subprocess
    import sys

    from test_recomputation import BIG_MODEL

    here = os.path.dirname(os.path.abspath(__file__))
    code = BIG_MODEL % os.path.join(here, "..", "..", "bench")

    def run(capacity):
        env = dict(os.environ, MOREH_NUM_DEVICES="4", MOREH_PARALLELISM=ZERO)
        env.pop("MOREH_HOST_MEMORY_CAPACITY", None)
        if capacity:
            env["MOREH_HOST_MEMORY_CAPACITY"] = capacity
        out = tmp_path / f"state-{capacity}.pt"
        proc = subprocess.run([sys.executable, "-c", code, str(out)], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.splitlines()[-1]), torch.load(out, map_location="cpu"), proc.stderr

    zero2, a, _ = run(None)
    zero3, b, log = run("2400KiB")
    assert "ZeRO-3" in log and "ZeRO-3" not in zero2["summary"]
    assert zero3["losses"] == zero2["losses"]
    for name, p in a["model"].items():
        assert b["model"][name].shape == p.shape and torch.equal(b["model"][name], p), name
    for i, st in a["opt"]["state"].items():
        for k, v in st.items():
            assert torch.equal(b["opt"]["state"][i][k], v), f"{i}.{k}"
