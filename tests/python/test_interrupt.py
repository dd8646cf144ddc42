"""Ctrl-C during a long step (issue 15, item 14): the step stops at its next kernel, Python raises
KeyboardInterrupt within a second, and the process stays usable: earlier tensors keep their values, the
interrupted step's results say why they are missing, and the next step runs."""
import pytest

from conftest import run_python

SCRIPT = r"""
import os, signal, threading, time, torch
keep = torch.arange(4.0).to("moreh") * 2
keep.sum().item()
a = torch.randn(512, 512).to("moreh")
x = a
for _ in range(3000):             # about a TFLOP in one step: seconds even on a fast machine
    x = torch.tanh(x @ a)
threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
start = time.time()
try:
    x.sum().item()
    print("not interrupted")
except KeyboardInterrupt:
    print("KeyboardInterrupt", time.time() - start < 1.3)
try:
    x.sum().item()
except RuntimeError as e:
    print("x unavailable", "interrupted (Ctrl-C)" in str(e))
print("keep", keep.tolist(), "next", (torch.ones(3, device="moreh") * 3).tolist())
"""


@pytest.mark.parametrize("devices", ["1", "4"])
def test_ctrl_c_stops_a_long_step_at_the_next_kernel(devices):
    proc = run_python(SCRIPT, env={"MOREH_NUM_DEVICES": devices}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["KeyboardInterrupt True", "x unavailable True",
                                        "keep [0.0, 2.0, 4.0, 6.0] next [3.0, 3.0, 3.0]"], proc.stdout


def test_a_script_that_ignores_sigint_keeps_ignoring_it():
    code = r"""
import os, signal, sys, subprocess
# A child started with SIGINT ignored (a background job) keeps it ignored after moreh starts.
child = subprocess.run([sys.executable, "-c",
    "import os, signal, torch; (torch.ones(2, device='moreh') * 2).sum().item(); "
    "print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN); os.kill(os.getpid(), signal.SIGINT); print('alive')"],
    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN), capture_output=True, text=True, timeout=120)
print(child.stdout.split())
"""
    proc = run_python(code, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "['True', 'alive']", proc.stdout + proc.stderr[-2000:]
