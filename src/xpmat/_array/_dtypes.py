"""Dtypes: the one table of dtype names, the result dtype, casts, what a library can hold.

:data:`ITEMSIZE` is the only list of floating dtype names in xpmat (``compute_dtype`` and
``state_dtype`` strings, :func:`itemsize`); :data:`FLOAT_NAMES` and :data:`LOW_PRECISION` are
read from it, and ``xpmat.optim._base`` checks ``state_dtype`` names against the first.
``compute_dtype="auto"`` (:data:`AUTO`, :func:`auto_dtype`) is bfloat16 for float32 input on a
device that multiplies bf16 natively (:func:`fast_bfloat16`), else the input's dtype (the
Newton–Schulz calls add a size rule on CPUs: ``xpmat.orthogonalize.ns_compute_dtype``).
Nothing here imports an array library: JAX's x64 flag and torch's CPU / CUDA capability checks
are read from the already loaded ``jax`` / ``torch`` modules (``sys.modules``).
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
#: The ``compute_dtype`` that picks per array: bfloat16 where it is native and faster (see
#: :func:`auto_dtype`), the input's dtype elsewhere.  The Muon family's default.
AUTO = "auto"
# (library, device kind, device id) -> bf16 matmuls native there: filled once per device, so a
# step under torch.compile reads a Python bool (no capability call is traced after the first).
_FAST_BF16: dict[tuple[str, str, Any], bool] = {}


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


def resolve_dtype(xp: Any, dtype: Any, like: Any = None) -> Any:
    """Turn a dtype name (``"bfloat16"``, ``"float32"``, ...) or object into ``xp``'s dtype;
    ``"auto"`` into :func:`auto_dtype` of the array ``like`` (None: ``like``'s own dtype).

    ``"bfloat16"`` exists on PyTorch and JAX (NumPy, CuPy and array-api-strict have no
    bf16): elsewhere a ``ValueError`` says so rather than silently computing in
    another precision.
    """
    if dtype is None or not isinstance(dtype, str):
        return dtype
    if dtype == AUTO:
        if like is None:
            raise ValueError("compute_dtype='auto' needs the array it applies to")
        return auto_dtype(like, xp)
    if dtype not in FLOAT_NAMES:
        raise ValueError(f"compute_dtype must be 'auto', one of {FLOAT_NAMES} or a dtype, got {dtype!r}")
    if dtype == "bfloat16" and not supports_bfloat16(xp):
        raise ValueError(
            f"compute_dtype='bfloat16' needs PyTorch or JAX; {library_name(xp)} has no bfloat16 "
            "(use 'float16' on CuPy, or 'float32')"
        )
    if not hasattr(xp, dtype):
        raise ValueError(f"{library_name(xp)} has no dtype {dtype!r}")
    return getattr(xp, dtype)


def cast(x: Any, dtype: Any, xp: Any) -> Any:
    """Cast ``x`` to ``dtype`` (a dtype object or name, ``"auto"``: see :func:`resolve_dtype`)."""
    dtype = resolve_dtype(xp, dtype, x)
    if dtype is None or x.dtype == dtype:
        return x
    return xp.astype(x, dtype)


def supports_bfloat16(xp: Any) -> bool:
    """True where ``xp`` has a bfloat16 dtype (PyTorch, JAX)."""
    return is_torch(xp) or is_jax(xp)


def auto_dtype(x: Any, xp: Any) -> Any:
    """The precision ``compute_dtype="auto"`` gives ``x``: ``xp.bfloat16`` when ``x`` is float32
    on a device where :func:`fast_bfloat16`, else None (``x``'s own dtype: float64 stays float64,
    NumPy, CuPy, array-api-strict and Dask keep theirs)."""
    if not supports_bfloat16(xp) or x.dtype != xp.float32 or not fast_bfloat16(x, xp):
        return None
    return xp.bfloat16


def fast_bfloat16(x: Any, xp: Any) -> bool:
    """Whether ``x``'s device multiplies bfloat16 natively, so that bf16 matmuls beat float32.

    PyTorch CPU: AMX tiles or AVX512-BF16 (``torch.cpu._is_amx_tile_supported``,
    ``_is_avx512_bf16_supported``; on an AMX CPU bf16 Newton–Schulz took half the float32
    time, docs/optim.md "Newton–Schulz precision"); CUDA: compute capability 8.0 or more
    (Ampere on: bf16 tensor cores), ROCm: ``torch.cuda.is_bf16_supported(including_emulation=
    False)``.  JAX: TPU, and GPUs of compute capability 8.0 or more.  Other devices (MPS, XPU,
    Arm CPUs: not measured): False.  Read once per device and cached (a Python bool
    afterwards: no graph break under ``torch.compile``).
    """
    key = _device_key(x, xp)
    fast = _FAST_BF16.get(key)
    if fast is None:
        fast = _FAST_BF16[key] = _native_bf16(key)
    return fast


def _device_key(x: Any, xp: Any) -> tuple[str, str, Any]:
    if is_torch(xp):
        return ("torch", x.device.type, x.device.index)
    dev = device(x)  # None for a traced JAX array: the default device runs it
    dev = dev if dev is not None else _sys.modules["jax"].devices()[0]
    return ("jax", str(dev.platform), getattr(dev, "compute_capability", None))


def _native_bf16(key: tuple[str, str, Any]) -> bool:
    """The capability check behind :func:`fast_bfloat16` (uncached)."""
    lib, kind, extra = key
    if lib == "jax":
        return kind == "tpu" or (kind == "gpu" and float(extra or 0) >= 8)
    torch = _sys.modules["torch"]
    if kind == "cpu":
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    if kind == "cuda" and torch.version.hip:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if kind == "cuda":
        return torch.cuda.get_device_capability(extra)[0] >= 8
    return False


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
    """True for ``xp``'s float16 and bfloat16 (where it has them), and for a dtype named so
    where the namespace lacks the name (Dask's namespace has no ``float16``; its chunks do)."""
    if getattr(dtype, "name", None) in LOW_PRECISION:
        return True
    return any(dtype == getattr(xp, name) for name in LOW_PRECISION if hasattr(xp, name))


def itemsize(x: Any, dtype: Any = None) -> int:
    """Bytes per entry of ``dtype`` (a name, ``"auto"`` or a dtype object; ``x``'s dtype when None)."""
    if isinstance(dtype, str) and dtype == AUTO:
        dtype = resolve_dtype(_compat.array_namespace(x), dtype, x)
    if isinstance(dtype, str):
        if dtype not in ITEMSIZE:
            raise ValueError(f"unknown dtype name {dtype!r}; use one of {FLOAT_NAMES}")
        return ITEMSIZE[dtype]
    dt = x.dtype if dtype is None else dtype
    size = getattr(dt, "itemsize", None)  # np.dtype and torch.dtype instances
    if not isinstance(size, int):  # e.g. the class numpy.float32, array-api-strict dtypes
        size = _compat.array_namespace(x).finfo(dt).bits // 8
    return size
