"""moreh-launch: start moreh-workers, run a script against them, stop them.

    moreh-launch --local-workers 2 --devices-per-worker 2 -- python train.py
    moreh-launch --hostfile hosts.txt --token-file ~/.moreh/token -- python train.py

Local workers listen on 127.0.0.1 with a fresh token in a private temporary file. A hostfile lists one
node per line, ``HOST [PORT] [devices=K]`` (``#`` starts a comment); each worker is started with ``ssh
HOST moreh-worker ...`` (``--ssh`` replaces the ssh command), and the token file must be at the same path
on every node. The script runs with ``MOREH_WORKERS`` and ``MOREH_WORKER_TOKEN_FILE`` set; the workers are
stopped when it ends, and moreh-launch exits with the script's exit code.
"""
import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from ._native import new_token, write_token_file

READY = re.compile(r"moreh-worker ready on (\S+):(\d+)")


class LaunchError(Exception):
    pass


def parse_hostfile(path, default_port, default_devices):
    """[(host, port, devices)] from a hostfile; LaunchError naming the line that is malformed."""
    nodes = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            host, port, devices = words[0], default_port, default_devices
            for w in words[1:]:
                if w.startswith("devices=") and w[8:].isdigit() and int(w[8:]) > 0:
                    devices = int(w[8:])
                elif w.isdigit() and 0 < int(w) < 65536:
                    port = int(w)
                else:
                    raise LaunchError(f"{path}:{n}: '{w}' is neither a port nor devices=K")
            if (host, port) in [(h, p) for h, p, _ in nodes]:
                raise LaunchError(f"{path}:{n}: {host}:{port} is listed twice")
            nodes.append((host, port, devices))
    if not nodes:
        raise LaunchError(f"{path} lists no node")
    return nodes


def _worker_command(listen, token_file, devices, local=False):
    # Local workers run in this Python with this moreh; remote ones are whatever moreh-worker their PATH finds.
    program = [sys.executable, "-m", "moreh_tools.worker"] if local else ["moreh-worker"]
    return program + ["--listen", listen, "--token-file", token_file, "--host-devices", str(devices)]


def _wait_ready(proc, what, timeout):
    """The host:port a worker prints once it listens; LaunchError when it exits or stays silent."""
    found = {}

    def read():
        for line in proc.stdout:
            m = READY.search(line)
            if m:
                found["at"] = (m.group(1), int(m.group(2)))
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    if "at" not in found:
        code = proc.poll()
        raise LaunchError(f"{what} did not start within {timeout:.0f} s" if code is None
                          else f"{what} exited with code {code} before it was ready (its log says why)")
    # Keep draining its stdout so that it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return found["at"]


def _stop(procs, grace=10.0):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="moreh-launch", description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--local-workers", type=int, metavar="W", help="start W workers on this machine")
    where.add_argument("--hostfile", help="start one worker per node listed in this file, over ssh")
    ap.add_argument("--devices-per-worker", type=int, default=1, metavar="K", help="host devices per worker")
    ap.add_argument("--port", type=int, default=7000, help="port of hostfile workers without one (default 7000)")
    ap.add_argument("--token-file", help="shared token (hostfile: required, the same path on every node)")
    ap.add_argument("--listen-host", default="0.0.0.0",
                    help="address hostfile workers listen on (default 0.0.0.0: every address of the node)")
    ap.add_argument("--ssh", default="ssh", help="command that runs a command on a node (default: ssh)")
    ap.add_argument("--start-timeout", type=float, default=60.0, help="seconds a worker has to start")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- the script and its arguments")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to run after --")
    if args.devices_per_worker < 1 or (args.local_workers is not None and args.local_workers < 1):
        ap.error("--local-workers and --devices-per-worker must be at least 1")

    procs, tmp = [], None
    try:
        if args.local_workers is not None:
            token_file = args.token_file
            if not token_file:
                tmp = tempfile.mkdtemp(prefix="moreh-launch-")  # private: mode 0700
                token_file = os.path.join(tmp, "token")
                write_token_file(token_file, new_token())
            starts = [(f"local worker {w}", _worker_command("127.0.0.1:0", token_file, args.devices_per_worker, local=True))
                      for w in range(args.local_workers)]
            # The workers and the script share this machine's cores: one OpenMP team each of the whole machine's
            # size would spin against the others (unless the user chose a size).
            if "OMP_NUM_THREADS" not in os.environ:
                share = max(1, (os.cpu_count() or 1) // (args.local_workers + 1))
                os.environ["OMP_NUM_THREADS"] = str(share)
        else:
            if not args.token_file:
                raise LaunchError("--hostfile needs --token-file (a private file at the same path on every node)")
            token_file = os.path.abspath(os.path.expanduser(args.token_file))
            ssh = shlex.split(args.ssh)
            starts = [(f"worker on {h}:{p}", ssh + [h] + _worker_command(f"{args.listen_host}:{p}", token_file, d))
                      for h, p, d in parse_hostfile(args.hostfile, args.port, args.devices_per_worker)]
        addresses = []
        for what, cmd in starts:
            if shutil.which(cmd[0]) is None:
                raise LaunchError(f"{what}: '{cmd[0]}' is not on PATH")
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
            addresses.append((what, procs[-1]))
        workers = []
        for (what, proc), (_, cmd) in zip(addresses, starts):
            host, port = _wait_ready(proc, what, args.start_timeout)
            if args.hostfile:  # the worker listens on every address; the client reaches it by the hostfile's name
                host = cmd[len(shlex.split(args.ssh))]
            workers.append(f"{host}:{port}")
        env = dict(os.environ, MOREH_WORKERS=",".join(workers), MOREH_WORKER_TOKEN_FILE=token_file)
        print(f"moreh-launch: {len(workers)} worker(s) ready: {env['MOREH_WORKERS']}", file=sys.stderr, flush=True)
        return subprocess.call(command, env=env)
    except LaunchError as e:
        print(f"moreh-launch: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        _stop(procs)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
