"""Nonnegative matrix factorization under the I-divergence, by (generalized) EM.

[Stratos 2026, App. L][stratos-2026] (NMF, EM, rank one, AdamNMF) and
§4.7 (Adafactor, eq. 52).  ``C ≈ A B`` with ``C (..., m, n) ≥ 0``, ``A (..., m, r)``,
``B (..., r, n)``.

The EM step is the *blockwise* form of footnote 22: update ``A`` from
``R = C ⊘ A B``, recompute ``R`` with the new ``A``, then update ``B`` from the new ``A``.
The simultaneous form printed as eq. (124) is not offered (it ends far worse, see
[References][departure-nmf-blockwise]).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from xpmat import _array, _dask
from xpmat._nmf_fused import TorchEM, em_step_cupy

__all__ = [
    "AdafactorFactors",
    "NMFResult",
    "adafactor_factors",
    "adafactor_second_moment",
    "i_divergence",
    "nmf",
    "nmf_em_step",
    "nmf_online_init",
    "nmf_online_step",
    "nmf_rank1",
]

#: Default relative floor of ``A B`` in a step: float32 machine epsilon times the mean entry
#: of ``A B`` (scikit-learn's KL multiplicative updates floor at the absolute float32 epsilon;
#: both agree to rounding on data of unit scale, and the relative floor keeps the EM step
#: scale-equivariant: ``t C`` gives ``√t A, √t B`` for any ``t > 0``).
EPS = 1.1920928955078125e-07


def _model_floor(A: Any, B: Any, eps: float, xp: Any) -> Any:
    """``eps · mean(A B)`` per matrix, shape ``(..., 1, 1)``, from the factor sums alone
    (``Σ A B = Σ_k (1ᵀA)_k (B1)_k``); 1 where ``A B = 0`` (then ``A`` or ``B`` is zero
    wherever it matters and any finite floor gives the same step)."""
    mean = xp.sum(xp.sum(A, axis=-2) * xp.sum(B, axis=-1), axis=-1) / _entries(A, B, xp)
    floor = eps * mean
    return xp.where(floor > 0, floor, 1.0)[..., None, None]


def _entries(A: Any, B: Any, xp: Any) -> Any:
    """``max(m n, 1)`` for the model ``A B``: an int, or on Dask, where a size is not known before
    computing (``nan``, after boolean masking), counted lazily (``(...)``)."""
    m, n = A.shape[-2], B.shape[-1]
    if m == m and n == n:
        return max(m * n, 1)
    rows = xp.sum(xp.ones_like(A[..., :1]), axis=(-2, -1))
    cols = xp.sum(xp.ones_like(B[..., :1, :]), axis=(-2, -1))
    return xp.maximum(rows * cols, 1.0)


def _safe_den(den: Any, xp: Any) -> Any:
    """A factor's column / row sums with 0 replaced by 1: a zero sum comes with a zero
    numerator (the factor's column / row is zero), and any nonzero divisor keeps it 0."""
    return xp.where(den == 0, 1.0, den)


def _check_matrix(x: Any, name: str) -> None:
    if x.ndim < 2:
        raise ValueError(f"`{name}` must have shape (..., m, n), got shape {tuple(x.shape)}")


def _check_nonneg(C: Any, xp: Any, name: str = "C") -> None:
    """One host sync: refuse negative or non-finite entries.

    Skipped where ``C`` cannot be read (a JAX tracer under ``jax.jit``, a Dask array): the
    check would need the values on the host, which a traced program does not have.
    """
    if _array.is_lazy(C):
        return
    if bool(xp.any(C < 0)):
        raise ValueError(f"`{name}` must be nonnegative (shape {tuple(C.shape)} has negative entries)")
    if not bool(xp.all(xp.isfinite(C))):
        raise ValueError(f"`{name}` must be finite (shape {tuple(C.shape)} has NaN or Inf entries)")


def _idiv(C: Any, M: Any, xp: Any) -> Any:
    pos = C > 0
    one = xp.ones_like(C)
    Cs = xp.where(pos, C, one)
    Ms = xp.where(pos, M, one)
    t = xp.where(pos, C * (xp.log(Cs) - xp.log(Ms)), xp.zeros_like(C))
    return xp.sum(t - C + M, axis=(-2, -1))


class _Divergence:
    """``IDiv(C, A B)`` for a fixed ``C``, with the ``C``-only terms computed once.

    ``IDiv = Σ C log C − Σ C log(AB) − Σ C + Σ AB``: per call one ``A @ B``, one ``where``, one
    ``log`` and one dot product over ``m × n``; ``Σ AB`` comes from the factor sums.  ``C > 0``
    with ``AB = 0`` gives ``inf``, as :func:`i_divergence`.
    """

    def __init__(self, C: Any, xp: Any) -> None:
        self.xp, self.C = xp, C
        self.pos = C > 0
        one = xp.ones_like(C)
        self.shape = (*C.shape[:-2], C.shape[-2] * C.shape[-1])
        Cs = xp.where(self.pos, C, one)
        self.const = xp.sum(C * xp.log(Cs), axis=(-2, -1)) - xp.sum(C, axis=(-2, -1))
        self.one = one

    def __call__(self, A: Any, B: Any) -> Any:
        xp = self.xp
        L = xp.log(xp.where(self.pos, A @ B, self.one))
        if _array.is_dask(xp):  # chunk-wise products and a sum: no reshape (sizes may be nan)
            cross = xp.sum(self.C * L, axis=(-2, -1))
        else:
            cross = xp.vecdot(xp.reshape(self.C, self.shape), xp.reshape(L, self.shape), axis=-1)
        total = xp.sum(xp.sum(A, axis=-2) * xp.sum(B, axis=-1), axis=-1)
        return self.const - cross + total


def i_divergence(C: Any, M: Any, /, *, xp: Any = None) -> Any:
    """I-divergence ``Σ C log(C / M) − C + M`` over the last two axes (eq. 119).

    Parameters
    ----------
    C : array, shape (..., m, n)
        Nonnegative data (integers promoted to the default float).
    M : array, shape (..., m, n)
        Nonnegative model, e.g. ``A @ B``; broadcasts against ``C``.

    Returns
    -------
    array, shape (...)
        The divergence per batch member (0-d for plain matrices), in the floating dtype of
        the inputs, on their device.  Entries with ``C = 0`` contribute ``M`` (``0 log 0 = 0``);
        entries with ``C > 0`` and ``M = 0`` make it ``inf``.

    Notes
    -----
    [Stratos 2026, App. L, eq. 119][stratos-2026]; it equals KL when both are distributions.  No input check
    (no host sync): negative entries give NaN.

    Input policy (``docs/backends.md``): NaN/Inf propagate as arithmetic takes them; empty input
    gives results of the right shapes (no NaN); float16 / bfloat16 results come back in the
    input's dtype.

    Backends: Array API everywhere.  No host read: the same path runs eager and under ``jax.jit``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import i_divergence
    >>> C = np.array([[1.0, 0.0], [2.0, 3.0]])
    >>> print(round(float(i_divergence(C, C)), 12), round(float(i_divergence(C, np.ones((2, 2)))), 4))
    0.0 2.6821
    """
    xp = _array.array_namespace(C, M, names=("C", "M"), xp=xp)
    _check_matrix(C, "C")
    _check_matrix(M, "M")
    dt = _array.float_dtype(xp, C, M)
    return _idiv(_array.as_float(C, xp, dt), _array.as_float(M, xp, dt), xp)


def _em_step_generic(C: Any, A: Any, B: Any, eps: float, xp: Any) -> tuple[Any, Any]:
    # max(A B, floor) by `maximum`, not `clip`: array-api-compat's clip on Dask fills a new,
    # differently chunked array by masked assignment (a rechunk of every m × n product)
    floor = _model_floor(A, B, eps, xp)
    if _array.is_dask(xp) and C.ndim == 2:  # one task per row chunk (as _em_step_numpy's blocks)
        r, n = B.shape
        out = _dask.rowwise(_em_rows, (C, A), (B, floor), out_cols=r, partials=[(r, n), (r,)],
                            label="nmf-em-step")
        if out is not None:
            A, (acc, colsum) = out
            return A, B * (acc / _safe_den(colsum, xp)[:, None])
    R = C / xp.maximum(A @ B, floor)
    den = xp.sum(B, axis=-1)[..., None, :]  # 1ᵀ Bᵀ, shape (..., 1, r)
    A = A * ((R @ _array.mT(B, xp)) / _safe_den(den, xp))
    R = C / xp.maximum(A @ B, floor)
    den = xp.sum(A, axis=-2)[..., :, None]  # Aᵀ 1, shape (..., r, 1)
    B = B * ((_array.mT(A, xp) @ R) / _safe_den(den, xp))
    return A, B


def _em_rows(C: Any, A: Any, B: Any, floor: Any) -> tuple[Any, Any, Any]:
    """The EM step on one row chunk (Dask, any chunk library): ``(A'_i, A'_iᵀ (C_i ⊘ A'_i B),
    1ᵀ A'_i)``; the caller sums the last two over the chunks (:func:`xpmat._dask.rowwise`)."""
    cxp = _array.chunk_namespace(C)
    if _array.is_numpy(cxp) and all(type(x).__module__ == "numpy" and type(x).__name__ == "ndarray"
                                     for x in (C, A, B, floor)):  # plain NumPy chunks
        return _em_rows_numpy(C, A, B, floor)[:3]
    Bt = cxp.matrix_transpose(B)
    R = C / cxp.maximum(A @ B, floor)
    A = A * ((R @ Bt) / _safe_den(cxp.sum(B, axis=-1), cxp)[None, :])
    R = C / cxp.maximum(A @ B, floor)
    return A, cxp.matrix_transpose(A) @ R, cxp.sum(A, axis=0)


#: Entries of ``C`` per row block of the NumPy step (1 MiB of float64: the block of ``C``,
#: of ``A B`` and of the ratio stay in a core's L2 cache between the two halves of a step).
_BLOCK_ENTRIES = 131072


def _ratio_numpy(C: Any, A: Any, B: Any, floor: Any, b_low: tuple, out: Any) -> Any:
    """``C ⊘ max(A B, floor)`` for a block of rows, written into ``out``.

    The clamp pass is skipped when a cheap per-row lower bound already shows ``A B >= floor``:
    ``(A B)_ij >= max(min_k A_ik · min_j Σ_k B_kj, Σ_k A_ik · min_kj B_kj)`` for ``A, B >= 0``
    (``b_low``: the two minima of ``B``), so the result is the same.
    """
    import numpy as np

    np.matmul(A, B, out=out)
    if out.size == 0:  # an empty block: nothing to floor (and no 0 · inf in the bound)
        return out
    lb = np.maximum(A.min(axis=-1, initial=np.inf) * b_low[0], A.sum(axis=-1) * b_low[1])
    if not (lb >= 2.0 * floor[..., 0]).all():
        np.maximum(out, floor, out=out)
    return np.divide(C, out, out=out)


def _em_step_numpy(C: Any, A: Any, B: Any, eps: float, buf: Any = None) -> tuple[Any, Any, Any]:
    """NumPy fast path: the blockwise EM step in ONE pass over ``C``, by blocks of rows.

    The ``A`` half is row-local: for rows ``i``, ``A'_i = A_i ⊙ (C_i ⊘ A_i B) Bᵀ ⊘ 1ᵀBᵀ``.
    The ``B`` half needs ``A'ᵀ (C ⊘ A' B) = Σ_i A'_iᵀ (C_i ⊘ A'_i B)``, a sum over the same
    row blocks, so it is accumulated while block ``i`` of ``C`` is still in cache.  The same
    arithmetic as :func:`_em_step_generic`; ``C`` is read once from memory instead of
    twice, and the ``m × n`` products and ratios never leave the cache.  Only arrays created
    here are written to; returns ``(A, B, buf)`` so a loop can pass the block buffer back in.
    """
    import numpy as np

    floor = _model_floor(A, B, eps, np)
    A_new, acc, colsum, buf = _em_rows_numpy(C, A, B, floor, buf)
    acc /= _safe_den(colsum, np)[..., :, None]
    acc *= B
    return A_new, acc, buf


def _em_rows_numpy(C: Any, A: Any, B: Any, floor: Any, buf: Any = None) -> tuple[Any, Any, Any, Any]:
    """The row-local half of :func:`_em_step_numpy` and its sums over the rows:
    ``(A', A'ᵀ (C ⊘ A' B), 1ᵀ A', buf)``, by cache-sized blocks of rows (also the task of one
    Dask row chunk of NumPy arrays, :func:`_em_rows`)."""
    import numpy as np

    m, n = C.shape[-2:]
    rows = max(1, min(m, _BLOCK_ENTRIES // max(n, 1)))
    shape = (*C.shape[:-2], rows, n)
    if buf is None or buf.shape != shape or buf.dtype != C.dtype:
        buf = np.empty(shape, dtype=C.dtype)
    b_low = (B.sum(axis=-2).min(axis=-1, initial=np.inf)[..., None],
             B.min(axis=(-2, -1), initial=np.inf)[..., None])
    Bt = np.ascontiguousarray(np.swapaxes(B, -1, -2))
    den_b = _safe_den(B.sum(axis=-1), np)[..., None, :]
    A_new, acc = np.empty_like(A), np.zeros_like(B)
    for i in range(0, m, rows):
        Ci, Ai, Ai_new = C[..., i:i + rows, :], A[..., i:i + rows, :], A_new[..., i:i + rows, :]
        out = buf[..., :Ci.shape[-2], :]
        np.matmul(_ratio_numpy(Ci, Ai, B, floor, b_low, out), Bt, out=Ai_new)
        Ai_new /= den_b
        Ai_new *= Ai
        acc += np.swapaxes(Ai_new, -1, -2) @ _ratio_numpy(Ci, Ai_new, B, floor, b_low, out)
    return A_new, acc, A_new.sum(axis=-2), buf


def _check_factors(C: Any, A: Any, B: Any) -> None:
    for x, name in ((C, "C"), (A, "A"), (B, "B")):
        _check_matrix(x, name)
    m, n = C.shape[-2:]

    def differ(a: Any, b: Any) -> bool:  # a size Dask does not know (nan) matches any
        return a == a and b == b and a != b

    if differ(A.shape[-2], m) or differ(B.shape[-1], n) or differ(A.shape[-1], B.shape[-2]):
        raise ValueError(
            f"shapes do not match: `C` {tuple(C.shape)} (..., m, n) needs `A` (..., m, r) and `B` "
            f"(..., r, n), got `A` {tuple(A.shape)} and `B` {tuple(B.shape)}"
        )


def nmf_em_step(C: Any, A: Any, B: Any, /, *, eps: float = EPS, xp: Any = None) -> tuple[Any, Any]:
    """One blockwise generalized-EM (multiplicative) update of ``C ≈ A B`` (eq. 123, footnote 22).

    Parameters
    ----------
    C : array, shape (..., m, n)
        Nonnegative data (not checked here: this is the hot path; see :func:`nmf`).
    A : array, shape (..., m, r)
    B : array, shape (..., r, n)
        Nonnegative current factors (floating dtypes; integers promoted).
    eps : float
        Relative floor of ``A B`` in the ratio: entries below ``eps · mean(A B)`` (taken at
        the start of the step) count as that, so nothing is divided by zero.  Relative, so
        the step is scale-equivariant (``t C, √t A, √t B`` give ``√t`` times the factors,
        from 1e-30 to 1e30); scikit-learn's absolute floor (float32 epsilon, the default
        here) collapsed a 1e-8-scaled matrix to zero factors.  Zero column / row sums in the
        denominators come with zero numerators and leave the factor's zeros as they are.

    Returns
    -------
    A, B : arrays, shapes (..., m, r) and (..., r, n)
        ``A' = A ⊙ ((C ⊘ A B) Bᵀ ⊘ 1ᵀ Bᵀ)``, then ``B' = B ⊙ (A'ᵀ (C ⊘ A' B) ⊘ A'ᵀ 1)``.
        Nonnegative; the I-divergence never increases.  An all-zero row of ``C`` zeroes the
        row of ``A``; zero ``C`` gives zero factors (no NaN).

    Notes
    -----
    [Stratos 2026, App. L, eq. 123][stratos-2026] in the blockwise form of footnote 22 (eq. 124
    as printed updates ``B`` from the old ``A`` and writes ``A Rᵀ`` for ``Aᵀ R``).  Each half is
    an exact EM M-step for its block, so ``IDiv(C, A B)`` is non-increasing.

    Input policy (``docs/backends.md``): NaN/Inf propagate as arithmetic does; empty input
    gives empty factors; float16 / bfloat16 run in their own dtype.

    Backends: NumPy runs a fast path that reads ``C`` once per step, by blocks of rows whose
    products and ratios stay in cache (both halves of the step per block: the ``A`` half is
    row-local, the ``B`` half a sum over the blocks), and skips the clamp pass when a cheap
    lower bound shows it changes nothing; CuPy fuses each ratio and factor update into one
    ``ElementwiseKernel`` (untested without a GPU); every other library runs the Array API form
    (a handful of ``m × n`` temporaries).  No host read: the same path runs eager and under
    ``jax.jit``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import i_divergence, nmf_em_step
    >>> rng = np.random.default_rng(0)
    >>> C, A, B = rng.random((6, 5)), rng.random((6, 2)), rng.random((2, 5))
    >>> A1, B1 = nmf_em_step(C, A, B)
    >>> bool(i_divergence(C, A1 @ B1) <= i_divergence(C, A @ B))
    True
    """
    xp = _array.array_namespace(C, A, B, names=("C", "A", "B"), xp=xp)
    _check_factors(C, A, B)
    dt = _array.float_dtype(xp, C, A, B)
    C, A, B = (_array.as_float(x, xp, dt) for x in (C, A, B))
    if _array.is_numpy(xp):
        A, B, _ = _em_step_numpy(C, A, B, eps)
        return A, B
    if _array.is_cupy(xp):
        return em_step_cupy(C, A, B, _model_floor(A, B, eps, xp))
    return _em_step_generic(C, A, B, eps, xp)


class NMFResult(NamedTuple):
    """Result of :func:`nmf`.

    ``A`` ``(..., m, r)``, ``B`` ``(..., r, n)``; ``divergence`` an array on the input's
    device, shape ``(..., k)``: with ``history=True`` the I-divergence at the start and
    after every iteration (``k = n_iter + 1``), else only the final value (``k = 1``);
    ``n_iter`` the iterations run (fewer than ``iters`` when ``tol`` stopped early).
    """

    A: Any
    B: Any
    divergence: Any
    n_iter: int


def _random_init(C: Any, rank: int, seed: Any, xp: Any) -> tuple[Any, Any]:
    """``sqrt(mean(C) / r) |N(0, 1)|`` draws (as scikit-learn's ``init="random"``), on C's device."""
    batch, (m, n) = tuple(C.shape[:-2]), tuple(C.shape[-2:])
    g = _array.rng(seed)
    dev = _array.device(C)
    A = _array.random_normal((*batch, m, rank), seed=g, xp=xp, dtype=C.dtype, dev=dev, like=C)
    B = _array.random_normal((*batch, rank, n), seed=g, xp=xp, dtype=C.dtype, dev=dev, like=C)
    A, B = xp.abs(_array.chunk_like(A, C, -2)), xp.abs(_array.chunk_like(B, C, -1))  # Dask: C's chunks
    mean = xp.sum(C, axis=(-2, -1), keepdims=True) / max(m * n, 1)  # 0 for an empty C
    scale = xp.sqrt(mean / rank)
    return A * scale, B * scale


def nmf(
    C: Any,
    rank: int,
    /,
    *,
    iters: int = 200,
    tol: float | None = None,
    init: Any = "random",
    seed: Any = None,
    eps: float = EPS,
    history: bool = False,
    check_every: int = 10,
    callback: Callable[[int, Any, Any, Any], Any] | None = None,
    progress: bool = False,
    xp: Any = None,
) -> NMFResult:
    """Nonnegative factorization ``C ≈ A B`` minimizing the I-divergence by blockwise EM.

    Parameters
    ----------
    C : array, shape (..., m, n)
        Nonnegative, finite data (integers promoted to the default float); checked once
        (``ValueError`` otherwise).  All-zero rows/columns are fine (their factor rows /
        columns go to zero).
    rank : int
        ``r >= 1``.  ``r > min(m, n)`` is allowed (the factorization is then not unique,
        but every step still decreases the divergence).
    iters : int
        Maximum number of EM steps.
    tol : float, optional
        scikit-learn's stopping rule of its multiplicative (``solver="mu"``) updates: every
        ``check_every`` steps compute the error ``e = √(2 D)`` (``D`` the I-divergence) and
        stop when ``(e_prev − e) / e_init < tol`` for every batch member, where ``e_prev`` is
        the error at the previous check and ``e_init`` at the start (one host sync per
        check).  ``None``: run all ``iters`` steps.  Where values cannot be read (under
        ``jax.jit``, Dask) all ``iters`` steps run.
    init : "random" or (A0, B0)
        ``"random"``: ``sqrt(mean(C) / r) |N(0, 1)|`` entries drawn on the host from
        ``seed`` (A first, then B).  A pair: nonnegative start factors (not modified) of
        ``C``'s floating dtype (``TypeError`` naming the factor and both dtypes otherwise,
        as scikit-learn; integer factors are promoted).
    seed : int or numpy.random.Generator, optional
        Seed of the ``"random"`` start.
    eps : float
        See :func:`nmf_em_step`.
    history : bool
        Record the divergence after every step (costs one extra ``A @ B`` and a log over
        ``C`` per step, but no host sync: values stay on the device until the end).
    check_every : int
        Steps between two ``tol`` checks (10, as scikit-learn).
    callback : callable, optional
        ``callback(it, A, B, div)`` after every step (``it`` from 1; ``div`` a device array,
        shape ``(...)``).  Computing ``div`` costs as with ``history``.
    progress : bool
        Print a one-line progress counter on stderr (about 20 updates per run).

    Returns
    -------
    NMFResult
        ``(A, B, divergence, n_iter)``; see :class:`NMFResult`.  The divergence is only
        computed where needed (``history``, ``tol``, ``callback``; and once at the end).

    Notes
    -----
    [Stratos 2026, App. L][stratos-2026]: generalized EM for the Poisson model of L.1, blockwise
    update (123) (footnote 22, [References][departure-nmf-blockwise]), so the divergence is
    monotone non-increasing.  Each step costs four ``m n r`` matmuls and two ``m × n`` ratio passes.

    Input policy (``docs/backends.md``): NaN/Inf in ``C`` raise the input check's ``ValueError``
    (on readable arrays); empty ``C`` gives empty factors and a zero divergence; float16 /
    bfloat16 ``C`` is factored in float32 and the results come back in its dtype; the
    factors scale as ``√t`` and the divergence as ``t`` for ``t C`` (relative ``eps``).

    Backends: NumPy fast path (one pass over ``C`` per step, see :func:`nmf_em_step`); PyTorch
    (without autograd) a fused loop in buffers it owns, 13 ATen ops per step
    (:class:`xpmat._nmf_fused.TorchEM`); CuPy one ``ElementwiseKernel`` per ratio and per
    factor update (:func:`xpmat._nmf_fused.em_step_cupy`, untested without a GPU); Array API
    form elsewhere (array-api-strict, JAX, Dask).  One host sync at entry (input check), plus one
    per ``tol`` check.  Where ``C`` cannot be read (a JAX tracer under ``jax.jit``, a Dask
    array) there is none: the input check is skipped (negative or non-finite ``C`` then gives
    meaningless factors, as :func:`nmf_em_step`), ``tol`` does not stop early (all ``iters``
    steps run, ``n_iter = iters``), and without ``history`` / ``callback`` / ``progress`` the
    steps run as one traced loop body (with them, the Python loop is unrolled into the
    traced program and compile time grows with ``iters``).
    Dask: ``init="random"`` draws on the client and the draws enter the graph in ``C``'s
    chunks; for a very tall ``C`` pass ``init=(A0, B0)`` made on the workers.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import nmf
    >>> rng = np.random.default_rng(0)
    >>> C = rng.random((20, 3)) @ rng.random((3, 15))
    >>> res = nmf(C, 3, iters=500, seed=0, history=True)
    >>> d = res.divergence
    >>> bool(np.all(np.diff(d) <= 1e-12)), bool(d[-1] < 1e-3 * d[0])
    (True, True)
    """
    xp = _array.array_namespace(C, names=("C",), xp=xp)
    _check_matrix(C, "C")
    C = _array.as_float(C, xp)
    out_dtype = C.dtype
    if _array.is_low_precision(out_dtype, xp):  # EM and the divergence's sums need float32
        C = xp.astype(C, xp.float32)
    r = int(rank)
    if r < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if int(iters) < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    _check_nonneg(C, xp)
    if isinstance(init, str):
        if init != "random":
            raise ValueError(f"init must be 'random' or a pair (A0, B0), got {init!r}")
        A, B = _random_init(C, r, seed, xp)
    else:
        try:
            A, B = init
        except (TypeError, ValueError):
            raise TypeError("init must be 'random' or a pair of arrays (A0, B0)") from None
        _array.array_namespace(C, A, B, names=("C", "init[0]", "init[1]"))
        _check_factors(C, A, B)
        if A.shape[-1] != r:
            raise ValueError(f"init factors have rank {A.shape[-1]}, but rank={r}")
        for x, name in ((A, "init[0]"), (B, "init[1]")):
            if xp.isdtype(x.dtype, ("real floating", "complex floating")) and x.dtype != out_dtype:
                raise TypeError(f"`{name}` must have the data's dtype: `C` is {out_dtype}, "
                                f"`{name}` is {x.dtype} (cast the start factors, e.g. xp.astype)")
        A, B = _array.as_float(A, xp, C.dtype), _array.as_float(B, xp, C.dtype)
        _check_nonneg(A, xp, "init[0]")
        _check_nonneg(B, xp, "init[1]")
    divergence = _Divergence(C, xp)
    if (_array.is_lazy(A) or _array.is_lazy(C)) and not (history or progress or callback is not None):
        # trace-safe path: all `iters` steps in one traced loop body, no host read (no tol)
        A, B = _array.fixed_loop(int(iters), lambda s: _em_step_generic(C, *s, eps, xp), (A, B))
        divs, it = [], int(iters)
    else:
        A, B, divs, it = _em_loop(C, A, B, divergence, iters=int(iters), tol=tol, eps=eps,
                                  history=history, check_every=check_every,
                                  callback=callback, progress=progress, xp=xp)
    if history:
        div = xp.stack(divs, axis=-1)
    else:
        div = xp.stack([divergence(A, B)], axis=-1)
    if out_dtype != C.dtype:
        A, B, div = (xp.astype(x, out_dtype) for x in (A, B, div))
    return NMFResult(A, B, div, it)


def _sqrt2(D: Any, xp: Any) -> Any:
    """scikit-learn's NMF error ``√(2 D)`` (``D`` clipped at 0 against rounding)."""
    return xp.sqrt(2.0 * xp.maximum(D, xp.zeros_like(D)))


def _fused_torch(C: Any, A: Any, B: Any, xp: Any) -> bool:
    """True where :class:`xpmat._nmf_fused.TorchEM` runs the loop: torch tensors without
    autograd (its ``out=`` buffers are not differentiable), no empty axis."""
    return (_array.is_torch(xp) and 0 not in (*C.shape, A.shape[-1])
            and not any(x.requires_grad for x in (C, A, B)))


def _em_loop(C: Any, A: Any, B: Any, divergence: _Divergence, *, iters: int, tol: float | None,
             eps: float, history: bool, check_every: int, callback: Any, progress: bool,
             xp: Any) -> tuple[Any, Any, list, int]:
    """The EM steps of :func:`nmf` as a Python loop: ``(A, B, divergences, steps run)``.

    The ``tol`` test reads the divergence on the host every ``check_every`` steps, unless it
    cannot be read (under ``jax.jit``: all ``iters`` steps run); between checks the divergence
    is computed only for ``history`` / ``callback``.
    """
    fast = _array.is_numpy(xp)
    fused = TorchEM(C, A, B, _model_floor(A, B, eps, xp), eps) if _fused_torch(C, A, B, xp) else None
    buf = None
    every_step = history or callback is not None
    check = max(1, int(check_every))
    divs = [divergence(A, B)] if (every_step or tol is not None) else []
    stop = tol is not None and not _array.is_lazy(divs[0])
    if stop:  # scikit-learn's error: √(2 D), its decrease relative to the start
        e_init = e_prev = _sqrt2(divs[0], xp)
        scale = xp.where(e_init > 0, e_init, xp.ones_like(e_init))
    every = max(1, iters // 20)
    it = 0
    for it in range(1, iters + 1):
        if fused is not None:
            fused.step()
        elif fast:
            A, B, buf = _em_step_numpy(C, A, B, eps, buf)
        elif _array.is_cupy(xp):
            A, B = em_step_cupy(C, A, B, _model_floor(A, B, eps, xp))
        else:
            A, B = _em_step_generic(C, A, B, eps, xp)
        checking = stop and it % check == 0
        if every_step or checking:
            if fused is not None:
                A, B = fused.factors()
            d = divergence(A, B)
            if history:
                divs.append(d)
            if callback is not None:  # fused buffers change in the next step: the callback gets copies
                callback(it, *((xp.asarray(A, copy=True), xp.asarray(B, copy=True)) if fused else (A, B)), d)
        if progress and (it % every == 0 or it == iters):
            print(f"\rnmf: step {it}/{iters}", end="\n" if it == iters else "", file=sys.stderr, flush=True)
        if checking:
            e = _sqrt2(d, xp)
            if bool(xp.all((e_prev - e) / scale < tol)):
                break
            e_prev = e
    if progress and it < iters:
        print(f"\rnmf: stopped at step {it}/{iters} (tol)", file=sys.stderr, flush=True)
    if fused is not None:
        A, B = fused.factors()
    return A, B, divs if history else [], it


def nmf_rank1(C: Any, /, *, xp: Any = None) -> tuple[Any, Any]:
    """Closed-form rank-one NMF: ``A = C 1`` (row sums), ``B = 1ᵀ C / 1ᵀ C 1`` (appendix L).

    Parameters
    ----------
    C : array, shape (..., m, n)
        Nonnegative, finite (checked: ``ValueError``; integers promoted).

    Returns
    -------
    A : array, shape (..., m, 1)
    B : array, shape (..., 1, n)
        A global minimizer of ``IDiv(C, A B)`` over rank one, scaled so ``1ᵀ A = 1ᵀ C 1``
        (then ``A B = C 1 1ᵀ C / 1ᵀ C 1``).  ``C = 0`` gives zeros.

    Notes
    -----
    [Stratos 2026, App. L][stratos-2026], "Rank one": the stationary conditions ``A = C 1 / B 1`` and
    ``B = 1ᵀ C / 1ᵀ A`` are solved in closed form; it is also the fixed point of
    :func:`nmf_em_step` (one step from here returns it).

    Input policy (``docs/backends.md``): NaN/Inf raise the input check's ``ValueError``; empty
    input gives results of the right shapes (no NaN); float16 / bfloat16 results come back in
    the input's dtype.

    Backends: Array API everywhere.  One host sync (the input check), skipped where ``C``
    cannot be read (under ``jax.jit``, lazy arrays).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import nmf_rank1
    >>> A, B = nmf_rank1(np.array([[1.0, 2.0], [3.0, 4.0]]))
    >>> print(A.ravel(), B.ravel())
    [3. 7.] [0.4 0.6]
    """
    xp = _array.array_namespace(C, names=("C",), xp=xp)
    _check_matrix(C, "C")
    C = _array.as_float(C, xp)
    _check_nonneg(C, xp)
    A = xp.sum(C, axis=-1)[..., :, None]
    col = xp.sum(C, axis=-2)[..., None, :]
    tot = xp.sum(A, axis=-2, keepdims=True)
    return A, col / xp.where(tot > 0, tot, 1.0)


def nmf_online_init(G: Any, rank: int, /, *, scale: float = 1e-3, seed: Any = None,
                    xp: Any = None) -> tuple[Any, Any]:
    """Start factors for :func:`nmf_online_step`: ``A₀ ~ U(0, ε)^{m×r}``, ``B₀ ~ U(0, ε)^{r×n}``.

    Parameters
    ----------
    G : array, shape (..., m, n)
        A gradient-shaped reference (gives shape, batch, dtype, device).
    rank : int
    scale : float
        ``ε``, the initialization range (AdamNMF step 1).
    seed : int or numpy.random.Generator, optional
        Host draw (the same numbers on every backend).

    Returns
    -------
    A0, B0 : arrays, shapes (..., m, r) and (..., r, n), strictly positive almost surely.

    Input policy (``docs/backends.md``): only the shape of the input is read; empty input gives
    results of the right shapes (no NaN); float16 / bfloat16 results come back in the input's
    dtype.

    Backends: host NumPy draw, one ``xp.asarray`` to the device (under ``jax.jit``: at trace
    time, a constant of the compiled function).  No host read.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import nmf_online_init
    >>> A0, B0 = nmf_online_init(np.zeros((4, 3)), 2, seed=0)
    >>> A0.shape, B0.shape, bool((A0 > 0).all() and (A0 < 1e-3).all())
    ((4, 2), (2, 3), True)
    """
    xp = _array.array_namespace(G, names=("G",), xp=xp)
    _check_matrix(G, "G")
    r = int(rank)
    if r < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    dt = _array.float_dtype(xp, G)
    g = _array.rng(seed)
    batch, (m, n) = tuple(G.shape[:-2]), tuple(G.shape[-2:])
    dev = _array.device(G)
    A = xp.asarray(g.uniform(0.0, scale, (*batch, m, r)), dtype=dt, device=dev)
    B = xp.asarray(g.uniform(0.0, scale, (*batch, r, n)), dtype=dt, device=dev)
    A, B = _array.chunk_like(A, G, -2), _array.chunk_like(B, G, -1)  # Dask: G's chunks
    return A, B


def nmf_online_step(G: Any, A: Any, B: Any, /, *, beta: float | None = None, eps: float = EPS,
                    xp: Any = None) -> tuple[Any, Any]:
    """AdamNMF second-moment update: one blockwise EM step on ``G ⊙ G`` from ``(A, B)``.

    Parameters
    ----------
    G : array, shape (..., m, n)
        The new gradient (AdamNMF step (a); ``m × n``, see [References][departure-adamnmf-shape]).
    A, B : arrays, shapes (..., m, r), (..., r, n)
        The previous factors (warm start), nonnegative.
    beta : float in [0, 1), optional
        ``None`` (AdamNMF as published): the EM target is ``G²``.  Otherwise the target is the
        EMA ``β A B + (1 − β) G²``, an extension that smooths the estimate over steps.
    eps : float
        See :func:`nmf_em_step`.

    Returns
    -------
    A, B : arrays
        New factors; ``A B ≈ E[G²]`` is the second-moment estimate (AdamNMF step (c)
        divides by ``sqrt(A B)``).

    Notes
    -----
    [Stratos 2026, App. L.2][stratos-2026] (AdamNMF step (b)), with the blockwise update of footnote 22.
    No input check (hot path).

    Input policy (``docs/backends.md``): NaN/Inf propagate as arithmetic takes them; empty input
    gives results of the right shapes (no NaN); float16 / bfloat16 results come back in the
    input's dtype.

    Backends: as :func:`nmf_em_step`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import nmf_online_init, nmf_online_step
    >>> G = np.random.default_rng(1).normal(size=(5, 4))
    >>> A, B = nmf_online_init(G, 2, seed=0)
    >>> for _ in range(3):
    ...     A, B = nmf_online_step(G, A, B)
    >>> bool((A @ B >= 0).all()), (A @ B).shape
    (True, (5, 4))
    """
    xp = _array.array_namespace(G, A, B, names=("G", "A", "B"), xp=xp)
    _check_factors(G, A, B)
    dt = _array.float_dtype(xp, G, A, B)
    G, A, B = (_array.as_float(x, xp, dt) for x in (G, A, B))
    V = G * G
    if beta is not None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        V = beta * (A @ B) + (1.0 - beta) * V
    return nmf_em_step(V, A, B, eps=eps, xp=xp)


class AdafactorFactors(NamedTuple):
    """Adafactor's factored second moment (eq. 52): row EMA ``a`` ``(..., m)``, column EMA
    ``s`` ``(..., n)`` and the bias-correction weight ``weight = 1 − β₂ᵗ`` (0-d or ``(...)``)."""

    a: Any
    s: Any
    weight: Any


def adafactor_factors(G: Any, state: AdafactorFactors | None = None, /, *, beta2: float = 0.999,
                      eps: float = 0.0, xp: Any = None) -> AdafactorFactors:
    """Fold one gradient into Adafactor's rank-1 second-moment factors (eq. 52).

    Parameters
    ----------
    G : array, shape (..., m, n)
    state : AdafactorFactors, optional
        Previous factors; ``None`` starts from ``a₀ = 0``, ``s₀ = 0`` (seed convention).
    beta2 : float in [0, 1)
    eps : float
        Added to ``G²`` before the sums (Adafactor's ``ε₁``; 0 as in §4.7).

    Returns
    -------
    AdafactorFactors
        ``a ← β₂ a + (1 − β₂) G² 1``, ``s ← β₂ s + (1 − β₂) (G²)ᵀ 1``,
        ``weight ← β₂ weight + (1 − β₂)`` (so ``weight = 1 − β₂ᵗ``).

    Notes
    -----
    [Stratos 2026, §4.7, eq. 52][stratos-2026]: the EMAs of the row and column sums of
    ``G²``, the online form of the rank-1 I-divergence NMF (:func:`nmf_rank1`).  Read ``V̂`` with
    :func:`adafactor_second_moment`.

    Input policy (``docs/backends.md``): NaN/Inf propagate as arithmetic takes them; empty input
    gives results of the right shapes (no NaN); float16 / bfloat16 results come back in the
    input's dtype.

    Backends: Array API everywhere.  No host read: the same path runs eager and under ``jax.jit``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import adafactor_factors, adafactor_second_moment
    >>> G = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> st = adafactor_factors(G, beta2=0.9)
    >>> print(np.round(adafactor_second_moment(st), 3))   # one step: rank-1 NMF of G²
    [[ 1.667  3.333]
     [ 8.333 16.667]]
    """
    xp = _array.array_namespace(G, names=("G",), xp=xp)
    _check_matrix(G, "G")
    if not 0.0 <= beta2 < 1.0:
        raise ValueError(f"beta2 must be in [0, 1), got {beta2}")
    G = _array.as_float(G, xp)
    V = G * G if eps == 0.0 else G * G + eps
    row, col = xp.sum(V, axis=-1), xp.sum(V, axis=-2)
    if state is None:
        w = xp.full(tuple(G.shape[:-2]), 1.0 - beta2, dtype=G.dtype, device=_array.device(G))
        return AdafactorFactors((1.0 - beta2) * row, (1.0 - beta2) * col, w)
    if tuple(state.a.shape[-1:]) != (G.shape[-2],) or tuple(state.s.shape[-1:]) != (G.shape[-1],):
        raise ValueError(f"`G` {tuple(G.shape)} does not match the state's a {tuple(state.a.shape)} "
                         f"and s {tuple(state.s.shape)}")
    return AdafactorFactors(beta2 * state.a + (1.0 - beta2) * row, beta2 * state.s + (1.0 - beta2) * col,
                            beta2 * state.weight + (1.0 - beta2))


def adafactor_second_moment(state: AdafactorFactors, /, *, xp: Any = None) -> Any:
    """``V̂ = a sᵀ / (weight · 1ᵀ a)`` (eq. 52), the bias-corrected rank-1 estimate of ``E[G²]``.

    Parameters
    ----------
    state : AdafactorFactors
        From :func:`adafactor_factors`.

    Returns
    -------
    array, shape (..., m, n)
        Nonnegative; zeros where ``1ᵀ a = 0`` (all-zero gradients).

    Input policy (``docs/backends.md``): NaN/Inf propagate as arithmetic takes them; empty input
    gives results of the right shapes (no NaN); float16 / bfloat16 results come back in the
    input's dtype.

    Backends: Array API everywhere.  No host read: the same path runs eager and under ``jax.jit``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import adafactor_factors, adafactor_second_moment
    >>> st = None
    >>> for G in np.ones((3, 2, 2)):
    ...     st = adafactor_factors(G, st, beta2=0.5)
    >>> print(adafactor_second_moment(st))   # bias correction recovers E[G²] = 1
    [[1. 1.]
     [1. 1.]]
    """
    xp = _array.array_namespace(state.a, state.s, names=("state.a", "state.s"), xp=xp)
    tot = xp.sum(state.a, axis=-1) * state.weight
    tot = xp.where(tot == 0, 1.0, tot)[..., None, None]  # NaN stays NaN
    # (a / tot) sᵀ, not (a sᵀ) / tot: a sᵀ overflows (1e150 · 1e150) where V̂ does not
    return (state.a[..., :, None] / tot) * state.s[..., None, :]
