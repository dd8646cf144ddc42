"""Step graphs are canonicalized and hashed; identical steps reuse the compiled plan."""
import torch

from models import GPT


def test_steps_after_the_second_hit_the_plan_cache():
    torch.manual_seed(0)
    model = GPT().to("moreh")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    history = []
    for step in range(8):
        x = torch.randint(0, 96, (4, 32), generator=g).to("moreh")
        y = torch.randint(0, 96, (4, 32), generator=g).to("moreh")
        loss = model(x, y)[1]
        loss.backward()
        opt.step()  # the optimizer step ends the step graph
        opt.zero_grad()
        loss.item()
        history.append(torch.moreh.graph_stats())
    for before, after in zip(history[2:], history[3:]):
        assert after["cache_misses"] == before["cache_misses"], "a steady-state step compiled a new plan"
        assert after["cache_hits"] > before["cache_hits"]


def test_a_changing_learning_rate_does_not_recompile():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8).to("moreh")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x = torch.randn(4, 8).to("moreh")
    misses = []
    for _ in range(6):
        model(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        misses.append(torch.moreh.graph_stats()["cache_misses"])
    assert misses[-1] == misses[2]


def test_a_graph_that_never_repeats_still_runs():
    x = torch.zeros(1, device="moreh")
    for n in range(1, 12):
        x = torch.cat([x, torch.full((1,), float(n), device="moreh")])
        assert x.sum().item() == n * (n + 1) / 2
