#!/usr/bin/env python
"""Regenerates tests/python/opinfo_expected_failures.txt from an actual OpInfo sweep.

Runs test_opinfo.check_op for every float32 OpInfo in worker processes (``--jobs``). One op's
exception is recorded as its failure and the sweep goes on; an op that runs past ``--timeout``
seconds is interrupted (SIGALRM) or, if it does not come back, its worker is killed and the op is
recorded as "timeout"; an op whose worker dies (segfault, abort) is recorded as "crash". Workers
are restarted as needed.

    python tools/update_opinfo_failures.py              # full sweep, rewrites the file
    python tools/update_opinfo_failures.py --only conv  # ops whose id contains "conv"; prints only
"""
import argparse
import collections
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_DIR = ROOT / "tests" / "python"
DEFAULT_OUTPUT = TEST_DIR / "opinfo_expected_failures.txt"
RESULT_FD_ENV = "MOREH_OPINFO_RESULT_FD"
GRACE_S = 30  # after --timeout, how long a worker may take to come back before it is killed


# --------------------------------------------------------------------------------------------------
# worker
# --------------------------------------------------------------------------------------------------
class _OpTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _OpTimeout()


def worker_main(timeout):
    sys.path.insert(0, str(TEST_DIR))
    import torch  # noqa: F401
    import test_opinfo as T

    out = os.fdopen(int(os.environ[RESULT_FD_ENV]), "w", buffering=1)
    by_id = {T.op_id(op): op for op in T.OPS}
    signal.signal(signal.SIGALRM, _on_alarm)
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        oid = line.strip()
        if not oid:
            continue
        t0 = time.time()
        reason = None
        signal.alarm(timeout)
        try:
            T.check_op(by_id[oid])
        except _OpTimeout:
            reason = f"timeout: more than {timeout} s (interrupted)"
        except BaseException as e:  # noqa: BLE001  one op's failure must not stop the sweep
            reason = T.failure_reason(e)
        finally:
            signal.alarm(0)
        out.write(json.dumps({"id": oid, "reason": reason, "seconds": round(time.time() - t0, 2)}) + "\n")


# --------------------------------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------------------------------
class Worker:
    def __init__(self, args, log):
        r, w = os.pipe()
        env = dict(os.environ, **{RESULT_FD_ENV: str(w)})
        env.setdefault("MOREH_LOG_LEVEL", "warning")
        if args.samples:
            env["MOREH_OPINFO_SAMPLES"] = str(args.samples)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--timeout", str(args.timeout)],
            stdin=subprocess.PIPE, stdout=log, stderr=log, env=env, pass_fds=(w,), text=True,
            cwd=str(ROOT))
        os.close(w)
        self.fd = r
        self.buf = b""
        self.ready = False
        self.current = None
        self.deadline = None

    def send(self, oid, timeout):
        self.current = oid
        self.deadline = time.time() + timeout + GRACE_S
        self.proc.stdin.write(oid + "\n")
        self.proc.stdin.flush()

    def read_messages(self):
        """Complete JSON messages available now; None at EOF (the worker died)."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return None
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return [json.loads(l) for l in lines if l.strip()]

    def kill(self):
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()
        try:
            os.close(self.fd)
        except OSError:
            pass

    def death_reason(self):
        rc = self.proc.wait()
        if rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = str(-rc)
            return f"crash: worker killed by {name}"
        return f"crash: worker exited with status {rc}"


def sweep(ids, args):
    log_path = Path(args.log)
    log = open(log_path, "w")
    pending = collections.deque(ids)
    results, seconds = {}, {}
    sel = selectors.DefaultSelector()
    workers = []

    def start():
        w = Worker(args, log)
        sel.register(w.fd, selectors.EVENT_READ, w)
        workers.append(w)
        return w

    startup_deaths = [0]

    def retire(w, reason):
        if not w.ready:
            startup_deaths[0] += 1
            if startup_deaths[0] >= 3:
                raise SystemExit(f"workers die before they are ready ({reason}); see {log_path}")
        if w.current is not None:
            results[w.current] = reason
            seconds[w.current] = None
            print(f"  {w.current}: {reason}", flush=True)
        sel.unregister(w.fd)
        w.kill()
        workers.remove(w)
        if pending:
            start()

    for _ in range(min(args.jobs, len(ids))):
        start()
    t0 = time.time()
    while pending or any(w.current is not None for w in workers):
        for w in workers:
            if w.ready and w.current is None and pending:
                w.send(pending.popleft(), args.timeout)
        busy = [w.deadline for w in workers if w.current is not None]
        wait = max(0.1, min(busy) - time.time()) if busy else 5.0
        for key, _ in sel.select(timeout=min(wait, 5.0)):
            w = key.data
            msgs = w.read_messages()
            if msgs is None:
                retire(w, w.death_reason())
                continue
            for m in msgs:
                if m.get("ready"):
                    w.ready = True
                    startup_deaths[0] = 0
                    continue
                results[m["id"]] = m["reason"]
                seconds[m["id"]] = m["seconds"]
                w.current = None
                done = len(results)
                if m["reason"] or args.verbose:
                    print(f"[{done}/{len(ids)} {time.time() - t0:.0f}s] {m['id']}: {m['reason'] or 'ok'}",
                          flush=True)
        now = time.time()
        for w in list(workers):
            if w.current is not None and now > w.deadline:
                retire(w, f"timeout: more than {args.timeout} s (worker killed)")
            elif w.current is None and w.proc.poll() is not None:
                retire(w, w.death_reason())
        if not workers and pending:
            start()
    for w in list(workers):
        w.proc.stdin.close()
        w.kill()
    log.close()
    return results, seconds, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--timeout", type=int, default=60, help="seconds per op")
    ap.add_argument("--samples", type=int, default=None, help="samples per op (default: test_opinfo's)")
    ap.add_argument("--only", default=None, help="regex: sweep only matching ids and do not write the file")
    ap.add_argument("--output", default=str(DEFAULT_OUTPUT))
    ap.add_argument("--log", default="/tmp/update_opinfo_failures.log", help="workers' stdout/stderr")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args()
    if args.worker:
        return worker_main(args.timeout)

    sys.path.insert(0, str(TEST_DIR))
    import torch
    import test_opinfo as T

    ids = [T.op_id(op) for op in T.OPS]
    if args.only:
        ids = [i for i in ids if re.search(args.only, i)]
    print(f"sweeping {len(ids)} OpInfos with {args.jobs} worker(s), timeout {args.timeout} s", flush=True)
    results, seconds, wall = sweep(ids, args)
    failing = {i: r for i, r in results.items() if r}
    print(f"done in {wall:.0f} s: {len(ids) - len(failing)} pass, {len(failing)} fail")
    slow = sorted(((s, i) for i, s in seconds.items() if s), reverse=True)[:5]
    print("slowest: " + ", ".join(f"{i} {s:.1f}s" for s, i in slow))
    causes = collections.Counter(re.sub(r"\d+", "N", r)[:80] for r in failing.values())
    for cause, n in causes.most_common(15):
        print(f"  {n:4d}  {cause}")
    if args.only:
        return 0

    lines = [
        "# OpInfo ids (tests/python/test_opinfo.py) that do not pass on moreh: '<id>: <reason>'.",
        "# GENERATED by tools/update_opinfo_failures.py from an actual sweep; do not edit by hand.",
        f"# torch {torch.__version__}; {len(ids)} float32 OpInfos, {len(ids) - len(failing)} pass, "
        f"{len(failing)} listed; {T.NUM_SAMPLES if not args.samples else args.samples} samples per op.",
        "# 'timeout'/'crash' entries are skipped by the test (they hang or kill the process);",
        "# the others run as strict xfails.",
    ]
    lines += [f"{i}: {failing[i]}" for i in sorted(failing)]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
