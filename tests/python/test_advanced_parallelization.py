"""Advanced Parallelization (torch.moreh.option.enable_advanced_parallelization) and automatic model
parallelism: the search's log lines in MoAI's order (seed 000), its dump and explanation files, the selection
kept for the next run, a layout chosen by the search training like one device, and a step whose batch-split
plan does not fit the devices' memory training on a model-parallel layout instead of raising OUT_OF_MEMORY.

Each run is a dp_worker.py subprocess (the engine's device count is fixed when it starts) in a directory of its
own (the files land in the working directory) with a config directory of its own (the kept selections and the
host profile).
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest
import torch

from test_data_parallel import assert_same, train

HERE = os.path.dirname(os.path.abspath(__file__))

SEED_ORDER = [
    "The number of candidates is",
    "Parallel Graph Compile start...",
    "Elapsed Time to compile all candidates =",
    "Parallel Graph Compile finished.",
    "The number of possible candidates is",
    "SelectBestGraphFromCandidates start...",
    "Elapsed Time to compute cost for survived candidates =",
    "SelectBestGraphFromCandidates finished.",
    "Configuration for parallelism is selected.",
    "num_stages : ",
    "train: true",
]


def run_worker(kind, devices, cwd, config_dir, ap=True, env=None):
    out = os.path.join(cwd, "out.pt")
    full = dict(os.environ, MOREH_NUM_DEVICES=str(devices), MOREH_CONFIG_DIR=config_dir,
                PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("MOREH_FLAVOR", "MOREH_PARALLELISM", "MOREH_NCCL_LIBRARY", "MOREH_LOG_FILE"):
        full.pop(k, None)
    if ap:
        full["DP_WORKER_AP"] = "1"
    full.update(env or {})
    proc = subprocess.run([sys.executable, os.path.join(HERE, "dp_worker.py"), kind, out], env=full, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    result = torch.load(out) if proc.returncode == 0 else None
    return proc, result


def messages(stderr):
    """The log lines' messages, without the timestamp and level."""
    return [re.sub(r"^\[[^\]]*\] \[[a-z]+\] ", "", line) for line in stderr.splitlines()]


@pytest.fixture
def dirs():
    with tempfile.TemporaryDirectory() as cwd, tempfile.TemporaryDirectory() as config_dir:
        yield cwd, config_dir


def test_the_search_logs_seed_000s_lines_writes_its_files_and_trains_like_one_device(dirs):
    cwd, config_dir = dirs
    proc, got = run_worker("gpt:8", 4, cwd, config_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = messages(proc.stderr)
    # Seed 000's lines, in its order and wording.
    at = [next(i for i, line in enumerate(lines) if line.startswith(prefix)) for prefix in SEED_ORDER]
    assert at == sorted(at), lines
    n = int(re.search(r"The number of candidates is (\d+)\.", proc.stderr).group(1))
    k = int(re.search(r"The number of possible candidates is (\d+)\.", proc.stderr).group(1))
    assert n >= 30 and 1 <= k <= n
    assert re.search(r"Elapsed Time to compile all candidates = \d+ \[ms\]", proc.stderr)
    selected = lines[at[SEED_ORDER.index("num_stages : ")]]
    # The dump holds the selected line, the engine runs it, and it reads back as a layout line.
    with open(os.path.join(cwd, "advanced_parallelization_selected_config.dump")) as f:
        assert f.read().strip() == selected
    assert got["parallelism"] == selected
    # The explanation: every candidate, its peak per device and prediction, why the dropped ones were.
    with open(os.path.join(cwd, "advanced_parallelization_candidates.json")) as f:
        table = json.load(f)
    assert len(table["candidates"]) == n and table["devices"] == 4 and table["tokens_per_step"] == 8 * 32
    chosen = [c for c in table["candidates"] if c["selected"]]
    assert len(chosen) == 1 and chosen[0]["config"] == selected and chosen[0]["feasible"]
    feasible = [c for c in table["candidates"] if c["feasible"]]
    assert all(c["dropped"] is None and c["step_ms"] > 0 and len(c["peak_bytes"]) == 4 for c in feasible)
    assert chosen[0]["step_ms"] == min(c["step_ms"] for c in feasible)
    # Each one's bound from the graph alone: never above what the simulator predicts for its plan.
    assert all(0 < c["bound_ms"] <= c["step_ms"] * (1 + 1e-9) for c in feasible)
    assert all(c["dropped"] for c in table["candidates"] if not c["feasible"])
    assert got["search"]["selected"] == table["selected"]
    # Candidates with recomputation whose twin without it fits were not compiled: the twin is named and fits.
    skipped = [c for c in table["candidates"] if c["dominated_by"] is not None]
    assert all(c["dominance"] == "slower" for c in skipped)  # every layout fits: none is left out for memory
    assert skipped and re.search(rf"{len(skipped)} candidate\(s\) with recomputation were not compiled", proc.stderr)
    same = lambda line: re.sub(r"batch_per_device : \d+", "", line)  # filled in on the selected one
    for c in skipped:
        twin = table["candidates"][c["dominated_by"]]
        assert twin["feasible"] and not c["peak_bytes"], c
        assert same(twin["config"]) == same(c["config"]).replace("recomputation : 1", "recomputation : 0")
    # The selected layout trains as one device does.
    assert_same(train("gpt:8", 1), got)


def test_the_second_run_takes_the_kept_selection_without_searching(dirs):
    cwd, config_dir = dirs
    first, a = run_worker("mlp:8", 2, cwd, config_dir)
    assert first.returncode == 0, first.stderr[-4000:]
    assert "Parallel Graph Compile start..." in first.stderr
    kept = os.listdir(os.path.join(config_dir, "ap"))
    assert len(kept) == 1 and kept[0].endswith(".conf")
    second, b = run_worker("mlp:8", 2, cwd, config_dir)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "Parallel Graph Compile start..." not in second.stderr
    assert "was searched by an earlier run" in second.stderr
    assert b["parallelism"] == a["parallelism"]
    assert a["losses"] == b["losses"]
    # Without the cache (MOREH_AP_CACHE=0) it searches again and keeps nothing.
    with tempfile.TemporaryDirectory() as other:
        third, _ = run_worker("mlp:8", 2, cwd, other, env={"MOREH_AP_CACHE": "0"})
        assert third.returncode == 0 and "Parallel Graph Compile start..." in third.stderr
        assert not os.path.exists(os.path.join(other, "ap"))


def test_a_layout_chosen_by_hand_is_kept_over_the_search(dirs):
    cwd, config_dir = dirs
    proc, got = run_worker("mlp:8", 2, cwd, config_dir, env={"MOREH_PARALLELISM": "num_stages : 2"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Parallel Graph Compile start..." not in proc.stderr
    assert got["parallelism"].startswith("num_stages : 2,")


def test_batch_splitting_out_of_memory_trains_on_a_model_parallel_layout(dirs):
    # gpt_wide's parameters outweigh a batch of 4: batch splitting holds all of them on every device (14.7 MB at
    # the first step), 4 pipeline stages a quarter each. 12 MB devices, AP not enabled: the search runs anyway.
    # The H100 profile makes the choice the same on every machine (the host's is measured, and moves with the
    # machine's load); TP would not do here: its optimizer step, a graph of its own, replicates what it updates.
    cwd, config_dir = dirs
    proc, got = run_worker("gpt_wide:4", 4, cwd, config_dir, ap=False,
                           env={"MOREH_HOST_MEMORY_CAPACITY": "12MB", "MOREH_DEVICE_PROFILE": "h100"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "instead of raising OUT_OF_MEMORY" in proc.stderr
    assert "Parallel Graph Compile start..." in proc.stderr
    assert got["parallelism"] != "num_stages : 1, num_micro_batches : 1, batch_per_device : 0, No TP, " \
                                 "recomputation : 0, distribute_param : false, distribute_low_prec_param : false"
    with open(os.path.join(cwd, "advanced_parallelization_candidates.json")) as f:
        table = json.load(f)
    assert table["reason"] == "the step ran out of memory"
    assert any(c["dropped"] and c["dropped"].startswith("out of memory") for c in table["candidates"])
    limit = table["capacity_bytes"] - table["margin_bytes"]
    assert all(max(c["peak_bytes"]) <= limit for c in table["candidates"] if c["feasible"])
    # One device with room for everything is the reference.
    assert_same(train("gpt_wide:4", 1), got)


def test_when_no_layout_fits_the_error_names_the_least_need_and_what_to_do(dirs):
    cwd, config_dir = dirs
    proc, _ = run_worker("gpt_wide:4", 4, cwd, config_dir, ap=False, env={"MOREH_HOST_MEMORY_CAPACITY": "3MB"})
    assert proc.returncode != 0
    assert "OUT_OF_MEMORY" in proc.stderr
    assert "No parallel layout fits either" in proc.stderr
    assert proc.stderr.count("Parallel Graph Compile start...") == 1
    # With AP enabled the step's search finds nothing either; the out-of-memory step does not search again.
    proc, _ = run_worker("gpt_wide:4", 4, cwd, config_dir, ap=True, env={"MOREH_HOST_MEMORY_CAPACITY": "3MB"})
    assert proc.returncode != 0
    assert "OUT_OF_MEMORY" in proc.stderr and "No parallel layout fits either" in proc.stderr
    assert proc.stderr.count("Parallel Graph Compile start...") == 1, proc.stderr[-4000:]
    assert "Lower the batch size" in proc.stderr


def test_an_update_of_its_own_that_does_not_fit_the_chosen_layout_says_why(dirs):
    """dp_worker reads the loss before optimizer.step(), so the update is a step of its own, without a batch:
    AP's search (run here because batch splitting does not fit) chose 4 stages for the training step, and
    AdamW's first update, which the search never saw, does not fit them. The error says so and what to do."""
    cwd, config_dir = dirs
    proc, _ = run_worker("gpt_wide:4", 4, cwd, config_dir, ap=False,
                         env={"MOREH_HOST_MEMORY_CAPACITY": "8MB", "MOREH_DEVICE_PROFILE": "h100"})
    assert proc.returncode != 0
    assert "instead of raising OUT_OF_MEMORY" in proc.stderr  # the training step's search ran and chose
    assert "OUT_OF_MEMORY" in proc.stderr
    assert "This step has no batch to split" in proc.stderr, proc.stderr[-4000:]
    assert "chosen by Advanced Parallelization for the training step" in proc.stderr
    assert "Read values after optimizer.step()" in proc.stderr


@pytest.mark.parametrize("var,value", [("MOREH_MEMORY_MARGIN", "lots"), ("MOREH_MEMORY_MARGIN", "150%"),
                                       ("MOREH_DEVICE_PROFILE", "tpu9"), ("MOREH_AP_CACHE", "maybe")])
def test_a_malformed_setting_stops_the_import_naming_it(moreh_subprocess, var, value):
    proc = moreh_subprocess("import torch", env={var: value})
    assert proc.returncode != 0
    assert var in proc.stderr


def test_the_device_profile_is_measured_once_and_kept(moreh_subprocess):
    with tempfile.TemporaryDirectory() as config_dir:
        code = "import torch, torch_moreh; p = torch.moreh.option.device_profile(); print(p['name'], p['measured'])"
        first = moreh_subprocess(code, env={"MOREH_CONFIG_DIR": config_dir})
        assert first.returncode == 0, first.stderr
        assert first.stdout.split() == ["host", "True"]
        assert "measured and kept" in first.stderr
        second = moreh_subprocess(code, env={"MOREH_CONFIG_DIR": config_dir})
        assert "measured and kept" not in second.stderr
        named = moreh_subprocess(code, env={"MOREH_CONFIG_DIR": config_dir, "MOREH_DEVICE_PROFILE": "h100"})
        assert named.stdout.split() == ["h100", "False"]


AUTOCAST_SEARCH = """
import json, torch, torch_moreh
import torch.nn.functional as F
from models import GPT
torch.manual_seed(0)
model = GPT().to("moreh")
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
def step():
    x = torch.randint(0, 64, (8, 16)).to("moreh")
    with torch.autocast("moreh", dtype=torch.bfloat16):
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), x.view(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()
step()  # the parameters exist before the searched step, as in every step after the first
torch.moreh.option.enable_advanced_parallelization()
step()
search = torch.moreh.option.advanced_parallelization_candidates()
print(json.dumps([(c["config"], c["dropped"]) for c in search["candidates"]]))
"""


def test_under_autocast_the_search_shards_the_low_precision_copies_too(moreh_subprocess, dirs):
    """autocast's bf16 copies of the parameters (copy_ into a narrower buffer) are found, and the candidates
    include distribute_low_prec_param : true (they were never tried: the search looked for _to_copy, which moreh
    records as copy_)."""
    cwd, config_dir = dirs
    proc = moreh_subprocess(AUTOCAST_SEARCH, env={"MOREH_NUM_DEVICES": "2", "MOREH_CONFIG_DIR": config_dir,
                                                  "PYTHONPATH": HERE}, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    candidates = json.loads(proc.stdout.strip().splitlines()[-1])
    low = [(c, why) for c, why in candidates if "distribute_low_prec_param : true" in c]
    assert low, candidates
    assert any(not why for _, why in low), low  # lowered and timed, not refused


RECOMPUTING = r"""
import json, os, sys, torch
import torch_moreh
from torch_moreh import _C
from models import GPT
torch.manual_seed(0)
model = GPT(n_layer=8).to("moreh")
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(1)
if os.environ.get("AP") == "1":
    torch.moreh.option.enable_advanced_parallelization()
losses = []
for _ in range(3):
    x = torch.randint(0, 96, (int(os.environ.get("BATCH", "64")), 33), generator=g)
    _, loss = model(x[:, :-1].to("moreh"), x[:, 1:].to("moreh"))
    loss.backward()
    opt.step()
    opt.zero_grad()
    losses.append(loss.item())
print(json.dumps({"losses": losses, "recomputed": _C._last_plan()["recomputed_ops"],
                  "parallelism": torch.moreh.option.get_parallelism()}))
"""


def test_a_recomputing_layout_ap_chose_keeps_the_longest_tail_that_fits(moreh_subprocess, dirs):
    """Recomputation under a layout AP chose (here, a selection kept from an earlier run) keeps the longest tail
    of the forward pass whose plan fits, as the search lowered it; chosen by hand, the lowest peak. Same bits."""
    cwd, config_dir = dirs
    line = ("num_stages : 1, num_micro_batches : 1, batch_per_device : 0, No TP, recomputation : 1, "
            "distribute_param : false, distribute_low_prec_param : false")
    env = {"MOREH_NUM_DEVICES": "2", "MOREH_CONFIG_DIR": config_dir, "PYTHONPATH": HERE}
    first = moreh_subprocess(RECOMPUTING, env=dict(env, AP="1"), cwd=cwd)
    assert first.returncode == 0, first.stderr[-4000:]
    kept = os.listdir(os.path.join(config_dir, "ap"))
    assert len(kept) == 1
    with open(os.path.join(config_dir, "ap", kept[0]), "w") as f:  # as if the search had chosen recomputation
        f.write(line + "\n")
    by_ap = moreh_subprocess(RECOMPUTING, env=dict(env, AP="1"), cwd=cwd)
    assert by_ap.returncode == 0, by_ap.stderr[-4000:]
    assert "was searched by an earlier run" in by_ap.stderr
    by_hand = moreh_subprocess(RECOMPUTING, env=dict(env, MOREH_PARALLELISM=line), cwd=cwd)
    assert by_hand.returncode == 0, by_hand.stderr[-4000:]
    ap, hand = (json.loads(p.stdout.strip().splitlines()[-1]) for p in (by_ap, by_hand))
    assert ap["parallelism"] == hand["parallelism"] == line
    assert 0 < ap["recomputed"] < hand["recomputed"], (ap["recomputed"], hand["recomputed"])
    assert ap["losses"] == hand["losses"]
