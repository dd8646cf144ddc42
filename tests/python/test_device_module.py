"""torch.moreh, autoload, Tensor.moreh()/Module.moreh() and torch.accelerator."""
import pytest
import torch

from conftest import run_python


def test_plain_import_torch_autoloads_moreh():
    proc = run_python("import torch; x = torch.ones(2, device='moreh'); print(x.device, torch.moreh.device_count())")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "moreh:0 1"


def test_device_queries():
    m = torch.moreh
    assert m.is_available() and m.device_count() == 1 and m.current_device() == 0
    m.set_device(0)
    m.set_device("moreh:0")
    with pytest.raises(ValueError):
        m.set_device(1)
    with m.device(0):
        assert torch.ones(1, device="moreh").device == torch.device("moreh:0")
    assert m.get_device_name() == "MoAI Accelerator"
    props = m.get_device_properties()
    free, total = m.mem_get_info()
    assert props.total_memory == total > 0 and 0 <= free <= total
    with pytest.raises(RuntimeError):
        torch.ones(1, device="moreh:1")


def test_tensor_and_module_methods_and_accelerator():
    t = torch.arange(3.0).moreh()
    assert t.is_moreh and t.device.type == "moreh"
    lin = torch.nn.Linear(2, 2).moreh()
    assert next(lin.parameters()).device.type == "moreh"
    assert torch.accelerator.is_available()
    assert torch.accelerator.current_accelerator().type == "moreh"
    assert torch.accelerator.device_count() == 1
    torch.accelerator.synchronize()


def test_rng_seeding_and_state():
    torch.moreh.manual_seed(123)
    assert torch.moreh.initial_seed() == 123
    a = torch.randn(5, device="moreh").cpu()
    state = torch.moreh.get_rng_state()
    b = torch.randn(5, device="moreh").cpu()
    torch.moreh.set_rng_state(state)
    c = torch.randn(5, device="moreh").cpu()
    torch.moreh.manual_seed(123)
    d = torch.randn(5, device="moreh").cpu()
    assert torch.equal(b, c) and torch.equal(a, d) and not torch.equal(a, b)
    torch.manual_seed(5)  # torch.manual_seed seeds moreh too (manual_seed_all)
    e = torch.randn(3, device="moreh").cpu()
    torch.moreh.manual_seed_all(5)
    assert torch.equal(e, torch.randn(3, device="moreh").cpu())
    g = torch.Generator(device="moreh").manual_seed(9)
    h = torch.Generator(device="moreh").manual_seed(9)
    assert torch.equal(torch.rand(4, device="moreh", generator=g).cpu(),
                       torch.rand(4, device="moreh", generator=h).cpu())
    assert isinstance(torch.moreh.seed(), int)


def test_memory_stats_follow_tensors():
    torch.moreh.synchronize()
    base = torch.moreh.memory_allocated()
    torch.moreh.reset_peak_memory_stats()
    x = torch.ones(1 << 20, device="moreh")  # 4 MiB, written by fill_
    assert torch.moreh.memory_allocated() >= base + (4 << 20)
    peak = torch.moreh.max_memory_allocated()
    assert peak >= base + (4 << 20)
    del x
    assert torch.moreh.memory_allocated() <= base
    assert torch.moreh.max_memory_allocated() == peak


def test_advanced_parallelization_request_is_stored():
    torch.moreh.option.enable_advanced_parallelization()
    assert torch.moreh.option.is_advanced_parallelization_enabled()
    torch.moreh.option.disable_advanced_parallelization()
    assert not torch.moreh.option.is_advanced_parallelization_enabled()


def test_malformed_environment_variable_is_a_clear_error():
    proc = run_python("import torch", env={"MOREH_HOST_MEMORY_CAPACITY": "lots"})
    assert proc.returncode != 0
    assert "MOREH_HOST_MEMORY_CAPACITY='lots' is not valid" in proc.stderr


def test_events_and_cached_memory():
    a = torch.randn(256, 256).to("moreh")
    start = torch.Event(device="moreh", enable_timing=True)
    end = torch.Event(device="moreh", enable_timing=True)
    start.record()
    for _ in range(5):
        a = (a @ a).tanh()
    end.record()
    end.synchronize()
    assert end.query() and start.elapsed_time(end) >= 0
    torch.moreh.synchronize()
    allocated = torch.moreh.memory_allocated()
    assert torch.moreh.memory_reserved() >= allocated
    torch.moreh.empty_cache()
    assert torch.moreh.memory_reserved() == torch.moreh.memory_allocated()
