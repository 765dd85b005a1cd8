"""Triangular solves and inverses, which the Array API standard lacks.

Fast paths by library (``torch.linalg``; SciPy, CuPy's ``cupyx.scipy.linalg`` and
``jax.scipy.linalg``, each imported inside :func:`solve_triangular` only for arrays of that
library, or SciPy for NumPy when it is installed), the standard's ``linalg.solve`` as the
fallback; Dask: each small triangle inverted on one chunk (:func:`xpmat._dask.per_matrix`).
"""

from __future__ import annotations

import functools
from typing import Any

from xpmat import _dask
from xpmat._array._dtypes import is_low_precision
from xpmat._array._namespace import device, is_cupy, is_dask, is_jax, is_numpy, is_torch
from xpmat._array._products import mT


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
