"""Tracing and synchronisation: may a value be read on the host now, a trace-safe loop, branching
under ``torch.compile``, waiting for a device.

No array library is imported here at import time.  :func:`synchronize` imports torch or CuPy inside its
body, only for an array of that library (the library is then loaded already);
:func:`is_lazy` and :func:`fixed_loop` read the loaded ``jax`` module from ``sys.modules``;
:func:`is_compiling` and :func:`cond` use the loaded torch (:func:`loaded_torch`).
"""

from __future__ import annotations

import sys as _sys
from collections.abc import Sequence
from typing import Any

import array_api_compat as _compat

from xpmat._array._namespace import is_torch, loaded_torch


def is_lazy(x: Any) -> bool:
    """True when the values of array ``x`` cannot be read on the host now.

    A primitive asks this before a host read (``bool(xp.all(ok))``, ``float(err)``) that exists
    for speed or for a check, and takes its trace-safe path instead when the answer is yes
    (a per-matrix ``where``, a fixed iteration count, a skipped check; each docstring says).

    - JAX: ``True`` for a tracer (inside ``jax.jit``, ``jax.vmap``, ``jax.grad``), ``False``
      for a concrete (eager) ``jax.Array``, which reads like any host array.
    - Everything else: ``array_api_compat.is_lazy_array`` (``True`` for Dask and other
      deferred libraries; ``False`` for NumPy, CuPy, PyTorch and array-api-strict).

    PyTorch ``meta`` tensors count as readable on purpose: any host read on them raises, which
    is how the test suite proves the primitives documented as synchronisation-free are so.
    """
    if _compat.is_jax_array(x):
        return isinstance(x, _sys.modules["jax"].core.Tracer)
    return bool(_compat.is_lazy_array(x))


def fixed_loop(steps: int, body: Any, state: tuple) -> tuple:
    """``state = body(state)`` repeated ``steps`` times (``state`` a tuple of arrays).

    The loop of a primitive's trace-safe path (see :func:`is_lazy`).  JAX, when an array of
    ``state`` is a tracer: ``jax.lax.fori_loop``, so the body is traced once and compile time
    does not grow with ``steps`` (an unrolled 100-step Newton loop took 10 s to compile on a
    CPU); its static trip count keeps it differentiable.  Elsewhere a Python loop.
    """
    if any(_compat.is_jax_array(a) and is_lazy(a) for a in state):
        return _sys.modules["jax"].lax.fori_loop(0, steps, lambda _, s: body(s), state)
    for _ in range(steps):
        state = body(state)
    return state


def synchronize(x: Any) -> None:
    """Wait for pending device work on ``x``'s device (no-op on the CPU).

    For benchmarks and timings only; never called inside a primitive.
    """
    if _compat.is_torch_array(x):
        import torch

        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
    elif _compat.is_cupy_array(x):
        import cupy

        cupy.cuda.get_current_stream().synchronize()


def is_compiling(xp: Any) -> bool:
    """True while ``torch.compile`` (TorchDynamo) traces the calling PyTorch code.

    A host read of an array value (``bool(x)``, ``int(x)``, ``.tolist()``) breaks the graph
    there; callers that must branch on array values use :func:`cond`.  False for every other
    library.
    """
    return is_torch(xp) and bool(loaded_torch().compiler.is_compiling())


def cond(pred: Any, true_fn: Any, false_fn: Any, operands: Sequence[Any], *, xp: Any) -> Any:
    """``true_fn(*operands)`` when the 0-d boolean array ``pred`` is true, else ``false_fn(*operands)``.

    Under ``torch.compile``: ``torch.cond`` (both branches are traced into the graph and only one
    runs; no graph break, no host read).  Otherwise ``pred`` is read on the host (one
    synchronisation) and only the chosen branch runs.  Both branches must return an array or a
    tuple of arrays of the same shapes and dtypes, and must not modify their operands.
    """
    if is_compiling(xp):
        return loaded_torch().cond(pred, true_fn, false_fn, tuple(operands))
    return true_fn(*operands) if bool(pred) else false_fn(*operands)
