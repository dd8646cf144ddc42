"""moreh-switch-model: choose the flavor (number of physical devices) of the MoAI Accelerator.

Without arguments it shows MoAI's numbered menu and asks (``q`` quits); ``--list`` prints the menu,
``--set NAME|NUMBER`` switches without asking. The choice is saved in ``<config dir>/config`` and used by
every later moreh process that does not set MOREH_FLAVOR / MOREH_NUM_DEVICES.

When the config file lists a cluster's moreh-workers (``workers = host:port, ...``), the menu goes on with
the multi-node flavors ``Nodes.1`` to ``Nodes.W``: this process and the first k workers, whose devices the
menu shows as the workers report them (docs/MULTI_NODE.md).
"""
import argparse
import os
import sys

from ._native import (cluster_config, config_dir, config_path, flavors, read_flavor, worker_status,
                      write_flavor)

DEFAULT = flavors()[0][0]
STATUS_TIMEOUT_S = 2.0


def current(path):
    return read_flavor(path) or DEFAULT


def node_flavors(path):
    """[(name, workers)]: Nodes.k runs on this process and the first k workers of the config file (none when
    the file cannot be read: --set then replaces it, as its error says)."""
    try:
        workers = cluster_config(path)["workers"]
    except ValueError:
        return []
    return [(f"Nodes.{k}", workers[:k]) for k in range(1, len(workers) + 1)]


def names(path):
    return [name for name, _ in flavors()] + [name for name, _ in node_flavors(path)]


def worker_devices(path):
    """endpoint -> what the worker reports ("2 host devices"), or why it cannot say; asked once, bounded."""
    cluster = cluster_config(path)
    token = (os.environ.get("MOREH_WORKER_TOKEN_FILE") or cluster["worker_token_file"]
             or os.path.join(config_dir(), "token"))
    out = {}
    for endpoint in cluster["workers"]:
        try:
            node = worker_status(endpoint, token, STATUS_TIMEOUT_S)[0]
            out[endpoint] = f"{node['devices']} {node['device_kind']} device{'s' if node['devices'] != 1 else ''}"
        except Exception as e:  # noqa: BLE001  (not reachable, refused: the menu still lists it)
            out[endpoint] = f"not reachable: {str(e).splitlines()[0][:80]}"
    return out


def menu(path, devices=None):
    now = current(path)
    lines = [f"Current MoAI Accelerator: {now}", ""]
    table = flavors()
    for i, (name, _) in enumerate(table, 1):
        lines.append(f"{i}. {name}" + ("  *" if name == now else ""))
    nodes = node_flavors(path)
    if nodes:
        devices = worker_devices(path) if devices is None else devices
        lines += ["", f"Multi-node (this process's device, then the workers' devices; workers from {path}):"]
        for i, (name, workers) in enumerate(nodes, len(table) + 1):
            lines.append(f"{i}. {name}" + ("  *" if name == now else ""))
        for endpoint in nodes[-1][1]:
            lines.append(f"     {endpoint}: {devices.get(endpoint, '?')}")
    return lines


def resolve(choice, path):
    """A flavor name from a menu number or a name (any case); None if it is neither."""
    table = names(path)
    text = choice.strip()
    if text.isdigit() and 1 <= int(text) <= len(table):
        return table[int(text) - 1]
    return next((name for name in table if name.lower() == text.lower()), None)


def switch(path, name):
    try:
        read_flavor(path)
    except ValueError as e:  # corrupt: the error told the user to run this, so the file is replaced
        print(f"moreh-switch-model: replacing a config file that could not be read: {e}", file=sys.stderr)
    write_flavor(path, name)
    print(f'The MoAI Accelerator model is successfully switched to  "{name}".')


def overridden_note():
    names = [v for v in ("MOREH_FLAVOR", "MOREH_NUM_DEVICES") if os.environ.get(v)]
    if names:
        return f"Note: {' and '.join(names)} is set here and overrides this choice for processes started from this shell."
    return None


def interactive(path):
    n = len(names(path))
    devices = worker_devices(path) if node_flavors(path) else {}
    while True:
        print("\n".join(menu(path, devices)))
        print()
        if note := overridden_note():
            print(note)
        try:
            answer = input(f"Selection (1-{n}, q, Q): ")
        except EOFError:
            print()
            return 0
        if answer.strip() in ("q", "Q"):
            return 0
        name = resolve(answer, path) if answer.strip().isdigit() else None
        if name is None:
            print(f'Invalid selection "{answer.strip()}": enter a number from 1 to {n}, or q to quit.')
            print()
            continue
        switch(path, name)
        print()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="moreh-switch-model", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--list", action="store_true", help="print the flavors, the current one marked with *")
    group.add_argument("--set", metavar="FLAVOR", help="switch to FLAVOR (a name such as xLarge.512GB, or its number)")
    group.add_argument("--current", action="store_true", help="print the current flavor")
    args = parser.parse_args(argv)
    try:
        path = config_path()
        if args.list:
            print("\n".join(menu(path)))
        elif args.current:
            print(current(path))
        elif args.set is not None:
            name = resolve(args.set, path)
            if name is None:
                table = ", ".join(names(path))
                print(f'moreh-switch-model: "{args.set}" is not a flavor: expected a number from 1 to '
                      f"{len(names(path))} or one of {table}", file=sys.stderr)
                return 2
            switch(path, name)
        else:
            return interactive(path)
    except ValueError as e:  # a corrupt config file (named in the message) or an unwritable one
        print(f"moreh-switch-model: {e}", file=sys.stderr)
        return 2
    if note := overridden_note():
        print(note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
