"""moreh-log: a run's story from its logs (steps, plans, Advanced Parallelization, errors).

    moreh-log list                 the runs under the log directory
    moreh-log [summary] [RUN]      one run (default: the latest): flavor, steps, cache, fallbacks, memory, layout
    moreh-log steps|errors|ap [RUN]
    moreh-log trace [RUN] -o trace.json   a Chrome trace-event file (Perfetto, chrome://tracing)
    moreh-log plot [RUN] -o steps.png      step time and plan-cache misses over the run (matplotlib)
    moreh-log steps -f                     follow a running process: each step as it lands
    --json on every command; --dir DIR for another log directory (default: MOREH_LOG_FILE's, else ~/.moreh/logs)

RUN is a pid, a log or events file path, or --latest. Every moreh process writes moreh-<pid>.events.jsonl beside
its log (docs/LOGS.md); logs without one (older versions, MOREH_LOG_EVENTS=0) are read from their lines, and
what those cannot say is said.
"""
import argparse
import datetime
import json
import os
import sys

from . import box, run_log

COMMANDS = ("list", "summary", "steps", "errors", "ap", "trace", "plot")


def _when(t):
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _seconds(s):
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _ms(v):
    return "-" if v is None else f"{v:.1f} ms"


def _mib(b):
    return "-" if b is None else f"{b / (1 << 20):.1f} MiB"


def _one_line(text, width=60):
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _compact(line, devices=None):
    """MoAI's configuration line, short: "dp 2 x pp 2, 4 micro-batches, TP 2, recomputation, ZeRO, low-prec"."""
    if not line:
        return "batch splitting (default)"
    fields = {}
    for part in str(line).split(","):
        if ":" in part:
            k, v = part.split(":", 1)
            fields[k.strip()] = v.strip()
        elif part.strip() == "No TP":
            fields["TP"] = "1"
    try:
        pp, mb, tp = int(fields.get("num_stages", 1)), int(fields.get("num_micro_batches", 1)), int(fields.get("TP", 1))
    except ValueError:
        return _one_line(line, 70)
    out = []
    if devices:
        out.append(f"dp {max(devices // (pp * tp), 1)}")
    if pp > 1:
        out.append(f"pp {pp}")
    if tp > 1:
        out.append(f"tp {tp}")
    text = " x ".join(out) or "one device"
    if mb > 1:
        text += f", {mb} micro-batches"
    for key, name in (("recomputation", "recomputation"), ("distribute_param", "ZeRO"),
                      ("distribute_low_prec_param", "low-prec sharded")):
        if fields.get(key) in ("1", "true"):
            text += f", {name}"
    return text


def _pick(args):
    """The run asked for: a pid, a path, or the latest under the directory."""
    directory = args.dir or run_log.default_dir()
    target = args.run
    if target and target != "--latest" and not target.isdigit():
        if not os.path.exists(target):
            raise SystemExit(f"moreh-log: {target}: no such file")
        try:
            runs = run_log.read_path(target)
        except OSError as e:
            raise SystemExit(f"moreh-log: cannot read {target}: {e.strerror}")
        if not runs:
            raise SystemExit(f"moreh-log: {target} holds no run")
        return runs[-1]
    if not os.path.isdir(directory):
        raise SystemExit(f"moreh-log: no moreh run under {directory} (no such directory)")
    if target and target.isdigit():
        run = run_log.run_of_pid(directory, int(target))
        if run is None:
            raise SystemExit(f"moreh-log: no run of pid {target} under {directory}")
        return run
    run, problems = run_log.latest_run(directory)
    for p in problems:
        print(f"moreh-log: skipped {p}", file=sys.stderr)
    if run is None:
        raise SystemExit(f"moreh-log: no moreh run under {directory}")
    return run


def cmd_list(args):
    directory = args.dir or run_log.default_dir()
    if not os.path.isdir(directory):
        raise SystemExit(f"moreh-log: no log directory {directory}")
    runs, problems = run_log.runs_in(directory)
    rows = []
    for r in runs:
        s = r.summary()
        rows.append({"pid": s["pid"], "start": s["start"], "duration_s": s["duration_s"], "state": s["state"],
                     "steps": s["steps"], "errors": s["errors"], "command": s["command"], "path": r.path,
                     "source": r.source})
    if args.json:
        print(json.dumps({"dir": directory, "runs": rows, "unreadable": problems}, indent=1))
        return 0
    table = [[r["pid"] or "-", _when(r["start"]), _seconds(r["duration_s"]), r["state"], r["steps"], r["errors"],
              _one_line(r["command"] or os.path.basename(r["path"]), 48)] for r in rows]
    print("\n".join(box.render(["PID", "Started", "Duration", "State", "Steps", "Errors", "Command"], table)))
    for p in problems:
        print(f"unreadable: {p}")
    return 0


def cmd_summary(args):
    run = _pick(args)
    s = run.summary()
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    devices = s["devices"] or []
    facts = [["Run", f"pid {s['pid'] or '-'}, {s['state']}, started {_when(s['start'])}, {_seconds(s['duration_s'])}"],
             ["Command", _one_line(s["command"] or "-", 70)],
             ["Flavor", f"{s['flavor'] or '-'}: {len(devices)} device(s) {', '.join(devices[:8])}"
                        + (" ..." if len(devices) > 8 else "")],
             ["Versions", f"torch {s['torch'] or '-'}, moreh {s['moreh'] or '-'}"
                          + (", plan-only" if s["plan_only"] else "")],
             ["Steps", f"{s['steps']}: first {_ms(s['first_step_ms'])}"
                       + (f", then min {_ms(s['steady_ms']['min'])} / median {_ms(s['steady_ms']['median'])} / max "
                          f"{_ms(s['steady_ms']['max'])}" if s["steady_ms"] else "")],
             ["Plan cache", f"{s['cache_hits']} hit(s), {s['cache_misses']} miss(es), {s['compile_ms']:.1f} ms compiling"],
             ["Layout", _compact(s["layout"], len(devices))]]
    if s["ap"]:
        a = s["ap"]
        facts.append(["AP", f"kept selection ({a['cached']})" if a.get("cached") else
                      f"{a['candidates']} candidates, {a['feasible']} fit, predicted {_ms(a['predicted_ms'])}"])
    if s["peak_bytes"]:
        facts.append(["Memory peak", ", ".join(f"{d}: {_mib(b)}" for d, b in enumerate(s["peak_bytes"]))])
    facts.append(["Eager fallbacks", ", ".join(f"{op} x{n}" for op, n in list(s["eager_ops"].items())[:6]) or "none"])
    facts.append(["Replicated ops", ", ".join(f"{op} x{n}" for op, n in list(s["replicated_fallbacks"].items())[:6])
                  or "none"])
    facts.append(["Errors", f"{s['errors']} error(s), {s['warnings']} warning(s) (moreh-log errors)"])
    print("\n".join(box.render(["", os.path.basename(run.path)], facts)))
    _notes(run)
    return 0


def cmd_steps(args):
    run = _pick(args)
    rows = [{k: v for k, v in st.items() if k not in ("devices", "begin", "finish", "i")} for st in run.steps]
    if args.json:
        print(json.dumps({"path": run.path, "steps": rows, "total": run.step_count}, indent=1))
        return 0
    table = [[r["step"], r.get("graph") or "-", r.get("ops", "-"), r.get("cache") or "-", _ms(r.get("compile_ms")),
              _ms(r.get("time_ms")), _ms(r.get("comm_ms")), _ms(r.get("predicted_ms")),
              _mib(max(r["peak_total"])) if r.get("peak_total") else "-", r.get("eager_ops_before", 0)]
             for r in rows]
    print("\n".join(box.render(["Step", "Graph", "Ops", "Cache", "Compile", "Time", "Comm", "Predicted", "Peak/device",
                                "Eager before"], table)))
    if run.step_count > len(rows):
        print(f"note: the last {len(rows)} of {run.step_count} steps (moreh-log summary counts every one)")
    _notes(run)
    return 0


def cmd_errors(args):
    run = _pick(args)
    rows = [{"t": t, "kind": kind, "message": msg} for t, kind, msg in run.errors]
    if args.json:
        print(json.dumps({"path": run.path, "errors": rows, "bad_lines": run.bad_lines}, indent=1))
        return 0
    table = [[_when(r["t"]), r["kind"], _one_line(r["message"], 100)] for r in rows]
    print("\n".join(box.render(["Time", "Kind", "Message"], table)))
    _notes(run)
    return 0


def cmd_ap(args):
    run = _pick(args)
    if args.json:
        print(json.dumps({"path": run.path, "searches": run.ap, "selected_layouts": run.layouts}, indent=1))
        return 0
    if not run.ap:
        print("No Advanced Parallelization search in this run"
              + (f"; layouts selected: {'; '.join(run.layouts)}" if run.layouts else "."))
        _notes(run)
        return 0
    for a in run.ap:
        print(f"{a.get('reason')}: graph {a.get('graph')} on {a.get('devices')} device(s)")
        if a.get("cached"):
            print(f"  kept selection from {a['cached']}: {a.get('selected')}")
            continue
        print(f"  {a.get('candidates')} candidates, {a.get('feasible')} fit, {a.get('not_compiled', 0)} not compiled; "
              f"compiled in {a.get('compile_ms', 0):.0f} ms, timed in {a.get('cost_ms', 0):.0f} ms "
              f"({a.get('profile')} profile)")
        print(f"  selected: {a.get('selected')} (predicted {_ms(a.get('predicted_ms'))}, "
              f"{a.get('tokens_per_s', 0):.0f} tokens/s)")
        table = [[i, _compact(c.get("config", ""), a.get("devices")), _mib(c.get("peak_bytes")) if c.get("peak_bytes") else "-",
                  _ms(c.get("bound_ms")) if c.get("bound_ms") else "-",
                  _ms(c.get("step_ms")) if not c.get("dropped") else "-",
                  "selected" if c.get("config") == a.get("selected") else _one_line(c.get("dropped") or "fits", 60)]
                 for i, c in enumerate(a.get("table") or [])]
        print("\n".join(box.render(["#", "Layout", "Peak/device", "At least", "Predicted", "Fate"], table)))
    _notes(run)
    return 0


def trace_events(run):
    """The run as Chrome trace events: one track (tid) per physical device with each step's program on it, a
    host track with the plan compiles, AP's search and errors (instant events); times in microseconds."""
    if run.source != "events":
        raise SystemExit(f"moreh-log: {run.path} has no events file: no timeline to draw (docs/LOGS.md)")
    pid = run.pid or 0
    devices = (run.start or {}).get("devices") or []
    out = [{"ph": "M", "pid": pid, "name": "process_name", "args": {"name": f"moreh {pid}: {_one_line(run.command, 60)}"}},
           {"ph": "M", "pid": pid, "tid": 0, "name": "thread_name", "args": {"name": "host"}}]
    for d, name in enumerate(devices):
        out.append({"ph": "M", "pid": pid, "tid": d + 1, "name": "thread_name", "args": {"name": name}})
    us = lambda t: round(t * 1e6, 1)
    for s in run.steps:
        if s.get("cache") == "miss" and s.get("t") and s.get("compile_ms"):
            out.append({"ph": "X", "pid": pid, "tid": 0, "name": f"compile step {s['step']}", "cat": "plan",
                        "ts": us(s["t"]) - s["compile_ms"] * 1e3, "dur": s["compile_ms"] * 1e3,
                        "args": {"graph": s.get("graph"), "ops": s.get("ops")}})
        for d, (start, end, comm) in sorted(s["devices"].items(), key=lambda kv: kv[0] if isinstance(kv[0], int) else -1):
            if not isinstance(d, int):
                continue
            out.append({"ph": "X", "pid": pid, "tid": d + 1, "name": f"step {s['step']}", "cat": "step",
                        "ts": us(start), "dur": round((end - start) * 1e6, 1),
                        "args": {"graph": s.get("graph"), "ops": s.get("ops"), "cache": s.get("cache"),
                                 "predicted_ms": s.get("predicted_ms"), "layout": s.get("layout") or "default",
                                 "collective_bytes": s.get("collective_bytes")}})
            for kind, nbytes, a, b in comm:  # collectives and pipeline messages, inside the step's span
                out.append({"ph": "X", "pid": pid, "tid": d + 1, "name": str(kind), "cat": "comm",
                            "ts": us(start + a), "dur": round((b - a) * 1e6, 1), "args": {"bytes": int(nbytes)}})
    for a in run.ap:
        if a.get("t"):
            ms = (a.get("compile_ms") or 0) + (a.get("cost_ms") or 0)
            out.append({"ph": "X", "pid": pid, "tid": 0, "name": "Advanced Parallelization", "cat": "ap",
                        "ts": us(a["t"]) - ms * 1e3, "dur": ms * 1e3,
                        "args": {"selected": a.get("selected"), "candidates": a.get("candidates")}})
    for t, kind, msg in run.errors:
        if t:
            out.append({"ph": "i", "pid": pid, "tid": 0, "s": "p", "name": kind, "ts": us(t), "args": {"message": msg}})
    return out


def cmd_trace(args):
    run = _pick(args)
    events = trace_events(run)
    target = args.output or "trace.json"
    try:
        with open(target, "w") as f:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
    except OSError as e:
        raise SystemExit(f"moreh-log: cannot write {target}: {e.strerror}")
    steps = sum(1 for e in events if e.get("cat") == "step")
    if args.json:
        print(json.dumps({"path": run.path, "trace": target, "events": len(events), "device_spans": steps}))
    else:
        print(f"{target}: {len(events)} trace events ({steps} device step spans); open it in https://ui.perfetto.dev "
              "or chrome://tracing")
    return 0


def cmd_plot(args):
    run = _pick(args)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("moreh-log: plot needs matplotlib (pip install matplotlib); `moreh-log steps` has the same "
                         "figures as a table")
    rows = [s for s in run.steps if s.get("time_ms") is not None]
    if not rows:
        raise SystemExit(f"moreh-log: {run.path} has no timed steps to plot"
                         + (" (no events file: docs/LOGS.md)" if run.source != "events" else ""))
    target = args.output or "steps.png"
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.plot([s["step"] for s in rows], [s["time_ms"] for s in rows], marker=".", label="step time (devices)")
    predicted = [(s["step"], s["predicted_ms"]) for s in rows if s.get("predicted_ms")]
    if predicted:
        ax.plot(*zip(*predicted), linestyle="--", label="predicted (cost simulator)")
    misses = [s for s in rows if s.get("cache") == "miss"]
    if misses:
        ax.scatter([s["step"] for s in misses], [s["time_ms"] for s in misses], color="red", zorder=3,
                   label="plan-cache miss (compiled)")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("ms")
    ax.set_title(f"moreh run {run.pid}: {len(run.steps)} steps")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(target)
    except OSError as e:
        raise SystemExit(f"moreh-log: cannot write {target}: {e.strerror}")
    finally:
        plt.close(fig)
    print(json.dumps({"path": run.path, "plot": target, "steps": len(rows)}) if args.json else
          f"{target}: {len(rows)} steps, {len(misses)} plan-cache miss(es)")
    return 0


def follow(args):
    """Prints each step of the chosen run as it lands in its events file (like tail -f), until the run ends."""
    import time
    run = _pick(args)
    if run.source != "events":
        raise SystemExit(f"moreh-log: {run.path} has no events file to follow")
    live = run_log.Run(run.path, "events")
    printed = 0
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with open(run.path, "rb") as f:
        pending = b""
        started = False
        while True:
            chunk = f.readline()
            if chunk:
                pending += chunk
                if not pending.endswith(b"\n"):
                    continue  # a line still being written
                line, pending = pending, b""
                try:
                    e = json.loads(line)
                except ValueError:
                    live.bad_lines += 1
                    continue
                if not isinstance(e, dict):
                    continue
                if e.get("event") == "run_start":
                    started = e.get("pid") == run.pid  # the run asked for (a file may hold several)
                    live = run_log.Run(run.path, "events")
                    printed = 0
                if not started:
                    continue
                live.add_event(e)
                # A step is printed once its devices reported (or the next step began).
                while printed < live.step_count:
                    offset = live.step_count - len(live.steps)  # rows older than the kept ones are gone
                    printed = max(printed, offset)
                    st = live.steps[printed - offset]
                    if st["time_ms"] is None and printed + 1 == live.step_count and live.end is None:
                        break  # its devices have not reported yet

                    row = {k: v for k, v in st.items() if k not in ("devices", "begin", "finish", "i")}
                    print(json.dumps(row) if args.json else
                          f"step {st['step']}: {st.get('ops')} ops, {st.get('cache')}, time {_ms(st.get('time_ms'))}, "
                          f"compile {_ms(st.get('compile_ms'))}", flush=True)
                    printed += 1
                if e.get("event") in ("warning", "error", "out_of_memory"):
                    print(f"{e['event']}: {live.errors[-1][2]}", flush=True)
                if live.end is not None:
                    print(f"run {run.pid} ended: {live.end.get('steps')} steps", flush=True)
                    return 0
                continue
            if not run_log.pid_alive(run.pid):
                print(f"run {run.pid} is gone without its end (crashed)", flush=True)
                return 1
            if deadline is not None and time.monotonic() > deadline:
                return 0
            time.sleep(0.2)


def _notes(run):
    for n in run.notes:
        print(f"note: {n}")
    if run.bad_lines:
        print(f"note: {run.bad_lines} line(s) of {os.path.basename(run.path)} were not whole records (skipped)")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "summary"
    for i, a in enumerate(argv):  # the first word that is not an option, if it names a command
        if not a.startswith("-"):
            if a in COMMANDS:
                command = argv.pop(i)
            break
    p = argparse.ArgumentParser(prog=f"moreh-log {command}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="a pid, a log or events file, or --latest (the default)")
    p.add_argument("--latest", dest="run", action="store_const", const="--latest")
    p.add_argument("--dir", help="the log directory (default: MOREH_LOG_FILE's directory, else ~/.moreh/logs)")
    p.add_argument("--json", action="store_true", help="the same facts as JSON")
    if command in ("trace", "plot"):
        p.add_argument("-o", "--output", help="the file to write (default: trace.json, steps.png)")
    if command in ("steps", "summary"):
        p.add_argument("-f", "--follow", action="store_true", help="print each step of a running process as it lands")
        p.add_argument("--timeout", type=float, help="with -f: stop following after this many seconds")
    args = p.parse_args(argv)
    if getattr(args, "follow", False):
        try:
            return follow(args)
        except KeyboardInterrupt:
            return 0
    if command == "list" and args.run:
        p.error("list takes no run")
    handler = {"list": cmd_list, "summary": cmd_summary, "steps": cmd_steps, "errors": cmd_errors, "ap": cmd_ap,
               "trace": cmd_trace, "plot": cmd_plot}
    try:
        return handler[command](args)
    except BrokenPipeError:  # moreh-log ... | head
        return 0
    except (OSError, UnicodeError) as e:
        print(f"moreh-log: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
