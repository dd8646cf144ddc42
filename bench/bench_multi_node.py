"""The data plane across worker processes on this machine (127.0.0.1), against the same devices in one.

For N = 4 host devices laid out as 1 worker x 4 devices (the baseline: one process, in-memory collectives),
2 workers x 2 and 4 workers x 1, each runs the data plane's check (runtime/worker/node_job.h): an all_reduce
of a float32 vector over every device, repeated, checked on every device against what it must hold. Printed:

- time per all_reduce with W workers divided by the baseline's (the cost of crossing processes: Gloo over
  TCP between the workers' leaders, the in-node communicators inside);
- bytes on the wire per all_reduce, read from the loopback interface's counters (/proc/net/dev), against the
  prediction: Gloo's ring among W leaders sends 2 (W - 1) / W of the vector from each, plus the 32-byte arrival
  check every leader sends every other before each collective;
- the control plane's bytes for opening a job and one check (the handshake, the rendezvous, the request).

Host devices share this machine's 2 cores, so the ratios say what crossing processes costs, not what more
machines would gain.

Then training (--train, on by default): the tests' GPT (d_model 128, 2 layers, batch 16 x 64 tokens, AdamW),
batch split over N devices, with this process as node 0 and W workers of one device each (N = W + 1), against
one process with N devices. Printed per steady step (steps 4 to 12): the time divided by one process's, the
bytes on the loopback wire against the prediction (the plan's collective bytes per device x N, Gloo's ring
among the N leaders, plus the step requests the client sent), and the plan uploads against the steps sent
(a plan goes to each worker once), and a steady step's request alone (what changed of the step graph, the
worker's rows of the inputs).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND = os.path.join(os.path.dirname(HERE), "backend")
sys.path.insert(0, BACKEND)
from moreh_tools import _native  # noqa: E402

READY = re.compile(r"moreh-worker ready on 127\.0\.0\.1:(\d+)")


def lo_tx_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])
    raise RuntimeError("no loopback interface in /proc/net/dev")


TRAIN = r"""
import json, os, sys, time, torch
sys.path.insert(0, os.path.join({root!r}, "tests", "python"))
from models import GPT

def lo():
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                return int(rest.split()[8])

torch.manual_seed(0)
model = GPT(vocab=96, block_size=64, d_model=128, n_head=4, n_layer=2).to("moreh")
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(1)
data = [torch.randint(0, 96, (16, 65), generator=g) for _ in range(12)]
times, wire = [], 0
for i, x in enumerate(data):
    if i == 4:
        torch.moreh.synchronize()
        start_bytes = lo()
        start_stats = torch.moreh.graph_stats()
    t = time.perf_counter()
    _, loss = model(x[:, :-1].to("moreh"), x[:, 1:].to("moreh"))
    loss.backward()
    opt.step()
    opt.zero_grad()
    torch.moreh.synchronize()
    if i >= 4:
        times.append(time.perf_counter() - t)
steady = len(times)
wire = (lo() - start_bytes) / steady
stats = torch.moreh.graph_stats()
steady_control = {{k: stats[k] - start_stats[k] for k in ("control_bytes", "remote_steps", "plan_uploads")}}
print(json.dumps(dict(step_s=sorted(times)[steady // 2], wire=wire, loss=loss.item(), stats=stats, steady=steady_control,
                      inputs=2 * data[0][:, 1:].numel() * data[0].element_size(),
                      collective=torch.moreh.last_plan().get("collective_bytes_per_device", 0))))
"""


def train(env):
    root = os.path.dirname(HERE)
    p = subprocess.run([sys.executable, "-c", TRAIN.format(root=root)], capture_output=True, text=True,
                       env=dict(os.environ, MOREH_LOG_LEVEL="warning", **env), timeout=600)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_training(token_file):
    # Every process of a run shares this machine's cores, as moreh-launch --local-workers arranges: one OpenMP
    # thread each here (the one-process baseline too, so both run the same kernels).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print()
    print("training the tests' GPT (batch 16 x 64 tokens, AdamW), batch split; this process is node 0")
    print(f"{'devices':>7} {'workers':>7} {'ms/step':>8} {'÷ one':>6} {'wire KB':>8} {'pred KB':>8} {'wire ÷ pred':>11} "
          f"{'uploads':>7} {'steps sent':>10} {'KB/request':>10} {'steady KB':>9} {'inputs KB':>9}")
    for workers in (1, 3):
        n = workers + 1
        base = train({"MOREH_NUM_DEVICES": str(n)})
        procs, endpoints = start_workers(workers, 1, token_file)
        try:
            r = train({"MOREH_WORKERS": endpoints, "MOREH_WORKER_TOKEN_FILE": token_file})
        finally:
            stop(procs)
        steps = r["stats"]["remote_steps"]
        control = r["stats"]["control_bytes"] / max(steps, 1) * workers  # per step, to every worker
        predicted = r["collective"] * n + control
        # A steady step's request alone (no plan upload): its rows of the inputs, and what changed of the graph.
        steady = r["steady"]["control_bytes"] / max(r["steady"]["remote_steps"], 1)
        assert r["steady"]["plan_uploads"] == 0, r["steady"]
        assert abs(r["loss"] - base["loss"]) <= 1e-4 * abs(base["loss"]), (r["loss"], base["loss"])
        print(f"{n:>7} {workers:>7} {r['step_s'] * 1e3:>8.1f} {r['step_s'] / base['step_s']:>6.2f} "
              f"{r['wire'] / 1e3:>8.1f} {predicted / 1e3:>8.1f} {r['wire'] / predicted:>11.3f} "
              f"{r['stats']['plan_uploads']:>7} {steps:>10} {control / workers / 1e3:>10.1f} {steady / 1e3:>9.2f} "
              f"{r['inputs'] / 1e3:>9.1f}")


def start_workers(count, devices, token_file):
    procs, ports = [], []
    env = dict(os.environ, PYTHONPATH=BACKEND, MOREH_LOG_LEVEL="warning")
    for _ in range(count):
        p = subprocess.Popen([sys.executable, "-m", "moreh_tools.worker", "--listen", "127.0.0.1:0", "--token-file",
                              token_file, "--host-devices", str(devices), "--capacity", "1GiB"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        procs.append(p)
        m = READY.search(p.stdout.readline())
        if not m:
            raise RuntimeError("a worker did not start")
        ports.append(int(m.group(1)))
    return procs, ",".join(f"127.0.0.1:{p}" for p in ports)


def stop(procs):
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(30)


def measure(workers, devices, elements, repeats, token_file):
    procs, endpoints = start_workers(workers, devices, token_file)
    try:
        def check(count, r):
            return _native.cluster_check(endpoints, token_file, "all_reduce", count, 1, r, 60.0, 10.0)

        check(elements, 1)  # warm: first allocations
        before = lo_tx_bytes()
        small = check(1, 1)  # one element: a job's opening, one request and its reply, the job's closing
        control = lo_tx_bytes() - before
        before = lo_tx_bytes()
        r = check(elements, repeats)
        wire = lo_tx_bytes() - before - control
        assert small["correct"] and r["correct"], r["wrong"]
        return {"seconds": r["seconds"] / repeats, "wire": wire / repeats, "control": control}
    finally:
        stop(procs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=int, default=1 << 20, help="float32 elements per all_reduce (default 4 MiB)")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--no-train", action="store_true", help="only the data plane's all_reduce")
    args = ap.parse_args()
    n = 4
    vector = args.elements * 4
    with tempfile.TemporaryDirectory() as tmp:
        token_file = os.path.join(tmp, "token")
        _native.write_token_file(token_file, _native.new_token())
        base = measure(1, n, args.elements, args.repeats, token_file)
        print(f"all_reduce of {vector >> 20} MiB over {n} host devices, {args.repeats} times; baseline 1 worker x {n}: "
              f"{base['seconds'] * 1e3:.2f} ms each")
        print(f"{'layout':>14} {'ms each':>8} {'÷ baseline':>10} {'wire MB':>8} {'predicted MB':>12} {'wire ÷ pred':>11} "
              f"{'control KB':>10}")
        for workers in (2, 4):
            r = measure(workers, n // workers, args.elements, args.repeats, token_file)
            predicted = 2 * (workers - 1) * vector + workers * (workers - 1) * 32
            print(f"{workers:>3} workers x {n // workers} {r['seconds'] * 1e3:>8.2f} {r['seconds'] / base['seconds']:>10.2f} "
                  f"{r['wire'] / 1e6:>8.2f} {predicted / 1e6:>12.2f} {r['wire'] / predicted:>11.3f} "
                  f"{r['control'] / 1e3:>10.1f}")
        if not args.no_train:
            bench_training(token_file)


if __name__ == "__main__":
    main()
