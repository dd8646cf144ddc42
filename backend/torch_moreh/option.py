"""``torch.moreh.option``: requests to the planner."""
from . import _C


def enable_advanced_parallelization():
    """Lets Advanced Parallelization choose the parallel layout.

    At the next step with a batch, every layout of the devices (data, pipeline and tensor parallelism,
    micro-batches, recomputation, sharded parameters) is lowered, those that do not fit a device's memory are
    dropped, the rest are timed by the cost simulator and the fastest is selected: logged as MoAI logs it,
    written to ``advanced_parallelization_selected_config.dump`` and explained in
    ``advanced_parallelization_candidates.json`` in the working directory, and kept under
    ``~/.moreh/ap`` so that the next run of the script takes it without searching. A layout chosen by hand
    (``set_parallelism``, ``MOREH_PARALLELISM``) is kept instead.
    """
    _C._set_advanced_parallelization(True)


def disable_advanced_parallelization():
    _C._set_advanced_parallelization(False)


def is_advanced_parallelization_enabled():
    return bool(_C._advanced_parallelization())


def advanced_parallelization_candidates():
    """The last layout search as a dict (``candidates``: config line, ``selected``, ``dropped`` reason,
    ``dominated_by`` and ``dominance`` (a candidate not compiled: the index of the one that decided, and
    ``"slower"``, its twin without recomputation fits, ``"larger"``, its sibling with distribute_param does
    not fit, or ``"over_anyway"``, its twin without recomputation is over the memory in values recomputation
    does not drop; else None), ``peak_bytes`` per device, predicted ``step_ms`` and ``tokens_per_s``, and
    ``bound_ms``, a lower bound on the step from the graph alone), or None before any."""
    return _C._last_search()


def device_profile():
    """The device profile the cost simulator times steps with (measured once on host devices)."""
    return _C._device_profile()


def set_parallelism(config=None, *, num_stages=1, num_micro_batches=1, batch_per_device=0, tp=1,
                    recomputation=0, distribute_param=False, distribute_low_prec_param=False,
                    pipeline_schedule="1f1b"):
    """Chooses the parallel layout by hand, as MoAI's configuration line does (MOREH_PARALLELISM takes the line).

    ``config`` may be that line, e.g. pasted from ``advanced_parallelization_selected_config.dump``
    (``"num_stages : 2, num_micro_batches : 4, batch_per_device : 1, No TP, recomputation : 0,
    distribute_param : true, distribute_low_prec_param : false"``); otherwise the keywords give the fields
    (``tp=1`` is ``No TP``; ``batch_per_device`` is kept for the line, and batch splitting still takes the
    script's batch: 0 says so). The layout is checked against the virtual device's devices before anything
    changes: an impossible field (a malformed value, more stages than devices, ``num_stages × tp`` not dividing
    them) raises ``torch_moreh._C.ConfigError`` naming it. Once set, it is logged
    (``Configuration for parallelism is selected.`` and the line), written to
    ``advanced_parallelization_selected_config.dump`` in the working directory, and the rank table shows it.
    Every knob composes with the others: batch splitting over the data-parallel replicas, pipeline stages with
    micro-batches in 1F1B order or GPipe's (``pipeline_schedule="gpipe"``, moreh's own field
    ``pipeline_schedule : gpipe`` of the line), tensor parallelism (``tp``) over each replica's ranks,
    recomputation, the optimizer sharded over the replicas (``distribute_param=True``: ZeRO-2, ZeRO-3 where
    memory demands it) and autocast's copies of the parameters sharded (``distribute_low_prec_param=True``).
    """
    if config is None:
        tp_field = "No TP" if tp == 1 else f"TP : {tp}"
        config = (f"num_stages : {num_stages}, num_micro_batches : {num_micro_batches}, batch_per_device : "
                  f"{batch_per_device}, {tp_field}, recomputation : {_flag(recomputation)}, "
                  f"distribute_param : {str(distribute_param).lower()}, "
                  f"distribute_low_prec_param : {str(distribute_low_prec_param).lower()}")
        if pipeline_schedule != "1f1b":
            config += f", pipeline_schedule : {pipeline_schedule}"
    elif not isinstance(config, str):
        raise TypeError(f"set_parallelism: config must be MoAI's configuration line (a str), got {type(config).__name__}")
    elif (num_stages, num_micro_batches, batch_per_device, tp, recomputation, distribute_param,
          distribute_low_prec_param, pipeline_schedule) != (1, 1, 0, 1, 0, False, False, "1f1b"):
        raise TypeError("set_parallelism: give either the configuration line or keyword fields, not both")
    _C._set_parallelism(config)


def _flag(v):
    return int(v) if isinstance(v, bool) else v


def get_parallelism():
    """The parallel layout in use, as MoAI's configuration line."""
    return _C._parallelism()


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
