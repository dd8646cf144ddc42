"""MOREH_PLAN_ONLY=1: steps are recorded and planned over virtual devices, never run. A model built on the moreh
device takes no memory on this machine, Advanced Parallelization selects a layout against a named GPU's
profile and memory, and host reads give zeros (said once)."""
import json
import os
import resource
import tempfile

import pytest

from conftest import run_python

CODE = r"""
import json, resource, sys, torch, transformers
cfg = transformers.LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=4096, num_hidden_layers=8,
                               num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048)
cfg._attn_implementation = "sdpa"
torch.moreh.option.enable_advanced_parallelization()
with torch.device("moreh"):
    model = transformers.LlamaForCausalLM(cfg)
params = sum(p.numel() for p in model.parameters())
opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
ids = torch.randint(0, cfg.vocab_size, (8, 512)).to("moreh")
loss = model(input_ids=ids, labels=ids).loss
loss.backward()
opt.step()
search = torch.moreh.option.advanced_parallelization_candidates()
print(json.dumps({"params": params, "loss": loss.item(), "second_read": float(model.lm_head.weight.sum()),
                  "selected": search["selected"], "candidates": search["candidates"],
                  "tokens": search["tokens_per_step"], "allocated": torch.moreh.memory_allocated(),
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "profile": torch.moreh.option.device_profile()["name"]}))
"""


def test_a_model_larger_than_the_machine_is_planned_not_run():
    pytest.importorskip("transformers")
    with tempfile.TemporaryDirectory() as cwd, tempfile.TemporaryDirectory() as config_dir:
        proc = run_python(CODE, cwd=cwd, timeout=600, env={
            "MOREH_PLAN_ONLY": "1", "MOREH_DEVICE_PROFILE": "h100", "MOREH_NUM_DEVICES": "4",
            "MOREH_CONFIG_DIR": config_dir, "MOREH_AP_CACHE": "0"})
        assert proc.returncode == 0, proc.stderr[-4000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert "MOREH_PLAN_ONLY: steps are recorded and planned over 4 virtual device(s) of 80000000000 bytes" in proc.stderr
        # Parameters, gradients and Adam's two states: 16 bytes a parameter if they were real; this process holds
        # far less than that (its own torch and the graph's metadata).
        assert out["params"] > 150e6
        assert out["maxrss_kib"] * 1024 < 0.5 * 16 * out["params"], out["maxrss_kib"]
        # The devices account for what the plan leaves on them.
        assert out["allocated"] >= 16 * out["params"] * 0.9
        assert out["profile"] == "h100" and out["tokens"] == 8 * 512
        assert out["selected"] >= 0 and len(out["candidates"]) >= 30
        chosen = out["candidates"][out["selected"]]
        assert chosen["tokens_per_s"] > 0 and max(chosen["peak_bytes"]) <= 80e9
        # Nothing ran: reads are zeros, and the log says so once.
        assert out["loss"] == 0.0 and out["second_read"] == 0.0
        assert proc.stderr.count("values read on the host are zeros") == 1
        assert os.path.exists(os.path.join(cwd, "advanced_parallelization_selected_config.dump"))


def test_plan_only_must_be_0_or_1(moreh_subprocess):
    proc = moreh_subprocess("import torch", env={"MOREH_PLAN_ONLY": "yes"})
    assert proc.returncode != 0 and "MOREH_PLAN_ONLY" in proc.stderr


def test_plan_llama_plans_a_layout_asked_for_by_its_line():
    """examples/plan_llama.py --parallelism LINE plans that layout instead of searching: here pp 2 x tp 2 with 2
    micro-batches for the two-layer Llama under bf16 autocast, its two attention and two MLP pairs split, 1F1B."""
    pytest.importorskip("transformers")
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with tempfile.TemporaryDirectory() as cwd, tempfile.TemporaryDirectory() as config_dir:
        out_json = os.path.join(cwd, "plan.json")
        env = dict(os.environ, MOREH_PLAN_ONLY="1", MOREH_DEVICE_PROFILE="h100", MOREH_NUM_DEVICES="4",
                   MOREH_CONFIG_DIR=config_dir)
        env.pop("MOREH_PARALLELISM", None)
        proc = subprocess.run([sys.executable, os.path.join(root, "examples", "plan_llama.py"), "--tiny",
                               "--parallelism", "num_stages : 2, TP : 2, num_micro_batches : 2", "--json", out_json],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        with open(out_json) as f:
            out = json.load(f)
        assert out["devices"] == 4 and out["profile"] == "h100"
        assert "2 pipeline stages" in out["plan"] and "tensor parallel: 4 linear pair(s)" in out["plan"], out["plan"]
        assert "(1F1B" in out["plan"], out["plan"]
        assert 0 < out["peak_gib_per_device"] < 74.5
        assert "Parallel Graph Compile start" not in proc.stderr  # no search: the layout asked for
        # A layout that does not fit says what it needs against what the device has, and fails.
        env["MOREH_HOST_MEMORY_CAPACITY"] = "20000000"
        proc = subprocess.run([sys.executable, os.path.join(root, "examples", "plan_llama.py"), "--tiny",
                               "--parallelism", "TP : 2"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode != 0
        assert "layout 'TP : 2' does not fit: Memory requested : " in proc.stderr, proc.stderr[-2000:]
        assert "(capacity 20000000 bytes)" in proc.stderr
