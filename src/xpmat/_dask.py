"""Dask graphs of the factorizations: tall-skinny QR on row chunks, small steps on one chunk.

:mod:`xpmat._array`, :mod:`xpmat.orthogonalize` and :mod:`xpmat.nmf` call this module, only for
Dask arrays (so Dask is already imported; nothing here imports it at module level).  Every graph
built here follows what ``dask.array.linalg`` does and what Dask's test utilities check:

- **Deterministic names**: each layer is named ``label-tokenize(label, inputs, options)``, so
  two identical calls build identical keys (Dask then shares and caches repeated work) and no
  key is ever defined twice with different tasks (``dask.array.utils.assert_eq``).
- **Any chunk sizes**: rows and columns of unknown size (``nan`` chunks, after boolean
  masking or ``from_delayed``) are fine.  Small matrices are brought onto one chunk by
  :func:`merge_axis`, which concatenates chunks of unknown size inside the tasks (``rechunk``
  refuses them); the tall factorizations read sizes only inside their tasks.
- **The chunks' own library**: every task computes with the namespace of the chunk it gets
  (NumPy, CuPy, …) and creates arrays only from its inputs (``zeros_like``, ``full_like``),
  never from NumPy, so CuPy chunks stay CuPy chunks.
- **One task per chunk and step**: the tall factorizations are written as per-chunk tasks
  (:func:`cholesky_qr2`, :func:`tsqr`) instead of chains of generic Dask operations; the
  Householder fallback of CholeskyQR2 is gated *inside* its tasks on the acceptance flag, so
  an accepted matrix never pays for a QR (the generic lazy path computes both methods).  A
  product of blocks is one task per output block where that holds little (:func:`fused_matmul`);
  a row-local step with sums over the rows (an NMF step) is one task per row chunk
  (:func:`rowwise`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ONE_TASK_BYTES", "as_chunk_type", "cholesky_qr2", "cqr2_layers", "fits_one_task", "fused_matmul",
           "merge_axis", "name", "per_matrix", "rowwise", "subclass_like", "tsqr"]

# Fan-in of the tree that sums the per-chunk Gram matrices (dask's own reductions use 4–32).
_SPLIT_EVERY = 8
# Row chunks up to which TSQR factors all stacked R factors in one task (more: two levels)
_TSQR_ONE_LEVEL = 32
# CholeskyQR2 states, computed on one chunk from the Gram matrices
_ACCEPTED, _FALLBACK, _NONFINITE = 0, 1, 2
#: Bytes of one task's matrices up to which an iteration (Newton ``inv_root``) runs whole in one
#: task (:func:`fits_one_task`): 64 MiB, below the size (about 90–100 MiB of float32 on 2 cores)
#: where the blocked path was estimated to catch up, half Dask's default ``array.chunk-size``.
#: Measured in ``docs/dask.md`` ("Newton inv_root in one task").
ONE_TASK_BYTES = 64 * 2**20


def name(label: str, *args: Any) -> str:
    """``label-<token>``: a deterministic Dask key name (``dask.base.tokenize`` of all args)."""
    from dask.base import tokenize

    return f"{label}-{tokenize(label, *args)}"


def _namespace(t: Any) -> Any:
    """The namespace of a chunk's library, unchecked (the caller validated the arguments): this
    module sits below :mod:`xpmat._array` (which calls it), so it asks array-api-compat itself."""
    import array_api_compat

    return array_api_compat.array_namespace(t)


def as_chunk_type(x: Any, like: Any) -> Any:
    """``x`` with every chunk converted to the chunk type of the Dask array ``like`` (a CuPy
    chunk, an ndarray subclass), for an array made by a creation function (``arange``, ``eye``):
    array-api-compat's Dask creation functions make NumPy chunks whatever the input's type.

    Each task reads the type from ``like``'s first chunk itself, not from its ``_meta`` (Dask
    gives some reductions of an ndarray subclass a NumPy meta, which then spreads), and converts
    with that chunk's library (``cupy.asarray``, ``torch.asarray`` on its device; NumPy's
    ``like=`` protocol for an ndarray subclass); a chunk of that type already is returned as is.
    ``x`` itself where either is not a Dask array or ``like`` has no chunk.
    """
    import array_api_compat

    if not (array_api_compat.is_dask_array(x) and array_api_compat.is_dask_array(like)):
        return x
    if like.npartitions == 0:
        return x
    key = name("xpmat-as-chunk-type", x, like.name)
    ref = (like.name, *(0,) * like.ndim)
    graph = {(key, *i): (_convert, (x.name, *i), ref) for i in _block_indices(x.numblocks)}
    from dask.array.utils import meta_from_array

    return _array(graph, key, [x, like], x.chunks, meta_from_array(like._meta, x.ndim, x.dtype))


def _convert(block: Any, ref: Any) -> Any:
    """``block`` as an array of ``ref``'s type (see :func:`as_chunk_type`)."""
    if type(block) is type(ref):
        return block
    import numpy

    if isinstance(ref, numpy.ndarray):  # a subclass: NumPy's like= protocol keeps it
        return numpy.asarray(block, like=ref)
    import array_api_compat

    cxp = array_api_compat.array_namespace(ref)
    return cxp.asarray(block, device=array_api_compat.device(ref))


def subclass_like(x: Any, ref: Any) -> Any:
    """A NumPy array ``x`` made inside a task as the type of the chunk ``ref`` where that is an
    ndarray subclass (NumPy's ``like=``), as :func:`_convert` does between tasks; ``x`` itself
    otherwise (CuPy and PyTorch chunks already get arrays of their own type from their
    namespace)."""
    if type(x) is type(ref):
        return x
    import sys

    numpy = sys.modules.get("numpy")
    if numpy is not None and type(x) is numpy.ndarray and isinstance(ref, numpy.ndarray):
        return numpy.asarray(x, like=ref)
    return x


def _device(block: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(block)


def _known(chunks: Sequence[float]) -> bool:
    return not any(math.isnan(c) for c in chunks)


def merge_axis(x: Any, axis: int) -> Any:
    """``x`` with all chunks along ``axis`` merged into one.

    Known chunk sizes: ``x.rechunk({axis: -1})``.  Unknown sizes (``nan``), which ``rechunk``
    refuses: a ``blockwise`` that concatenates the chunks along ``axis`` inside each task
    (its index contracted with ``concatenate=True``), so the sizes are never needed.
    """
    import dask.array as da

    axis %= x.ndim
    if x.numblocks[axis] == 1:
        return x
    if _known(x.chunks[axis]):
        return x.rechunk({axis: -1})
    ind = tuple(range(x.ndim))
    out = tuple(x.ndim if i == axis else i for i in ind)
    return da.blockwise(_identity, out, x, ind, new_axes={x.ndim: (math.nan,)}, concatenate=True,
                        dtype=x.dtype, meta=x._meta, name=name("xpmat-merge", x, axis))


def _identity(t: Any) -> Any:
    return t


def _array(graph: dict, key_name: str, deps: Sequence[Any], chunks: tuple, meta: Any) -> Any:
    """A Dask array from the layer ``graph`` (keys ``(key_name, *index)``) over ``deps``."""
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    hlg = HighLevelGraph.from_collections(key_name, graph, dependencies=list(deps))
    return da.Array(hlg, key_name, chunks=chunks, meta=meta)


def _meta(a: Any, ndim: int, dtype: Any = None) -> Any:
    from dask.array.utils import meta_from_array

    return meta_from_array(a._meta, ndim=ndim, dtype=dtype)


def fits_one_task(a: Any) -> bool:
    """Whether the matrices of the Dask array ``a`` (..., m, n) are small enough to be iterated
    whole in one task per batch chunk: all sizes known and a batch chunk of matrices at most
    :data:`ONE_TASK_BYTES` (the task then holds a few arrays of that size)."""
    if not all(_known(c) for c in a.chunks):
        return False
    batch = math.prod(max(c, default=0) for c in a.chunks[:-2])
    return batch * a.shape[-2] * a.shape[-1] * a.dtype.itemsize <= ONE_TASK_BYTES


def per_matrix(fn: Callable, a: Any, shapes: Sequence[tuple], *, label: str,
               dtypes: Sequence[Any] | None = None) -> list[Any]:
    """Run ``fn(t, chunk_xp)`` on each matrix of the Dask array ``a`` (..., m, n), whole on one chunk.

    ``fn`` gets a chunk ``t`` (..., m, n) of the chunk's library with that library's namespace
    and returns a tuple, one array per entry of ``shapes``: ``(rows, cols)`` for a matrix
    (..., rows, cols), ``(cols,)`` for a vector (..., cols); sizes may be ``nan``.  One task per
    batch chunk computes the tuple; each output is a Dask array of its item (a ``getitem``
    task per chunk, as ``dask.array.linalg.tsqr`` does).  ``fn`` must be a module-level
    function or a ``functools.partial`` of one (it is part of the deterministic name).  Only
    for small matrices: a matrix's rows and columns are brought together on one chunk.
    ``dtypes``: the outputs' dtypes where they are not ``a``'s (one per entry of ``shapes``).
    """
    nd = a.ndim
    a = merge_axis(merge_axis(a, nd - 2), nd - 1)
    key = name(f"xpmat-{label}", fn, a, tuple(shapes))
    blocks = list(_block_indices(a.numblocks))
    layer = {(key, *i): (_call, fn, (a.name, *i)) for i in blocks}
    whole = _array(layer, key, [a], a.chunks, a._meta)  # a tuple per task, never an array itself
    out = []
    for k, shape in enumerate(shapes):
        part = f"{key}-{k}"
        tail = (0,) * len(shape)  # the matrix (or vector) of each batch chunk: one block
        graph = {(part, *i[:-2], *tail): (operator.getitem, (key, *i), k) for i in blocks}
        chunks = (*a.chunks[:-2], *((s,) for s in shape))
        meta = _meta(a, nd - 2 + len(shape), None if dtypes is None else dtypes[k])
        out.append(_array(graph, part, [whole], chunks, meta))
    return out


def _call(fn: Callable, t: Any) -> Any:
    return fn(t, _namespace(t))


def _block_indices(numblocks: Sequence[int]) -> Any:
    import itertools

    return itertools.product(*(range(n) for n in numblocks))


# ----------------------------------------------------------------------------- per-chunk steps


def _gram(t: Any) -> Any:
    cxp = _namespace(t)
    return cxp.matrix_transpose(t) @ t


def _tree_sum(key: str, parts: list, combine: Callable | None = None) -> tuple[dict, Any]:
    """Tasks summing the task keys ``parts`` in a tree of fan-in ``_SPLIT_EVERY`` (or reducing
    them with ``combine(list)``); the root's key."""
    graph, level, depth = {}, list(parts), 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level), _SPLIT_EVERY):
            k = (f"{key}-{depth}", j // _SPLIT_EVERY)
            graph[k] = (combine or _sum, level[j:j + _SPLIT_EVERY])
            nxt.append(k)
        level, depth = nxt, depth + 1
    return graph, level[0]


def _sum(parts: list) -> Any:
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def _inverse_factor(G: Any) -> tuple[Any, bool]:
    """``(R⁻¹, ok)`` with ``RᵀR = G`` (``R`` upper triangular); ``ok`` false where the Cholesky
    factorization fails (raises or gives non-finite values); ``R⁻¹`` is then ``G`` itself (unused)."""
    cxp = _namespace(G)
    try:
        L = cxp.linalg.cholesky(G)
    except Exception:  # LinAlgError (NumPy): not positive definite
        return G, False
    if not bool(cxp.all(cxp.isfinite(L))):  # CuPy signals failure by NaN
        return G, False
    # Lᵀ is upper triangular (its pivoted LU is itself) and well conditioned when accepted: the
    # library's own inverse, what xpmat._array.triangular_inverse runs for NumPy too
    return cxp.linalg.inv(cxp.matrix_transpose(L)), True


def _cqr_first(G1: Any) -> tuple[Any, int]:
    """First CholeskyQR pass on the summed Gram ``G1``: ``(R1⁻¹, state)``."""
    cxp = _namespace(G1)
    if not bool(cxp.all(cxp.isfinite(G1))):  # a NaN/Inf entry of X makes G1 non-finite
        return G1, _NONFINITE
    Rinv, ok = _inverse_factor(G1)
    return Rinv, _ACCEPTED if ok else _FALLBACK


def _apply(t: Any, first: tuple) -> Any:
    """``t R⁻¹`` (one chunk of ``X R1⁻¹``); the chunk itself where the first pass failed."""
    Rinv, state = first
    return t @ Rinv if state == _ACCEPTED else t


def _cqr_second(G2: Any, first: tuple, tol: float) -> tuple[Any, int]:
    """Acceptance test and second pass on ``G2 = Q1ᵀQ1``: ``(R2⁻¹, state)``.  Accepted when
    both Cholesky factorizations exist and ``max |G2 − I| <= tol``."""
    state = first[1]
    if state != _ACCEPTED:
        return G2, state
    cxp = _namespace(G2)
    d = cxp.linalg.diagonal(G2)
    off = cxp.max(cxp.abs(cxp.tril(G2, k=-1) + cxp.triu(G2, k=1)))
    if not (bool(cxp.max(cxp.abs(d - 1)) <= tol) and bool(off <= tol)):  # False for NaN too
        return G2, _FALLBACK
    Rinv, ok = _inverse_factor(G2)
    return Rinv, _ACCEPTED if ok else _FALLBACK


def _gram_applied(t: Any, first: tuple) -> Any:
    """The Gram of one chunk of ``Q1 = X R1⁻¹``, the chunk not kept: :func:`_finish_cqr` makes
    it again (one small triangular product per chunk), so no tall ``Q1`` waits in memory across
    the second Gram's reduction (on a cluster: less to spill)."""
    return _gram(_apply(t, first))


def _finish_cqr(t: Any, first: tuple, second: tuple, part: Any, stacked: Any, i: int) -> Any:
    """One row chunk of the result from the input chunk ``t``: ``(t R1⁻¹) R2⁻¹`` when accepted
    (the same products as the Gram pass), NaN for NaN/Inf input, else Householder's rows (TSQR's
    third stage: ``part`` the chunk's first-stage QR, ``stacked`` the second stage)."""
    q1 = _apply(t, first)
    Rinv, state = second
    if state == _ACCEPTED:
        return q1 @ Rinv
    if state == _NONFINITE:
        return _namespace(q1).full_like(q1, float("nan"))
    return _qr_rows(part, stacked, i, q1)


# ----------------------------------------------------------------------------- TSQR


def _qr_chunk(t: Any, state: Any = _FALLBACK) -> Any:
    """Stage 1 of TSQR on one row chunk: ``(Q_i, R_i)`` (reduced), ``None`` when skipped (the
    CholeskyQR2 result was accepted, or the input is not finite: nothing to factor)."""
    if isinstance(state, tuple):
        state = state[1]
    if state != _FALLBACK:
        return None
    cxp = _namespace(t)
    if not bool(cxp.all(cxp.isfinite(t))):
        return "nonfinite"
    return cxp.linalg.qr(t)


def _qr_made(state: Any, fn: Callable, *args: Any) -> Any:
    """:func:`_qr_chunk` of the row chunk ``fn(*args)``, made only when the gate ``state`` asks
    for the QR (a recomputed chunk costs nothing when CholeskyQR2 was accepted)."""
    if (state[1] if isinstance(state, tuple) else state) != _FALLBACK:
        return None
    return _qr_chunk(fn(*args))


def _qr_stack(parts: list, state: Any = _FALLBACK) -> Any:
    """Stage 2 of TSQR: the QR of the stacked ``R_i``, signs fixed so that diag(R) >= 0;
    ``(blocks of Q2 per chunk, R)``, ``None`` when skipped, ``"nonfinite"`` for NaN/Inf input."""
    if isinstance(state, tuple):
        state = state[1]
    if state != _FALLBACK:
        return None
    if any(isinstance(p, str) for p in parts):
        return "nonfinite"
    cxp = _namespace(parts[0][1])
    Q2, R = cxp.linalg.qr(cxp.concat([r for _, r in parts], axis=0))
    d = cxp.linalg.diagonal(R)
    s = 1 - 2 * cxp.astype(d < 0, R.dtype)  # zero counts as positive
    Q2, R = Q2 * s, s[:, None] * R
    blocks, start = [], 0
    for _, r in parts:
        blocks.append(Q2[start:start + r.shape[0], :])
        start += r.shape[0]
    return blocks, R


def _qr_rows(part: Any, stacked: Any, i: int, t: Any) -> Any:
    """Stage 3 of TSQR: row chunk ``i`` of ``Q`` (NaN for non-finite input; ``t`` the input chunk)."""
    if stacked is None:
        return None
    if isinstance(stacked, str):
        cxp = _namespace(t)
        return cxp.full_like(t, float("nan"))
    return part[0] @ stacked[0][i]


def _r_factor(stacked: Any, t: Any) -> Any:
    if isinstance(stacked, str):  # NaN/Inf input: an r × r NaN factor
        return _namespace(t).full_like(_gram(t), float("nan"))
    return stacked[1]


def _tall_input(x: Any) -> Any:
    if x.ndim != 2:
        raise ValueError(f"a 2-D Dask array is needed here, got shape {x.shape}")
    return merge_axis(x, 1)


def tsqr(x: Any, *, with_r: bool = True) -> tuple[Any, Any]:
    """Thin QR ``(Q, R)`` of a tall 2-D Dask array by TSQR, diag(R) >= 0.

    The columns are merged into one chunk (:func:`merge_axis`), the rows keep their chunks:
    each row chunk is factored on its own (``Q_i R_i``), the stacked ``R_i`` (``Σ r × r``, one
    task) are factored once more, and each chunk's ``Q_i`` is multiplied by its block of that
    second ``Q`` (Benson, Gleich & Demmel, *Direct QR factorizations for tall-and-skinny
    matrices in MapReduce architectures*, 2013: the one-level form of
    ``dask.array.linalg.tsqr``).  Row and column sizes may be unknown.  An input holding NaN
    or Inf gives NaN factors (no QR runs on it).  ``R`` is ``None`` unless ``with_r``.
    """
    x = _tall_input(x)
    rows = [(x.name, i, 0) for i in range(x.numblocks[0])]
    graph, key, _ = _tsqr_layers(name("xpmat-tsqr", x, None), rows, state=None)
    meta = x._meta
    q = _array(graph, key, [x], x.chunks, meta)
    if not with_r:
        return q, None
    rkey = name("xpmat-tsqr-r", x)
    rgraph = {(rkey, 0, 0): (_r_factor, (f"{key}-stack", 0), (x.name, 0, 0))}
    r = _array(rgraph, rkey, [q, x], ((x.chunks[1][0],), x.chunks[1]), meta)
    return q, r


def _tsqr_layers(key: str, rows: list, state: Any) -> tuple[dict, str, list]:
    """The stages of :func:`tsqr` over the row chunks ``rows`` (task keys, or tasks that make
    the chunk: :func:`_first_stage`) as a task dict: the first two always (keys ``(key-qr, i)``,
    ``(key-stack, 0)``), each taking the key ``state`` (CholeskyQR2's second pass) as a gate
    when given; the third (``(key, i, 0)``) only without a gate (CholeskyQR2's final tasks
    do it themselves).  Also returns, per row chunk ``i``, the key and index of its block of the
    second-stage ``Q`` (the arguments ``stacked, i`` of :func:`_qr_rows`).

    More than ``_TSQR_ONE_LEVEL`` row chunks: two levels (the tree of
    ``dask.array.linalg.tsqr``, two deep), so that no task factors all the stacked ``R_i``:
    groups of about ``√chunks`` are factored first (``(key-group, g)``), then their ``R``
    factors (``(key-stack, 0)``), and each group's blocks are multiplied by its block of the top
    ``Q`` (``(key-join, g)``).
    """
    nr = len(rows)
    gate = () if state is None else (state,)
    graph = {(f"{key}-qr", i): _first_stage(t, gate) for i, t in enumerate(rows)}
    parts = [(f"{key}-qr", i) for i in range(nr)]
    if nr <= _TSQR_ONE_LEVEL:
        graph[(f"{key}-stack", 0)] = (_qr_stack, parts, *gate)
        blocks = [((f"{key}-stack", 0), i) for i in range(nr)]
    else:
        size = math.isqrt(nr - 1) + 1  # ceil(√nr)
        groups = [parts[j:j + size] for j in range(0, nr, size)]
        for g, group in enumerate(groups):
            graph[(f"{key}-group", g)] = (_qr_stack, group, *gate)
        graph[(f"{key}-stack", 0)] = (_qr_stack, [(f"{key}-group", g) for g in range(len(groups))],
                                      *gate)
        for g in range(len(groups)):
            graph[(f"{key}-join", g)] = (_join, (f"{key}-group", g), (f"{key}-stack", 0), g)
        blocks = [((f"{key}-join", i // size), i % size) for i in range(nr)]
    if state is None:
        for i, (stacked, j) in enumerate(blocks):
            graph[(key, i, 0)] = (_qr_rows, (f"{key}-qr", i), stacked, j, rows[i])
    return graph, key, blocks


def _first_stage(row: tuple, gate: tuple) -> tuple:
    """The first-stage task of row chunk ``row``: a task key (the chunk is held anyway), or a
    task ``(fn, *args)`` that makes the chunk, then run only behind the gate (:func:`_qr_made`)."""
    if callable(row[0]):
        return (_qr_made, *(gate or (_FALLBACK,)), *row)
    return (_qr_chunk, row, *gate)


def _join(group: Any, top: Any, g: int) -> Any:
    """A group's second-stage blocks times its block ``g`` of the top ``Q``, with the top ``R``:
    the ``(blocks, R)`` of a one-level stack (``None`` when skipped, ``"nonfinite"`` as is)."""
    if top is None or isinstance(top, str):
        return top
    return [b @ top[0][g] for b in group[0]], top[1]


def cholesky_qr2(x: Any, *, tol: float) -> Any:
    """Orthonormal ``Q`` of a tall 2-D Dask array by CholeskyQR2, Householder (TSQR) where needed.

    Per row chunk ``X_i``: the Gram ``X_iᵀX_i`` (summed in a tree), ``Q1_i = X_i R1⁻¹``, its Gram
    (summed), ``Q_i = Q1_i R2⁻¹`` — four passes over the rows, the Cholesky factorizations and
    triangular inverses on one chunk.  The acceptance test (both factorizations exist,
    ``max |Q1ᵀQ1 − I| <= tol``) is read inside the tasks: when it fails the matrix is factored by
    :func:`tsqr` instead, whose tasks do nothing when it passes.  ``Q1``'s chunks are made where
    they are used (the second Gram, the result), never held between the passes.  NaN or Inf anywhere in ``X``
    gives a NaN ``Q``.  Returns ``Q`` chunked as ``X``'s rows, its columns in one chunk.
    """
    x = _tall_input(x)
    rows = [(x.name, i, 0) for i in range(x.numblocks[0])]
    key = name("xpmat-cholesky-qr2", x, tol)
    graph, q_rows = cqr2_layers(key, rows, tol)
    graph.update({(key, i, 0): q for i, q in enumerate(q_rows)})
    return _array(graph, key, [x], x.chunks, x._meta)


def cqr2_layers(key: str, rows: list, tol: float) -> tuple[dict, list]:
    """The passes of :func:`cholesky_qr2` over the row chunks ``rows`` as a task dict (keys
    ``(key-…, i)``), and per row chunk the task that makes that chunk of ``Q`` (to be used as a
    task, or inside another task: Dask runs a task tuple in an argument inline).  ``rows``: task
    keys, or tasks ``(fn, *args)`` that make the chunk (:mod:`xpmat._dask_range`: ``A_i Z``),
    then made anew in every pass, and by the fallback's QR only when it runs."""
    nr = len(rows)
    graph = {(f"{key}-g1", i): (_gram, t) for i, t in enumerate(rows)}
    tree, g1 = _tree_sum(f"{key}-g1sum", [(f"{key}-g1", i) for i in range(nr)])
    graph.update(tree)
    first = (f"{key}-first", 0)
    graph[first] = (_cqr_first, g1)
    for i, t in enumerate(rows):  # Q1's chunks are made twice, never held: _gram_applied
        graph[(f"{key}-g2", i)] = (_gram_applied, t, first)
    tree, g2 = _tree_sum(f"{key}-g2sum", [(f"{key}-g2", i) for i in range(nr)])
    graph.update(tree)
    second = (f"{key}-second", 0)
    graph[second] = (_cqr_second, g2, first, tol)
    house, hkey, blocks = _tsqr_layers(name("xpmat-tsqr", key, second), rows, second)
    graph.update(house)
    return graph, [(_finish_cqr, rows[i], first, second, (f"{hkey}-qr", i), stacked, j)
                   for i, (stacked, j) in enumerate(blocks)]


# ----------------------------------------------------------------------------- fused products


def fused_matmul(a: Any, b: Any, *, transpose_b: bool = False, c: Any = None, alpha: float = 1.0,
                 beta: float = 0.0, skip: Any = None) -> Any:
    """``alpha a @ op(b) + beta c`` (``op(b) = bᵀ`` with ``transpose_b``), one task per output block.

    Each task multiplies a block row of ``a`` by a block column of ``op(b)`` (their blocks
    concatenated along the contracted axis: one GEMM) and adds ``beta c`` in the same task, where
    Dask's own ``matmul`` makes a task per block product, a tree of sums and one task per
    elementwise operation (a Newton–Schulz step on a 3 × 3 grid of blocks: 27 tasks instead of
    about 250, see ``docs/dask.md``).  A task then holds whole block rows, so this is used only
    where the contracted axis spans no more blocks than the longer side of the output grid (a
    square matrix chunked both ways, a product with a small factor); a long contraction (the
    Gram of a tall-skinny matrix over its row chunks) returns ``None``: the caller falls back to
    Dask's reduction, which keeps the row chunks apart.  ``None`` too for batched operands or
    chunks that do not line up (sizes unknown, different splits).

    ``skip``: a 0-d Dask boolean; where it is true each task returns zeros of its block's shape
    without the GEMM (for an iteration whose caller discards the product once it has converged:
    Newton ``inv_root``), one host read of the flag per task, and before the blocks are
    concatenated (the tasks get them as lists), so a skipped task copies nothing.
    """
    import dask.array as da

    if a.ndim != 2 or b.ndim != 2:
        return None
    bk = 1 if transpose_b else 0  # b's contracted axis
    if not (_known(a.chunks[1]) and a.chunks[1] == b.chunks[bk]):
        return None
    out_chunks = (a.chunks[0], b.chunks[1 - bk])
    if a.numblocks[1] > max(len(out_chunks[0]), len(out_chunks[1])):
        return None
    args = [a, "ik", b, "jk" if transpose_b else "kj"]
    if c is not None:
        if c.ndim != 2 or tuple(c.chunks) != out_chunks:
            return None
        args += [c, "ij"]
    if skip is not None:
        if c is not None or skip.ndim != 0:
            return None
        args += [skip, ""]
    dtype = da.result_type(*(x for x in (a, b, c) if x is not None))
    key = name("xpmat-matmul", a, b, c, transpose_b, alpha, beta, skip)
    return da.blockwise(_block_matmul, "ij", *args, concatenate=False, dtype=dtype, meta=a._meta,
                        name=key, transpose_b=transpose_b, alpha=alpha, beta=beta,
                        gated=skip is not None)


def _block_matmul(a: list, b: list, *c: Any, transpose_b: bool, alpha: float, beta: float,
                  gated: bool = False) -> Any:
    """One output block from the blocks ``a`` (a block row) and ``b`` (a block column, or block
    row of ``b`` with ``transpose_b``), concatenated here, after the gate: a skipped task copies
    nothing."""
    cxp = _namespace(a[0])
    if gated:
        *c, skip = c
        if bool(skip):
            rows, cols = a[0].shape[0], b[0].shape[0] if transpose_b else b[0].shape[1]
            out = cxp.zeros((rows, cols), dtype=cxp.result_type(a[0], b[0]), device=_device(a[0]))
            return _convert(out, a[0])
    a = a[0] if len(a) == 1 else cxp.concat(a, axis=1)
    b = b[0] if len(b) == 1 else cxp.concat(b, axis=1 if transpose_b else 0)
    p = a @ (cxp.matrix_transpose(b) if transpose_b else b)
    if alpha != 1.0:
        p = alpha * p
    return beta * c[0] + p if c else p


# ----------------------------------------------------------------------------- row-wise steps


def rowwise(fn: Callable, tall: Sequence[Any], small: Sequence[Any], *, out_cols: int,
            partials: Sequence[tuple], label: str) -> Any:
    """One task per row chunk for a step that is row-local plus sums over the rows.

    Task ``i`` calls ``fn(*row_chunks_i, *small)`` (the ``i``-th row chunk of each array of
    ``tall``, every array of ``small`` whole) and gets ``(rows_i, *partials_i)``: ``rows_i`` is
    row chunk ``i`` of a tall result with ``out_cols`` columns; each partial (shape from
    ``partials``) is summed over the row chunks in a tree.  Returns ``(rows, [sums])``, or
    ``None`` where the layout does not fit (2-D ``tall`` arrays with one column chunk and
    the same, known row chunks): the caller then builds the step from Dask operations.  ``fn``:
    a module-level function (it is part of the deterministic name).
    """
    first = tall[0]
    if any(t.ndim != 2 or t.numblocks[1] != 1 or t.chunks[0] != first.chunks[0] for t in tall):
        return None
    if not _known(first.chunks[0]):
        return None
    small = [merge_axis(merge_axis(s, 0), 1) if s.ndim == 2 else s for s in small]
    if any(s.npartitions != 1 for s in small):
        return None
    nr = first.numblocks[0]
    key = name(f"xpmat-{label}", fn, *tall, *small)
    small_keys = [(s.name, *(0,) * s.ndim) for s in small]
    layer = {(key, i, 0): (fn, *((t.name, i, 0) for t in tall), *small_keys) for i in range(nr)}
    whole = _array(layer, key, [*tall, *small], (first.chunks[0], (1,)), first._meta)  # tuples
    rkey = f"{key}-rows"
    graph = {(rkey, i, 0): (operator.getitem, (key, i, 0), 0) for i in range(nr)}
    rows = _array(graph, rkey, [whole], (first.chunks[0], (out_cols,)), first._meta)
    sums = []
    for k, shape in enumerate(partials, start=1):
        pkey = f"{key}-sum{k}"
        graph = {(f"{pkey}-part", i): (operator.getitem, (key, i, 0), k) for i in range(nr)}
        tree, root = _tree_sum(f"{pkey}-tree", [(f"{pkey}-part", i) for i in range(nr)])
        graph.update(tree)
        graph[(pkey, *(0,) * len(shape))] = (_identity, root)
        sums.append(_array(graph, pkey, [whole], tuple((s,) for s in shape), _meta(first, len(shape))))
    return rows, sums
