import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def run_python(code, env=None, timeout=300):
    """Runs `code` in a fresh interpreter (its own moreh engine and environment); returns the process."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture
def moreh_subprocess():
    return run_python
