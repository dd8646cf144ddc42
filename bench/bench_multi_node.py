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
machines would gain. A step's plan is not uploaded yet (steps do not run on workers yet), so there is no
upload to count.
"""
import argparse
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


if __name__ == "__main__":
    main()
