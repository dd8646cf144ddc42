"""Going over the device's capacity raises MoAI's OUT_OF_MEMORY error and loses nothing."""
from conftest import run_python

SCRIPT = r"""
import torch
keep = torch.arange(1000.0).to("moreh") * 2      # 4 KB that must survive
keep_expected = torch.arange(1000.0) * 2
keep.cpu()
try:
    big = torch.ones(64 * 1024 * 1024, device="moreh")   # 256 MiB on a 32 MiB device
    big.sum().item()
except torch.OutOfMemoryError as e:
    msg = str(e)
    assert isinstance(e, RuntimeError)
    assert "Error Code 4: OUT_OF_MEMORY" in msg, msg
    assert ">> Memory requested : " in msg and ">> Memory available : " in msg, msg
    assert "MOREH_HOST_MEMORY_CAPACITY" in msg and "batch size" in msg, msg
else:
    raise AssertionError("no OUT_OF_MEMORY")
assert torch.equal(keep.cpu(), keep_expected)         # earlier tensors are intact
try:
    big.cpu()                                          # the failed step's result says why it is missing
except RuntimeError as e:
    assert "OUT_OF_MEMORY" in str(e)
else:
    raise AssertionError("reading a tensor of the failed step did not raise")
del big
small = (keep + 1).sum().item()                        # the device keeps working
assert small == float((keep_expected + 1).sum())
print("ok")
"""


def test_out_of_memory_is_clear_and_recoverable():
    proc = run_python(SCRIPT, env={"MOREH_HOST_MEMORY_CAPACITY": "32MiB"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")
    assert "[error]" in proc.stderr  # logged through spdlog as well
