import os
import subprocess
import sys

import pytest

# Tests see the default flavor and leave no registry entries in the user's ~/.moreh, whatever
# moreh-switch-model chose there (set before any test module imports torch).
if "MOREH_CONFIG_DIR" not in os.environ:
    import tempfile

    os.environ["MOREH_CONFIG_DIR"] = tempfile.mkdtemp(prefix="moreh-tests-")

# Several host devices run ATen's kernels on threads at once, and MKL's dynamic thread count (its default) then
# varies a matmul's blocking and its rounding from run to run; the tests compare runs bit for bit. MKL reads this
# when it starts, before moreh can change it (docs/ENVIRONMENT.md). (OMP_NUM_THREADS=1 as well was tried: it
# changes which layouts round alike, and three bit-for-bit tests failed every time.)
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

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
