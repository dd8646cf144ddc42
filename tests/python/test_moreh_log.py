"""moreh-log reads a run's story from the events file every moreh process writes beside its log: real runs
(training on two devices, an out-of-memory step, an eager fallback, a killed process, a log without events),
and damaged files (truncated, garbage, random bytes, a directory where a file should be)."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT
from tools_helpers import run_tool

TRAIN = textwrap.dedent("""
    import sys, torch
    dev = torch.device("moreh")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(int(sys.argv[1])):
        x = torch.randn(8, 16).to(dev)
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    if len(sys.argv) > 2 and sys.argv[2] == "eager":
        print(torch.nonzero(model[0].weight > 0).shape)  # data-dependent: runs eagerly
    if len(sys.argv) > 2 and sys.argv[2] == "hang":
        print("ready", flush=True)
        import time; time.sleep(120)
    print(float(loss))
""")

OOM = textwrap.dedent("""
    import torch
    dev = torch.device("moreh")
    x = torch.ones(1000, device=dev)
    try:
        y = (x.repeat(1000) * 2).sum().item()
    except torch.OutOfMemoryError as e:
        print("oom")
""")


def run_script(tmp_path, code, *args, devices=1, **env):
    log = tmp_path / "logs" / "moreh-run.log"
    tmp_path.mkdir(parents=True, exist_ok=True)
    e = dict(os.environ, MOREH_LOG_FILE=str(log), MOREH_NUM_DEVICES=str(devices), MOREH_CONFIG_DIR=str(tmp_path / "cfg"))
    e.pop("MOREH_FLAVOR", None)
    e.update(env)
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=e, capture_output=True, text=True,
                          timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return log


def moreh_log(tmp_path, *args):
    return run_tool("moreh_log", *args, config_dir=tmp_path / "cfg", env={"MOREH_LOG_FILE": ""})


def as_json(tmp_path, *args):
    proc = moreh_log(tmp_path, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def events(log):
    path = str(log)[: -len(".log")] + ".events.jsonl"
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_a_training_run_is_told_from_its_events(tmp_path):
    log = run_script(tmp_path, TRAIN, 4, devices=2)
    ev = events(log)
    assert ev[0]["event"] == "run_start" and ev[-1]["event"] == "run_end"
    start = ev[0]
    assert start["devices"] == ["host:0", "host:1"] and start["torch"] and start["pid"] > 0
    assert "-c" in start["command"]
    steps = [e for e in ev if e["event"] == "step"]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 4
    assert {s["cache"] for s in steps} == {"hit", "miss"}
    runs = [e for e in ev if e["event"] == "device_run"]
    assert {(r["step"], r["device"]) for r in runs} == {(s["step"], d) for s in steps for d in (0, 1)}
    assert all(r["end"] >= r["start"] > start["t"] - 1 for r in runs)
    assert ev[-1]["steps"] == len(steps)

    listed = as_json(tmp_path, "list", "--dir", str(log.parent))
    assert len(listed["runs"]) == 1
    row = listed["runs"][0]
    assert row["state"] == "finished" and row["steps"] == len(steps) and row["errors"] == 0 and row["pid"] == start["pid"]

    summary = as_json(tmp_path, "--dir", str(log.parent))
    assert summary["steps"] == len(steps) and summary["flavor"] == start["flavor"]
    assert summary["cache_hits"] >= 1 and summary["cache_misses"] >= 1
    assert summary["first_step_ms"] > 0 and summary["steady_ms"]["min"] <= summary["steady_ms"]["max"]
    assert len(summary["peak_bytes"]) == 2 and min(summary["peak_bytes"]) > 0
    # By pid and by path: the same run.
    assert as_json(tmp_path, str(start["pid"]), "--dir", str(log.parent))["steps"] == len(steps)
    assert as_json(tmp_path, str(log))["pid"] == start["pid"]
    table = as_json(tmp_path, "steps", str(log))["steps"]
    assert len(table) == len(steps) and all(r["time_ms"] > 0 for r in table)
    text = moreh_log(tmp_path, "--dir", str(log.parent))
    assert text.returncode == 0 and "Plan cache" in text.stdout and "host:0, host:1" in text.stdout
    for command in ("list", "steps", "errors", "ap"):
        proc = moreh_log(tmp_path, command, "--dir", str(log.parent))
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (command, proc.stderr)


def test_an_out_of_memory_step_and_an_eager_fallback_are_named(tmp_path):
    log = run_script(tmp_path, OOM, MOREH_HOST_MEMORY_CAPACITY="1000000")
    errors = as_json(tmp_path, "errors", str(log))["errors"]
    oom = [e for e in errors if e["kind"] == "out_of_memory"]
    assert oom and "needs" in oom[0]["message"] and "host:0" in oom[0]["message"]
    assert any(e["kind"] == "error" and "needs" in e["message"] for e in errors)
    assert as_json(tmp_path, str(log))["errors"] >= 1

    eager = run_script(tmp_path / "eager", TRAIN, 2, "eager")
    summary = as_json(tmp_path, str(eager))
    assert any("nonzero" in op for op in summary["eager_ops"]), summary["eager_ops"]


def test_a_killed_run_is_crashed_and_a_running_one_running(tmp_path):
    log = tmp_path / "logs" / "moreh-run.log"
    env = dict(os.environ, MOREH_LOG_FILE=str(log), MOREH_NUM_DEVICES="1", MOREH_CONFIG_DIR=str(tmp_path / "cfg"))
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, "2", "hang"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert as_json(tmp_path, "list", "--dir", str(log.parent))["runs"][0]["state"] == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    row = as_json(tmp_path, "list", "--dir", str(log.parent))["runs"][0]
    assert row["state"] == "crashed" and row["steps"] == 2


def test_damaged_files_are_read_as_far_as_they_go(tmp_path):
    log = run_script(tmp_path, TRAIN, 3)
    path = str(log)[: -len(".log")] + ".events.jsonl"
    whole = as_json(tmp_path, str(log))
    with open(path, "a") as f:
        f.write("garbage that is not json\n\x00\x01\x02\n[1, 2, 3]\n")
        f.write('{"t": 1, "event": "step", "step": 9, "ops": ')  # a line cut by a crash
    damaged = as_json(tmp_path, path)
    assert damaged["steps"] == whole["steps"] and damaged["bad_lines"] == 4
    text = moreh_log(tmp_path, path)
    assert text.returncode == 0 and "were not whole records" in text.stdout
    # Random bytes, and a file cut in the middle of its first line: no traceback, whatever there is.
    rng = random.Random(0)
    for i in range(5):
        junk = tmp_path / "junk" / f"moreh-{i}.events.jsonl"
        junk.parent.mkdir(exist_ok=True)
        data = open(path, "rb").read()
        junk.write_bytes(data[: rng.randrange(len(data))] + bytes(rng.randrange(256) for _ in range(200)))
        for command in ("summary", "steps", "errors", "ap"):
            proc = moreh_log(tmp_path, command, str(junk))
            assert "Traceback" not in proc.stderr, proc.stderr
    listed = moreh_log(tmp_path, "list", "--dir", str(tmp_path / "junk"))
    assert listed.returncode == 0 and "Traceback" not in listed.stderr


def test_a_log_without_events_is_read_from_its_lines(tmp_path):
    log = run_script(tmp_path, TRAIN, 3, MOREH_LOG_EVENTS="0")
    assert log.exists() and not os.path.exists(str(log)[: -len(".log")] + ".events.jsonl")
    summary = as_json(tmp_path, str(log))
    assert summary["source"] == "log" and summary["steps"] >= 1
    assert any("no events file" in n for n in summary["notes"])
    text = moreh_log(tmp_path, str(log))
    assert text.returncode == 0 and "note: no events file" in text.stdout


def test_what_cannot_be_shown_is_said_with_a_non_zero_exit(tmp_path):
    for args in (("--dir", str(tmp_path / "nowhere")), ("list", "--dir", str(tmp_path / "nowhere")),
                 (str(tmp_path / "missing.log"),), ("--dir", str(tmp_path)), ("4242424", "--dir", str(tmp_path))):
        proc = moreh_log(tmp_path, *args)
        assert proc.returncode != 0 and proc.stderr.startswith("moreh-log:") and "Traceback" not in proc.stderr, args
    (tmp_path / "dir.events.jsonl").mkdir()  # a directory where a file should be: skipped, said
    proc = moreh_log(tmp_path, "list", "--dir", str(tmp_path))
    assert proc.returncode == 0 and "dir.events.jsonl" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr


def test_a_malformed_events_setting_is_refused_by_name(tmp_path):
    e = dict(os.environ, MOREH_LOG_EVENTS="maybe", MOREH_CONFIG_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", "import torch; torch.ones(1, device='moreh')"], env=e,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "MOREH_LOG_EVENTS" in proc.stderr


PIPELINE = ("num_stages : 2, num_micro_batches : 2, batch_per_device : 0, No TP, recomputation : 0, "
            "distribute_param : false, distribute_low_prec_param : false")


def test_the_trace_is_chrome_trace_events_with_a_track_per_device(tmp_path):
    log = run_script(tmp_path, TRAIN, 3, devices=2, MOREH_PARALLELISM=PIPELINE)
    target = tmp_path / "trace.json"
    proc = moreh_log(tmp_path, "trace", str(log), "-o", str(target))
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(target.read_text())
    events = trace["traceEvents"]
    assert isinstance(events, list) and events
    for e in events:  # the trace-event format's required fields for the phases used
        assert e["ph"] in ("M", "X", "i") and isinstance(e["pid"], int) and isinstance(e["name"], str)
        if e["ph"] == "X":
            assert isinstance(e["tid"], int) and e["ts"] > 0 and e["dur"] >= 0
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name") and "name" in e["args"]
    tracks = {e["args"]["name"]: e["tid"] for e in events if e["name"] == "thread_name"}
    assert {"host", "host:0", "host:1"} <= set(tracks)
    spans = [e for e in events if e.get("cat") == "step"]
    steps = as_json(tmp_path, str(log))["steps"]
    assert {(e["name"], e["tid"]) for e in spans} == {(f"step {s}", tracks[d]) for s in range(1, steps + 1)
                                                       for d in ("host:0", "host:1")}
    # Two pipeline stages send activations and gradients: each device's messages lie inside its step's span.
    comm = [e for e in events if e.get("cat") == "comm"]
    assert comm and all(e["args"]["bytes"] > 0 for e in comm)
    assert {e["name"] for e in comm} <= {"all_reduce", "all_gather", "reduce_scatter", "broadcast", "send", "recv"}
    for c in comm:
        assert any(s["tid"] == c["tid"] and s["ts"] - 1 <= c["ts"] and c["ts"] + c["dur"] <= s["ts"] + s["dur"] + 1
                   for s in spans), c
    table = as_json(tmp_path, "steps", str(log))["steps"]
    assert any(r["comm_bytes"] > 0 and r["comm_ms"] >= 0 for r in table)
    assert {"send", "recv"} <= {e["name"] for e in comm}
    legacy = run_script(tmp_path / "legacy", TRAIN, 2, MOREH_LOG_EVENTS="0")
    proc = moreh_log(tmp_path, "trace", str(legacy), "-o", str(tmp_path / "t2.json"))
    assert proc.returncode != 0 and "no events file" in proc.stderr and "Traceback" not in proc.stderr


def test_the_plot_is_an_image_of_the_steps(tmp_path):
    pytest.importorskip("matplotlib")
    log = run_script(tmp_path, TRAIN, 4)
    target = tmp_path / "steps.png"
    proc = moreh_log(tmp_path, "plot", str(log), "-o", str(target))
    assert proc.returncode == 0, proc.stderr
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (800, 400) and len(data) > 10_000


def test_follow_prints_each_step_of_a_running_process(tmp_path):
    log = tmp_path / "logs" / "moreh-run.log"
    events_file = tmp_path / "logs" / "moreh-run.events.jsonl"
    env = dict(os.environ, MOREH_LOG_FILE=str(log), MOREH_NUM_DEVICES="1", MOREH_CONFIG_DIR=str(tmp_path / "cfg"))
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, "5"], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not events_file.exists() and time.time() < deadline:
            time.sleep(0.05)
        followed = moreh_log(tmp_path, "steps", "-f", "--timeout", "120", "--dir", str(log.parent))
    finally:
        proc.wait(timeout=120)
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [f"step {k}" for k in range(1, 6)], lines
    assert lines[-1].endswith("ended: 5 steps")


def test_old_runs_are_pruned_beyond_the_kept_count_but_never_a_live_one(tmp_path):
    logs = tmp_path / ".moreh" / "logs"
    logs.mkdir(parents=True)
    for k in range(5):  # dead processes' runs, oldest last
        for suffix in (".log", ".events.jsonl"):
            f = logs / f"moreh-{900000000 + k}{suffix}"
            f.write_text("x\n")
            os.utime(f, (time.time() - 100 * (k + 1),) * 2)
    live = logs / f"moreh-{os.getpid()}.log"  # this test's own process: alive, and the oldest
    live.write_text("x\n")
    os.utime(live, (time.time() - 10_000,) * 2)
    env = {k: v for k, v in os.environ.items() if k != "MOREH_LOG_FILE"}
    env.update(HOME=str(tmp_path), MOREH_LOG_KEEP="3", MOREH_CONFIG_DIR=str(tmp_path / "cfg"), MOREH_NUM_DEVICES="1")
    proc = subprocess.run([sys.executable, "-c", "import torch; print(torch.ones(2, device='moreh').sum().item())"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    left = sorted(p.name for p in logs.iterdir())
    kept_dead = [n for n in left if n.startswith("moreh-90000000")]
    # The new run and the two newest dead ones make three; the live process's file stays beside them.
    assert sorted({n.split(".")[0] for n in kept_dead}) == ["moreh-900000000", "moreh-900000001"], left
    assert live.name in left
    env["MOREH_LOG_KEEP"] = "-1"
    proc = subprocess.run([sys.executable, "-c", "import torch; torch.ones(1, device='moreh')"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "MOREH_LOG_KEEP" in proc.stderr


def test_torch_profiler_shows_each_step_the_wait_and_the_devices_runs(tmp_path):
    # Each step is left to the devices' own threads (the pause after it outlasts the streams' grace), where the
    # default profiler sees the runs only because moreh carries its state there.
    code = textwrap.dedent("""
        import json, time, torch
        from torch.profiler import profile, ProfilerActivity
        from torch._C._profiler import _ExperimentalConfig
        dev = torch.device("moreh")
        model = torch.nn.Linear(16, 4).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.moreh.synchronize()
        out = []
        for all_threads in (False, True):
            config = _ExperimentalConfig(profile_all_threads=all_threads)
            with profile(activities=[ProfilerActivity.CPU], experimental_config=config) as prof:
                for _ in range(3):
                    model(torch.randn(8, 16).to(dev)).sum().backward()
                    opt.step()
                    opt.zero_grad()
                    time.sleep(0.3)
                torch.moreh.synchronize()
            counts = {e.key: e.count for e in prof.key_averages()}
            threads = {e.name: set() for e in prof.events()}
            for e in prof.events():
                threads[e.name].add(e.thread)
            off_main = bool(threads.get("moreh::device_run", set()) - threads.get("moreh::step", set()))
            out.append([counts.get("moreh::step"), counts.get("moreh::synchronize"), counts.get("moreh::device_run"),
                        off_main])
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, MOREH_CONFIG_DIR=str(tmp_path), MOREH_LOG_FILE=str(tmp_path / "x.log"),
                                   MOREH_NUM_DEVICES="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 3 steps on 2 devices, run on the devices' threads, with the default profiler and with profile_all_threads
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [[3, 1, 6, True], [3, 1, 6, True]]


def test_moreh_log_is_installed_with_the_package(tmp_path):
    import shutil
    exe = shutil.which("moreh-log")
    assert exe, "the package's console script (pyproject.toml) is not on PATH"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "moreh-log list" in proc.stdout


def test_a_directory_of_thousands_of_runs(tmp_path):
    logs = tmp_path / "many"
    logs.mkdir()
    now = time.time()
    for k in range(2000):  # finished runs of 1-3 steps, each in its own file; run 1234 the newest
        pid = 100000 + k
        t = now - 10_000 + k
        lines = [{"t": t, "event": "run_start", "pid": pid, "command": f"python train.py --run {k}",
                  "devices": ["host:0"], "flavor": "Small.64GB"}]
        for s in range(1, k % 3 + 2):
            lines.append({"t": t + s, "event": "step", "step": s, "graph": "0" * 16, "ops": 10, "cache": "miss",
                          "compile_ms": 1.0, "peak_bytes": [100], "used_bytes": [0]})
            lines.append({"t": t + s, "event": "device_run", "step": s, "device": 0, "start": t + s, "end": t + s + 0.5})
        lines.append({"t": t + 5, "event": "run_end", "steps": k % 3 + 1})
        f = logs / f"moreh-{pid}.events.jsonl"
        f.write_text("".join(json.dumps(e) + "\n" for e in lines))
        os.utime(f, (t + 20_000 if k == 1234 else t,) * 2)
    listed = as_json(tmp_path, "list", "--dir", str(logs))["runs"]
    assert len(listed) == 2000 and all(r["state"] == "finished" for r in listed)
    latest = as_json(tmp_path, "--dir", str(logs))
    assert latest["pid"] == 101234 and latest["steps"] == 1234 % 3 + 1
    by_pid = as_json(tmp_path, "101999", "--dir", str(logs))
    assert by_pid["steps"] == 1999 % 3 + 1 and by_pid["first_step_ms"] == pytest.approx(500.0)


def test_the_example_scripts_run_is_summed_up(tmp_path):
    log = tmp_path / "logs" / "moreh-example.log"
    env = dict(os.environ, MOREH_LOG_FILE=str(log), MOREH_NUM_DEVICES="2", MOREH_CONFIG_DIR=str(tmp_path / "cfg"))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_gpt.py"), "--steps", "3",
                           "--batch-size", "4", "--block-size", "32", "--d-model", "64", "--n-layer", "1",
                           "--n-head", "2", "--advanced-parallelization"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = as_json(tmp_path, str(log))
    assert summary["state"] == "finished" and summary["steps"] >= 3 and summary["ap"]["selected"]
    assert summary["layout"] == summary["ap"]["selected"]  # the step ran under the layout AP chose
    ap = as_json(tmp_path, "ap", str(log))["searches"][0]
    assert len(ap["table"]) == ap["candidates"] and any(c["config"] == ap["selected"] for c in ap["table"])
    assert all(0 < c["bound_ms"] <= c["step_ms"] * (1 + 1e-9) for c in ap["table"] if not c["dropped"])
    text = moreh_log(tmp_path, "ap", str(log))
    assert text.returncode == 0 and "selected" in text.stdout and "At least" in text.stdout
