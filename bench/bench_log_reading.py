"""moreh-log on a big events file: time and peak memory of `moreh-log summary` over a file of --gib GiB.

The file is a real run's events (examples/train_gpt.py, a few steps on 2 host devices) with its step and
device-run records repeated, renumbered, up to the size asked. moreh-log reads it in a process of its own;
its wall time and peak RSS (the child's ru_maxrss) are printed. Target: bounded memory (issue 18).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gib", type=float, default=1.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "moreh-1.log")
        env = dict(os.environ, MOREH_LOG_FILE=log, MOREH_NUM_DEVICES="2")
        subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_gpt.py"), "--steps", "3"], env=env,
                       check=True, capture_output=True, timeout=600)
        events = [json.loads(line) for line in open(os.path.join(d, "moreh-1.events.jsonl"))]
        head = [e for e in events if e["event"] not in ("step", "device_run", "run_end")]
        step = next(e for e in reversed(events) if e["event"] == "step")
        runs = [e for e in events if e["event"] == "device_run" and e["step"] == step["step"]]
        big = os.path.join(d, "big.events.jsonl")
        target = int(args.gib * (1 << 30))
        written, n = 0, 0
        with open(big, "w") as f:
            for e in head:
                f.write(json.dumps(e) + "\n")
            while written < target:
                n += 1
                lines = [json.dumps({**step, "step": n, "t": step["t"] + n})]
                lines += [json.dumps({**r, "step": n, "start": r["start"] + n, "end": r["end"] + n}) for r in runs]
                chunk = "\n".join(lines) + "\n"
                f.write(chunk)
                written += len(chunk)
        size = os.path.getsize(big)
        # moreh-log in a process of its own (not the training run's): its summary, then its own peak RSS.
        reader = ("import contextlib, io, json, resource, sys\n"
                  "from moreh_tools import moreh_log\n"
                  "out = io.StringIO()\n"
                  "with contextlib.redirect_stdout(out):\n"
                  "    rc = moreh_log.main([sys.argv[1], '--json'])\n"
                  "print(json.dumps({'rc': rc, 'summary': json.loads(out.getvalue()),\n"
                  "                  'rss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))\n")
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", reader, big], capture_output=True, text=True, timeout=3600,
                             env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "backend")))
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            sys.exit(out.stderr[-2000:])
        result = json.loads(out.stdout.strip().splitlines()[-1])
        summary, rss = result["summary"], result["rss_kib"]
        assert summary["steps"] == n, (summary["steps"], n)
    print(f"moreh-log summary over {size / (1 << 30):.2f} GiB ({n} steps, {n * (1 + len(runs))} records): "
          f"{wall:.1f} s, {size / (1 << 20) / wall:.0f} MiB/s, peak RSS {rss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
