"""``torch.moreh``: the device module of the virtual moreh device (one device, index 0)."""
import collections
import contextlib

import torch

from . import _C
from . import option  # noqa: F401  (torch.moreh.option.enable_advanced_parallelization())

_DEVICE_NAME = "MoAI Accelerator"


# The device is initialized when torch_moreh loads (there is no lazy start). torch.utils.checkpoint and
# torch.random.fork_rng read `_initialized` (as on torch.cuda) to decide whether to save and restore the
# device's RNG state; without it a recomputed dropout would draw new masks.
_initialized = True


def _lazy_init():
    pass


def is_initialized():
    return True


def is_available():
    return True


def device_count():
    return 1


def current_device():
    return 0


def _check_index(device):
    if device is None:
        return 0
    if isinstance(device, torch.device):
        if device.type != "moreh":
            raise ValueError(f"expected a moreh device, got {device}")
        index = 0 if device.index is None else device.index
    elif isinstance(device, str):
        return _check_index(torch.device(device))
    else:
        index = int(device)
    if index != 0:
        raise ValueError(f"moreh has one (virtual) device, moreh:0; got index {index}")
    return 0


def set_device(device):
    _check_index(device)


@contextlib.contextmanager
def _device_context(device):
    _check_index(device)
    yield


class device:
    """Context manager that selects a moreh device (there is only moreh:0)."""

    def __init__(self, device):
        self.idx = _check_index(device)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def synchronize(device=None):
    """Runs every pending op and waits for the device (a `moreh::synchronize` range under torch.profiler)."""
    _check_index(device)
    from torch.autograd.profiler import record_function

    with record_function("moreh::synchronize"):
        _C._synchronize()


def mark_step():
    """Ends the current step graph: it is compiled (or found in the plan cache) and submitted."""
    _C._flush()


# --- random numbers ---------------------------------------------------------------------------
def _generator():
    return _C._get_default_generator()


default_generators = (_C._get_default_generator(),)


def manual_seed(seed):
    _generator().manual_seed(int(seed))


def manual_seed_all(seed):
    manual_seed(seed)


def seed():
    return _generator().seed()


def seed_all():
    return seed()


def initial_seed():
    return _generator().initial_seed()


def get_rng_state(device="moreh"):
    _check_index(device)
    return _generator().get_state()


def set_rng_state(new_state, device="moreh"):
    _check_index(device)
    _generator().set_state(new_state)


def get_rng_state_all():
    return [get_rng_state()]


def set_rng_state_all(new_states):
    set_rng_state(new_states[0])


def _is_in_bad_fork():
    """True in a process forked after moreh started; moreh refuses to run there (use 'spawn')."""
    return _C._in_forked_child()


# --- memory -------------------------------------------------------------------------------------
def memory_allocated(device=None):
    """Bytes of device memory held by tensors, after the pending step has run."""
    _check_index(device)
    _C._synchronize()
    return _C._memory_allocated()


def max_memory_allocated(device=None):
    _check_index(device)
    _C._synchronize()
    return _C._max_memory_allocated()


def reset_peak_memory_stats(device=None):
    _check_index(device)
    _C._synchronize()
    _C._reset_peak_memory_stats()


def mem_get_info(device=None):
    """(free, total) bytes of the virtual device."""
    _check_index(device)
    _C._synchronize()
    total = _C._memory_capacity()
    return (total - _C._memory_allocated(), total)


def empty_cache():
    """Gives the device's cached free blocks back to the system (they never count as allocated)."""
    _C._empty_cache()


def memory_reserved(device=None):
    """Bytes allocated plus bytes the device keeps cached for reuse."""
    _check_index(device)
    _C._synchronize()
    return _C._memory_allocated() + _C._cached_bytes()


def memory_stats(device=None):
    _check_index(device)
    _C._synchronize()
    return {
        "allocated_bytes.all.current": _C._memory_allocated(),
        "allocated_bytes.all.peak": _C._max_memory_allocated(),
        "reserved_bytes.all.current": _C._memory_allocated() + _C._cached_bytes(),
    }


# --- properties ---------------------------------------------------------------------------------
_DeviceProperties = collections.namedtuple(
    "_DeviceProperties", ["name", "type", "flavor", "total_memory", "num_physical_devices", "physical_device"]
)


def get_device_name(device=None):
    _check_index(device)
    return _DEVICE_NAME


def get_device_properties(device=None):
    """The virtual device: its flavor, how many physical devices stand behind it, their total memory."""
    _check_index(device)
    return _DeviceProperties(
        name=_DEVICE_NAME,
        type="moreh",
        flavor=_C._flavor(),
        total_memory=_C._memory_capacity(),
        num_physical_devices=_C._num_physical_devices(),
        physical_device=_C._physical_device_name(),
    )


def get_amp_supported_dtype():
    return [torch.float16, torch.bfloat16]


# --- introspection --------------------------------------------------------------------------------
def graph_stats():
    """Counters of the lazy engine: recorded ops, flushes, plan-cache hits and misses, compile times."""
    return dict(_C._stats())


def flavor():
    """The flavor of this process's virtual device (MOREH_FLAVOR / MOREH_NUM_DEVICES > moreh-switch-model's
    choice > Small.64GB) and where the choice came from."""
    return _C._flavor(), _C._flavor_source()


def physical_devices():
    """The physical devices behind the virtual one: index, name, memory used, its peak since the last
    reset_peak_memory_stats() and total (bytes), and bytes sent to the others in collectives and messages."""
    return [dict(d) for d in _C._physical_devices()]


def last_plan():
    """The plan of the last step: its log line ("summary"), planning time ("compile_ms"), each physical
    device's predicted peak ("peak_bytes": bytes beyond what the device held before the step), and under
    recomputation the launches it adds ("recomputed_ops") and the activation bytes it no longer holds from the
    forward to the backward pass ("dropped_activation_bytes")."""
    return dict(_C._last_plan())


def log_file():
    """The file moreh's log is appended to (MOREH_LOG_FILE)."""
    return _C._log_file()
