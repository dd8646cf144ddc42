"""torch_moreh: the "moreh" device for PyTorch.

Installed, it is loaded by plain ``import torch`` (entry point group ``torch.backends``): after that
``torch.device("moreh")`` works, ``torch.moreh`` is the device module, and tensors and modules have
``.moreh()``. Ops on moreh tensors are recorded into a lazy step graph and run at step boundaries.
"""
import os as _os
import sys as _sys

_loaded = False


def _moreh_version():
    try:
        from importlib.metadata import version

        return version("torch_moreh")
    except Exception:  # not installed as a distribution (a build tree on sys.path)
        return "unknown"


def _load():
    global _loaded
    if _loaded:
        return
    _loaded = True
    import torch

    torch.utils.rename_privateuse1_backend("moreh")
    from . import _C  # noqa: F401  registers the device's kernels, guard and hooks

    _C._init(torch.__version__, _moreh_version())
    from . import device_module

    torch._register_device_module("moreh", device_module)
    torch.utils.generate_methods_for_privateuse1_backend(for_tensor=True, for_module=True, for_storage=True)
    # torch.autocast("moreh") without a dtype: bfloat16, like CPU, whose kernels moreh runs (PyTorch's
    # default for a PrivateUse1 device is float16, CUDA's). PyTorch keeps this per thread; this sets it
    # for the importing thread, where scripts enter autocast (docs/AMP.md).
    torch.set_autocast_dtype("moreh", torch.bfloat16)
    # The end of every optimizer step is a step boundary (DESIGN.md §2.3).
    from torch.optim.optimizer import register_optimizer_step_post_hook

    # Under torch.profiler the step's end shows as a `moreh::step` range: planning it and handing it to the
    # devices (docs/LOGS.md says what the profiler does and does not see).
    from torch.autograd.profiler import record_function as _record_function

    def _end_step(optimizer, args, kwargs):
        with _record_function("moreh::step"):
            _C._flush()

    register_optimizer_step_post_hook(_end_step)
    # A moreh tensor sent to another process travels by value; torch.compile runs its graphs on moreh.
    from . import compile_support, lazy_dynamo, process_sharing

    process_sharing.install()
    compile_support.install()
    lazy_dynamo.install()  # Meta kernels in Python no longer import torch._dynamo on the first step
    import atexit

    atexit.register(_C._shutdown)


def _autoload():
    """Entry point called by ``import torch``."""
    _load()


# Importing torch_moreh directly (before torch) must not recurse through torch's autoload. A moreh-worker
# process (moreh_tools.worker) takes the extension's kernels only: no device, no engine.
if _os.environ.get("MOREH_WORKER_PROCESS") == "1":
    pass
elif "torch" in _sys.modules and hasattr(_sys.modules["torch"], "utils"):
    _load()
else:
    _saved = _os.environ.get("TORCH_DEVICE_BACKEND_AUTOLOAD")
    _os.environ["TORCH_DEVICE_BACKEND_AUTOLOAD"] = "0"
    try:
        import torch  # noqa: F401
    finally:
        if _saved is None:
            _os.environ.pop("TORCH_DEVICE_BACKEND_AUTOLOAD", None)
        else:
            _os.environ["TORCH_DEVICE_BACKEND_AUTOLOAD"] = _saved
    _load()
