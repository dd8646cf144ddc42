"""Checkpoints: torch.save / torch.load of moreh tensors, state dicts and optimizer state round-trip
bit for bit, keep storage sharing, and training resumed from a checkpoint continues the same curve."""
import io
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import run_python
from models import MLP

MAP_LOCATIONS = ["cpu", "moreh", None]


def bits(t):
    """The raw bytes of a tensor's values (bitwise comparison: NaN payloads and -0.0 count)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def assert_same_tensor(got, want, device):
    assert got.device == torch.device(device)
    assert got.dtype == want.dtype and got.shape == want.shape and got.stride() == want.stride()
    assert torch.equal(bits(got), bits(want))


def expected_device(map_location, saved_on):
    return torch.device("moreh:0") if (map_location or saved_on) == "moreh" else torch.device("cpu")


def save_load(obj, map_location, weights_only=True):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, map_location=map_location, weights_only=weights_only)


def test_loading_onto_moreh_in_a_fresh_process():
    # torch.load(map_location="moreh") used to crash: torch.UntypedStorage(n, device="moreh") met no
    # registered allocator. A fresh process so that a crash fails this test, not the whole run.
    code = """
import io, torch
w = torch.arange(6.).reshape(2, 3).to("moreh")
buf = io.BytesIO(); torch.save({"w": w}, buf); buf.seek(0)
got = torch.load(buf, map_location="moreh")["w"]
s = torch.UntypedStorage(5, device="moreh")
print(got.device, got.cpu().tolist(), s.device, s.nbytes())
"""
    proc = run_python(code, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "moreh:0 [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] moreh:0 5"


@pytest.mark.parametrize("map_location", MAP_LOCATIONS)
def test_model_and_optimizer_state_round_trip_bitwise(map_location):
    torch.manual_seed(0)
    model = MLP().to("moreh")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = F.cross_entropy(model(torch.randn(8, 32).to("moreh")), torch.randint(0, 10, (8,)).to("moreh"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model_sd, opt_sd = model.state_dict(), opt.state_dict()
    got = save_load({"model": model_sd, "opt": opt_sd}, map_location)

    assert list(got["model"]) == list(model_sd)
    for name, t in model_sd.items():
        assert_same_tensor(got["model"][name], t, expected_device(map_location, "moreh"))
    assert got["opt"]["param_groups"] == opt_sd["param_groups"]
    assert sorted(got["opt"]["state"]) == sorted(opt_sd["state"])
    for pid, state in opt_sd["state"].items():
        assert set(got["opt"]["state"][pid]) == set(state)
        for key, t in state.items():
            saved_on = t.device.type  # AdamW keeps its step counter on the CPU
            assert_same_tensor(got["opt"]["state"][pid][key], t, expected_device(map_location, saved_on))
        assert got["opt"]["state"][pid]["step"].item() == 3.0


@pytest.mark.parametrize("map_location", MAP_LOCATIONS)
def test_dtypes_and_odd_values_round_trip_bitwise(map_location):
    values = {
        "f32": torch.tensor([0.0, -0.0, float("nan"), float("inf"), -1.5e-40, 3.0]),
        "f16": torch.randn(5, 3).half(),
        "bf16": torch.randn(4).bfloat16(),
        "f64": torch.randn(2, 2, dtype=torch.float64),
        "i64": torch.tensor([-(2**62), 7, 2**40]),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.empty(0, 4),
        "c64": torch.randn(3, dtype=torch.complex64),
    }
    got = save_load({k: v.to("moreh") for k, v in values.items()}, map_location)
    for k, v in values.items():
        assert_same_tensor(got[k], v, expected_device(map_location, "moreh"))


@pytest.mark.parametrize("map_location", MAP_LOCATIONS)
def test_views_keep_their_storage_sharing(map_location):
    base = torch.arange(24.0).reshape(4, 6).to("moreh")
    row = base[1]              # a view at an offset
    col = base[:, 2]           # a strided view
    tail = base.view(-1)[20:]  # another view of the same storage
    other = torch.ones(3).to("moreh")
    got_base, got_row, got_col, got_tail, got_other = save_load([base, row, col, tail, other], map_location)

    device = expected_device(map_location, "moreh")
    for got, want in [(got_base, base), (got_row, row), (got_col, col), (got_tail, tail)]:
        assert_same_tensor(got, want, device)
        assert got.storage_offset() == want.storage_offset()
        assert got.untyped_storage().data_ptr() == got_base.untyped_storage().data_ptr()
        assert got.untyped_storage().nbytes() == base.untyped_storage().nbytes()
    assert got_other.untyped_storage().data_ptr() != got_base.untyped_storage().data_ptr()
    # Still aliases after loading: a write through one view shows in the others.
    got_row.fill_(-1.0)
    assert got_base[1].cpu().tolist() == [-1.0] * 6
    assert got_col[1].item() == -1.0
    assert base[1].cpu().tolist() == [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]  # the original is untouched


def test_saving_only_a_slice_saves_its_whole_storage():
    weight = torch.nn.Linear(4, 3).to("moreh").weight.detach()
    part = weight[1:, 2:]
    got = save_load(part, "moreh")
    assert_same_tensor(got, part, "moreh:0")
    assert got.untyped_storage().nbytes() == weight.untyped_storage().nbytes()
    full = torch.empty(0, device="moreh").set_(got.untyped_storage(), 0, weight.shape, weight.stride())
    assert torch.equal(bits(full), bits(weight))


@pytest.mark.parametrize("weights_only", [True, False])
@pytest.mark.parametrize("map_location", MAP_LOCATIONS)
def test_file_path_round_trip(tmp_path, weights_only, map_location):
    model = torch.nn.Linear(5, 2).to("moreh")
    path = os.path.join(tmp_path, "checkpoint.pt")
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    got = torch.load(path, map_location=map_location, weights_only=weights_only)
    assert got["epoch"] == 3
    for name, t in model.state_dict().items():
        assert_same_tensor(got["model"][name], t, expected_device(map_location, "moreh"))


def train(model, opt, data, losses):
    for x, y in data:
        loss = F.cross_entropy(model(x.to("moreh")), y.to("moreh"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())


@pytest.mark.parametrize("map_location", MAP_LOCATIONS)
@pytest.mark.parametrize("optimizer", ["adamw", "sgd_momentum"])
def test_resumed_training_continues_the_same_loss_curve(tmp_path, map_location, optimizer):
    def make(model):
        if optimizer == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=1e-2)
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    g = torch.Generator().manual_seed(7)
    data = [(torch.randn(16, 32, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(12)]
    torch.manual_seed(3)
    model = MLP().to("moreh")
    opt = make(model)
    path = os.path.join(tmp_path, "ckpt.pt")

    uninterrupted = []
    train(model, opt, data[:6], uninterrupted)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, path)
    train(model, opt, data[6:], uninterrupted)

    torch.manual_seed(99)  # the new model starts elsewhere: only the checkpoint can make it match
    resumed_model = MLP().to("moreh")
    resumed_opt = make(resumed_model)
    ckpt = torch.load(path, map_location=map_location)
    resumed_model.load_state_dict(ckpt["model"])
    resumed_opt.load_state_dict(ckpt["opt"])
    resumed = []
    train(resumed_model, resumed_opt, data[6:], resumed)

    assert resumed == uninterrupted[6:]
    for (name, p), q in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(bits(p), bits(q)), name


def test_storage_api_on_moreh():
    t = torch.arange(10, dtype=torch.int32).to("moreh") * 3
    storage = t.untyped_storage()
    assert storage.device == torch.device("moreh:0")
    host = storage.cpu()
    assert host.device == torch.device("cpu") and host.nbytes() == 40
    assert torch.equal(torch.empty(0, dtype=torch.int32).set_(host), torch.arange(10, dtype=torch.int32) * 3)

    fresh = torch.UntypedStorage(12, device="moreh")
    assert fresh.device == torch.device("moreh:0") and fresh.nbytes() == 12
    src = torch.arange(12, dtype=torch.uint8).untyped_storage()
    fresh.copy_(src)  # host -> moreh
    back = torch.UntypedStorage(12)
    back.copy_(fresh)  # moreh -> host
    assert list(back) == list(range(12))
    assert list(fresh.to(device="cpu", non_blocking=True)) == list(range(12))
    moreh_copy = torch.UntypedStorage(12, device="moreh")
    moreh_copy.copy_(fresh)  # moreh -> moreh
    assert list(moreh_copy.cpu()) == list(range(12))
    assert list(fresh.clone().cpu()) == list(range(12))

    fresh.resize_(20)  # grows, keeping the contents
    assert fresh.nbytes() == 20 and list(fresh.cpu())[:12] == list(range(12))
    fresh.resize_(5)   # shrinks, keeping the head
    assert list(fresh.cpu()) == list(range(5))
    fresh.resize_(0)
    assert fresh.nbytes() == 0
    assert list(moreh_copy.cpu()) == list(range(12))  # copies are independent
