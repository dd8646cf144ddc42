"""moreh-switch-model: choose the flavor (number of physical devices) of the MoAI Accelerator.

Without arguments it shows MoAI's numbered menu and asks (``q`` quits); ``--list`` prints the menu,
``--set NAME|NUMBER`` switches without asking. The choice is saved in ``<config dir>/config`` and used by
every later moreh process that does not set MOREH_FLAVOR / MOREH_NUM_DEVICES.
"""
import argparse
import os
import sys

from ._native import config_path, flavors, read_flavor, write_flavor

DEFAULT = flavors()[0][0]


def current(path):
    return read_flavor(path) or DEFAULT


def menu(path):
    now = current(path)
    lines = [f"Current MoAI Accelerator: {now}", ""]
    for i, (name, _) in enumerate(flavors(), 1):
        lines.append(f"{i}. {name}" + ("  *" if name == now else ""))
    return lines


def resolve(choice):
    """A flavor name from a menu number or a name (any case); None if it is neither."""
    table = [name for name, _ in flavors()]
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
    n = len(flavors())
    while True:
        print("\n".join(menu(path)))
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
        name = resolve(answer) if answer.strip().isdigit() else None
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
            name = resolve(args.set)
            if name is None:
                table = ", ".join(name for name, _ in flavors())
                print(f'moreh-switch-model: "{args.set}" is not a flavor: expected a number from 1 to '
                      f"{len(flavors())} or one of {table}", file=sys.stderr)
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
