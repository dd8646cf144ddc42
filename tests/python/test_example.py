"""The example training script runs unmodified on moreh and logs loss, duration and throughput."""
import os
import re
import subprocess
import sys

from conftest import ROOT


def test_example_trains_on_moreh():
    cmd = [sys.executable, os.path.join(ROOT, "examples", "train_gpt.py"), "--steps", "6", "--d-model", "64",
           "--n-layer", "1", "--block-size", "32", "--batch-size", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "device: moreh" in out and "Training Done" in out
    steps = re.findall(r"\[Step (\d+)/6\] \| Loss: ([\d.]+) \| Duration: ([\d.]+) \| Throughput: ([\d.]+) tokens/sec",
                       out)
    assert [int(s[0]) for s in steps] == [2, 3, 4, 5, 6]
    assert all(float(s[3]) > 0 for s in steps)
