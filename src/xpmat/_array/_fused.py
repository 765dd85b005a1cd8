"""Fused elementwise updates: ``start + w (end − start)`` and ``y + alpha x`` in one pass.

PyTorch: one kernel each (``torch.lerp``, ``torch.add`` / ``torch.addcmul``) from the loaded torch
(:func:`loaded_torch`; never imported here).  Every other library: the formula as written.
"""

from __future__ import annotations

from typing import Any

from xpmat._array._dtypes import cast, resolve_dtype
from xpmat._array._namespace import is_torch, loaded_torch


def lerp(start: Any, end: Any, weight: Any, xp: Any, dtype: Any = None, out: Any = None) -> Any:
    """``start + weight (end − start)`` for a host float ``weight`` (or a 0-d array of the
    inputs' library: a tensor hyper-parameter), of ``dtype`` (a dtype object, a name, or
    ``"auto"`` resolved for ``start``; default the inputs' dtype).

    PyTorch: ``torch.lerp`` (one pass over memory instead of three, and with ``dtype`` it writes
    the cast result directly; it may round differently in the last bit); ``out`` (a torch array
    of the result's shape and dtype, possibly ``start`` itself) receives the result in place.
    Elsewhere the formula as written, then :func:`cast`, into a new array (``out`` is ignored).
    """
    if is_torch(xp):
        torch = loaded_torch()
        dtype = resolve_dtype(xp, dtype, start)
        if out is None and dtype not in (None, start.dtype):
            out = torch.empty(start.shape, dtype=dtype, device=start.device)
        if isinstance(weight, float) and torch.compiler.is_compiling():  # a 0-d tensor: Inductor
            # specializes a float lerp weight (dynamic=True: a recompile per new β₁), not this sum
            weight = torch.zeros((), dtype=start.dtype, device=start.device) + weight
        return torch.lerp(start, end, weight) if out is None else torch.lerp(start, end, weight, out=out)
    return cast(start + weight * (end - start), dtype, xp)


def add_scaled(y: Any, alpha: Any, x: Any, xp: Any) -> Any:
    """``y + alpha x`` for a host float ``alpha`` (or a 0-d array: a tensor hyper-parameter),
    as a new array (dtypes promote as usual).

    PyTorch: ``torch.add(y, x, alpha=alpha)`` (one pass, and a bfloat16 ``y`` with a float32
    ``x`` is read as is, no cast copy); a 0-d tensor ``alpha`` goes to ``torch.addcmul(y, x,
    alpha)`` instead (``torch.add`` would read it on the host; on CPU the two round alike,
    tested).  Elsewhere the formula as written.
    """
    if is_torch(xp):
        torch = loaded_torch()
        if isinstance(alpha, torch.Tensor):
            return torch.addcmul(y, x, alpha)
        return torch.add(y, x, alpha=alpha)
    return y + alpha * x
