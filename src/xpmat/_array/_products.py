"""Products: transposes, matmuls, the Gram ``x xᵀ``, ``beta c + alpha a b``, the identity.

Standard ``@`` everywhere, with two fast paths: PyTorch's ``addmm`` / ``baddbmm`` for
:func:`matmul_add` (the loaded torch, :func:`loaded_torch`; never imported here), and Dask's one
task per output block (:func:`xpmat._dask.fused_matmul`) where a contraction spans few chunks.
:func:`eye` converts a Dask identity to ``like``'s chunk type (:func:`xpmat._dask.as_chunk_type`).
"""

from __future__ import annotations

from typing import Any

from xpmat import _dask
from xpmat._array._namespace import device, is_dask, is_torch, loaded_torch


def mT(x: Any, xp: Any) -> Any:
    """Transpose of the last two axes (a view where the library allows)."""
    return xp.matrix_transpose(x) if hasattr(xp, "matrix_transpose") else xp.linalg.matrix_transpose(x)


def matmul_t(a: Any, b: Any, xp: Any) -> Any:
    """``aᵀ b`` over the last two axes."""
    return mT(a, xp) @ b


def matmul(a: Any, b: Any, xp: Any, *, skip: Any = None) -> Any:
    """``a @ b``.  Dask: one task per output block where the contraction spans few chunks
    (:func:`xpmat._dask.fused_matmul`: a square matrix chunked both ways), Dask's ``matmul``
    otherwise; every other library: ``@``.  ``skip`` (Dask, fused tasks only): a 0-d boolean
    array; where true the tasks return zeros without the GEMM (the caller discards the
    product); ignored elsewhere."""
    if is_dask(xp):
        out = _dask.fused_matmul(a, b, skip=skip)
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


def matmul_add(c: Any, a: Any, b: Any, *, beta: float, alpha: float = 1.0, xp: Any) -> Any:
    """``beta c + alpha (a @ b)`` for host floats, as a new array.

    PyTorch, 2-D or 3-D operands: ``torch.addmm`` / ``torch.baddbmm`` (the GEMM adds ``beta c``
    itself: measured 8 % faster for a bf16 Newton–Schulz step on CPU).  Dask, 2-D operands: one
    task per output block where the contraction spans few chunks
    (:func:`xpmat._dask.fused_matmul`).  Elsewhere the formula.
    """
    if is_torch(xp) and c.ndim == a.ndim == b.ndim and c.ndim in (2, 3):
        fn = loaded_torch().addmm if c.ndim == 2 else loaded_torch().baddbmm
        return fn(c, a, b, beta=beta, alpha=alpha)
    if is_dask(xp):
        out = _dask.fused_matmul(a, b, c=c, alpha=alpha, beta=beta)
        if out is not None:
            return out
    return beta * c + alpha * (a @ b)


def eye(n: int, *, like: Any, xp: Any) -> Any:
    """The ``n × n`` identity in ``like``'s dtype, on its device.  Dask: in the type of
    ``like``'s chunks (array-api-compat's Dask ``eye`` makes NumPy chunks whatever the input's;
    :func:`xpmat._dask.as_chunk_type` converts them); an ndarray subclass (a chunk inside a
    Dask task) in its own type (:func:`xpmat._dask.subclass_like`)."""
    e = xp.eye(n, dtype=like.dtype, device=device(like))
    return _dask.as_chunk_type(e, like) if is_dask(xp) else _dask.subclass_like(e, like)
