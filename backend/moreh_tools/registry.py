"""Reading the process registry: ``<config dir>/run/<pid>.json``, one file per running moreh process,
written by the process itself (runtime/config/process_registry.cpp). An entry whose process is gone (a crash,
a SIGKILL) is ignored and removed."""
import json
import os


def run_dir(config_dir):
    return os.path.join(config_dir, "run")


def _start_time(pid):
    """Field 22 of /proc/<pid>/stat (clock ticks since boot), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid, start_time):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    started = _start_time(pid)
    return started is None or not start_time or started == start_time  # a reused pid is another process


def live_entries(config_dir):
    """The entries of running processes, by pid; stale files are removed."""
    directory = run_dir(config_dir)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    entries = []
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith(".json.tmp"):
            pid_text = name[: -len(".json.tmp")]
        elif name.endswith(".json"):
            pid_text = name[: -len(".json")]
        else:
            continue
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        entry = None
        if name.endswith(".json"):
            try:
                with open(path) as f:
                    entry = json.load(f)
            except (OSError, ValueError):
                entry = None  # removed while we read it, or not ours
        start_time = entry.get("start_time") if isinstance(entry, dict) else None
        if not _alive(pid, start_time):
            try:
                os.remove(path)
            except OSError:
                pass
            continue
        if isinstance(entry, dict) and entry.get("pid") == pid:
            entries.append(entry)
    return sorted(entries, key=lambda e: e["pid"])
