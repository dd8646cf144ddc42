"""moreh-smi: the virtual MoAI Accelerator, its flavor and memory, and the processes using it.

``moreh-smi`` prints MoAI's two tables (device, processes); ``-p`` one row per physical device;
``--json`` the same facts as JSON. Processes come from the registry (``<config dir>/run/``) that every
running moreh process keeps up to date about once a second.
"""
import argparse
import json
import os
import socket
import sys

from . import __version__, box, registry
from ._native import process_config, worker_status

DEVICE_NAME = "MoAI Accelerator"


def _mib(nbytes):
    return f"{nbytes // (1 << 20)} MiB"


def _percent(fraction):
    return f"{round(100 * fraction)} %"


def _one_line(command, width=48):
    """A command as one table cell: whitespace (newlines of `python -c` code) collapsed, long ones cut."""
    text = " ".join(command.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def token_file(cfg):
    """The workers' token file: MOREH_WORKER_TOKEN_FILE, else <config dir>/token."""
    return os.environ.get("MOREH_WORKER_TOKEN_FILE") or os.path.join(cfg["config_dir"], "token")


def gather_nodes(cfg, timeout_s=5.0):
    """One entry per worker of MOREH_WORKERS: what it says about itself, or why it could not be asked."""
    workers = os.environ.get("MOREH_WORKERS", "").strip()
    if not workers:
        return None
    nodes = []
    for endpoint in workers.split(","):
        endpoint = endpoint.strip()
        try:
            nodes.append(dict(worker_status(endpoint, token_file(cfg), timeout_s)[0], error=""))
        except (OSError, RuntimeError) as e:  # not there, refused, timed out
            nodes.append({"endpoint": endpoint, "hostname": "-", "device_kind": "-", "devices": 0, "capacity": 0,
                          "busy": False, "serving": "", "error": str(e)})
    return nodes


def gather():
    """Everything moreh-smi shows, as plain data (the --json output)."""
    cfg = process_config()
    nodes = gather_nodes(cfg)
    entries = registry.live_entries(cfg["config_dir"])
    total = cfg["num_devices"] * cfg["device_memory"]
    physical = []
    for i in range(cfg["num_devices"]):
        used, util = 0, 0.0
        for e in entries:
            for d in e.get("devices", []):
                if d.get("index") == i:
                    used += d.get("memory_used", 0)
                    util += d.get("utilization", 0.0)
        physical.append({"index": i, "location": f"{socket.gethostname()}:{i}", "memory_used": used,
                         "memory_total": cfg["device_memory"], "utilization": min(util, 1.0)})
    if nodes is not None:  # the workers' devices are the virtual device's (DESIGN.md §2.6, across machines)
        physical = [{"index": i, "location": f"{n['hostname']}({n['endpoint']}):{d}", "memory_used": 0,
                     "memory_total": n["capacity"], "utilization": 0.0}
                    for i, (n, d) in enumerate((n, d) for n in nodes for d in range(n["devices"]))]
        total = sum(n["devices"] * n["capacity"] for n in nodes)
    return {
        "version": __version__,
        "device": {
            "index": 0,
            "name": DEVICE_NAME,
            "flavor": cfg["flavor"],
            "flavor_source": cfg["flavor_source"],
            "num_physical_devices": len(physical) if nodes is not None else cfg["num_devices"],
            "memory_used": sum(e.get("memory_used", 0) for e in entries),
            "memory_total": total,
            "utilization": max((e.get("utilization", 0.0) for e in entries), default=0.0),
            "in_use": bool(entries),
        },
        "processes": [
            {"pid": e["pid"], "command": e.get("command", ""), "flavor": e.get("flavor", ""),
             "memory_used": e.get("memory_used", 0), "memory_total": e.get("memory_total", 0),
             "utilization": e.get("utilization", 0.0), "updated": e.get("updated")}
            for e in entries
        ],
        "physical_devices": physical,
        "nodes": nodes,
    }


def render_device(facts):
    dev = facts["device"]
    busy = dev["in_use"]
    device_table = box.render(
        ["Device", "Name", "Model", "Memory Usage", "Total Memory", "Utilization"],
        [[f"* {dev['index']}", dev["name"], dev["flavor"], _mib(dev["memory_used"]) if busy else "-",
          _mib(dev["memory_total"]), _percent(dev["utilization"]) if busy else "-"]],
        min_widths=[6, 17, 14, 12, 12, 11],
    )
    width = len(device_table[0])
    lines = box.banner(f"Current Version: {facts['version']}", width) + device_table
    lines += ["", "Processes:"]
    lines += box.render(
        ["Device", "Job ID", "PID", "Process", "Memory Usage"],
        [[0, "-", p["pid"], _one_line(p["command"]), _mib(p["memory_used"])] for p in facts["processes"]],
        min_widths=[6, 6, 7, 28, 12],
    )
    if facts.get("nodes") is not None:
        lines += ["", "Nodes:"]
        lines += box.render(
            ["Node", "Worker", "Host", "Devices", "Memory per Device", "Status"],
            [[i, n["endpoint"], n["hostname"], f"{n['devices']} x {n['device_kind']}" if not n["error"] else "-",
              _mib(n["capacity"]) if not n["error"] else "-",
              n["error"] if n["error"] else (f"serving {n['serving']}" if n["busy"] else "idle")]
             for i, n in enumerate(facts["nodes"])],
        )
    return lines


def render_physical(facts):
    busy = facts["device"]["in_use"]
    rows = [[d["index"], d["location"], "-", "-", _percent(d["utilization"]) if busy else "-",
             _percent(d["memory_used"] / d["memory_total"]) if busy and d["memory_total"] else "-",
             f"{_mib(d['memory_used'])} / {_mib(d['memory_total'])}"]
            for d in facts["physical_devices"]]
    header = (f"MoAI Accelerator {facts['device']['flavor']}: {len(rows)} physical device(s) "
              "(host devices: no temperatures)")
    return [header] + box.render(["Dev", "Location", "Dev Temp", "Mem Temp", "Dev Util", "Mem Util", "Mem Usage"],
                                 rows)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="moreh-smi", description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--physical", action="store_true", help="list the physical devices")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    args = parser.parse_args(argv)
    try:
        facts = gather()
    except ValueError as e:  # a malformed MOREH_* variable or a corrupt config file
        print(f"moreh-smi: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        print("\n".join(render_physical(facts) if args.physical else render_device(facts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
