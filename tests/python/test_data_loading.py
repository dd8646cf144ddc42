"""Feeding moreh from the host: pinned memory through moreh's hooks, non-blocking copies in both
directions, DataLoader workers (pin_memory=True, forked workers) and the error a forked child gets when
it touches moreh."""
import textwrap

import pytest
import torch
import torch_moreh
from torch.utils.data import DataLoader, Dataset

from conftest import run_python


def pinned_blocks():
    return torch_moreh._C._pinned_host_memory_stats()["blocks"]


def test_pin_memory_gives_pinned_tensors_known_by_any_inner_pointer():
    x = torch.randn(4096)
    before = pinned_blocks()
    p = x.pin_memory()
    assert p.is_pinned() and not x.is_pinned()
    assert torch.equal(p, x) and p.data_ptr() != x.data_ptr()
    assert p[1000:].is_pinned()
    # A tensor whose own storage starts inside the pinned block (is_pinned asks about the storage's start).
    inner = torch.from_numpy(p.numpy()[1000:])
    assert inner.untyped_storage().data_ptr() == p.data_ptr() + 4000 and inner.is_pinned()
    assert not torch.from_numpy(x.numpy()[1000:]).is_pinned()
    assert p.data_ptr() % 4096 == 0
    assert pinned_blocks() == before + 1
    e = torch.empty(100, 3, pin_memory=True)
    assert e.is_pinned() and pinned_blocks() == before + 2
    del p, e, inner
    assert pinned_blocks() == before  # freed blocks are forgotten
    assert not torch.randn(8).is_pinned()
    assert torch.randn(8).pin_memory().pin_memory().is_pinned()


@pytest.mark.parametrize("pinned", [False, True], ids=["pageable", "pinned"])
def test_non_blocking_upload_takes_the_value_at_copy_time(pinned):
    src = torch.arange(12.0).reshape(3, 4)
    if pinned:
        src = src.pin_memory()
    torch.moreh.synchronize()
    dst = src.to("moreh", non_blocking=True)
    col = src[:, 1].to("moreh", non_blocking=True)  # a strided host source
    into = torch.zeros(3, 4, device="moreh")
    into.copy_(src, non_blocking=True)
    assert torch.moreh.graph_stats()["pending_ops"] > 0  # the step has not run yet
    src.mul_(-1)  # the host tensor changes before the step boundary
    assert dst.cpu().tolist() == torch.arange(12.0).reshape(3, 4).tolist()
    assert col.cpu().tolist() == [1.0, 5.0, 9.0]
    assert torch.equal(into.cpu(), torch.arange(12.0).reshape(3, 4))


def test_non_blocking_download_is_a_host_read():
    x = torch.arange(6.0, device="moreh") * 2
    host = x.to("cpu", non_blocking=True)
    assert host.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert host.is_pinned()  # PyTorch stages non-blocking downloads in the device's pinned memory
    into = torch.empty(6).pin_memory()
    into.copy_(x + 1, non_blocking=True)
    assert into.tolist() == [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]


class Squares(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.full((3,), float(i)) ** 2, i


@pytest.mark.parametrize("context", [None, "fork"], ids=["default", "fork"])
def test_dataloader_with_pinned_memory_and_forked_workers_feeds_moreh(context):
    w = torch.ones(3, device="moreh")
    (w * 2).sum().item()  # moreh is running (the engine's thread exists) before the workers fork
    loader = DataLoader(Squares(), batch_size=4, num_workers=2, pin_memory=True, multiprocessing_context=context,
                        timeout=60)
    seen = []
    for x, idx in loader:
        assert x.is_pinned()
        y = x.to("moreh", non_blocking=True)
        assert torch.equal(y.sum(1).cpu(), 3 * idx.float() ** 2)
        seen += idx.tolist()
    assert seen == list(range(10))


def test_forked_dataloader_worker_that_uses_moreh_gets_a_clear_error():
    code = textwrap.dedent("""
        import time, torch
        from torch.utils.data import DataLoader, Dataset
        class UsesMoreh(Dataset):
            def __len__(self): return 4
            def __getitem__(self, i): return (torch.ones(2, device="moreh") * i).cpu()
        class HoldsMoreh(Dataset):
            def __init__(self): self.t = torch.arange(4.0, device="moreh")
            def __len__(self): return 4
            def __getitem__(self, i): return self.t[i] + 1
        (torch.ones(2, device="moreh") * 2).sum().item()
        for ds in (UsesMoreh(), HoldsMoreh()):
            start = time.time()
            try:
                list(DataLoader(ds, num_workers=1, timeout=60))
                print("no error")
            except RuntimeError as e:
                print("raised", "cannot be used in a forked child" in str(e), "'spawn'" in str(e),
                      "Dataset" in str(e), time.time() - start < 30)
        print("parent still works", (torch.arange(3.0, device="moreh") + 1).tolist())
    """)
    proc = run_python(code, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:3] == ["raised True True True True"] * 2 + ["parent still works [1.0, 2.0, 3.0]"]


def test_os_fork_child_is_refused_and_marked_bad():
    code = textwrap.dedent("""
        import os, torch
        x = torch.arange(3.0, device="moreh") + 1
        x.sum().item()
        pid = os.fork()
        if pid == 0:
            status = 10 if torch.moreh._is_in_bad_fork() else 1
            for attempt in (lambda: x.cpu(), lambda: x * 2, lambda: torch.zeros(2, device="moreh"),
                            lambda: torch.randn(2).pin_memory()):
                try:
                    attempt()
                    status = 2
                except RuntimeError as e:
                    if "cannot be used in a forked child" not in str(e):
                        status = 3
            os._exit(status)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), torch.moreh._is_in_bad_fork(), (x * 2).tolist())
    """)
    proc = run_python(code, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "10 False [2.0, 4.0, 6.0]"


def test_spawned_dataloader_worker_can_use_moreh(tmp_path):
    (tmp_path / "moreh_dataset.py").write_text(textwrap.dedent("""
        import torch
        from torch.utils.data import Dataset
        class UsesMoreh(Dataset):
            def __len__(self): return 4
            def __getitem__(self, i): return (torch.ones(2, device="moreh") * i).cpu()
    """))
    code = textwrap.dedent("""
        import torch
        from torch.utils.data import DataLoader
        from moreh_dataset import UsesMoreh
        if __name__ == "__main__":
            out = list(DataLoader(UsesMoreh(), batch_size=2, num_workers=1, multiprocessing_context="spawn",
                                  timeout=120))
            print([b.tolist() for b in out])
    """)
    proc = run_python(code, env={"PYTHONPATH": f"{tmp_path}:{torch_moreh.__path__[0]}/.."}, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[[[0.0, 0.0], [1.0, 1.0]], [[2.0, 2.0], [3.0, 3.0]]]"


def test_spawned_workers_take_and_return_moreh_tensors_by_value(tmp_path):
    """Issue 15, item 11: a dataset that holds moreh tensors, loaded by 'spawn' workers (the advice of the fork
    error), and workers that return moreh tensors. torch's reducer cannot share a moreh tensor; in a worker's
    queue feeder thread that failure dropped the batch and the loader waited forever. moreh tensors travel by
    value: the batches arrive on the parent's moreh device, within the loader's timeout."""
    (tmp_path / "moreh_datasets.py").write_text(textwrap.dedent("""
        import torch
        from torch.utils.data import Dataset
        class ReturnsMoreh(Dataset):
            def __len__(self): return 4
            def __getitem__(self, i): return torch.full((2,), float(i), device="moreh")
    """))
    code = textwrap.dedent("""
        import pickle, torch
        from torch.utils.data import DataLoader, TensorDataset
        from moreh_datasets import ReturnsMoreh
        if __name__ == "__main__":
            held = TensorDataset(torch.arange(8.0).view(4, 2).to("moreh") * 1)   # pending, never read yet
            for ds in (held, ReturnsMoreh()):
                out = list(DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="spawn", timeout=60))
                print([(b[0] if isinstance(b, list) else b).device.type for b in out],
                      [(b[0] if isinstance(b, list) else b).tolist() for b in out])
            w = torch.nn.Parameter(torch.ones(2, device="moreh"))
            from multiprocessing.reduction import ForkingPickler
            back = pickle.loads(ForkingPickler.dumps(w))
            print(type(back).__name__, back.requires_grad, back.device.type, back.tolist())
    """)
    proc = run_python(code, env={"PYTHONPATH": f"{tmp_path}:{torch_moreh.__path__[0]}/.."}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines() == [
        "['moreh', 'moreh'] [[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [6.0, 7.0]]]",
        "['moreh', 'moreh'] [[[0.0, 0.0], [1.0, 1.0]], [[2.0, 2.0], [3.0, 3.0]]]",
        "Parameter True moreh [1.0, 1.0]",
    ]
