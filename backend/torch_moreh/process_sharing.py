"""moreh tensors sent to another process travel by value.

A moreh tensor's value lives in this process's devices (the runtime's memory, possibly still pending in a
step graph), so neither ``torch.multiprocessing``'s shared-memory path (CPU only) nor CUDA's IPC handles
apply: torch's own reducer fails, and when that happens in a queue's feeder thread (a ``DataLoader``
worker returning a moreh tensor) the item is dropped and the reader waits forever. moreh's reducer sends
the value instead: it is read to the host (a host read, like ``.cpu()``) and the receiving process puts it
on its own moreh device. So a ``DataLoader`` started with ``spawn`` or ``forkserver`` over a dataset that
holds moreh tensors works, and so does a worker that returns moreh tensors. The copy is not shared memory:
in-place changes on one side are not seen on the other. A moreh *storage* on its own cannot be sent (a
clear error). ``torch.save`` and ``copy.deepcopy`` are unaffected.
"""
import io
from multiprocessing.reduction import ForkingPickler

import torch

STORAGE_MESSAGE = (
    "a moreh storage cannot be sent to another process; send the tensor (it travels by value) or move it to the "
    "CPU first"
)


def _on_moreh(obj):
    if isinstance(obj, torch.TypedStorage):
        obj = obj._untyped_storage  # its .device warns that TypedStorage is deprecated
    device = getattr(obj, "device", None)
    return isinstance(device, torch.device) and device.type == "moreh"


def rebuild_on_moreh(data, requires_grad, parameter):
    """In the receiving process: the value on this process's moreh device."""
    t = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True).to("moreh")
    if parameter:
        return torch.nn.Parameter(t, requires_grad=requires_grad)
    return t.requires_grad_(requires_grad) if requires_grad else t


def _guarded(reduce):
    def reduce_moreh_by_value(obj):
        if not _on_moreh(obj):
            return reduce(obj)
        if not isinstance(obj, torch.Tensor):
            raise RuntimeError(STORAGE_MESSAGE)
        # As bytes, not as a CPU tensor: torch would share that one's memory by a file descriptor that can
        # outlive the temporary copy it was made from.
        data = io.BytesIO()
        torch.save(obj.detach().cpu(), data)
        return rebuild_on_moreh, (data.getvalue(), obj.requires_grad, isinstance(obj, torch.nn.Parameter))

    reduce_moreh_by_value.moreh_guarded = True
    return reduce_moreh_by_value


def install():
    """Wraps the reducers torch.multiprocessing registered for tensors and storages."""
    import torch.multiprocessing  # noqa: F401  registers torch's reducers first

    registry = ForkingPickler._extra_reducers
    storage_types = (torch.UntypedStorage, torch.TypedStorage)
    for cls, reduce in list(registry.items()):
        if not isinstance(cls, type) or getattr(reduce, "moreh_guarded", False):
            continue
        if issubclass(cls, torch.Tensor) or issubclass(cls, storage_types):
            registry[cls] = _guarded(reduce)
