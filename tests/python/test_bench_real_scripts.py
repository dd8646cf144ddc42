"""bench/bench_real_scripts.py --quick runs every script and reports sane numbers (never timing thresholds)."""
import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ("lstm", "transformer", "gpt2-dp4")
DEVICE_KEYS = ("ms_per_step", "first_step_ms", "csw_per_step", "minflt_per_step", "first_loss")
MOREH_KEYS = ("cache_misses", "graphs_per_step", "recorded_ops_per_step", "eager_ops_per_step",
              "first_step_compile_ms")


def finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_quick_run_prints_a_json_line_per_script():
    env = dict(os.environ)
    env.pop("MOREH_NUM_DEVICES", None)
    env.pop("MOREH_FLAVOR", None)
    proc = subprocess.run([sys.executable, os.path.join("bench", "bench_real_scripts.py"), "--quick"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("JSON "):
            r = json.loads(line[len("JSON "):])
            results[r["script"]] = r
    assert set(results) == set(SCRIPTS), proc.stdout
    for name, r in results.items():
        for device in ("cpu", "moreh"):
            for key in DEVICE_KEYS:
                assert finite(r[device][key]), (name, device, key, r[device].get(key))
            assert r[device]["ms_per_step"] > 0 and r[device]["first_step_ms"] > 0, (name, device)
            assert r[device]["csw_per_step"] >= 0 and r[device]["minflt_per_step"] >= 0, (name, device)
            assert r[device]["first_loss"] > 0, (name, device)
        for key in MOREH_KEYS:
            assert finite(r["moreh"][key]) and r["moreh"][key] >= 0, (name, key)
        assert r["moreh"]["graphs_per_step"] >= 1 and r["moreh"]["recorded_ops_per_step"] > 0, name
        # CPU's first step timed again as the first in a process of its own
        assert finite(r["cpu"]["first_step_alone_ms"]) and r["cpu"]["first_step_alone_ms"] > 0, name
        assert r["ratio_first_step_each_first"] == r["moreh"]["first_step_ms"] / r["cpu"]["first_step_alone_ms"]
        for key in ("ratio_step", "ratio_first_step"):
            assert finite(r[key]) and r[key] > 0, (name, key)
        assert r["first_loss_ok"] and r["first_loss_rel_diff"] <= 1e-4, (name, r["cpu"]["first_loss"],
                                                                          r["moreh"]["first_loss"])
        assert not r["cpu"]["moreh_counter_changes"], (name, r["cpu"]["moreh_counter_changes"])
    col = results["gpt2-dp4"]["collectives"]
    assert results["gpt2-dp4"]["num_devices"] == 4
    for key in ("param_bytes", "bytes_per_step_per_device", "ideal_per_device", "ratio_to_ideal"):
        assert finite(col[key]) and col[key] > 0, key
    assert finite(col["replicated_fallbacks_per_step"]) and col["replicated_fallbacks_per_step"] >= 0
    assert "moreh/cpu" in proc.stdout  # the table
