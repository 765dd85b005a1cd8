"""Norms free of overflow and underflow: ``max |x|``, the Euclidean and Frobenius norms, unit
columns.

Standard Array API calls, plus a Dask reduction for ``max |x|`` (``dask.array`` imported inside
:func:`max_abs`, for Dask input only).
"""

from __future__ import annotations

from typing import Any

import numpy as _np

from xpmat._array._namespace import is_dask


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
