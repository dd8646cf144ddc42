"""Going over the device's capacity raises MoAI's OUT_OF_MEMORY error and loses nothing."""
import pytest

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


# Issue 15, item 8: a step that runs out of memory keeps every value recorded before the op that did not fit
# (uploads and a model moved in the same step), and a "catch OOM, halve the batch" loop then trains.
SURVIVE = r"""
import copy, torch, torch.nn as nn, torch.nn.functional as F
torch.manual_seed(0)
a = torch.arange(3.).to("moreh")                       # uploaded, never read yet
cpu_model = nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 4))
model = copy.deepcopy(cpu_model).to("moreh")           # the parameters' uploads are pending too
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x_all = torch.randn(4096, 256)
y_all = torch.randint(0, 4, (4096,))
batch, tries = 4096, 0
while True:
    try:
        x, y = x_all[:batch].to("moreh"), y_all[:batch].to("moreh")
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        loss.item()
        break
    except torch.OutOfMemoryError:
        tries += 1
        opt.zero_grad()
        batch //= 2
        assert batch >= 1
assert tries >= 1, "the first batch was meant not to fit"
assert a.tolist() == [0.0, 1.0, 2.0]
# The model survived the failed steps: one SGD step on CPU from the same start gives the same parameters.
ref_opt = torch.optim.SGD(cpu_model.parameters(), lr=0.1)
F.cross_entropy(cpu_model(x_all[:batch]), y_all[:batch]).backward()
ref_opt.step()
for p, q in zip(model.parameters(), cpu_model.parameters()):
    torch.testing.assert_close(p.cpu(), q, rtol=1e-5, atol=1e-6)
print("ok", batch, tries)
"""


# Four devices: 5 MiB, where no layout fits the first batch (with 8 MiB, the search on running out of memory
# finds gradient accumulation over 16 micro-batches that does, and nothing is left to survive).
@pytest.mark.parametrize("devices,capacity,layout", [("1", "24MiB", ""), ("4", "5MiB", ""),
                                                     ("4", "8MiB", "num_stages : 2, num_micro_batches : 2"),
                                                     ("4", "6MiB", "TP : 2")])
def test_values_recorded_before_an_out_of_memory_op_survive_it(devices, capacity, layout, tmp_path):
    env = {"MOREH_HOST_MEMORY_CAPACITY": capacity, "MOREH_NUM_DEVICES": devices}
    if layout:  # pipeline stages: the op that does not fit may be on either stage; dp 2 x tp 2: the pair's parts
        env["MOREH_PARALLELISM"] = layout
    proc = run_python(SURVIVE, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().startswith("ok"), proc.stdout


# Issue 15, item 9: with several devices a failed step fails on each, and is reported once.
ONCE = r"""
import torch
emb = torch.nn.Embedding(10, 4).to("moreh")
bad = torch.tensor([[1], [2], [30], [4]]).to("moreh")  # row 3 is out of range, on every device's rows
try:
    emb(bad).sum().item()
except (RuntimeError, IndexError) as e:
    assert "embedding" in str(e) or "index" in str(e), e
else:
    raise AssertionError("no error")
for i in range(6):   # unrelated reads after it must not raise it again
    assert (torch.ones(4, device="moreh") * i).sum().item() == 4.0 * i
print("ok")
"""


def test_a_failed_step_over_several_devices_is_reported_once():
    proc = run_python(ONCE, env={"MOREH_NUM_DEVICES": "4"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "ok"
