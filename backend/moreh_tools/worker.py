"""moreh-worker: owns this node's devices and runs the jobs that moreh clients send it.

``moreh-worker --listen HOST:PORT --token-file FILE [--host-devices K]`` serves until SIGTERM or SIGINT
(``--help`` lists every option). The runtime does the work, with torch's kernels (torch_moreh._C) and no
moreh engine of its own; this is only its entry point.
"""
import os
import sys


def main(argv=None):
    # torch without its backend autoload, and torch_moreh's extension without the engine a script gets.
    os.environ["TORCH_DEVICE_BACKEND_AUTOLOAD"] = "0"
    os.environ["MOREH_WORKER_PROCESS"] = "1"
    os.environ.pop("MOREH_WORKERS", None)
    import torch  # noqa: F401

    from torch_moreh import _C

    return _C._worker_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
