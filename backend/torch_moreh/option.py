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
