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


def test_a_sliding_window_over_one_tensor_hits_both_caches():
    """Batches taken as views of one long token tensor (source[i:i+35], PyTorch's word-language-model
    example) differ only in their storage offset: after the first steps neither the plan cache nor the Meta
    cache misses (issue 15, item 4), and the model trains as on CPU."""
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(0)
    vocab, bptt = 50, 7
    stream = torch.randint(0, vocab, (400,)).view(-1, 4)  # batchified: (steps, batch)
    cpu_model = nn.Sequential(nn.Embedding(vocab, 16), nn.Linear(16, vocab))
    model = nn.Sequential(nn.Embedding(vocab, 16), nn.Linear(16, vocab)).to("moreh")
    model.load_state_dict(cpu_model.state_dict())

    def train(m, source, steps, first=0):
        losses = []
        for k in range(first, first + steps):
            i = k * bptt
            data, target = source[i:i + bptt], source[i + 1:i + 1 + bptt].reshape(-1)
            m.zero_grad()
            loss = F.nll_loss(F.log_softmax(m(data).view(-1, vocab), dim=-1), target)
            loss.backward()
            for p in m.parameters():
                p.data.add_(p.grad, alpha=-0.1)
            losses.append(loss.item())
        return losses

    source = stream.to("moreh")
    ref = train(cpu_model, stream, 3) + train(cpu_model, stream, 6, first=3)
    got = train(model, source, 3)
    before = torch.moreh.graph_stats()
    got += train(model, source, 6, first=3)
    after = torch.moreh.graph_stats()
    assert after["cache_misses"] == before["cache_misses"]
    assert after["meta_cache_misses"] == before["meta_cache_misses"]
    assert after["cache_hits"] - before["cache_hits"] >= 6
    assert got == ref
