"""Python Meta kernels without importing torch._dynamo: the first recorded step no longer pays for it.

moreh infers every recorded op's output shapes with its Meta kernel, and many of those are Python references
(torch._refs, torch._decomp) wrapped by ``torch._compile._disable_dynamo``, whose first call imports
torch._dynamo (with sympy and symbolic shapes: ~0.8 s on a 2-core machine, most of the first step of a small
model) only to wrap the function so that Dynamo does not trace into it. CPU eager runs C++ kernels and never
pays this. While torch._dynamo is not imported nothing can be tracing, so calling the function itself is
exactly what the wrapper would do; once it is imported the real wrapper is made, as torch makes it.
"""
import sys
import types

import torch
import torch._compile

MODULE_PREFIXES = ("torch._refs", "torch._prims", "torch._decomp", "torch._meta_registrations")


def _disable_code():
    return torch._compile._disable_dynamo(lambda: None).__code__


def _deferred(fn, recursive):
    def call(*args, **kwargs):
        dynamo = sys.modules.get("torch._dynamo")
        disable = getattr(dynamo, "disable", None)
        if disable is None:  # not imported (or still importing): nothing traces, the wrapper would just call fn
            return fn(*args, **kwargs)
        real = disable(fn, recursive, wrapping=False)
        fn.__dynamo_disable = real
        return real(*args, **kwargs)

    return call


def install():
    """Gives each function wrapped by _disable_dynamo in the reference and decomposition modules a deferred
    wrapper (what the lazy wrapper caches on its first call). Returns how many it found."""
    code = _disable_code()
    seen, found = set(), 0

    def visit(f, depth=0):
        nonlocal found
        if depth > 6 or not isinstance(f, types.FunctionType) or id(f) in seen:
            return
        seen.add(id(f))
        if f.__code__ is code and f.__closure__:
            cells = dict(zip(code.co_freevars, (c.cell_contents for c in f.__closure__)))
            fn = cells.get("fn")
            if fn is not None and getattr(fn, "__dynamo_disable", None) is None:
                fn.__dynamo_disable = _deferred(fn, cells.get("recursive", True))
                found += 1
        wrapped = getattr(f, "__wrapped__", None)
        if wrapped is not None:
            visit(wrapped, depth + 1)
        for cell in f.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            visit(value, depth + 1)

    for name, module in list(sys.modules.items()):
        if module is not None and name.startswith(MODULE_PREFIXES):
            for value in list(vars(module).values()):
                visit(value)
    import torch._decomp

    for value in list(torch._decomp.decomposition_table.values()):
        visit(value)
    return found
