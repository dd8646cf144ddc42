"""A moreh run's record, read back: the events file beside its log (moreh-<pid>.events.jsonl, one JSON object
per line) or, for logs written without one, the spdlog lines it can parse. Reading streams line by line and
keeps per step only a few numbers, so a log of any size is read in bounded memory.
"""
import collections
import json
import math
import os
import re
import statistics
from array import array

EVENTS_SUFFIX = ".events.jsonl"
LOG_SUFFIX = ".log"
_SPDLOG = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\] \[(\w+)\] (.*)$")
_COMPILED = re.compile(r"^Step graph ([0-9a-f]{16}) compiled in ([0-9.]+) ms: (\d+) ops")
_CACHED = re.compile(r"^Step graph ([0-9a-f]{16}) found in the plan cache \((\d+) ops\)")


def default_dir():
    """Where moreh writes its logs: MOREH_LOG_FILE's directory, else ~/.moreh/logs."""
    named = os.environ.get("MOREH_LOG_FILE")
    if named:
        return os.path.dirname(os.path.abspath(named))
    return os.path.join(os.path.expanduser("~"), ".moreh", "logs")


def events_path_for(log_path):
    """The events file beside a log (its .log replaced), as runtime/base/event_log.h names it."""
    if log_path.endswith(LOG_SUFFIX) and len(log_path) > len(LOG_SUFFIX):
        return log_path[: -len(LOG_SUFFIX)] + EVENTS_SUFFIX
    return log_path + EVENTS_SUFFIX


def pid_alive(pid):
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


class Run:
    """One process's run: what its events (or log lines) say."""

    MAX_ROWS = 20000  # steps and errors kept as rows (the latest); the totals count every one

    def __init__(self, path, source):
        self.path = path            # the file read
        self.source = source        # "events" or "log" (parsed spdlog lines)
        self.start = None           # run_start record (events) or {} (log)
        self.end = None             # run_end record, absent after a crash or while running
        self.first_t = self.last_t = None
        self.steps = collections.deque(maxlen=self.MAX_ROWS)  # the latest steps' rows (see _step_row)
        self.step_count = 0
        self.times = array("d")     # every step's time on the devices, ms (NaN: not timed)
        self.hits = self.misses = 0
        self.compile_ms = 0.0
        self.peaks = {}             # device -> the most it held during a step
        self.last_layout = None
        self.device_runs = {}       # step -> [(device, start, end)] until its step row takes them
        self.errors = collections.deque(maxlen=self.MAX_ROWS)  # warnings, errors, OOM: (t, kind, message)
        self.error_counts = collections.Counter()
        self.eager = {}             # op -> count
        self.replicated = {}        # op -> count (from the steps' fallback_ops)
        self.ap = []                # ap records
        self.layouts = []           # configuration lines selected, in order (log source)
        self.bad_lines = 0          # lines that were not one record (truncated, garbage)
        self.notes = []             # what could not be read, said once each
        self.may_run = True         # False for a run followed by another in its file (it ended somehow)

    # --- facts -------------------------------------------------------------------------------------------
    @property
    def pid(self):
        return (self.start or {}).get("pid")

    @property
    def command(self):
        return (self.start or {}).get("command", "")

    @property
    def state(self):
        if self.end is not None:
            return "finished"
        return "running" if self.may_run and pid_alive(self.pid) else "crashed"

    @property
    def duration(self):
        if self.first_t is None or self.last_t is None:
            return None
        return self.last_t - self.first_t

    def step_times(self):
        return [t for t in self.times if not math.isnan(t)]

    def summary(self):
        times = self.step_times()
        steady = times[1:]
        hits, misses, peaks = self.hits, self.misses, self.peaks
        start = self.start or {}
        last_ap = self.ap[-1] if self.ap else None
        layout = self.last_layout
        if layout is None and self.layouts:
            layout = self.layouts[-1]
        return {
            "path": self.path, "source": self.source, "pid": self.pid, "command": self.command,
            "state": self.state, "start": self.first_t, "duration_s": self.duration,
            "flavor": start.get("flavor"), "devices": start.get("devices"), "device_memory": start.get("device_memory"),
            "torch": start.get("torch"), "moreh": start.get("moreh"), "plan_only": start.get("plan_only"),
            "steps": self.step_count,
            "first_step_ms": times[0] if times else None,
            "steady_ms": ({"min": min(steady), "median": statistics.median(steady), "max": max(steady)}
                          if steady else None),
            "cache_hits": hits, "cache_misses": misses,
            "compile_ms": self.compile_ms,
            "eager_ops": dict(sorted(self.eager.items(), key=lambda kv: -kv[1])),
            "replicated_fallbacks": dict(sorted(self.replicated.items(), key=lambda kv: -kv[1])),
            "peak_bytes": [peaks[d] for d in sorted(peaks)],
            "layout": layout or None,
            "ap": _ap_brief(last_ap) if last_ap else None,
            "errors": sum(n for kind, n in self.error_counts.items() if kind != "warning"),
            "warnings": self.error_counts["warning"],
            "bad_lines": self.bad_lines, "notes": self.notes,
        }

    # --- reading -----------------------------------------------------------------------------------------
    def add_step(self, row):
        row["i"] = len(self.times)
        self.times.append(math.nan)
        self.step_count += 1
        self.steps.append(row)
        if row.get("cache") == "hit":
            self.hits += 1
        elif row.get("cache") == "miss":
            self.misses += 1
        self.compile_ms += row.get("compile_ms") or 0
        if row.get("layout"):
            self.last_layout = row["layout"]
        for d, b in enumerate(row.get("peak_total") or []):
            if isinstance(b, (int, float)):
                self.peaks[d] = max(self.peaks.get(d, 0), b)

    def _device_run(self, row, device, start, end, comm=None):
        _add_device_run(row, device, start, end, comm)
        if row["time_ms"] is not None:
            self.times[row["i"]] = row["time_ms"]

    def add_error(self, t, kind, message):
        self.errors.append((t, kind, message[:2000]))
        self.error_counts[kind] += 1

    def _seen(self, t):
        if isinstance(t, (int, float)):
            self.first_t = t if self.first_t is None else min(self.first_t, t)
            self.last_t = t if self.last_t is None else max(self.last_t, t)

    def add_event(self, e):
        kind = e.get("event")
        self._seen(e.get("t"))
        if kind == "run_start":
            self.start = e
        elif kind == "run_end":
            self.end = e
        elif kind == "step":
            row = _step_row(e)
            self.add_step(row)
            for device, start, end, comm in self.device_runs.pop(row["step"], []):
                self._device_run(row, device, start, end, comm)
            for op in e.get("fallback_ops") or []:
                self.replicated[op] = self.replicated.get(op, 0) + 1
        elif kind == "device_run":
            step = e.get("step")
            row = next((self.steps[-k] for k in range(1, min(8, len(self.steps)) + 1)
                        if self.steps[-k]["step"] == step), None)
            if row is not None:
                self._device_run(row, e.get("device"), e.get("start"), e.get("end"), e.get("comm"))
            elif len(self.device_runs) < 64:  # its step's record not read yet (or lost)
                self.device_runs.setdefault(step, []).append(
                    (e.get("device"), e.get("start"), e.get("end"), e.get("comm")))
        elif kind in ("warning", "error"):
            self.add_error(e.get("t"), kind, str(e.get("message", "")))
        elif kind == "out_of_memory":
            self.add_error(e.get("t"), "out_of_memory",
                                f"step of {e.get('ops')} ops needs {e.get('needs_bytes')} bytes on {e.get('device')}, "
                                f"{e.get('free_bytes')} free of {e.get('capacity_bytes')}; {e.get('ops_run')} ops ran "
                                f"(layout {e.get('layout') or 'default'})")
        elif kind == "eager_op":
            op = str(e.get("op", "?"))
            self.eager[op] = self.eager.get(op, 0) + 1
        elif kind == "ap":
            self.ap.append(e)  # (records of kinds a later moreh adds are left alone)

    def add_log_line(self, line, epoch):
        m = _SPDLOG.match(line)
        if not m:
            self.bad_lines += 1 if line.strip() else 0
            return
        stamp, level, text = m.groups()
        t = epoch(stamp)
        self._seen(t)
        if text.startswith("moreh log file: "):
            self.start = self.start or {}
            return
        c = _COMPILED.match(text)
        if c:
            self.add_step({"step": self.step_count + 1, "graph": c.group(1), "ops": int(c.group(3)),
                           "cache": "miss", "compile_ms": float(c.group(2)), "time_ms": None, "layout": None})
            return
        c = _CACHED.match(text)
        if c:  # at debug level only
            self.add_step({"step": self.step_count + 1, "graph": c.group(1), "ops": int(c.group(2)),
                           "cache": "hit", "compile_ms": 0.0, "time_ms": None, "layout": None})
            return
        if level in ("warning", "error", "critical"):
            self.add_error(t, "warning" if level == "warning" else "error", text)
        if self._expect_config:
            self.layouts.append(text)
            self._expect_config = False
        if text == "Configuration for parallelism is selected.":
            self._expect_config = True

    _expect_config = False


def _step_row(e):
    used = e.get("used_bytes") or []
    peak = e.get("peak_bytes") or []
    total = [u + p for u, p in zip(used, peak)] if len(used) == len(peak) else list(peak)
    return {"step": e.get("step"), "t": e.get("t"), "graph": e.get("graph"), "ops": e.get("ops"),
            "cache": e.get("cache"), "compile_ms": e.get("compile_ms"), "layout": e.get("layout") or None,
            "predicted_ms": e.get("predicted_ms"), "replicated_fallbacks": e.get("replicated_fallbacks", 0),
            "eager_ops_before": e.get("eager_ops_before", 0), "peak_total": total,
            "collective_bytes": e.get("collective_bytes_per_device"), "plan_only": e.get("plan_only", False),
            "time_ms": None, "begin": None, "finish": None, "devices": {}, "comm_ms": None, "comm_bytes": None}


def _add_device_run(row, device, start, end, comm=None):
    """A device's span of the step, and its collectives and messages: [kind, bytes, start, end] each, seconds
    after the device's start."""
    if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
        return
    spans = [c for c in comm or [] if isinstance(c, list) and len(c) == 4
             and all(isinstance(x, (int, float)) for x in c[1:])]
    row["devices"][device] = (start, end, spans)
    comm_s = sum(c[3] - c[2] for c in spans)
    row["comm_ms"] = max(row.get("comm_ms") or 0.0, comm_s * 1e3)  # the busiest device's
    row["comm_bytes"] = max(row.get("comm_bytes") or 0, sum(int(c[1]) for c in spans))
    row["begin"] = start if row["begin"] is None else min(row["begin"], start)
    row["finish"] = end if row["finish"] is None else max(row["finish"], end)
    row["time_ms"] = (row["finish"] - row["begin"]) * 1e3


def _ap_brief(e):
    table = e.get("table") or []
    return {"reason": e.get("reason"), "selected": e.get("selected"), "predicted_ms": e.get("predicted_ms"),
            "tokens_per_s": e.get("tokens_per_s"), "candidates": e.get("candidates", len(table)),
            "feasible": e.get("feasible"), "not_compiled": e.get("not_compiled"), "cached": e.get("cached"),
            "compile_ms": e.get("compile_ms"), "cost_ms": e.get("cost_ms")}


def _epoch_parser():
    import datetime
    cache = {}

    def epoch(stamp):
        base, ms = stamp[:19], stamp[20:]
        if base not in cache:
            cache.clear()
            cache[base] = datetime.datetime.strptime(base, "%Y-%m-%d %H:%M:%S").timestamp()
        return cache[base] + int(ms) / 1e3
    return epoch


def read_events(path):
    """The runs in an events file (a log named by MOREH_LOG_FILE is appended to: one run per run_start)."""
    runs = []
    with open(path, "rb") as f:
        for raw in f:
            try:
                e = json.loads(raw)
            except ValueError:  # a truncated last line, garbage, a line cut by a crash
                (runs[-1] if runs else _orphan(runs, path)).bad_lines += 1
                continue
            if not isinstance(e, dict) or "event" not in e:
                (runs[-1] if runs else _orphan(runs, path)).bad_lines += 1
                continue
            # A run begins at its start (lines before it, warnings while the engine starts, are its too).
            if not runs or runs[-1].end is not None or (e["event"] == "run_start" and runs[-1].start is not None):
                runs.append(Run(path, "events"))
            runs[-1].add_event(e)
    for r in runs[:-1]:  # only the last run of a file can still be running
        r.may_run = False
    return runs


def _orphan(runs, path):
    runs.append(Run(path, "events"))
    return runs[-1]


def read_log(path):
    """A log without an events file (written by an older moreh, or with MOREH_LOG_EVENTS=0): its lines."""
    run = Run(path, "log")
    run.start = {}
    epoch = _epoch_parser()
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            run.add_log_line(line.rstrip("\n"), epoch)
    m = re.search(r"moreh-(\d+)\.log$", path)
    if m:
        run.start["pid"] = int(m.group(1))
    run.notes.append("no events file beside this log: step times, plan-cache hits, eager fallbacks and memory "
                     "peaks are not in its lines (shown: compiled steps, warnings and errors, selected layouts)")
    if run.step_count and run.hits == 0:
        run.notes.append("plan-cache hits are logged at debug level only: steps counted are compiled ones")
    return run


def _run_files(directory):
    """The run files of a directory, newest first: an events file, or a log without one."""
    try:
        names = os.listdir(directory)
    except OSError as e:
        raise SystemExit(f"moreh-log: cannot read the log directory {directory}: {e.strerror}")
    events = {n for n in names if n.endswith(EVENTS_SUFFIX)}
    files = list(events) + [n for n in names if n.endswith(LOG_SUFFIX)
                            and n[: -len(LOG_SUFFIX)] + EVENTS_SUFFIX not in events]

    def mtime(n):
        try:
            return os.path.getmtime(os.path.join(directory, n))
        except OSError:
            return 0
    return sorted(files, key=mtime, reverse=True)


def _each_file(directory, problems):
    """Each run file's runs, newest file first; files that cannot be read are named in `problems`."""
    for n in _run_files(directory):
        path = os.path.join(directory, n)
        try:
            yield read_path(path)
        except OSError as e:
            problems.append(f"{path}: {e.strerror}")


def runs_in(directory):
    """Every run under the directory, oldest first, and the files that could not be read (named, not raised)."""
    problems = []
    runs = [r for file_runs in _each_file(directory, problems) for r in file_runs]
    runs.sort(key=lambda r: r.first_t if r.first_t is not None else 0)
    return runs, problems


def latest_run(directory):
    """The latest run under the directory, reading only the newest file that holds one (a directory of
    thousands of runs is not read whole). (None, problems) when there is none."""
    problems = []
    for file_runs in _each_file(directory, problems):
        if file_runs:
            return file_runs[-1], problems
    return None, problems


def run_of_pid(directory, pid):
    """The run of a pid: its default-named files first, else every file's runs."""
    for name in (f"moreh-{pid}{EVENTS_SUFFIX}", f"moreh-{pid}{LOG_SUFFIX}"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            try:
                mine = [r for r in read_path(path) if r.pid == pid]
            except OSError:
                mine = []
            if mine:
                return mine[-1]
    runs, _ = runs_in(directory)
    mine = [r for r in runs if r.pid == pid]
    return mine[-1] if mine else None


def read_path(path):
    """The runs of one file named by the user: an events file, or a log (its events file when there is one)."""
    if path.endswith(EVENTS_SUFFIX):
        return read_events(path)
    events = events_path_for(path)
    if os.path.exists(events):
        return read_events(events)
    return [read_log(path)]
