import os
import subprocess
import sys

import pytest

# Tests see the default flavor and leave no registry entries in the user's ~/.moreh, whatever
# moreh-switch-model chose there (set before any test module imports torch).
if "MOREH_CONFIG_DIR" not in os.environ:
    import tempfile

    os.environ["MOREH_CONFIG_DIR"] = tempfile.mkdtemp(prefix="moreh-tests-")

# Several host devices run ATen's kernels on threads at once, and the kernels' own threads then vary how a sum is
# split, and its rounding, from run to run (MKL's dynamic thread count, OpenMP teams under contention); the tests
# compare runs bit for bit. One thread per kernel makes every run's rounding the same (and suits 2 cores shared
# by several devices). Read when the libraries start, before torch is imported (docs/ENVIRONMENT.md).
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def run_python(code, env=None, timeout=300, cwd=None):
    """Runs `code` in a fresh interpreter (its own moreh engine and environment; in the repository's root
    unless `cwd`); returns the process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=cwd or ROOT)


@pytest.fixture
def moreh_subprocess():
    return run_python
