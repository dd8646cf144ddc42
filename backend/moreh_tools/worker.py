"""moreh-worker: owns this node's devices and runs the jobs that moreh clients send it.

``moreh-worker --listen HOST:PORT --token-file FILE [--host-devices K]`` serves until SIGTERM or SIGINT
(``--help`` lists every option). The runtime does the work; this is only its entry point.
"""
import sys

from ._native import worker_main


def main(argv=None):
    return worker_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
