"""The one module that knows about array libraries.

Everything here is a thin layer over ``array-api-compat`` and ``array-api-extra``,
plus the few operations the Array API standard lacks (triangular solve, bf16,
randomness, synchronisation).  Each such helper has a per-library fast path and a
generic fallback; its docstring says which runs where.

No function here imports torch, cupy or jax: libraries are *detected* through the
namespace the caller's arrays already belong to.

Dask: big operations (matmuls, elementwise, reductions) stay Dask's own, lazy and chunked.
The small factorizations (Cholesky, eigh, SVD or QR of an r×r matrix, a triangular inverse)
run per matrix on one chunk, by the chunk's own library (:func:`xpmat._dask.per_matrix`); the
tall side of a QR / SVD goes through xpmat's TSQR (:func:`xpmat._dask.tsqr`), which never puts
the rows of a row-chunked matrix on one machine.
"""

from __future__ import annotations

import functools
import sys as _sys
import warnings as _warnings
from collections.abc import Sequence
from typing import Any

import array_api_compat as _compat
import array_api_extra as _xpx
import numpy as _np

from xpmat import _dask

__all__ = [
    "add_scaled",
    "array_namespace",
    "as_float",
    "cast",
    "cholesky",
    "cholesky_signals_by_nan",
    "chunk_like",
    "chunk_namespace",
    "cond",
    "device",
    "eigh",
    "eye",
    "fixed_loop",
    "float_dtype",
    "frobenius_norm",
    "gram_t",
    "is_compiling",
    "is_cpu",
    "is_cupy",
    "is_dask",
    "is_jax",
    "is_lazy",
    "is_low_precision",
    "is_numpy",
    "is_strict",
    "is_torch",
    "itemsize",
    "lerp",
    "library_name",
    "mT",
    "matmul",
    "matmul_add",
    "matmul_t",
    "max_abs",
    "nonfinite_members",
    "normalize_columns",
    "poison",
    "qr",
    "random_normal",
    "resolve_dtype",
    "rng",
    "solve_triangular",
    "supports_bfloat16",
    "supports_float64",
    "svd",
    "synchronize",
    "triangular_inverse",
    "vector_norm",
]

is_torch = _compat.is_torch_namespace
is_cupy = _compat.is_cupy_namespace
is_numpy = _compat.is_numpy_namespace
is_strict = _compat.is_array_api_strict_namespace
is_jax = _compat.is_jax_namespace
is_dask = _compat.is_dask_namespace
device = _compat.device


def library_name(xp: Any) -> str:
    """Short name of the library behind namespace ``xp`` (``"numpy"``, ``"torch"``, ...)."""
    for name, test in (
        ("numpy", is_numpy),
        ("torch", is_torch),
        ("cupy", is_cupy),
        ("array_api_strict", is_strict),
        ("jax", is_jax),
        ("dask", is_dask),
    ):
        if test(xp):
            return name
    return getattr(xp, "__name__", repr(xp))


def chunk_namespace(x: Any) -> Any:
    """The array-api-compat namespace of one array, unchecked: a Dask chunk or ``_meta`` inside
    a task (:mod:`xpmat._dask`), where the caller's arguments were validated already."""
    return _compat.array_namespace(x)


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


def _describe(x: Any) -> str:
    mod = type(x).__module__.split(".")[0]
    shape = getattr(x, "shape", None)
    dev = ""
    try:
        dev = f", device={device(x)}"
    except Exception:  # not an array: the caller will be told below
        pass
    return f"{mod}.{type(x).__name__}(shape={tuple(shape) if shape is not None else '?'}{dev})"


def array_namespace(*arrays: Any, names: Sequence[str] | None = None, xp: Any = None) -> Any:
    """Return the Array API namespace shared by ``arrays`` (``None`` entries are skipped).

    Parameters
    ----------
    *arrays : arrays or None
        The array arguments of a public function.
    names : sequence of str, optional
        Their argument names, used in error messages.
    xp : namespace, optional
        If given, it is returned as is (the caller skipped inference).

    Raises
    ------
    TypeError
        If an argument is not an array, if the arrays come from different libraries
        (the message names both arguments and their types), or if they live on
        different devices.
    """
    if xp is not None:
        return xp
    if names is None:
        names = [f"argument {i}" for i in range(len(arrays))]
    present = [(n, a) for n, a in zip(names, arrays, strict=True) if a is not None]
    if not present:
        raise TypeError("no array argument given to infer the array namespace from")
    spaces = []
    for name, a in present:
        if not _compat.is_array_api_obj(a):
            raise TypeError(
                f"`{name}` must be an array (NumPy, CuPy, PyTorch, array-api-strict, ...), "
                f"got {type(a).__module__}.{type(a).__name__}"
            )
        spaces.append(_compat.array_namespace(a))
    first_name, first = present[0]
    for (name, a), space in zip(present[1:], spaces[1:], strict=True):
        if space is not spaces[0]:
            raise TypeError(
                f"arrays from different libraries: `{first_name}` is {_describe(first)} "
                f"but `{name}` is {_describe(a)}; convert one so that both come from the "
                "same library"
            )
        if device(a) != device(first):
            raise TypeError(
                f"arrays on different devices: `{first_name}` is on {device(first)} but "
                f"`{name}` is on {device(a)}; move one so that both share a device"
            )
    return spaces[0]


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


_DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")


def resolve_dtype(xp: Any, dtype: Any) -> Any:
    """Turn a dtype name (``"bfloat16"``, ``"float32"``, ...) or object into ``xp``'s dtype.

    ``"bfloat16"`` exists on PyTorch and JAX (NumPy, CuPy and array-api-strict have no
    bf16): elsewhere a ``ValueError`` says so rather than silently computing in
    another precision.
    """
    if dtype is None or not isinstance(dtype, str):
        return dtype
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"compute_dtype must be one of {_DTYPE_NAMES} or a dtype, got {dtype!r}")
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


def mT(x: Any, xp: Any) -> Any:
    """Transpose of the last two axes (a view where the library allows)."""
    return xp.matrix_transpose(x) if hasattr(xp, "matrix_transpose") else xp.linalg.matrix_transpose(x)


def matmul_t(a: Any, b: Any, xp: Any) -> Any:
    """``aᵀ b`` over the last two axes."""
    return mT(a, xp) @ b


def rng(seed: Any) -> _np.random.Generator:
    """A NumPy Generator from an int, ``None`` or an existing Generator (returned as is)."""
    if isinstance(seed, _np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, _np.integer)):
        return _np.random.default_rng(seed)
    raise TypeError(f"seed must be an int, None or a numpy.random.Generator, got {type(seed).__name__}")


def random_normal(shape: Sequence[int], *, seed: Any, xp: Any, dtype: Any, dev: Any = None,
                  like: Any = None) -> Any:
    """Standard normal draws, identical on every backend for the same ``seed``.

    The draw happens once on the host with NumPy's ``default_rng`` (float64), then
    moves to ``dev`` in one ``xp.asarray(..., device=dev)`` and is cast to ``dtype``.
    The same seed therefore gives the same numbers on NumPy, PyTorch and CuPy.
    Dask: the draw becomes a one-chunk Dask array of ``like``'s chunk type
    (``dask.array.asarray(..., like=like._meta)``, NumPy's ``like=`` protocol: a CuPy chunk
    for a CuPy-backed ``like``), named by its contents; a size Dask does not know (``nan``,
    after boolean masking) raises ``ValueError``: a draw needs its shape.
    """
    shape = tuple(shape)
    if any(s != s for s in shape):  # nan: a Dask chunk size not known before computing
        raise ValueError(f"a random draw of shape {shape} needs every size, and Dask does not know "
                         "the array's chunk sizes (nan): call `.compute_chunk_sizes()` on it first, "
                         "or pass the start values yourself")
    host = rng(seed).standard_normal(shape)
    dtype = resolve_dtype(xp, dtype)
    if _compat.is_dask_array(like):
        import dask.array as da

        return da.asarray(host, dtype=dtype, like=like._meta)
    if dtype is not None and is_torch(xp) and dtype == xp.bfloat16:
        # torch builds bf16 from float32 host data, not from float64 ndarrays
        return xp.astype(xp.asarray(host.astype(_np.float32), device=dev), dtype)
    return xp.asarray(host, dtype=dtype, device=dev)


def chunk_like(x: Any, ref: Any, axis: int) -> Any:
    """``x`` chunked as ``ref`` along the batch axes and ``axis`` (Dask); anything else as is.

    A host draw moved to Dask (:func:`random_normal`) lands in one chunk; before it meets a
    chunked argument (the ``m × r`` factor of an ``m × n`` NMF, ``axis=-2``) it takes that
    argument's chunks, so that Dask never merges the argument's chunks to match it.
    """
    if not (_compat.is_dask_array(x) and _compat.is_dask_array(ref)):
        return x
    batch = x.ndim - 2
    chunks = {i: ref.chunks[i - x.ndim + ref.ndim] for i in range(batch)}
    chunks[axis % x.ndim] = ref.chunks[axis]
    return x.rechunk(chunks)


def solve_triangular(a: Any, b: Any, *, upper: bool, left: bool = True, xp: Any) -> Any:
    """Solve ``a x = b`` (``left``) or ``x a = b`` for triangular ``a`` ``(..., n, n)``.

    Fast paths: ``torch.linalg.solve_triangular``; ``scipy.linalg.solve_triangular``
    for NumPy when SciPy is installed (batched from SciPy 1.15); ``cupyx.scipy.linalg.solve_triangular``
    for CuPy 2-D input; ``jax.scipy.linalg.solve_triangular`` for JAX (batched, traceable).
    Dask: the inverse of each (small) ``a`` on one chunk, by the chunk's library, then a Dask
    matmul (``b`` stays chunked; its rows are never gathered).
    Fallback (array-api-strict, batched CuPy, others): the standard's general ``xp.linalg.solve``.
    float16 / bfloat16 (no library has half-precision triangular solves on the CPU): computed in
    float32, returned in the inputs' dtype.
    """
    if is_low_precision(xp.result_type(a, b), xp):
        dt = xp.result_type(a, b)
        x = solve_triangular(xp.astype(a, xp.float32), xp.astype(b, xp.float32), upper=upper,
                             left=left, xp=xp)
        return xp.astype(x, dt)
    if is_dask(xp):
        n = a.shape[-1]
        inv = _dask.per_matrix(functools.partial(_chunk_triangular_inverse, upper=upper), a,
                               [(n, n)], label="triangular-inverse")[0]
        return inv @ b if left else b @ inv
    if is_torch(xp):
        return xp.linalg.solve_triangular(a, b, upper=upper, left=left)
    if is_jax(xp) and left:
        import jax.scipy.linalg  # jax itself is already imported: it made the arrays

        return jax.scipy.linalg.solve_triangular(a, b, lower=not upper)
    if not left:  # x a = b  <=>  aᵀ xᵀ = bᵀ
        return mT(solve_triangular(mT(a, xp), mT(b, xp), upper=not upper, xp=xp), xp)
    if is_numpy(xp) and _scipy_solve_triangular(a.ndim) is not None:
        return _scipy_solve_triangular(a.ndim)(a, b, lower=not upper, check_finite=False)
    if is_cupy(xp) and a.ndim == 2:
        from cupyx.scipy.linalg import solve_triangular as cupy_solve_triangular

        return cupy_solve_triangular(a, b, lower=not upper)
    return xp.linalg.solve(a, b)


def triangular_inverse(t: Any, *, upper: bool, xp: Any) -> Any:
    """``t⁻¹`` for triangular ``t`` (..., n, n): a triangular solve against the identity.

    For a small ``t`` and a tall ``b``, ``b @ triangular_inverse(t)`` runs at GEMM speed,
    where a triangular solve with ``b`` (``trsm``) does not; the inverse costs ``O(n³)``.
    """
    if is_dask(xp):  # no product with a Dask identity: each inverse on one chunk
        return _dask.per_matrix(functools.partial(_chunk_triangular_inverse, upper=upper), t,
                                [tuple(t.shape[-2:])], label="triangular-inverse")[0]
    if is_numpy(xp) and upper and not is_low_precision(t.dtype, xp):
        # NumPy's own LAPACK (the pivoted LU of an upper triangular matrix is the matrix
        # itself, so this is the triangular inverse), not SciPy's: SciPy ships a second
        # OpenBLAS whose threads fight NumPy's on few cores (docs/performance.md, "Thread
        # pools in one process")
        return xp.linalg.inv(t)
    eye = xp.eye(t.shape[-1], dtype=t.dtype, device=device(t))
    return solve_triangular(t, xp.broadcast_to(eye, t.shape), upper=upper, xp=xp)


def _chunk_triangular_inverse(t: Any, xp: Any, *, upper: bool) -> tuple[Any]:
    return (triangular_inverse(t, upper=upper, xp=xp),)


def _scipy_solve_triangular(ndim: int) -> Any:
    """SciPy's solve_triangular when SciPy is installed (batched from SciPy 1.15 on)."""
    try:
        import scipy
        import scipy.linalg
    except ImportError:  # SciPy is optional: the caller falls back to xp.linalg.solve
        return None
    major, minor = (int(p) for p in scipy.__version__.split(".")[:2])
    if ndim > 2 and (major, minor) < (1, 15):
        return None
    return scipy.linalg.solve_triangular


# ----------------------------------------------------------------------------- factorizations
#
# One policy for eigh / svd / qr / cholesky (the "Input policy" table of docs/backends.md):
# - A matrix of a batch holding NaN or Inf gets NaN factors, and only that matrix: LAPACK raises
#   on NaN ("did not converge"), returns finite garbage for Inf (PyTorch's svd gives zeros) or
#   never returns (NumPy's svd of a matrix holding Inf loops forever).  Such matrices are
#   replaced by a harmless one before the call and their factors by NaN after it, with `where`
#   (no host read, so the same code runs under jax.jit, on Dask and on `meta` tensors).
# - float16 / bfloat16: no library here factors in half precision (NumPy, PyTorch's CPU kernels
#   and JAX refuse), so the factorization runs in float32 and its factors come back in the
#   input's dtype.

_LOW_PRECISION = ("float16", "bfloat16")


def is_low_precision(dtype: Any, xp: Any) -> bool:
    """True for ``xp``'s float16 and bfloat16 (where it has them)."""
    return any(dtype == getattr(xp, name) for name in _LOW_PRECISION if hasattr(xp, name))


def nonfinite_members(a: Any, xp: Any) -> Any:
    """Boolean ``(...)``: which matrices of ``a`` ``(..., m, n)`` hold a NaN or an Inf."""
    return xp.logical_not(xp.all(xp.isfinite(a), axis=(-2, -1)))


def poison(x: Any, bad: Any, xp: Any, ndim: int) -> Any:
    """``x`` with NaN in the batch members flagged by ``bad`` ``(...)``; ``x`` has ``ndim``
    trailing axes beyond the batch (2 for a matrix, 1 for a vector).  No host read."""
    return xp.where(bad[(..., *([None] * ndim))], float("nan"), x)


def _factor_input(a: Any, xp: Any, *, identity: bool = False) -> tuple[Any, Any, Any]:
    """``(a_safe, bad, dtype)``: ``a`` in a dtype every library factors (float32 for half
    precision), with its non-finite matrices replaced by zeros (by ``I`` with ``identity``,
    which Cholesky accepts); ``bad`` flags them; ``dtype`` is ``a``'s own."""
    dt = a.dtype
    if is_low_precision(dt, xp):
        a = xp.astype(a, xp.float32)
    bad = nonfinite_members(a, xp)
    if identity:
        fill = xp.broadcast_to(eye(a.shape[-1], like=a, xp=xp), a.shape)
    else:
        fill = xp.zeros_like(a)
    return xp.where(bad[..., None, None], fill, a), bad, dt


def _factor_output(parts: Sequence[Any], ndims: Sequence[int], bad: Any, dt: Any, xp: Any) -> tuple:
    """The factors ``parts`` with NaN for the ``bad`` matrices, cast back to ``dt``."""
    out = (poison(p, bad, xp, k) for p, k in zip(parts, ndims, strict=True))
    return tuple(p if p.dtype == dt else xp.astype(p, dt) for p in out)


def eigh(a: Any, xp: Any, *, descending: bool = False) -> tuple[Any, Any]:
    """Symmetric eigendecomposition ``(w, V)`` with ``a = V diag(w) Vᵀ``.

    ``xp.linalg.eigh`` (ascending order), optionally flipped to descending order.
    Raises ``NotImplementedError`` for a namespace without the ``linalg`` extension.
    A matrix holding NaN/Inf gets NaN ``w`` and ``V``; float16 / bfloat16 run in float32 (see
    the policy above).  Dask (no ``eigh``): each matrix whole on one chunk, decomposed by the
    chunk's library.

    torch's float32 ``eigh`` (LAPACK ``ssyevd`` on CPU) can fail to converge on matrices with
    many repeated eigenvalues, e.g. the small projected matrices of a low-rank update whose
    empty slots are exact zeros (measured: 8 of 20 seeded runs of ``lowrank_eigh_update`` from
    ``Q = 0``, n = 2048, r = 64).  Such a failure is retried once in float64 and cast back.
    """
    if not hasattr(xp, "linalg"):
        raise NotImplementedError(f"{library_name(xp)} has no linalg extension (eigh)")
    a, bad, dt = _factor_input(a, xp)
    if is_dask(xp):
        n = a.shape[-1]
        v, w = _dask.per_matrix(_chunk_eigh, a, [(n, n), (n,)], label="eigh")
    else:
        w, v = _eigh(a, xp)
    w, v = _factor_output((w, v), (1, 2), bad, dt, xp)
    if descending:
        w, v = xp.flip(w, axis=-1), xp.flip(v, axis=-1)
    return w, v


def _eigh(a: Any, xp: Any) -> tuple[Any, Any]:
    try:
        return xp.linalg.eigh(a)
    except RuntimeError:  # torch.linalg.LinAlgError derives from RuntimeError
        if not (_compat.is_torch_array(a) and a.dtype != xp.float64):
            raise
        w, v = xp.linalg.eigh(xp.astype(a, xp.float64))
        return xp.astype(w, a.dtype), xp.astype(v, a.dtype)


def _chunk_eigh(t: Any, xp: Any) -> tuple[Any, Any]:
    try:
        w, v = _eigh(t, xp)
    except Exception:  # LinAlgError: NaN results, not a failed computation
        return _nan_like(t, xp), _nan_like(t[..., 0, :], xp)
    return v, w


def _nan_like(t: Any, xp: Any) -> Any:
    # full_like, not full: the chunk's own array type (a CuPy chunk, an ndarray subclass)
    return xp.full_like(t, float("nan"))


def svd(a: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Thin SVD ``(U, S, Vh)`` of ``a`` ``(..., m, n)``, S descending, via ``xp.linalg.svd``.

    A matrix holding NaN/Inf gets NaN factors; float16 / bfloat16 run in float32 (see the
    policy above).  Dask: a matrix in several chunks goes through a TSQR-based SVD with its short
    side in one chunk (the long side keeps its chunks and is never gathered; :func:`_dask_tall_svd`);
    a matrix in one chunk, or a batch of matrices, each whole on one chunk, by the chunk's library.
    """
    if not hasattr(xp, "linalg"):
        raise NotImplementedError(f"{library_name(xp)} has no linalg extension (svd)")
    if is_dask(xp) and a.ndim == 2 and max(a.numblocks) > 1:
        dt = a.dtype
        parts = _dask_tall_svd(xp.astype(a, xp.float32) if is_low_precision(dt, xp) else a, xp)
        return tuple(p if p.dtype == dt else xp.astype(p, dt) for p in parts)
    a, bad, dt = _factor_input(a, xp)
    m, n = a.shape[-2:]
    if is_dask(xp):
        k = min(m, n)
        parts = _dask.per_matrix(_chunk_svd, a, [(m, k), (k,), (k, n)], label="svd")
    else:
        parts = xp.linalg.svd(a, full_matrices=False)
    return _factor_output(parts, (2, 1, 2), bad, dt, xp)


def _chunk_svd(t: Any, xp: Any) -> tuple[Any, Any, Any]:
    k = min(t.shape[-2:])
    try:
        return tuple(xp.linalg.svd(t, full_matrices=False))
    except Exception:  # LinAlgError: NaN results, not a failed computation
        return _nan_like(t[..., :k], xp), _nan_like(t[..., 0, :k], xp), _nan_like(t[..., :k, :], xp)


def _dask_tall_svd(a: Any, xp: Any) -> tuple[Any, Any, Any]:
    """SVD of a 2-D Dask matrix chunked along its long side: the TSQR ``a = Q R`` of the tall
    side (:func:`xpmat._dask.tsqr`, NaN factors for NaN/Inf input), the SVD of ``R`` on one chunk,
    then ``U = Q U_R`` chunk by chunk (``dask.array.linalg.svd``'s method, without its
    ``dask.delayed`` call on a single chunk)."""
    m, n = a.shape
    wide = n > m
    q, r = _dask.tsqr(mT(a, xp) if wide else a)
    k = r.shape[-1]
    u, s, vh = _dask.per_matrix(_chunk_svd, r, [(k, k), (k,), (k, k)], label="svd")
    u = q @ u
    return (mT(vh, xp), s, mT(u, xp)) if wide else (u, s, vh)


def qr(a: Any, xp: Any) -> tuple[Any, Any]:
    """Thin QR ``(Q, R)`` of ``a`` ``(..., m, n)``, ``m >= n``, via ``xp.linalg.qr``.

    A matrix holding NaN/Inf gets NaN factors; float16 / bfloat16 run in float32 (see the policy
    above).  Dask: a matrix goes through xpmat's TSQR (:func:`xpmat._dask.tsqr`, diag(R) >= 0) with
    its columns in one chunk (a column-chunked input is merged to whole rows, chunk sizes known
    or not; its row chunks stay where they are); a batch of matrices, each whole on one chunk, by
    the chunk's library.
    """
    if is_dask(xp) and a.ndim == 2:  # NaN factors for NaN/Inf input, from the TSQR itself
        dt = a.dtype
        parts = _dask.tsqr(xp.astype(a, xp.float32) if is_low_precision(dt, xp) else a)
        return tuple(p if p.dtype == dt else xp.astype(p, dt) for p in parts)
    a, bad, dt = _factor_input(a, xp)
    if is_dask(xp):
        m, n = a.shape[-2:]
        parts = _dask.per_matrix(_chunk_qr, a, [(m, n), (n, n)], label="qr")
    else:
        parts = xp.linalg.qr(a)
    return _factor_output(parts, (2, 2), bad, dt, xp)


def _chunk_qr(t: Any, xp: Any) -> tuple[Any, Any]:
    q, r = xp.linalg.qr(t)
    return q, r


def cholesky_signals_by_nan(xp: Any) -> bool:
    """True where ``xp.linalg.cholesky`` returns NaN for a matrix that is not positive definite
    instead of raising: JAX and CuPy (NumPy, PyTorch and array-api-strict raise).  Callers that
    must report the failure read the factor once on such libraries only, so that PyTorch stays
    free of host synchronisations (its own error check already raises)."""
    return is_jax(xp) or is_cupy(xp)


def cholesky(a: Any, xp: Any) -> Any:
    """Lower Cholesky factor ``L`` (``a = L Lᵀ``) of symmetric positive definite ``a`` (..., n, n).

    ``xp.linalg.cholesky`` everywhere but Dask, where array-api-compat (1.16 and earlier)
    returns the *upper* factor (its wrapper calls ``dask.array.linalg.cholesky``, whose
    default is ``lower=False``; see ``backends/dask.md``).  Dask therefore factors each matrix
    whole on one chunk with the chunk's own library, and a chunk holding a matrix that is not
    positive definite gives NaN instead of raising later, inside the caller's computation
    (as JAX's ``cholesky`` does).  Elsewhere a finite matrix that is not positive definite
    raises the library's error; a matrix holding NaN/Inf gets a NaN factor and float16 /
    bfloat16 run in float32 (see the policy above).
    """
    a, bad, dt = _factor_input(a, xp, identity=True)
    if is_dask(xp):
        n = a.shape[-1]
        L = _dask.per_matrix(_chunk_cholesky, a, [(n, n)], label="cholesky")[0]
    else:
        L = xp.linalg.cholesky(a)
    return _factor_output((L,), (2,), bad, dt, xp)[0]


def _chunk_cholesky(t: Any, xp: Any) -> tuple[Any]:
    try:
        return (xp.linalg.cholesky(t),)
    except Exception:  # LinAlgError (NumPy, CuPy): not positive definite
        return (_nan_like(t, xp),)


def max_abs(x: Any, xp: Any, *, axis: int | tuple[int, ...], keepdims: bool = False) -> Any:
    """``max |x|`` over ``axis``.  Dask: a reduction whose empty chunks count as 0 (Dask 2026.8's
    own ``max`` gives an empty chunk a ``(0, 0)`` partial result whatever the axes, which fails
    to concatenate with the others: rows of unknown size after a mask can leave a chunk empty)."""
    if not is_dask(xp):
        return xp.max(xp.abs(x), axis=axis, keepdims=keepdims)
    import dask.array as da

    return da.reduction(xp.abs(x), _chunk_max_abs, _aggregate_max, axis=axis, keepdims=keepdims,
                        dtype=x.dtype, meta=x._meta)


def _chunk_max_abs(x: Any, axis: tuple[int, ...], keepdims: bool) -> Any:
    if x.size == 0:  # zeros of the reduced shape (NumPy's like-protocol: the chunk's own type)
        shape = tuple(1 if i in axis else n for i, n in enumerate(x.shape))
        return _np.zeros_like(x, shape=shape if keepdims else tuple(
            n for i, n in enumerate(x.shape) if i not in axis))
    return x.max(axis=axis, keepdims=keepdims)


def _aggregate_max(x: Any, axis: tuple[int, ...], keepdims: bool) -> Any:
    return x.max(axis=axis, keepdims=keepdims)


def vector_norm(x: Any, xp: Any, *, axis: int | tuple[int, ...] = -1, keepdims: bool = False) -> Any:
    """Euclidean norm of ``x`` over ``axis`` (an int or a tuple), free of overflow and underflow.

    Computed as ``μ ‖x / μ‖`` with ``μ`` the power of two at or below ``max |x|`` over the same
    axes (zero stays zero, Inf gives Inf, NaN gives NaN): the plain ``sqrt(Σ x²)``
    (``numpy.linalg.norm``, array-api-compat's ``vector_norm``) squares the entries first, so
    in float32 a vector of entries above about 1.8e19 has norm Inf and one of entries below
    about 1e-23 has norm 0 (float64: 1.3e154 and 1e-162), which breaks every normalization
    that divides by it.  Dividing by a power of two is exact, so wherever the plain norm
    neither overflows nor underflows this returns its very bits (the library's
    ``linalg.vector_norm``; on Dask a chunk-wise ``sqrt(Σ x²)``: array-api-compat's Dask
    ``vector_norm`` over two axes reshapes them into one, which merges a matrix's chunks).
    One max pass and one scaling pass more than the plain norm.
    """
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if any(x.shape[a] == 0 for a in axes):  # max over nothing is undefined; the norm is 0
        return xp.sum(xp.zeros_like(x), axis=axes, keepdims=keepdims)
    mu = _power_of_two_below(max_abs(x, xp, axis=axes, keepdims=True), xp)
    y = x / mu
    if is_dask(xp):
        nrm = xp.sqrt(xp.sum(y * y, axis=axes, keepdims=True))
    else:
        nrm = xp.linalg.vector_norm(y, axis=axes, keepdims=True)
    nrm = nrm * mu
    return nrm if keepdims else xp.squeeze(nrm, axis=axes)


def _power_of_two_below(m: Any, xp: Any) -> Any:
    """``2^floor(log2 m)`` where ``m`` is positive and finite, else 1 (same shape)."""
    ok = xp.logical_and(m > 0, xp.isfinite(m))
    e = xp.floor(xp.log2(xp.where(ok, m, xp.ones_like(m))))
    return xp.where(ok, xp.pow(xp.full_like(m, 2.0), e), xp.ones_like(m))


def frobenius_norm(x: Any, xp: Any, *, keepdims: bool = False) -> Any:
    """``‖x‖_F`` over the last two axes, shape ``(...)`` (``(..., 1, 1)`` with ``keepdims``):
    :func:`vector_norm` over ``(-2, -1)`` (no overflow or underflow, chunk-wise on Dask)."""
    return vector_norm(x, xp, axis=(-2, -1), keepdims=keepdims)


def normalize_columns(X: Any, xp: Any) -> Any:
    """``X`` (..., n, r) with unit-norm columns; zero columns stay zero (no NaN), at any scale."""
    nrm = vector_norm(X, xp, axis=-2, keepdims=True)
    return X / xp.where(nrm > 0, nrm, xp.ones_like(nrm))


def lerp(start: Any, end: Any, weight: Any, xp: Any, dtype: Any = None, out: Any = None) -> Any:
    """``start + weight (end − start)`` for a host float ``weight`` (or a 0-d array of the
    inputs' library: a tensor hyper-parameter), of ``dtype`` (a dtype object or name; default
    the inputs' dtype).

    PyTorch: ``torch.lerp`` (one pass over memory instead of three, and with ``dtype`` it writes
    the cast result directly; it may round differently in the last bit); ``out`` (a torch array
    of the result's shape and dtype, possibly ``start`` itself) receives the result in place.
    Elsewhere the formula as written, then :func:`cast`, into a new array (``out`` is ignored).
    """
    if is_torch(xp):
        torch = _torch()
        dtype = resolve_dtype(xp, dtype)
        if out is None and dtype not in (None, start.dtype):
            out = torch.empty(start.shape, dtype=dtype, device=start.device)
        return torch.lerp(start, end, weight) if out is None else torch.lerp(start, end, weight, out=out)
    return cast(start + weight * (end - start), dtype, xp)


def is_cpu(x: Any) -> bool:
    """True when array ``x`` lives in host memory (NumPy, array-api-strict, CPU torch / JAX)."""
    kind = getattr(getattr(x, "device", None), "type", None)  # torch: no namespace lookup
    if kind is not None:
        return kind == "cpu"
    xp = _compat.array_namespace(x)
    if is_numpy(xp) or is_strict(xp):
        return True
    dev = device(x)  # a JAX device has .platform; CuPy's is a CUDA device
    kind = getattr(dev, "platform", None) or str(dev)
    return str(kind).lower() == "cpu"


_ITEMSIZE = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}


def itemsize(x: Any, dtype: Any = None) -> int:
    """Bytes per entry of ``dtype`` (a name or dtype object; ``x``'s dtype when None)."""
    if isinstance(dtype, str):
        if dtype not in _ITEMSIZE:
            raise ValueError(f"unknown dtype name {dtype!r}; use one of {tuple(_ITEMSIZE)}")
        return _ITEMSIZE[dtype]
    dt = x.dtype if dtype is None else dtype
    size = getattr(dt, "itemsize", None)  # np.dtype and torch.dtype instances
    if not isinstance(size, int):  # e.g. the class numpy.float32, array-api-strict dtypes
        size = _compat.array_namespace(x).finfo(dt).bits // 8
    return size


def add_scaled(y: Any, alpha: Any, x: Any, xp: Any) -> Any:
    """``y + alpha x`` for a host float ``alpha`` (or a 0-d array: a tensor hyper-parameter),
    as a new array (dtypes promote as usual).

    PyTorch: ``torch.add(y, x, alpha=alpha)`` (one pass, and a bfloat16 ``y`` with a float32
    ``x`` is read as is, no cast copy); a 0-d tensor ``alpha`` goes to ``torch.addcmul(y, x,
    alpha)`` instead (``torch.add`` would read it on the host; on CPU the two round alike,
    tested).  Elsewhere the formula as written.
    """
    if is_torch(xp):
        torch = _torch()
        if isinstance(alpha, torch.Tensor):
            return torch.addcmul(y, x, alpha)
        return torch.add(y, x, alpha=alpha)
    return y + alpha * x


def matmul_add(c: Any, a: Any, b: Any, *, beta: float, alpha: float = 1.0, xp: Any) -> Any:
    """``beta c + alpha (a @ b)`` for host floats, as a new array.

    PyTorch, 2-D or 3-D operands: ``torch.addmm`` / ``torch.baddbmm`` (the GEMM adds ``beta c``
    itself: measured 8 % faster for a bf16 Newton–Schulz step on CPU).  Dask, 2-D operands: one
    task per output block where the contraction spans few chunks
    (:func:`xpmat._dask.fused_matmul`).  Elsewhere the formula.
    """
    if is_torch(xp) and c.ndim == a.ndim == b.ndim and c.ndim in (2, 3):
        fn = _torch().addmm if c.ndim == 2 else _torch().baddbmm
        return fn(c, a, b, beta=beta, alpha=alpha)
    if is_dask(xp):
        out = _dask.fused_matmul(a, b, c=c, alpha=alpha, beta=beta)
        if out is not None:
            return out
    return beta * c + alpha * (a @ b)


def eye(n: int, *, like: Any, xp: Any) -> Any:
    """The ``n × n`` identity in ``like``'s dtype, on its device.  Dask: in ``like``'s chunk type
    (array-api-compat's Dask ``eye`` makes NumPy chunks whatever the input's; the blocks are
    converted by NumPy's ``like=`` protocol, which CuPy implements)."""
    out = xp.eye(n, dtype=like.dtype, device=device(like))
    if _compat.is_dask_array(like) and type(like._meta) is not _np.ndarray:
        from dask.array.utils import meta_from_array

        meta = meta_from_array(like._meta, ndim=2)
        out = out.map_blocks(functools.partial(_np.asarray, like=meta), meta=meta)
    return out


def matmul(a: Any, b: Any, xp: Any) -> Any:
    """``a @ b``.  Dask: one task per output block where the contraction spans few chunks
    (:func:`xpmat._dask.fused_matmul`: a square matrix chunked both ways), Dask's ``matmul``
    otherwise; every other library: ``@``."""
    if is_dask(xp):
        out = _dask.fused_matmul(a, b)
        if out is not None:
            return out
    return a @ b


def gram_t(x: Any, xp: Any) -> Any:
    """``x xᵀ`` over the last two axes.  Dask: one task per output block where the rows of
    ``x`` span few chunks (:func:`xpmat._dask.fused_matmul`; no transposed copy of ``x``),
    Dask's ``matmul`` otherwise."""
    if is_dask(xp):
        out = _dask.fused_matmul(x, x, transpose_b=True)
        if out is not None:
            return out
    return x @ mT(x, xp)


def _torch() -> Any:
    """The torch module, already imported by whoever made the torch arrays we were given."""
    return _sys.modules["torch"]


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
    return is_torch(xp) and bool(_torch().compiler.is_compiling())


def cond(pred: Any, true_fn: Any, false_fn: Any, operands: Sequence[Any], *, xp: Any) -> Any:
    """``true_fn(*operands)`` when the 0-d boolean array ``pred`` is true, else ``false_fn(*operands)``.

    Under ``torch.compile``: ``torch.cond`` (both branches are traced into the graph and only one
    runs; no graph break, no host read).  Otherwise ``pred`` is read on the host (one
    synchronisation) and only the chosen branch runs.  Both branches must return an array or a
    tuple of arrays of the same shapes and dtypes, and must not modify their operands.
    """
    if is_compiling(xp):
        return _torch().cond(pred, true_fn, false_fn, tuple(operands))
    return true_fn(*operands) if bool(pred) else false_fn(*operands)
