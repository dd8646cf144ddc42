"""One virtual device across worker processes on 127.0.0.1: moreh-worker, moreh-launch, moreh-smi's nodes,
the data plane's check over 2 and 4 workers, and the faults: a killed worker, an absent one, a wrong token,
a token file open to others. Every process a test starts is ended by it."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT

BACKEND = os.path.join(ROOT, "backend")
sys.path.insert(0, BACKEND)
from moreh_tools import _native  # noqa: E402

READY = re.compile(r"moreh-worker ready on 127\.0\.0\.1:(\d+)")


def env(**extra):
    e = dict(os.environ, PYTHONPATH=BACKEND)
    e.update(extra)
    return e


@pytest.fixture
def token_file(tmp_path):
    path = str(tmp_path / "token")
    _native.write_token_file(path, _native.new_token())
    return path


class Workers:
    """Worker processes on 127.0.0.1 (any free ports); stopped, and killed if need be, at the end."""

    def __init__(self, token_file):
        self.token_file = token_file
        self.procs, self.ports = [], []

    def start(self, devices=1, *extra):
        p = subprocess.Popen([sys.executable, "-m", "moreh_tools.worker", "--listen", "127.0.0.1:0", "--token-file",
                              self.token_file, "--host-devices", str(devices), "--capacity", "256MiB", *extra],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        self.procs.append(p)
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            m = READY.search(line)
            if m:
                self.ports.append(int(m.group(1)))
                return self.ports[-1]
            if not line and p.poll() is not None:
                break
        raise AssertionError(f"worker did not start: {line!r} {p.stderr.read() if p.poll() is not None else ''}")

    def endpoints(self, indices=None):
        return ",".join(f"127.0.0.1:{self.ports[i]}" for i in (indices or range(len(self.ports))))

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@pytest.fixture
def workers(token_file):
    w = Workers(token_file)
    yield w
    w.stop()
    for p in w.procs:
        assert p.returncode is not None


def check(workers, kind="all_reduce", elements=1000, seed=3, repeats=1, indices=None, timeout=20.0):
    return _native.cluster_check(workers.endpoints(indices), workers.token_file, kind, elements, seed, repeats,
                                 timeout, 5.0)


def check_in_thread(workers, timeout):
    """Starts a long check (1 MiB all_reduce, 1000 times) on a thread; returns it and what it will report."""
    result = {}

    def run():
        start = time.monotonic()
        try:
            check(workers, elements=1 << 18, repeats=1000, timeout=timeout)
            result["error"] = None
        except Exception as e:  # noqa: BLE001
            result["error"] = e
        result["seconds"] = time.monotonic() - start

    t = threading.Thread(target=run)
    t.start()
    return t, result


@pytest.mark.parametrize("layout", [(1, 2), (2, 1), (2, 2), (4, 1), (4, 2)], ids=lambda l: f"{l[0]}x{l[1]}")
def test_every_collective_over_workers_gives_what_one_process_would(workers, layout):
    n, k = layout
    for _ in range(n):
        workers.start(k)
    for kind in ("all_reduce", "all_gather", "broadcast"):
        r = check(workers, kind, elements=4099, seed=n * 10 + k)
        assert r["correct"], (kind, r["wrong"])
        assert [node["devices"] for node in r["nodes"]] == [k] * n
        if n * k > 1:
            assert r["bytes_sent"] > 0


def test_a_worker_serves_job_after_job(workers):
    workers.start(2)
    workers.start(1)
    for seed in range(3):
        assert check(workers, seed=seed)["correct"]


def test_a_killed_worker_is_named_and_the_others_serve_the_next_job(workers):
    for _ in range(3):
        workers.start(1)
    victim = workers.procs[1]
    t, result = check_in_thread(workers, 10.0)
    time.sleep(1.5)
    victim.kill()
    t.join(60)
    assert not t.is_alive()
    err = result["error"]
    assert isinstance(err, ConnectionError), repr(err)
    assert f"worker 1 (127.0.0.1:{workers.ports[1]})" in str(err)
    assert result["seconds"] < 1.5 + 10.0 + 5.0  # within MOREH_COLLECTIVE_TIMEOUT (10 s here) and a margin
    # The others abandoned that step and serve the next job.
    assert workers.procs[0].poll() is None and workers.procs[2].poll() is None
    assert check(workers, indices=[0, 2])["correct"]


def test_a_worker_that_hangs_mid_step_is_named_once_the_others_time_out(workers):
    for _ in range(2):
        workers.start(1)
    hung = workers.procs[0]
    t, result = check_in_thread(workers, 3.0)
    try:
        time.sleep(1.0)
        hung.send_signal(signal.SIGSTOP)
        t.join(60)
    finally:
        hung.send_signal(signal.SIGCONT)
    assert not t.is_alive()
    err = result["error"]
    assert isinstance(err, ConnectionError), repr(err)
    assert f"worker 0 (127.0.0.1:{workers.ports[0]}) did not answer" in str(err)
    # The other worker's collective waits out MOREH_COLLECTIVE_TIMEOUT (3 s), then the hung one has the connect
    # bound (5 s) as a grace.
    assert result["seconds"] < 1.0 + 3.0 + 5.0 + 4.0
    assert check(workers, indices=[1])["correct"]  # the other worker serves the next job


def test_an_absent_worker_is_named_at_once(workers):
    workers.start(1)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"worker 1 \(127\.0\.0\.1:{free}\).*not there"):
        _native.cluster_check(f"{workers.endpoints()},127.0.0.1:{free}", workers.token_file, "all_reduce", 10, 0, 1,
                              10.0, 5.0)
    assert time.monotonic() - start < 5
    assert check(workers)["correct"]  # the worker that was there is not left busy


def test_a_wrong_token_is_refused_and_logged_and_the_worker_goes_on(workers, tmp_path):
    workers.start(1)
    other = str(tmp_path / "other-token")
    _native.write_token_file(other, "not-the-token")
    with pytest.raises(ConnectionError, match="token"):
        _native.cluster_check(workers.endpoints(), other, "all_reduce", 10, 0, 1, 10.0, 5.0)
    assert check(workers)["correct"]
    workers.stop()
    log = workers.procs[0].stderr.read()
    assert "refused 127.0.0.1:" in log and "token" in log, log


def test_a_worker_refuses_a_token_file_others_can_read(tmp_path):
    path = tmp_path / "token"
    path.write_text("secret\n")
    os.chmod(path, 0o644)
    p = subprocess.run([sys.executable, "-m", "moreh_tools.worker", "--listen", "127.0.0.1:0", "--token-file",
                        str(path)], capture_output=True, text=True, env=env(), timeout=60)
    assert p.returncode == 2
    assert "chmod 600" in p.stderr
    p = subprocess.run([sys.executable, "-m", "moreh_tools.worker", "--listen", "127.0.0.1:0", "--token-file",
                        str(path), "--host-devices", "zero"], capture_output=True, text=True, env=env(), timeout=60)
    assert p.returncode == 2 and "--host-devices zero" in p.stderr


def test_moreh_smi_shows_the_nodes_and_their_devices(workers, tmp_path):
    workers.start(2)
    workers.start(1)
    e = env(MOREH_WORKERS=workers.endpoints() + ",127.0.0.1:1", MOREH_WORKER_TOKEN_FILE=workers.token_file,
            MOREH_CONFIG_DIR=str(tmp_path))
    p = subprocess.run([sys.executable, "-m", "moreh_tools.moreh_smi", "--json"], capture_output=True, text=True,
                       env=e, timeout=60)
    assert p.returncode == 0, p.stderr
    facts = json.loads(p.stdout)
    nodes = facts["nodes"]
    assert [n["devices"] for n in nodes] == [2, 1, 0]
    assert "not there" in nodes[2]["error"]
    assert facts["device"]["num_physical_devices"] == 3
    p = subprocess.run([sys.executable, "-m", "moreh_tools.moreh_smi"], capture_output=True, text=True, env=e,
                       timeout=60)
    assert "Nodes:" in p.stdout and f"127.0.0.1:{workers.ports[0]}" in p.stdout and "2 x host" in p.stdout


NODE_FLAVOR_SCRIPT = """
import torch
p = torch.moreh.get_device_properties()
x = torch.arange(12.0).reshape(6, 2)
print(p.flavor, p.num_physical_devices, torch.moreh.device_count(), (x.to("moreh") * 2).sum().item())
"""


def test_moreh_switch_model_lists_node_flavors_and_a_script_runs_on_the_one_chosen(workers, tmp_path):
    workers.start(1)
    workers.start(2)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "config").write_text(f"workers = {workers.endpoints()}\nworker_token_file = {workers.token_file}\n")
    e = env(MOREH_CONFIG_DIR=str(cfg))
    e.pop("MOREH_FLAVOR", None), e.pop("MOREH_NUM_DEVICES", None), e.pop("MOREH_WORKERS", None)

    def switch(*args):
        p = subprocess.run([sys.executable, "-m", "moreh_tools.moreh_switch_model", *args], capture_output=True,
                           text=True, env=e, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout

    listed = switch("--list")
    assert "14. Nodes.1" in listed and "15. Nodes.2" in listed and "16." not in listed, listed
    assert f"127.0.0.1:{workers.ports[0]}: 1 host device" in listed, listed
    assert f"127.0.0.1:{workers.ports[1]}: 2 host devices" in listed, listed
    switch("--set", "15")
    saved = (cfg / "config").read_text()
    assert "flavor = Nodes.2" in saved and f"workers = {workers.endpoints()}" in saved, saved  # the cluster kept
    assert switch("--current").strip() == "Nodes.2"
    # A script started without MOREH_WORKERS runs on this process's device and the two workers' three.
    p = subprocess.run([sys.executable, "-c", NODE_FLAVOR_SCRIPT], capture_output=True, text=True, env=e, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == ["Nodes.2", "4", "1", "132.0"], p.stdout
    # Nodes.1: the first worker only.
    switch("--set", "Nodes.1")
    p = subprocess.run([sys.executable, "-c", NODE_FLAVOR_SCRIPT], capture_output=True, text=True, env=e, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split()[:2] == ["Nodes.1", "2"], p.stdout
    # A node flavor over more workers than the file lists stops the import, naming the file.
    (cfg / "config").write_text(f"workers = {workers.endpoints([0])}\n")
    p = subprocess.run([sys.executable, "-c", NODE_FLAVOR_SCRIPT], capture_output=True, text=True,
                       env=dict(e, MOREH_FLAVOR="Nodes.2"), timeout=120)
    assert p.returncode != 0 and "Nodes.2" in p.stderr and str(cfg / "config") in p.stderr, p.stderr[-2000:]


SCRIPT = ("import os, sys; sys.path.insert(0, {backend!r}); from moreh_tools import _native; "
          "r = _native.cluster_check(os.environ['MOREH_WORKERS'], os.environ['MOREH_WORKER_TOKEN_FILE'], "
          "'all_gather', 100, 1, 1, 20.0, 5.0); print('workers', os.environ['MOREH_WORKERS'], 'correct', r['correct'], "
          "'devices', sum(n['devices'] for n in r['nodes']))")


def _ports_closed(workers_line):
    for ep in workers_line.split(","):
        host, port = ep.rsplit(":", 1)
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((host, int(port))) == 0:
                return False
    return True


def test_moreh_launch_starts_local_workers_runs_the_script_and_stops_them():
    p = subprocess.run([sys.executable, "-m", "moreh_tools.launch", "--local-workers", "2", "--devices-per-worker",
                        "2", "--", sys.executable, "-c", SCRIPT.format(backend=BACKEND)],
                       capture_output=True, text=True, env=env(), timeout=120)
    assert p.returncode == 0, p.stderr
    m = re.search(r"workers (\S+) correct True devices 4", p.stdout)
    assert m, p.stdout + p.stderr
    assert _ports_closed(m.group(1))
    # The script's exit code is moreh-launch's.
    p = subprocess.run([sys.executable, "-m", "moreh_tools.launch", "--local-workers", "1", "--", sys.executable,
                        "-c", "raise SystemExit(7)"], capture_output=True, text=True, env=env(), timeout=120)
    assert p.returncode == 7


def test_moreh_launch_reads_a_hostfile_and_starts_workers_through_ssh(tmp_path, token_file):
    # A stand-in for ssh that runs the command here (the host is 127.0.0.1 anyway).
    fake_ssh = tmp_path / "fake-ssh"
    fake_ssh.write_text("#!/bin/sh\nshift\nexec \"$@\"\n")
    os.chmod(fake_ssh, 0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    worker = bin_dir / "moreh-worker"
    worker.write_text(f"#!/bin/sh\nexec {sys.executable} -m moreh_tools.worker \"$@\"\n")
    os.chmod(worker, 0o755)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    hostfile = tmp_path / "hosts"
    hostfile.write_text(f"# two nodes\n127.0.0.1 {ports[0]} devices=2\n127.0.0.1 {ports[1]}\n")
    e = env(PATH=f"{bin_dir}:{os.environ['PATH']}")
    p = subprocess.run([sys.executable, "-m", "moreh_tools.launch", "--hostfile", str(hostfile), "--token-file",
                        token_file, "--ssh", str(fake_ssh), "--listen-host", "127.0.0.1", "--", sys.executable, "-c", SCRIPT.format(backend=BACKEND)],
                       capture_output=True, text=True, env=e, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"workers 127.0.0.1:{ports[0]},127.0.0.1:{ports[1]} correct True devices 3" in p.stdout
    hostfile.write_text("127.0.0.1 port=x\n")
    p = subprocess.run([sys.executable, "-m", "moreh_tools.launch", "--hostfile", str(hostfile), "--token-file",
                        token_file, "--", "true"], capture_output=True, text=True, env=e, timeout=60)
    assert p.returncode == 2 and "neither a port nor devices=K" in p.stderr


def test_a_script_whose_workers_are_absent_or_malformed_fails_clearly_at_start(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    token = str(tmp_path / "token")
    _native.write_token_file(token, "t")
    for workers, expected in ((f"127.0.0.1:{free}", f"worker 0 (127.0.0.1:{free})"),
                              ("127.0.0.1", "MOREH_WORKERS: '127.0.0.1' is not host:port")):
        start = time.monotonic()
        p = subprocess.run([sys.executable, "-c", "import torch; torch.ones(1, device='moreh')"], capture_output=True,
                           text=True, env=dict(os.environ, MOREH_WORKERS=workers, MOREH_WORKER_TOKEN_FILE=token,
                                               MOREH_CONFIG_DIR=str(tmp_path)), timeout=120)
        assert p.returncode != 0 and expected in p.stderr, p.stderr[-2000:]
        assert time.monotonic() - start < 60


# --- Training on workers: the same script, the same data, against one process with as many devices ---

HERE = os.path.dirname(os.path.abspath(__file__))


def train(kind, out, env_extra, workers=None):
    """Runs dp_worker.py (KIND OUT) in a fresh process: on `workers` (MOREH_WORKERS) or on MOREH_NUM_DEVICES
    devices of its own. Returns what it saved."""
    import torch

    e = dict(os.environ, **env_extra)
    if workers is not None:
        e.update(MOREH_WORKERS=workers.endpoints(), MOREH_WORKER_TOKEN_FILE=workers.token_file)
    p = subprocess.run([sys.executable, os.path.join(HERE, "dp_worker.py"), kind, out], env=e, cwd=HERE,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-4000:]
    return torch.load(out)


def assert_same(ref, got, exact):
    import torch

    if exact:
        assert got["losses"] == ref["losses"]
        for n, p in ref["params"].items():
            assert torch.equal(got["params"][n], p), n
        return
    # Gloo's ring sums the devices' gradients in another order than one process's collectives do.
    for a, b in zip(got["losses"], ref["losses"]):
        assert abs(a - b) <= 1e-5 * abs(b), (got["losses"], ref["losses"])
    for n, p in ref["params"].items():
        assert torch.allclose(got["params"][n], p, rtol=1e-4, atol=1e-4), n


@pytest.mark.parametrize("case", [
    ("gpt", (1, 1), "", True),  # batch splitting over this process and one worker
    ("gpt", (2, 1), "", False),  # ... and two
    ("gpt", (1, 2), "", False),  # a worker with two devices: in-process collectives inside it
    ("gpt2", (4, 1), "", False),  # Hugging Face GPT-2 over four workers
    ("gpt", (2, 1), "num_stages : 3, num_micro_batches : 2", True),  # a pipeline through both workers
    # Groups across workers: each stage's two replicas all-reduce over a Gloo context of their own ...
    ("gpt", (3, 1), "num_stages : 2, num_micro_batches : 2", True),
    # ... also where the group's device on a worker is not the worker's first (this process's device 0 with
    # the worker's second)
    ("gpt", (1, 3), "num_stages : 2, num_micro_batches : 2", True),
    # ... and a pipeline whose messages leave a worker from its second device (2 -> 3, 4 -> 3 backwards): over
    # a Gloo context of the pair's own
    ("gpt", (2, 2), "num_stages : 5, num_micro_batches : 2", True),
    ("gpt", (1, 1), "TP : 2", True),
    ("gpt", (3, 1), "TP : 2", True),  # two TP pairs, each across processes, beside data parallelism
    ("gpt", (2, 1), "distribute_param : true", False),  # ZeRO: reduce-scatter and all-gather over workers
], ids=lambda c: f"{c[0]}-{c[1][0]}x{c[1][1]}-{c[2].split(',')[0].replace(' ', '') or 'dp'}")
def test_training_on_workers_matches_one_process_with_as_many_devices(workers, tmp_path, case):
    kind, (count, per_worker), parallelism, exact = case
    for _ in range(count):
        workers.start(per_worker)
    env_extra = {"MOREH_PARALLELISM": parallelism} if parallelism else {}
    got = train(kind, str(tmp_path / "workers.pt"), env_extra, workers)
    ref = train(kind, str(tmp_path / "one.pt"), dict(env_extra, MOREH_NUM_DEVICES=str(1 + count * per_worker)))
    assert got["parallelism"] == ref["parallelism"]
    assert_same(ref, got, exact)
    # A plan goes to a worker once; every later step with that graph sends only the step.
    stats = got["stats"]
    assert stats["remote_steps"] >= count * len(got["losses"])  # a flush a step at least, to every worker
    assert 0 < stats["plan_uploads"] <= count * stats["cache_misses"]
    assert stats["plan_uploads"] * 3 < stats["remote_steps"]


SLOW_TRAINING = """
import sys, time, torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)).to("moreh")
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(16, 64), torch.randn(16, 8)
start = time.monotonic()
print("count", torch.moreh.device_count(), flush=True)  # one device, however many workers stand behind it
try:
    for step in range(100000):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x.to("moreh")), y.to("moreh"))
        loss.backward()
        opt.step()
        print("step", step, loss.item(), flush=True)
except RuntimeError as e:
    print("ERROR", time.monotonic() - start, e, flush=True)
    sys.exit(3)
"""


def test_a_worker_killed_during_training_is_named_at_the_call_that_waited(workers):
    for _ in range(2):
        workers.start(1)
    e = dict(os.environ, MOREH_WORKERS=workers.endpoints(), MOREH_WORKER_TOKEN_FILE=workers.token_file,
             MOREH_COLLECTIVE_TIMEOUT="10")
    p = subprocess.Popen([sys.executable, "-c", SLOW_TRAINING], env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "count 1"
        for line in p.stdout:
            if line.startswith("step 20 "):
                break
        killed_at = time.monotonic()
        workers.procs[1].kill()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 3, out[-2000:] + err[-2000:]
    error = out.splitlines()[-1]
    assert f"worker 1 (127.0.0.1:{workers.ports[1]})" in error, error
    assert time.monotonic() - killed_at < 10 + 5
    # The other worker abandoned that step (its client's hang-up broke the step's collectives, well before
    # their 10 s bound) and serves the next job.
    assert workers.procs[0].poll() is None
    ended = time.monotonic()
    while _native.worker_status(workers.endpoints([0]), workers.token_file, 5.0)[0]["busy"]:
        assert time.monotonic() - ended < 5, "the worker still serves the dead script's job"
        time.sleep(0.05)
    assert check(workers, indices=[0])["correct"]


SHARD_TRAINING = """
import json, torch
torch.manual_seed(0)
rows, features = 4096, 64  # 1 MiB of inputs a step: enough rows that the scheduler splits the batch
model = torch.nn.Sequential(torch.nn.Linear(features, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1)).to("moreh")
opt = torch.optim.SGD(model.parameters(), lr=0.01)
losses = []
def step():  # a new batch each step, as from a data loader
    global x, y
    x, y = torch.randn(rows, features), torch.randn(rows, 1)
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x.to("moreh")), y.to("moreh"))
    loss.backward()
    opt.step()
    losses.append(loss.item())
for _ in range(3):
    step()
a = torch.moreh.graph_stats()
for _ in range(4):
    step()
b = torch.moreh.graph_stats()
print(json.dumps({"per_step": (b["control_bytes"] - a["control_bytes"]) / 4, "uploads": b["plan_uploads"] - a["plan_uploads"],
                  "inputs": (x.numel() + y.numel()) * 4, "losses": losses}))
"""


def run_script(source, env_extra, workers=None, indices=None):
    e = dict(os.environ, **env_extra)
    if workers is not None:
        e.update(MOREH_WORKERS=workers.endpoints(indices), MOREH_WORKER_TOKEN_FILE=workers.token_file)
    p = subprocess.run([sys.executable, "-c", source], env=e, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_each_worker_is_sent_its_rows_of_the_batch_and_the_nodes_it_runs(workers):
    for _ in range(3):
        workers.start(1)
    # Batch splitting over this process and 3 workers: each worker is sent its quarter of the inputs, not all
    # of them (which would be 3x the inputs a step).
    got = run_script(SHARD_TRAINING, {}, workers)
    assert got["uploads"] == 0  # steady state: steps only
    assert 0.75 * got["inputs"] <= got["per_step"] < 0.75 * got["inputs"] + 64 * 1024, got
    ref = run_script(SHARD_TRAINING, {"MOREH_NUM_DEVICES": "4"})
    for a, b in zip(got["losses"], ref["losses"]):
        assert abs(a - b) <= 1e-5 * abs(b), (got["losses"], ref["losses"])
    # A pipeline of two stages over this process and one worker: the worker runs the last stage, which reads
    # the labels (16 KiB) but not the 1 MiB of features.
    pipeline = {"MOREH_PARALLELISM": "num_stages : 2, num_micro_batches : 2"}
    got = run_script(SHARD_TRAINING, pipeline, workers, indices=[0])
    assert got["per_step"] < 64 * 1024, got
    ref = run_script(SHARD_TRAINING, dict(pipeline, MOREH_NUM_DEVICES="2"))
    assert got["losses"] == ref["losses"]


GPT_STEADY = """
import json, os, sys, torch
sys.path.insert(0, {here!r})
from models import GPT
torch.manual_seed(0)
model = GPT(vocab=96, block_size=64, d_model=128, n_head=4, n_layer=2).to("moreh")
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(1)
losses = []
for i in range(7):
    if i == 4:
        torch.moreh.synchronize()
        a = torch.moreh.graph_stats()
    x = torch.randint(0, 96, (16, 65), generator=g)  # a new batch each step
    _, loss = model(x[:, :-1].to("moreh"), x[:, 1:].to("moreh"))
    loss.backward()
    opt.step()
    opt.zero_grad()
    losses.append(loss.item())
b = torch.moreh.graph_stats()
print(json.dumps({{"per_request": (b["control_bytes"] - a["control_bytes"]) / max(b["remote_steps"] - a["remote_steps"], 1),
                  "uploads": b["plan_uploads"] - a["plan_uploads"], "inputs": 2 * 16 * 64 * 8, "losses": losses}}))
"""


def test_a_steady_step_sends_what_changed_of_its_graph_not_the_graph(workers):
    # The tests' GPT with AdamW: each step's graph is the last one's with new buffers, a new batch and new
    # recorded values (AdamW's bias corrections). A worker holds the graph from the step before, so a steady
    # step sends it its rows of the batch and the bytes that changed: about 12 KB, where the whole graph was
    # 112 KB (and 27 KB with the changed nodes whole).
    workers.start(1)
    got = run_script(GPT_STEADY.format(here=HERE), {}, workers)
    assert got["uploads"] == 0
    assert got["per_request"] < 0.5 * got["inputs"] + 8192, got
    ref = run_script(GPT_STEADY.format(here=HERE), {"MOREH_NUM_DEVICES": "2"})
    assert got["losses"] == ref["losses"]


MANY_PLANS = """
import json, torch
torch.manual_seed(0)
w = torch.randn(8, 8)
wm = w.to("moreh")
sizes = list(range(1, 71)) + [1, 2, 3]  # 70 graphs, past what a worker keeps (64), then the first ones again
xs = [torch.randn(n, 8) for n in sizes]
got = [(x.to("moreh") @ wm).sum().item() for x in xs]
want = [(x @ w).sum().item() for x in xs]
print(json.dumps({"got": got, "want": want, "uploads": torch.moreh.graph_stats()["plan_uploads"]}))
"""


def test_a_plan_the_worker_has_forgotten_is_uploaded_again(workers):
    workers.start(1)
    got = run_script(MANY_PLANS, {}, workers)
    for a, b in zip(got["got"], got["want"]):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(b))
    assert got["uploads"] >= 73  # the first three plans went twice
