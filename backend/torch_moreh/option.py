"""``torch.moreh.option``: requests to the planner."""
from . import _C


def enable_advanced_parallelization():
    """Lets Advanced Parallelization search the whole space at the next plan selection.

    The request is stored; the AP planner (a later milestone) reads it. Until then the plan is the
    default one and the log says so.
    """
    _C._set_advanced_parallelization(True)
    _C._log("info", "Advanced Parallelization requested (stored for the planner).")


def disable_advanced_parallelization():
    _C._set_advanced_parallelization(False)


def is_advanced_parallelization_enabled():
    return bool(_C._advanced_parallelization())


def enable_fusion():
    """Fuses the step's elementwise ops into generated kernels from the next step on (MOREH_FUSION=on).

    On host devices the fused kernels run on the host evaluator, which is slower than ATen's CPU kernels:
    the default (MOREH_FUSION=auto) fuses only on GPUs. Raises RuntimeError on a GPU without NVRTC.
    """
    _C._set_fusion(True)


def disable_fusion():
    """Runs every recorded op as its own kernel from the next step on (MOREH_FUSION=off)."""
    _C._set_fusion(False)


def is_fusion_enabled():
    return bool(_C._stats()["fusion"])
