"""Running moreh's command-line tools from this checkout in a subprocess."""
import os
import subprocess
import sys

from conftest import ROOT


def tool_env(config_dir, **extra):
    env = dict(os.environ)
    for var in ("MOREH_FLAVOR", "MOREH_NUM_DEVICES", "MOREH_HOST_MEMORY_CAPACITY"):
        env.pop(var, None)
    env["PYTHONPATH"] = os.path.join(ROOT, "backend")
    env["MOREH_CONFIG_DIR"] = str(config_dir)
    env.update(extra)
    return env


def run_tool(module, *args, config_dir, input=None, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", f"moreh_tools.{module}", *args], input=input, capture_output=True,
                          text=True, env={**tool_env(config_dir), **(env or {})}, timeout=timeout, cwd=ROOT)
