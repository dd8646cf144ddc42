"""The scheduler's analysis of a step: its batch size (the leading dimension of the data the script
copies in every step) and MoAI's warning when those data disagree."""
from conftest import run_python

SCRIPT = """
import torch, torch.nn.functional as F
model = torch.nn.Linear(4, 3).to("moreh")
opt = torch.optim.SGD(model.parameters(), lr=0.1)
sizes = []
for step in range(4):
    x, y = torch.randn({batch}, 4), torch.randint(0, 3, ({batch},))
    out = model(x.to("moreh"))
    if {with_mask}:
        out = out * torch.ones(1, 3).to("moreh")  # data with a leading dimension of 1
    F.cross_entropy(out, y.to("moreh")).backward()
    opt.step()
    opt.zero_grad()
    sizes.append(torch.moreh.graph_stats()["last_batch_size"])
print("SIZES", sizes)
"""


def run(batch, with_mask):
    proc = run_python(SCRIPT.format(batch=batch, with_mask=with_mask))
    assert proc.returncode == 0, proc.stderr
    sizes = eval(proc.stdout.split("SIZES", 1)[1])
    return sizes, proc.stderr


def test_batch_size_is_the_leading_dimension_of_the_per_step_data():
    sizes, err = run(batch=6, with_mask=False)
    # The first step graph also uploads the parameters (host copies too); from the second step on the
    # graph recurs, and its host copies are the per-step data.
    assert sizes[-1] == 6 and sizes[-2] == 6, sizes
    assert "Various batch size detected" not in err


def test_various_batch_sizes_get_moais_warning_once():
    sizes, err = run(batch=5, with_mask=True)
    assert sizes[-1] == 5, sizes
    lines = [line for line in err.splitlines() if "Various batch size detected" in line]
    assert len(lines) == 1, err
    assert lines[0].endswith("[warning] Various batch size detected : 5, 1")
