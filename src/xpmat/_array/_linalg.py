"""Factorizations (``eigh``, ``svd``, ``qr``, ``cholesky``) under one NaN / half-precision policy.

The policy (the "Input policy" table of ``docs/backends.md``):

- A matrix of a batch holding NaN or Inf gets NaN factors, and only that matrix: LAPACK raises
  on NaN ("did not converge"), returns finite garbage for Inf (PyTorch's svd gives zeros) or
  never returns (NumPy's svd of a matrix holding Inf loops forever).  Such matrices are replaced
  by a harmless one before the call and their factors by NaN after it, with ``where`` (no host
  read, so the same code runs under ``jax.jit``, on Dask and on ``meta`` tensors).
- float16 / bfloat16: no library here factors in half precision (NumPy, PyTorch's CPU kernels
  and JAX refuse), so the factorization runs in float32 and its factors come back in the
  input's dtype.

Dask: each small matrix is factored whole on one chunk by the chunk's own library
(:func:`xpmat._dask.per_matrix`); the tall side of a QR / SVD goes through xpmat's TSQR
(:func:`xpmat._dask.tsqr`), which never puts the rows of a row-chunked matrix on one machine.
The libraries' own ``linalg`` namespaces do the work; nothing here imports one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat as _compat

from xpmat import _dask
from xpmat._array._dtypes import is_low_precision
from xpmat._array._namespace import is_cupy, is_dask, is_jax, library_name
from xpmat._array._products import eye, mT


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
        fill = 0.0  # a scalar, not zeros_like: a's Dask meta may not be its chunks' type
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
