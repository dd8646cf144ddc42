"""What the events file costs: examples/train_gpt.py's steady step time with MOREH_LOG_EVENTS=1 against =0.

The setting is read once per process, so each run is a process of its own; on and off alternate (ABAB...) so
that drift of the machine's speed falls on both, and each side's figure is the median over its runs of the
median step after the first few. Target: the events cost under 2% of the step time (issue 18).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def steady_ms(events, args, log_dir):
    env = dict(os.environ, MOREH_LOG_EVENTS=events, MOREH_NUM_DEVICES=str(args.devices),
               MOREH_LOG_FILE=os.path.join(log_dir, f"bench-{events}.log"))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_gpt.py"), "--steps", str(args.steps)],
                         env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    times = [float(t) for t in re.findall(r"\] \| Loss: [0-9.]+ \| Duration: ([0-9.]+)", out.stdout)]
    return statistics.median(times[3:]) * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--runs", type=int, default=3, help="processes per side")
    p.add_argument("--devices", type=int, default=2)
    args = p.parse_args()
    on, off = [], []
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(args.runs):
            off.append(steady_ms("0", args, log_dir))
            on.append(steady_ms("1", args, log_dir))
        lines = sum(1 for _ in open(os.path.join(log_dir, "bench-1.events.jsonl")))
    a, b = statistics.median(on), statistics.median(off)
    print(f"train_gpt.py on {args.devices} host device(s), {args.steps} steps x {args.runs} processes per side")
    print(f"steady step: events on {a:.1f} ms, off {b:.1f} ms: ratio on/off {a / b:.3f} (target < 1.02); "
          f"{lines} event lines in the last run's file")


if __name__ == "__main__":
    main()
