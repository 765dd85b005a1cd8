"""Dtypes: the one table of dtype names, the result dtype, casts, what a library can hold.

:data:`ITEMSIZE` is the only list of floating dtype names in xpmat (``compute_dtype`` and
``state_dtype`` strings, :func:`itemsize`); :data:`FLOAT_NAMES` and :data:`LOW_PRECISION` are
read from it, and ``xpmat.optim._base`` checks ``state_dtype`` names against the first.
Nothing here imports an array library: JAX's x64 flag is read from the already loaded ``jax``
module (``sys.modules``).
"""

from __future__ import annotations

import sys as _sys
import warnings as _warnings
from typing import Any

import array_api_compat as _compat
import array_api_extra as _xpx

from xpmat._array._namespace import device, is_jax, is_torch, library_name

#: Bytes per entry of each floating dtype xpmat accepts by name: the one dtype table.
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
#: The dtype names a ``compute_dtype`` / ``state_dtype`` string may take.
FLOAT_NAMES = tuple(ITEMSIZE)
#: Half precision: factorized in float32 (:mod:`xpmat._array._linalg`), optimizer state in float32.
LOW_PRECISION = tuple(name for name, size in ITEMSIZE.items() if size == 2)


def float_dtype(xp: Any, *arrays: Any) -> Any:
    """The floating dtype a result over ``arrays`` gets.

    The arrays' result type if it is real floating; integer and boolean inputs are
    *promoted* to the namespace's default real floating dtype (float64 for NumPy and
    CuPy, ``torch.get_default_dtype()`` for PyTorch).  Complex input is refused.
    """
    dt = xp.result_type(*arrays)
    if xp.isdtype(dt, "real floating"):
        return dt
    if xp.isdtype(dt, "complex floating"):
        raise TypeError(f"complex input is not supported (got dtype {dt})")
    return _xpx.default_dtype(xp, device=device(arrays[0]))


def as_float(x: Any, xp: Any, dtype: Any = None) -> Any:
    """``x`` as a floating array (no copy when it already has ``dtype``)."""
    dtype = float_dtype(xp, x) if dtype is None else dtype
    return x if x.dtype == dtype else xp.astype(x, dtype)


def resolve_dtype(xp: Any, dtype: Any) -> Any:
    """Turn a dtype name (``"bfloat16"``, ``"float32"``, ...) or object into ``xp``'s dtype.

    ``"bfloat16"`` exists on PyTorch and JAX (NumPy, CuPy and array-api-strict have no
    bf16): elsewhere a ``ValueError`` says so rather than silently computing in
    another precision.
    """
    if dtype is None or not isinstance(dtype, str):
        return dtype
    if dtype not in FLOAT_NAMES:
        raise ValueError(f"compute_dtype must be one of {FLOAT_NAMES} or a dtype, got {dtype!r}")
    if dtype == "bfloat16" and not supports_bfloat16(xp):
        raise ValueError(
            f"compute_dtype='bfloat16' needs PyTorch or JAX; {library_name(xp)} has no bfloat16 "
            "(use 'float16' on CuPy, or 'float32')"
        )
    if not hasattr(xp, dtype):
        raise ValueError(f"{library_name(xp)} has no dtype {dtype!r}")
    return getattr(xp, dtype)


def cast(x: Any, dtype: Any, xp: Any) -> Any:
    """Cast ``x`` to ``dtype`` (a dtype object or name, see :func:`resolve_dtype`)."""
    dtype = resolve_dtype(xp, dtype)
    if dtype is None or x.dtype == dtype:
        return x
    return xp.astype(x, dtype)


def supports_bfloat16(xp: Any) -> bool:
    """True where ``xp`` has a bfloat16 dtype (PyTorch, JAX)."""
    return is_torch(xp) or is_jax(xp)


def supports_float64(xp: Any, dev: Any = None) -> bool:
    """True when ``xp`` can hold float64 arrays on device ``dev``.

    JAX is asked (``jax.config.jax_enable_x64``, which also follows a ``jax.enable_x64``
    context): in its default mode a float64 request gives float32 with a warning, not an
    error, so a probe would be fooled.  Apple's MPS device has no float64.  Elsewhere a
    one-element probe decides; a warning from it (a library that truncates) counts as no.
    """
    if is_jax(xp):
        jax = _sys.modules.get("jax")  # loaded: it made the namespace (never imported here)
        flag = getattr(getattr(jax, "config", None), "jax_enable_x64", None)
        if flag is not None:
            return bool(getattr(flag, "value", flag))
    if is_torch(xp) and dev is not None:  # no probe (torch.compile traces this): all but MPS
        return getattr(dev, "type", str(dev)) != "mps"
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("error")
            z = xp.zeros((1,), dtype=xp.float64, device=dev)
    except Exception:
        return False
    return z.dtype == xp.float64


def is_low_precision(dtype: Any, xp: Any) -> bool:
    """True for ``xp``'s float16 and bfloat16 (where it has them)."""
    return any(dtype == getattr(xp, name) for name in LOW_PRECISION if hasattr(xp, name))


def itemsize(x: Any, dtype: Any = None) -> int:
    """Bytes per entry of ``dtype`` (a name or dtype object; ``x``'s dtype when None)."""
    if isinstance(dtype, str):
        if dtype not in ITEMSIZE:
            raise ValueError(f"unknown dtype name {dtype!r}; use one of {FLOAT_NAMES}")
        return ITEMSIZE[dtype]
    dt = x.dtype if dtype is None else dtype
    size = getattr(dt, "itemsize", None)  # np.dtype and torch.dtype instances
    if not isinstance(size, int):  # e.g. the class numpy.float32, array-api-strict dtypes
        size = _compat.array_namespace(x).finfo(dt).bits // 8
    return size
