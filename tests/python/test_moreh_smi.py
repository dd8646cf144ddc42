"""moreh-smi lists the virtual device and the running moreh processes from the registry they keep."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from tools_helpers import run_tool, tool_env

# Holds a 16 MiB tensor on moreh until its stdin closes, then exits normally. The tensor is made on the
# device, so every physical device of the flavor holds a replica (16 MiB each).
HOLDER = """
import sys, torch
x = torch.ones(4 << 20, device="moreh")
print(x.sum().item(), flush=True)
sys.stdin.read()
"""


def smi_json(config_dir, **env):
    proc = run_tool("moreh_smi", "--json", config_dir=config_dir, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait_for(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def holder(tmp_path):
    procs = []

    def start(**env):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT, env=tool_env(tmp_path, **env))
        procs.append(proc)
        assert proc.stdout.readline().strip() == str(float(4 << 20)), proc.stderr.read()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def listed(config_dir, pid):
    return next((p for p in smi_json(config_dir)["processes"] if p["pid"] == pid), None)


def test_idle_device_table(tmp_path):
    proc = run_tool("moreh_smi", config_dir=tmp_path, env={"MOREH_FLAVOR": "xLarge.512GB",
                                                         "MOREH_HOST_MEMORY_CAPACITY": "1GiB"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "+" + "-" * 101 + "+" and "Current Version: " in lines[1]
    assert lines[3] == "|  Device  |         Name        |      Model       |  Memory Usage  |  Total Memory  |  Utilization  |"
    assert lines[4] == "+" + "=" * 101 + "+"
    assert lines[5] == "|  * 0     |  MoAI Accelerator   |  xLarge.512GB    |  -             |  8192 MiB      |  -            |"
    assert "Processes:" in lines and "|  Device  |  Job ID  |    PID    |" in proc.stdout


def test_lists_a_running_process_and_drops_it_when_it_exits(tmp_path, holder):
    proc = holder(MOREH_FLAVOR="Medium.128GB", MOREH_HOST_MEMORY_CAPACITY="1GiB")
    entry = wait_for(lambda: listed(tmp_path, proc.pid), "the holder in moreh-smi")
    assert entry["flavor"] == "Medium.128GB" and entry["memory_total"] == 2 << 30
    wait_for(lambda: (listed(tmp_path, proc.pid) or {}).get("memory_used", 0) >= 32 << 20, "its 2 × 16 MiB")
    table = run_tool("moreh_smi", config_dir=tmp_path).stdout
    row = next(line for line in table.splitlines() if f"  {proc.pid}  " in line)
    assert "-c" in row and "32 MiB" in row  # replicated on both devices of Medium.128GB
    assert (tmp_path / "run" / f"{proc.pid}.json").exists()
    proc.stdin.close()  # a normal exit: the process removes its own entry
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert not (tmp_path / "run" / f"{proc.pid}.json").exists()
    assert listed(tmp_path, proc.pid) is None
    assert smi_json(tmp_path)["device"]["in_use"] is False


def test_a_killed_process_is_ignored_and_its_entry_removed(tmp_path, holder):
    proc = holder()
    wait_for(lambda: listed(tmp_path, proc.pid), "the holder in moreh-smi")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    entry = tmp_path / "run" / f"{proc.pid}.json"
    assert entry.exists()  # nobody removed it: the process had no chance
    assert listed(tmp_path, proc.pid) is None
    assert not entry.exists()


def test_physical_devices_and_json(tmp_path, holder):
    proc = holder(MOREH_FLAVOR="Large.256GB", MOREH_HOST_MEMORY_CAPACITY="512MiB")
    wait_for(lambda: listed(tmp_path, proc.pid), "the holder in moreh-smi")
    env = {"MOREH_FLAVOR": "Large.256GB", "MOREH_HOST_MEMORY_CAPACITY": "512MiB"}
    def replicated():
        f = smi_json(tmp_path, **env)
        return f if all(d["memory_used"] >= 16 << 20 for d in f["physical_devices"]) else None

    facts = wait_for(replicated, "its 16 MiB on every device")
    assert facts["device"]["flavor"] == "Large.256GB" and facts["device"]["num_physical_devices"] == 4
    assert facts["device"]["memory_total"] == 4 * (512 << 20)
    assert [d["index"] for d in facts["physical_devices"]] == [0, 1, 2, 3]
    out = run_tool("moreh_smi", "-p", config_dir=tmp_path, env=env).stdout.splitlines()
    assert [c.strip() for c in out[2].split("|")[1:-1]] == ["Dev", "Location", "Dev Temp", "Mem Temp", "Dev Util",
                                                            "Mem Util", "Mem Usage"]
    assert out[1] == "+" + "-" * (len(out[2]) - 2) + "+" and out[3] == "+" + "=" * (len(out[2]) - 2) + "+"
    rows = [line for line in out if line.startswith("|  ") and "MiB /" in line]
    assert len(rows) == 4 and all(r.split("|")[7].strip().endswith(" / 512 MiB") for r in rows)
    assert rows[0].split("|")[2].strip() == f"{os.uname().nodename}:0"
    assert all(r.split("|")[7].strip() == "16 MiB / 512 MiB" for r in rows)  # a replica on every device
