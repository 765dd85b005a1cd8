"""A memory-lean randomized range finder on Dask: no tall intermediate held between passes.

:func:`xpmat.randomized_svd` on a tall Dask matrix ``A`` (row chunks ``A_i``, one column chunk)
makes sketches ``Y = A Z`` (``Z`` small: the test matrix ``Ω``, or an orthonormalized
``Aᵀ Q``), orthonormalizes each by CholeskyQR2 (:func:`xpmat._dask.cqr2_layers`) and multiplies
``Aᵀ Q``.  Built from Dask operations, each chunk ``Y_i`` and ``Q_i`` is a task result that
lives from the pass that makes it to the last pass that reads it, across the Gram reductions
in between; a worker with little room beside its share of ``A`` then spills chunks of ``A`` to
disk and reads them back at every pass (``docs/dask.md``, "Measured: a LocalCluster").  Here no
task returns a tall chunk but the final ``U``: every task that needs ``Y_i`` or ``Q_i`` makes it
again from ``A_i`` (held anyway) and the small factors (a task tuple in an argument, which Dask
runs inline), as :func:`xpmat._dask.cholesky_qr2` already does for its ``Q1``.  The price: one
``A_i Z`` product per chunk and pass instead of one per sketch.  The values are those of the
generic graph to rounding: the same products on each chunk, except that ``R2⁻¹`` (near ``I``)
multiplies the small ``A_iᵀ Q1_i`` and ``Ur`` instead of the tall ``Q1_i``; the row-chunk sums
run in another order.  Whether it runs: ``xpmat.iteration._lean_on_dask``, :data:`LEAN`.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

from xpmat import _dask

__all__ = ["LEAN", "TIGHT_FRACTION", "QRows", "memory_tight", "range_pass", "signed_product"]

#: Whether :func:`xpmat.randomized_svd` takes this range finder on a tall Dask matrix: ``None``
#: decides per call (:func:`memory_tight`), ``True`` / ``False`` always / never.
LEAN: bool | None = None
#: The share of a worker's memory limit above which :func:`memory_tight` answers yes (Dask's
#: own spilling starts at 60–70 % of the limit by default): measured in ``docs/dask.md``.
TIGHT_FRACTION = 0.4


def memory_tight(a: Any, l: int) -> bool:
    """Whether the generic range finder would crowd the workers: a ``dask.distributed`` client
    is running (none, or ``distributed`` not imported: no), every worker has a memory limit,
    and ``A``'s share per worker plus the two ``m × l`` intermediates held per share (the sketch
    and its ``Q``) exceed :data:`TIGHT_FRACTION` of the smallest limit.  One query to the
    scheduler (its worker list); unknown row sizes: no."""
    import sys

    if "distributed" not in sys.modules or a.shape[0] != a.shape[0]:
        return False
    from distributed import default_client

    try:
        workers = default_client().scheduler_info().get("workers", {})
    except ValueError:  # no client
        return False
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    if not limits or not all(limits):
        return False
    m, n = a.shape
    share = m * n * a.dtype.itemsize / len(limits)
    return share * (1 + 2 * l / n) > TIGHT_FRACTION * min(limits)


class QRows(NamedTuple):
    """The row chunks of a ``Q`` that is never held: per chunk, the task that makes it
    (:func:`xpmat._dask._finish_cqr` and its arguments), and the Dask arrays whose graphs hold
    what those tasks read (``A``, ``Z``, and the array of :func:`range_pass` with the small
    factors)."""

    tasks: list
    deps: tuple


def _one_chunk(x: Any) -> tuple[Any, tuple]:
    """``x`` (a small 2-D Dask array) in one chunk, and that chunk's key."""
    x = _dask.merge_axis(_dask.merge_axis(x, 0), 1)
    return x, (x.name, 0, 0)


def _t_matmul(a: Any, *q_args: Any) -> Any:
    """``A_iᵀ Q_i``, one row chunk's share of ``Aᵀ Q``, from ``A_i`` and the arguments of
    :func:`xpmat._dask._finish_cqr` (``Y_i, first, second, …``): accepted,
    ``(A_iᵀ (Y_i R1⁻¹)) R2⁻¹`` (``R2`` is near ``I``: one tall product fewer than ``Q_i`` first);
    otherwise ``A_iᵀ`` times that row chunk of Householder's ``Q``."""
    at = _dask._namespace(a).matrix_transpose(a)
    t, first, second = q_args[:3]
    if second[1] == _dask._ACCEPTED:
        return (at @ _dask._apply(t, first)) @ second[0]
    return at @ _dask._finish_cqr(*q_args)


def range_pass(a: Any, z: Any, *, tol: float) -> tuple[Any, QRows]:
    """``W = Aᵀ Q`` with ``Q = orth(A Z)`` (CholeskyQR2, Householder where it fails), ``Q`` never held.

    ``a``: a 2-D Dask array in one column chunk; ``z`` a small ``n × l`` Dask array.  Three
    passes over the row chunks (the two Gram sums of CholeskyQR2, then ``Σ A_iᵀ Q_i`` in a tree),
    each task making ``Y_i = A_i Z`` and ``Q_i`` itself.  Returns ``W`` (``n × l``, one chunk)
    and the tasks that make ``Q``'s row chunks (for :func:`signed_product`).
    """
    z, zkey = _one_chunk(z)
    key = _dask.name("xpmat-range", a, z, tol)
    rows = [(operator.matmul, (a.name, i, 0), zkey) for i in range(a.numblocks[0])]
    graph, q_rows = _dask.cqr2_layers(key, rows, tol)
    for i, q in enumerate(q_rows):
        graph[(f"{key}-w", i)] = (_t_matmul, (a.name, i, 0), *q[1:])  # q: (_finish_cqr, *args)
    tree, root = _dask._tree_sum(f"{key}-wsum", [(f"{key}-w", i) for i in range(len(q_rows))])
    graph.update(tree)
    graph[(key, 0, 0)] = (_dask._identity, root)
    w = _dask._array(graph, key, [a, z], ((a.shape[1],), z.chunks[1]), _dask._meta(a, 2))
    return w, QRows(q_rows, (a, z, w))


def _column_peak(u: Any) -> tuple[Any, Any]:
    """Per column of a row chunk: ``(max |u|, Σ of the entries where |u| is that max)`` (zeros
    for a chunk without rows)."""
    cxp = _dask._namespace(u)
    a = cxp.abs(u)
    if u.shape[0] == 0:
        zero = cxp.sum(a, axis=0)
        return zero, zero
    mx = cxp.max(a, axis=0)
    return mx, cxp.sum(cxp.where(a == mx, u, cxp.zeros_like(u)), axis=0)


def _merge_peaks(parts: list) -> tuple[Any, Any]:
    """The ``(max, Σ at the max)`` of several chunks from theirs: the largest max, and the sums
    of the chunks that reach it (NaN: no chunk reaches it, the sum is 0)."""
    cxp = _dask._namespace(parts[0][0])
    mx = parts[0][0]
    for p, _ in parts[1:]:
        mx = cxp.maximum(mx, p)
    pick = cxp.zeros_like(mx)
    for p, s in parts:
        pick = pick + cxp.where(p == mx, s, cxp.zeros_like(s))
    return mx, pick


def _signs(peak: tuple) -> Any:
    """+1 where a column's largest-magnitude entries sum to >= 0, else -1."""
    pick = peak[1]
    return 1 - 2 * _dask._namespace(pick).astype(pick < 0, pick.dtype)


def _q_times(b: Any, t: Any, first: tuple, second: tuple, *fallback: Any) -> Any:
    """``Q_i B`` from the arguments of :func:`xpmat._dask._finish_cqr` (``t = Y_i``): accepted,
    ``(Y_i R1⁻¹)(R2⁻¹ B)`` (``R2`` is near ``I``: one tall product fewer than ``Q_i`` first);
    otherwise that row chunk of Householder's ``Q`` times ``B``."""
    if second[1] == _dask._ACCEPTED:
        return _dask._apply(t, first) @ (second[0] @ b)
    return _dask._finish_cqr(t, first, second, *fallback) @ b


def signed_product(q: QRows, b: Any) -> tuple[Any, Any]:
    """``(U, s)``: ``U = Q B`` (``Q``'s row chunks made by the tasks of ``q``, from
    :func:`range_pass`), each column times ``s = ±1`` so that its largest-magnitude entry is
    positive (``xpmat.iteration._max_abs_signs``: ties summed).

    Two passes over the row chunks, each making ``U_i = Q_i B`` itself: the per-column peaks
    (reduced in a tree), then ``U_i s``; ``s`` is returned too (for ``Vh``).
    """
    b, bkey = _one_chunk(b)
    a, w = q.deps[0], q.deps[-1]
    key = _dask.name("xpmat-signed", w, b)
    u_rows = [(_q_times, bkey, *t[1:]) for t in q.tasks]  # t: (_finish_cqr, *its arguments)
    graph = {(f"{key}-peak", i): (_column_peak, u) for i, u in enumerate(u_rows)}
    tree, root = _dask._tree_sum(f"{key}-peaks", list(graph), combine=_merge_peaks)
    graph.update(tree)
    signs = (f"{key}-s", 0)
    graph[signs] = (_signs, root)
    graph.update({(key, i, 0): (operator.mul, u, signs) for i, u in enumerate(u_rows)})
    U = _dask._array(graph, key, [*q.deps, b], (a.chunks[0], b.chunks[1]), _dask._meta(a, 2))
    skey = f"{key}-signs"
    s = _dask._array({(skey, 0): (_dask._identity, signs)}, skey, [U], (b.chunks[1],),
                     _dask._meta(a, 1))
    return U, s
