"""Orthogonalization: orthonormal bases (Householder QR, CholeskyQR2), msign, polar.

Math: [Stratos 2026, §7 and App. Q.3 / Q.3.1][stratos-2026] (Muon, msign; Newton–Schulz,
eqs. 146–147); [Pethick 2025][pethick-2025] (QR / CholeskyQR of the power step); departure:
Frobenius normalization leaves the smallest singular value far below the 1e-3 the Polar
Express coefficients are designed for ([References][departure-polar-express-range]).
"""

from __future__ import annotations

import math
from typing import Any

from xpmat import _array, _dask
from xpmat._array import mT

__all__ = ["CQR2_AUTO_RATIO", "CQR2_TOL", "GRAM_RESTART_EVERY", "MSIGN_CPU_STACK_BYTES", "NORMALIZATIONS",
           "gram_restarts_checked", "gram_saves", "msign", "msign_groups", "msign_many", "newton_schulz",
           "ns_flops", "ns_schedule", "orthonormalize", "polar"]

_ORTH_METHODS = ("auto", "householder", "cholesky_qr2", "rcqr")
#: CholeskyQR2 is accepted when the first pass leaves ‖Q1ᵀQ1 − I‖_max below this; the second
#: pass then restores orthogonality to working precision (Yamamoto et al. 2015: needs κ(X)² u ≲ 1).
CQR2_TOL = 0.1
#: ``method="auto"`` uses CholeskyQR2 when m >= CQR2_AUTO_RATIO * r (measured: see
#: docs/orthogonalize.md); :func:`xpmat.randomized_svd`'s Dask range finder asks the same.
CQR2_AUTO_RATIO = 4


# ----------------------------------------------------------------------------- orthonormalize


def _householder(X: Any, xp: Any) -> Any:
    """Householder QR ``Q`` with the sign convention diag(R) >= 0 (zero counts as positive)."""
    Q, R = _array.qr(X, xp)
    d = xp.linalg.diagonal(R)
    return Q * (1 - 2 * xp.astype(d < 0, Q.dtype))[..., None, :]


def _cholesky(G: Any, xp: Any) -> tuple[Any, Any]:
    """Lower Cholesky factor of the Gram ``G`` and a per-matrix success flag ``(...,)``.

    torch: ``torch.linalg.cholesky_ex`` (no exception, ``info``); elsewhere
    ``_array.cholesky`` and an exception means failure for the whole batch (``None``); on Dask
    a failed factor is NaN (no exception), which the acceptance test of :func:`_cholesky_qr2`
    catches.
    """
    if _array.is_torch(xp):
        import torch

        L, info = torch.linalg.cholesky_ex(G)
        return L, info == 0
    try:
        L = _array.cholesky(G, xp)
    except Exception:  # numpy / strict / cupy raise LinAlgError on a non-PD Gram
        return None, None
    return L, None


def _cholesky_qr(X: Any, G: Any, xp: Any) -> tuple[Any, Any]:
    """One Cholesky-QR pass: ``Q = X R⁻¹`` with ``RᵀR = G = XᵀX``; returns ``(Q, ok)``.

    ``R⁻¹`` is formed (an ``r × r`` triangular solve) and applied as a GEMM: a triangular
    solve with the ``m × r`` block (``trsm``) runs several times below GEMM speed (NumPy +
    SciPy, 65536 × 128 float32: 160 ms against 40 ms), and CholeskyQR2's second pass restores
    orthogonality either way.  ``ok`` ``(...,)`` flags the factors that exist (a failed one,
    from torch's ``cholesky_ex`` or NaN from JAX / Dask, is replaced by ``I`` so that its
    inverse exists; its matrix falls back to Householder).  ``(None, None)`` when the
    library's Cholesky raised.
    """
    L, ok = _cholesky(G, xp)
    if L is None:
        return None, None
    if ok is None:  # raised on failure (NumPy), or NaN instead of raising (JAX, Dask)
        ok = xp.all(xp.isfinite(L), axis=(-2, -1))
    eye = _array.eye(L.shape[-1], like=L, xp=xp)
    L = xp.where(ok[..., None, None], L, eye)
    return X @ _array.triangular_inverse(mT(L, xp), upper=True, xp=xp), ok


def _cholesky_qr2(X: Any, xp: Any) -> tuple[Any, Any]:
    """CholeskyQR2 ``Q`` and its per-matrix acceptance flag ``ok`` ``(...,)``, both on the device.

    ``ok`` is false where the Gram is numerically singular or too ill-conditioned (the first
    pass leaves ``Q1ᵀQ1`` more than ``CQR2_TOL`` from I, or a Cholesky factorization failed).
    ``(None, None)`` when a library's Cholesky raised, which fails the whole batch.  No host
    read here: see :func:`_accept`.
    """
    Q1, ok1 = _cholesky_qr(X, mT(X, xp) @ X, xp)
    if Q1 is None:
        return None, None
    G2 = mT(Q1, xp) @ Q1
    eye = _array.eye(X.shape[-1], like=X, xp=xp)
    # NaN/Inf from a failed first pass compare False, so they fail the test too.
    ok = xp.logical_and(ok1, xp.all(xp.abs(G2 - eye) <= CQR2_TOL, axis=(-2, -1)))
    Q, ok2 = _cholesky_qr(Q1, G2, xp)
    if Q is None:
        return None, None
    return Q, xp.logical_and(ok, ok2)


def _accept(Q: Any, ok: Any, X: Any, xp: Any) -> Any:
    """CholeskyQR2's ``Q`` where ``ok`` holds, Householder's QR of ``X`` elsewhere.

    Readable ``ok`` (eager arrays): one host read ``bool(xp.all(ok))``; all accepted returns
    ``Q``, otherwise Householder runs for the whole call.  Under ``torch.compile``: the same
    choice by ``torch.cond`` (:func:`xpmat._array.cond`: both branches are compiled, one runs,
    no host read and no graph break).  Lazy ``ok`` (a JAX tracer under
    ``jit`` / ``vmap`` / ``grad``, a batch of Dask matrices; see :func:`xpmat._array.is_lazy`):
    no host read, both results are computed and picked per matrix with ``xp.where``.
    Householder then runs on ``X`` with the accepted matrices zeroed, since LAPACK's QR of a
    zero block is about twice as fast.  (A 2-D Dask array does not come here: its flag is read
    inside the tasks of :func:`xpmat._dask.cholesky_qr2`, which run Householder only when
    needed; measured before that change, 200000 × 64 in 8 chunks, one thread, on a loaded
    machine: the lazy ``where`` path took 1.0–1.2 s of CPU, CholeskyQR2 alone 0.3 s;
    ``docs/scripts/dask_cluster.py --orthonormalize-cost`` measures the new path.)
    """
    if Q is None:
        return _householder(X, xp)
    if _array.is_lazy(ok):
        ok = ok[..., None, None]
        return xp.where(ok, Q, _householder(xp.where(ok, xp.zeros_like(X), X), xp))
    if _array.is_compiling(xp):  # torch.cond: both branches in the graph, one runs, no read
        return _array.cond(xp.all(ok), lambda Q, X: Q.contiguous() + 0,  # (cond: same strides,
                           lambda Q, X: _householder(X, xp).contiguous(), (Q, X), xp=xp)  # no alias)
    return Q if bool(xp.all(ok)) else _householder(X, xp)  # the one host read of the call


def _rcqr(Y: Any, S: Any, xp: Any) -> Any:
    """Randomized Cholesky QR of ``Y`` ``(..., m, r)`` with the sketch ``S`` ``(k, m)``, k >= r.

    ``R₁`` from a Householder QR of the small ``S Y``, ``Y₁ = Y R₁⁻¹`` (well conditioned with
    high probability), then one CholeskyQR step ``Y₁ = P R₂`` for orthonormality to precision.
    Zero or dependent columns: a diagonal shift of ``u · max|diag R₁|`` keeps both factors
    invertible.
    """
    _, R1 = _array.qr(S @ Y, xp)
    d = xp.linalg.diagonal(R1)
    top = xp.max(xp.abs(d), axis=-1, keepdims=True)
    tiny = xp.finfo(Y.dtype).eps * (top + xp.finfo(Y.dtype).smallest_normal)
    tiny = xp.where(top > 0, tiny, xp.ones_like(tiny))  # zero Y: R₁ = I, Q = 0 (not 0 / 0)
    eye = xp.eye(R1.shape[-1], dtype=Y.dtype, device=_array.device(Y))
    R1 = R1 + eye * xp.where(xp.abs(d) < tiny, tiny, xp.zeros_like(d))[..., None, :]
    Y1 = _array.solve_triangular(R1, Y, upper=True, left=False, xp=xp)
    L = _array.cholesky(mT(Y1, xp) @ Y1 + eye * tiny[..., None], xp)
    return _array.solve_triangular(mT(L, xp), Y1, upper=True, left=False, xp=xp)


def _check_sketch(sketch: Any, method: str, m: int, r: int, xp: Any) -> None:
    if method != "rcqr":
        if sketch is not None:
            raise ValueError(f"`sketch` is for method='rcqr', got method={method!r}")
        return
    if sketch is None or sketch.ndim != 2 or sketch.shape[-1] != m or sketch.shape[0] < r:
        raise ValueError(f"method='rcqr' needs `sketch` of shape (k, {m}) with k >= r = {r}, got "
                         f"{None if sketch is None else tuple(sketch.shape)}")
    _array.array_namespace(sketch, names=("sketch",), xp=xp)


def orthonormalize(X: Any, /, *, method: str = "auto", sketch: Any = None, xp: Any = None) -> Any:
    """Orthonormal basis ``Q`` of the columns of ``X`` (the ``Q`` of a thin QR, diag(R) > 0).

    Parameters
    ----------
    X : array (..., m, r), m >= r
        Real floating (integer input is promoted to the default floating dtype; float16 /
        bfloat16 are computed in float32 and cast back).  Leading axes are a batch.
    method : {"auto", "householder", "cholesky_qr2", "rcqr"}
        ``"householder"``: ``xp.linalg.qr`` with the signs fixed so diag(R) >= 0.
        ``"cholesky_qr2"``: two Cholesky-QR passes ``Q = X R⁻¹``, ``RᵀR = XᵀX`` (two Gram
        products, two r×r Cholesky factorizations, two triangular solves); when the Gram is
        numerically singular or too ill-conditioned it falls back to Householder for the
        whole call.  ``"auto"``: CholeskyQR2 for tall-skinny blocks (m >= 4 r, where it was
        measured faster), Householder otherwise.  ``"rcqr"``: randomized Cholesky QR with
        ``sketch`` (below).
    sketch : array (k, m), k >= r, optional
        For ``"rcqr"`` only: a fixed random sketch, e.g. a Gaussian scaled by ``1/√k`` with
        ``k = ⌈1.25 r⌉`` (Dion draws it once per matrix, so its results are reproducible).
    xp : namespace, optional
        Array namespace; inferred from ``X`` when omitted.

    Returns
    -------
    Q : array (..., m, r)
        Same namespace, device and floating dtype as ``X``; ``QᵀQ = I`` to working
        precision and ``X = Q R`` with ``R`` upper triangular with non-negative diagonal.
        Only ``Q`` is returned (``R = QᵀX`` if needed).

    Notes
    -----
    For full-column-rank ``X`` the factor with positive diag(R) is unique, so every method
    returns the same ``Q`` (to rounding).  CholeskyQR2 ([Yamamoto et al. 2015][yamamoto-2015]) is accurate
    when ``κ(X)² u ≲ 1`` (κ ≲ 1e7 in float64, ≲ 3e3 in float32): after the first pass the
    Gram ``Q1ᵀQ1`` must be within 0.1 of the identity entry-wise and both Cholesky
    factorizations must succeed, else the call recomputes with Householder.  That acceptance
    test costs **one host synchronisation per call** (none on the Householder path; none
    under ``torch.compile``, where ``torch.cond`` makes the choice on the device).  Where
    the flag cannot be read (a JAX tracer under ``jax.jit`` / ``vmap`` / ``grad``, a batch of
    Dask matrices), the trace-safe path runs instead: CholeskyQR2 and Householder are both
    computed and each matrix of the batch takes CholeskyQR2's ``Q`` if it passed the test, else
    Householder's (no host read; the cost of both methods).  A 2-D Dask array runs as per-chunk
    tasks (``xpmat._dask.cholesky_qr2``) that read the flag on the workers: Householder (a TSQR
    over the row chunks) runs only when the test fails, and chunk sizes may be unknown (then
    ``"auto"`` picks CholeskyQR2).

    Rank-deficient or zero ``X`` (and κ beyond the bound above): the Cholesky path falls
    back, and Householder returns an orthonormal ``Q`` whose columns beyond the rank complete
    the basis arbitrarily (no NaN; zero ``X`` gives an orthonormal ``Q``, not zeros).
    NaN/Inf input gives non-finite output.

    Randomized Cholesky QR (``"rcqr"``, [Pethick 2025][pethick-2025] §3.1, after Fan, Guo, Lin
    2021): ``R₁`` from a Householder QR of the small ``k × r`` sketch ``S X``, ``X₁ = X R₁⁻¹``
    (well conditioned with high probability), then one CholeskyQR step ``X₁ = Q R₂``.  No
    acceptance test and so no host read; the signs of ``Q``'s columns follow ``R₁`` (not
    diag(R) >= 0), the span is ``X``'s.  Zero or dependent columns get a diagonal shift of
    ``u · max|diag R₁|`` that keeps the factors finite: ``Q``'s span holds ``X``'s, and its
    columns are orthonormal except that an exactly zero direction of ``X`` (a zero column, zero
    ``X``) gives a zero column of ``Q``, not a completion of the basis (Dion wants a zero
    direction there);
    for a completed basis use Householder.  Used for the QR of orthogonal / power iteration
    ([Stratos 2026, App. Q.2, eqs. 142–145][stratos-2026]) and Dion's / PowerSGD's power step
    ([Pethick 2025][pethick-2025]).

    Input policy (``docs/backends.md``): a matrix holding NaN/Inf gets NaN in all its outputs
    (the other matrices of a batch are unaffected); empty input gives results of the right
    shapes (no NaN); float16 / bfloat16 results come back in the input's dtype (factorizations
    run in float32).

    Backends: ``xp.linalg.qr`` / ``xp.linalg.cholesky`` everywhere; torch uses
    ``torch.linalg.cholesky_ex`` (no exception on failure); triangular solves through
    ``_array.solve_triangular`` (torch / SciPy / CuPy / JAX fast paths, ``xp.linalg.solve``
    elsewhere).  Eager arrays: one host read (CholeskyQR2 only); under ``torch.compile``,
    ``jax.jit`` and on Dask: none.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import orthonormalize
    >>> X = np.random.default_rng(0).standard_normal((100, 5))
    >>> Q = orthonormalize(X)
    >>> bool(np.allclose(Q.T @ Q, np.eye(5)))
    True
    >>> bool(np.allclose(Q, orthonormalize(X, method="householder")))
    True
    """
    xp = _array.array_namespace(X, names=("X",), xp=xp)
    if method not in _ORTH_METHODS:
        raise ValueError(f"method must be one of {_ORTH_METHODS}, got {method!r}")
    if X.ndim < 2 or X.shape[-2] < X.shape[-1]:
        raise ValueError(f"`X` must be (..., m, r) with m >= r, got shape {tuple(X.shape)}")
    _check_sketch(sketch, method, X.shape[-2], X.shape[-1], xp)
    dt = _array.float_dtype(xp, X)
    Xc = _array.as_float(X, xp, dt)
    low = _array.is_low_precision(dt, xp)
    if low:
        Xc = xp.astype(Xc, xp.float32)
    m, r = X.shape[-2], X.shape[-1]
    if r == 0 or m == 0:
        return xp.zeros(X.shape, dtype=dt, device=_array.device(X))
    if method == "auto":
        # unknown Dask sizes (nan) compare False: CholeskyQR2, which falls back by itself
        method = "householder" if m < CQR2_AUTO_RATIO * r else "cholesky_qr2"
    if method == "rcqr":
        Q = _rcqr(Xc, _array.as_float(sketch, xp, Xc.dtype), xp)
    elif _array.is_dask(xp) and Xc.ndim == 2:  # per-chunk tasks, the fallback gated inside them
        Q = (_dask.cholesky_qr2(Xc, tol=CQR2_TOL) if method == "cholesky_qr2"
             else _dask.tsqr(Xc, with_r=False)[0])
    elif method == "cholesky_qr2":
        Q = _accept(*_cholesky_qr2(Xc, xp), Xc, xp)
    else:
        Q = _householder(Xc, xp)
    return xp.astype(Q, dt) if low else Q


# ----------------------------------------------------------------------------- schedules

_FIXED = {
    "cubic": (1.5, -0.5, 0.0),
    "quintic": (15 / 8, -5 / 4, 3 / 8),
    "jordan": (3.4445, -4.7750, 2.0315),
}
_PE_CACHE: list[tuple[float, float, float]] = []


def _polar_express() -> list[tuple[float, float, float]]:
    """The designed Polar Express tuples from ``data/polar_express.json`` (read once)."""
    if not _PE_CACHE:
        import json
        from importlib.resources import files

        doc = json.loads(files("xpmat").joinpath("data/polar_express.json").read_text())
        _PE_CACHE.extend((float(s["a"]), float(s["b"]), float(s["c"])) for s in doc["steps"])
    return list(_PE_CACHE)


def ns_schedule(name: Any, steps: int) -> list[tuple[float, float, float]]:
    """Per-step Newton–Schulz coefficients ``(a, b, c)`` of ``p(x) = a x + b x³ + c x⁵``.

    Parameters
    ----------
    name : {"polar_express", "jordan", "quintic", "cubic"} or sequence of (a, b, c)
        ``"cubic"`` (3/2, −1/2, 0) and ``"quintic"`` (15/8, −5/4, 3/8) are the osculating
        polynomials of Q.3.1 (φ(1) = 1, φ'(1) = 0, and φ''(1) = 0 for the quintic);
        ``"jordan"`` (3.4445, −4.7750, 2.0315) is [Jordan et al. 2024][jordan-2024]'s fixed quintic;
        ``"polar_express"`` is a per-step minimax schedule designed here
        (``tools/design_polar_express.py``, following [Amsel et al. 2025][amsel-2025], "The Polar
        Express"; data in ``xpmat/data/polar_express.json``).  A user sequence of
        ``(a, b, c)`` tuples is accepted as is.
    steps : int >= 0
        Number of tuples returned.  Beyond the length of a designed or user schedule the
        last tuple repeats.

    Returns
    -------
    list of (float, float, float)

    Notes
    -----
    Polar Express: step t minimizes ``max_{x∈[l,u]} |1 − p_t(x)|`` over odd quintics
    (Remez exchange), then ``[l, u] ← [min p_t, max p_t]``, starting from ``[1e-3, 1]``;
    each step is evaluated at ``x / 1.01`` (coefficients ``a/1.01, b/1.01³, c/1.01⁵``) for
    robustness to rounding, and once the interval is within 1e-4 of 1 the schedule ends at
    (15/8, −5/4, 3/8).  [Stratos 2026, App. Q.3 eq. 146, Q.3.1 eq. 147][stratos-2026].

    Backends: pure Python (host floats).

    Examples
    --------
    >>> from xpmat import ns_schedule
    >>> ns_schedule("quintic", 2)
    [(1.875, -1.25, 0.375), (1.875, -1.25, 0.375)]
    >>> [round(v, 2) for v in ns_schedule("polar_express", 1)[0]]
    [8.39, -24.37, 17.73]
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"`steps` must be an int >= 0, got {steps!r}")
    if isinstance(name, str):
        if name == "polar_express":
            base = _polar_express()
        elif name in _FIXED:
            base = [_FIXED[name]]
        else:
            raise ValueError(f"unknown schedule {name!r}; use one of "
                             f"{('polar_express', *_FIXED)} or a sequence of (a, b, c)")
    else:
        try:
            base = [tuple(float(v) for v in t) for t in name]
        except TypeError as exc:
            raise ValueError("`schedule` must be a name or a sequence of (a, b, c) tuples") from exc
        if not base or any(len(t) != 3 for t in base):
            raise ValueError(f"`schedule` must be a non-empty sequence of (a, b, c) tuples, got {name!r}")
    return [base[min(i, len(base) - 1)] for i in range(steps)]


# ----------------------------------------------------------------------------- msign

_NORMALIZE = ("fro", "spectral_estimate", "aol")
#: Gram Newton–Schulz restarts, by default, after every this many steps (not after the second-to-last)
GRAM_RESTART_EVERY = 2
_SQUARINGS = 3  # spectral_estimate: σ_max ≤ ‖(X Xᵀ)^8‖_F^(1/16) ≤ n^(1/32) σ_max


def _fro(X: Any, xp: Any) -> Any:
    return _array.frobenius_norm(X, xp, keepdims=True)


def _floored(d: Any, eps: float, xp: Any) -> Any:
    """``d`` (non-negative) floored at ``eps``; zeros become 1 when ``eps = 0`` (no division by 0)."""
    if eps > 0:
        return xp.maximum(d, xp.asarray(eps, dtype=d.dtype, device=_array.device(d)))
    return xp.where(d > 0, d, 1.0)


def _scale(X: Any, normalize: str, eps: float, xp: Any) -> tuple[Any, Any]:
    """``X`` scaled so its singular values are at most 1, and the Gram ``A = X Xᵀ`` (or None).

    Scale-invariant for ``eps = 0``: ``‖X‖_F`` comes from :func:`xpmat._array.frobenius_norm`
    (no overflow or underflow of the squares) and only a zero ``X`` is floored (to zeros).
    """
    X = X / _floored(_fro(X, xp), eps, xp)
    if normalize == "fro":
        return X, None
    if normalize == "spectral_estimate":
        A = _array.gram_t(X, xp)
        B = A
        for _ in range(_SQUARINGS):
            B = B @ B
        k = 2 ** (_SQUARINGS + 1)
        s = _fro(B, xp) ** (1.0 / k)  # ≥ σ_max(X), ≤ n^(1/2k) σ_max(X); 0 for zero X
        s = xp.where(s > 0, s, 1.0)
        return X / s, A / (s * s)
    # "aol": X D with D = diag(1 / sqrt(row sums of |X Xᵀ|)) on the small (row) side; a zero
    # row (sum 0) keeps its zeros
    A = _array.gram_t(X, xp)
    d = 1.0 / xp.sqrt(_floored(xp.sum(xp.abs(A), axis=-1), eps * eps, xp))
    return d[..., :, None] * X, None


def msign(G: Any, /, *, steps: int = 5, schedule: Any = "polar_express", normalize: str = "fro",
          compute_dtype: Any = None, eps: float = 0.0, gram: bool = False, gram_restarts: Any = None,
          xp: Any = None) -> Any:
    """Matrix sign ``msign(G) ≈ U Vᵀ`` (``G = U Σ Vᵀ``) by a Newton–Schulz schedule.

    Parameters
    ----------
    G : array (..., m, n)
        Real floating (integer input is promoted to the default floating dtype).
    steps : int >= 0
        Newton–Schulz steps; steps beyond the schedule's length repeat its last tuple.
    schedule : str or sequence of (a, b, c)
        See :func:`ns_schedule` (default ``"polar_express"``).
    normalize : {"fro", "spectral_estimate", "aol"}
        Initial scaling that puts the singular values in (0, 1]: ``"fro"`` divides by
        ``‖G‖_F``; ``"spectral_estimate"`` then divides by the upper bound
        ``‖(X Xᵀ)⁸‖_F^{1/16}`` of σ_max (three extra small-side squarings; over-estimates
        σ_max by at most ``min(m, n)^{1/32}``, e.g. 1.19 at 256); ``"aol"`` multiplies the
        small side by ``D = diag(Σ_j |X Xᵀ|_ij)^{-1/2}`` (the AOL rescaling of
        [Prach & Lampert 2022][prach-lampert-2022], σ_max(D X) ≤ 1 guaranteed).
        AOL changes the matrix, so the result is
        ``msign(D G)`` — a Turbo-Muon-style approximation of ``msign(G)``, exact only when
        the rows (of the small side) are orthogonal.
    compute_dtype : dtype or name, optional
        Internal precision (e.g. ``"bfloat16"`` on torch or JAX); the result is cast back to G's dtype.
        ``"auto"``: :func:`ns_compute_dtype` (bfloat16 for float32 ``G`` on a device that multiplies
        bf16 natively, on a CPU for a big enough call; else G's dtype: the Muon family's default).
    eps : float
        Absolute floor of ``‖G‖_F`` (and ``eps²`` of AOL's row sums).  The default 0 floors
        nothing but zero (``G = 0`` returns zeros), so ``msign(t G) = msign(G)`` for every
        ``t > 0``; a positive ``eps`` shrinks the result of a ``G`` with ``‖G‖_F < eps``, as
        ``torch.optim.Muon``'s ``X / (‖X‖ + eps)``.
    gram : bool
        Gram Newton–Schulz ([Zhang et al. 2026][zhang-2026-gram]): iterate on the small
        ``k × k`` Gram matrix (``k = min(m, n)``) and touch the rectangular matrix only at the
        start, at each restart and at the end — the same polynomial of ``G``, so the same result
        to rounding, with fewer products when ``max(m, n)`` is well above ``k`` (see Notes).
    gram_restarts : sequence of int, optional
        Steps after which the Gram iteration restarts from the rectangular matrix (Zhang et al.'s
        ``gram_newton_schulz_reset_iterations``).  Default: after steps 2, 4, ... but not after the
        second-to-last (``(2,)`` for 5 steps, ``(2, 4, 6, 8)`` for 10).  Ignored unless ``gram``.
    xp : namespace, optional

    Returns
    -------
    O : array (..., m, n)
        G's namespace, device and floating dtype (float16 / bfloat16 stay so: matmuls only).

    Notes
    -----
    [Stratos 2026, §7 (Muon) and App. Q.3.1 eq. 147][stratos-2026]: with
    ``X₀ = G / ‖G‖`` and ``A = X Xᵀ`` on the smaller side (``G`` is transposed when
    ``m > n``), each step is ``X ← a X + (b A + c A²) X`` — one Gram product, one square
    product, one multiply — which applies ``p(σ) = a σ + b σ³ + c σ⁵`` to every singular
    value.  Rank-deficient ``G``: zero singular values stay zero (the result is
    ``U_r V_rᵀ`` on the range).  Departure (App. Q.3): Frobenius scaling puts σ_min/σ_max = 1e-3
    near 1e-4 for n ≈ 256, below the 1e-3 the designed schedule targets; more steps or
    ``normalize="spectral_estimate"`` close the gap (figures in docs/orthogonalize.md).
    Input policy (``docs/backends.md``): a matrix holding NaN/Inf gives a NaN matrix; empty
    input gives an empty result; scale-invariant from the smallest to the largest normal
    number (the norm is computed without squaring overflow).

    Gram Newton–Schulz (``gram=True``): with ``X`` the scaled ``k × l`` small-side-first matrix,
    the iterate is kept as ``Q X`` with ``Q`` and ``R = (Q X)(Q X)ᵀ`` both ``k × k``::

        R = X Xᵀ;  Q = I
        per step (a, b, c):  Z = b R + c R²;  Q ← Q (Z + a I);  R ← (Z + a I) R (Z + a I)
        restart after step k:  X ← Q X;  R ← X Xᵀ;  Q ← I
        result:  Q X

    In exact arithmetic this is the plain loop (every matrix is a polynomial in ``X Xᵀ``, so
    they commute).  In rounding, ``R`` drifts from a Gram matrix: it can get small negative
    eigenvalues, which the iteration blows up (measured in bfloat16 on a 1024 × 128 spectrum in
    [1e-4, 1], 8 steps: NaN without a restart, 1e32 with one after step 2, 0.49 from the polar
    factor with the default three (after steps 2, 4, 6), as the plain loop's 0.52); a restart
    recomputes ``R`` from the rectangular matrix.  Matrix-product FLOPs (``2 p q r`` per
    ``(p×q)(q×r)`` product, ``l = max(m, n)``, ``s`` steps, ``r`` restarts, normalization
    excluded, :func:`ns_flops`)::

        plain:  s (4 k² l + 2 k³)          gram:  4 (1 + r) k² l + 2 (4 s − 3 r − 3) k³

    At 4096 × 256, 5 steps, 1 restart: 2.62 against 5.54 GFLOP (0.47×); for a square matrix
    the Gram loop costs more (36 k³ against 30 k³), so use it on rectangular ones (with 5 steps
    it saves products when ``l > 1.5 k``).  Results: equal to the plain loop to float32
    rounding (tests compare both, and the float64 SVD polar factor, on well- and
    ill-conditioned, low-rank, zero and batched matrices); in bfloat16 the two differ by the
    rounding of either (a few 1e-2 to 1e-1 relative on ill-conditioned input after 5 steps).

    Backends: standard Array API matmuls everywhere; bf16 compute on PyTorch and JAX.
    No host read: the same path runs eager, under ``jax.jit``, ``vmap`` and ``grad``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import msign
    >>> G = np.random.default_rng(0).standard_normal((6, 4))
    >>> U, _, Vt = np.linalg.svd(G, full_matrices=False)
    >>> bool(np.abs(msign(G, steps=10) - U @ Vt).max() < 1e-6)
    True
    >>> bool(np.abs(msign(G, steps=10, gram=True) - U @ Vt).max() < 1e-6)
    True
    """
    xp = _array.array_namespace(G, names=("G",), xp=xp)
    if G.ndim < 2:
        raise ValueError(f"`G` must be (..., m, n), got shape {tuple(G.shape)}")
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")
    coeffs = ns_schedule(schedule, steps)
    restarts = gram_restarts_checked(gram_restarts, steps)
    _check_gram(gram)
    dt = _array.float_dtype(xp, G)
    X = _array.as_float(G, xp, dt)
    if 0 in tuple(G.shape):
        return xp.zeros(G.shape, dtype=dt, device=_array.device(G))
    if compute_dtype is not None:
        X = _array.cast(X, ns_compute_dtype(compute_dtype, X, 1, len(coeffs), xp), xp)
    X = _newton_schulz(X, coeffs, normalize=normalize, eps=eps, xp=xp, gram=gram, restarts=restarts)
    return xp.astype(X, dt) if X.dtype != dt else X


def _check_gram(gram: Any) -> bool:
    if not isinstance(gram, bool):
        raise TypeError(f"`gram` must be a bool, got {gram!r}")
    return gram


def gram_restarts_checked(restarts: Any, steps: int, name: str = "gram_restarts") -> tuple[int, ...]:
    """The restart positions of Gram Newton–Schulz for ``steps`` steps, sorted (see :func:`msign`).

    ``None``: the default, a restart after steps 2, 4, 6, ... except after the second-to-last
    step (a restart there buys one step for two rectangular products): ``(2,)`` for 5 steps, as
    [Zhang et al. 2026][zhang-2026-gram] recommend, ``(2, 4, 6, 8)`` for 10.  Otherwise a
    sequence of distinct ints ``k`` with ``1 <= k < steps``: the iteration restarts from the
    rectangular matrix after step ``k``.  ``ValueError`` naming ``name`` for anything else.
    """
    if restarts is None:
        return tuple(range(GRAM_RESTART_EVERY, steps - 1, GRAM_RESTART_EVERY))
    try:
        items = tuple(restarts)
        ks = sorted({k.__index__() for k in items if not isinstance(k, bool)})
        ok = len(ks) == len(items) and all(1 <= k < steps for k in ks)
    except (TypeError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(f"`{name}` must be None or a sequence of distinct ints k with 1 <= k < steps "
                         f"(steps = {steps}), got {restarts!r}")
    return tuple(ks)


def ns_flops(m: int, n: int, steps: int, *, gram: bool = False, restarts: Any = None) -> int:
    """Matrix-product FLOPs of the Newton–Schulz loop of :func:`msign` on one ``m × n`` matrix.

    Parameters
    ----------
    m, n : int >= 1
        The matrix shape (the loop runs on the small side: ``k = min(m, n)``, ``l = max(m, n)``).
    steps : int >= 0
    gram : bool
        Gram Newton–Schulz (``msign(..., gram=True)``) instead of the plain loop.
    restarts : sequence of int, optional
        Gram restart positions, as ``msign``'s ``gram_restarts`` (None: the default).

    Returns
    -------
    int
        ``2 p q r`` per ``(p × q) @ (q × r)`` product, the normalization not counted (it is the same
        for both loops)::

            plain:  steps · (4 k² l + 2 k³)
            gram:   4 (1 + r) k² l + 2 (4 steps − 3 r − 3) k³      (r restarts; 0 when steps = 0)

        At 4096 × 256 and 5 steps: plain 5.54 GFLOP, Gram (one restart) 2.62 GFLOP, 0.47×.

    Examples
    --------
    >>> from xpmat.orthogonalize import ns_flops
    >>> round(ns_flops(4096, 256, 5, gram=True) / ns_flops(4096, 256, 5), 3)
    0.473
    """
    k, l_ = min(m, n), max(m, n)
    if not gram:
        return steps * (4 * k * k * l_ + 2 * k ** 3)
    if steps == 0:
        return 0
    r = len(gram_restarts_checked(restarts, steps, "restarts"))
    return 4 * (1 + r) * k * k * l_ + 2 * (4 * steps - 3 * r - 3) * k ** 3


def _newton_schulz(X: Any, coeffs: list[tuple[float, float, float]], *, normalize: str, eps: float,
                  xp: Any, scale: float = 1.0, gram: bool = False, restarts: tuple[int, ...] = ()) -> Any:
    """``scale · msign(X)`` computed in ``X``'s own dtype (no checks, no casts): the loop of
    :func:`msign` for callers that validated their input (Muon).

    ``scale`` is folded into the last step's ``(a, b, c)`` (saving a pass over the result).  A batch
    of one matrix runs as a 2-D product: on CPU PyTorch a batched ``X Xᵀ`` of one matrix was
    measured 1.4x (bf16) to 1.6x (float32) slower than the plain one (768 × 3072, 2 threads).
    A tall ``X`` is iterated as ``Xᵀ`` but its last step is written as ``a Xᵀ + Xᵀ B``, so the
    result is laid out as ``X`` (not a transposed view, which made every later elementwise pass
    over it strided: measured 10x slower for a 1024 × 256 add on CPU).
    """
    shape = tuple(X.shape)
    if len(shape) > 2 and math.prod(shape[:-2]) == 1:
        X = xp.reshape(X, shape[-2:])
    tall = shape[-2] > shape[-1]
    if tall:
        X = mT(X, xp)
    X, A = _scale(X, normalize, eps, xp)
    if gram and coeffs:
        X = _gram_loop(X, A, coeffs, restarts, scale, tall, xp)
        return xp.reshape(X, shape) if X.ndim != len(shape) else X
    for k, (a, b, c) in enumerate(coeffs):
        last = k == len(coeffs) - 1
        if last:
            a, b, c = a * scale, b * scale, c * scale
        if A is None:
            A = _array.gram_t(X, xp)
        B = _array.matmul_add(A, A, A, beta=b, alpha=c, xp=xp)  # b A + c A², symmetric
        if tall and last:  # (a X + B X)ᵀ = a Xᵀ + Xᵀ B comes out in G's own layout, not as
            X = _array.matmul_add(mT(X, xp), mT(X, xp), B, beta=a, xp=xp)  # a transposed view
            tall = False
        else:
            X = _array.matmul_add(X, B, X, beta=a, xp=xp)  # a X + B X
        A = None
    if not coeffs:
        X = scale * X
    if tall:
        X = mT(X, xp)
    return xp.reshape(X, shape) if X.ndim != len(shape) else X


def _gram_loop(X: Any, A: Any, coeffs: list[tuple[float, float, float]], restarts: tuple[int, ...],
               scale: float, tall: bool, xp: Any) -> Any:
    """Gram Newton–Schulz on the scaled wide ``X`` (k × l, k <= l) with Gram ``A`` (or None).

    The iterate is kept as ``X_t = Q X_s`` (``X_s`` the matrix of the last (re)start) with
    ``Q`` and ``R = X_t X_tᵀ`` both k × k::

        Z = b R + c R²;   Q ← Q (Z + a I);   R ← (Z + a I) R (Z + a I)

    ``R`` is not updated after the last step nor before a restart; at a restart ``X_s ← Q X_s``,
    ``R ← X_s X_sᵀ``, ``Q ← I``.  Returns ``scale · Q X_s`` (``(Q X_s)ᵀ = X_sᵀ Q`` for a tall
    input, laid out as the input; ``Q`` is symmetric up to rounding).
    """
    R = X @ mT(X, xp) if A is None else A
    eye = xp.eye(X.shape[-2], dtype=X.dtype, device=_array.device(X))
    Q = None
    last = len(coeffs) - 1
    for k, (a, b, c) in enumerate(coeffs):
        if k in restarts:
            X = Q @ X
            R = X @ mT(X, xp)
            Q = None
        Z = _array.matmul_add(R, R, R, beta=b, alpha=c, xp=xp)  # b R + c R²
        Q = Z + a * eye if Q is None else _array.matmul_add(Q, Q, Z, beta=a, xp=xp)  # Q (Z + a I)
        if k < last and k + 1 not in restarts:
            RZ = _array.matmul_add(R, R, Z, beta=a, xp=xp)  # R (Z + a I)
            R = _array.matmul_add(RZ, Z, RZ, beta=a, xp=xp)  # (Z + a I) R (Z + a I)
    if scale != 1.0:
        Q = scale * Q
    return mT(X, xp) @ Q if tall else Q @ X


# ----------------------------------------------------------------------------- polar


def polar(G: Any, /, *, method: str = "svd", steps: int = 10, schedule: Any = "polar_express",
          normalize: str = "spectral_estimate", compute_dtype: Any = None, eps: float = 0.0,
          xp: Any = None) -> tuple[Any, Any]:
    """Polar decomposition ``G = U H``: ``U`` with orthonormal rows/columns, ``H`` symmetric PSD.

    Parameters
    ----------
    G : array (..., m, n)
        Real floating (integer input is promoted to the default floating dtype).
    method : {"svd", "newton_schulz"}
        ``"svd"``: exact reference from ``G = W Σ Vᵀ``: ``U = W Vᵀ``, ``H = V Σ Vᵀ``.
        ``"newton_schulz"``: ``U = msign(G, steps=..., schedule=..., normalize=...,
        compute_dtype=...)`` and ``H = sym(Uᵀ G)`` (matmuls only).
    steps, schedule, normalize, compute_dtype, eps
        Passed to :func:`msign` for ``method="newton_schulz"`` (ignored for ``"svd"``).
    xp : namespace, optional

    Returns
    -------
    U : array (..., m, n)
    H : array (..., n, n)
        Symmetric (exactly: ``(M + Mᵀ)/2``), positive semi-definite; G's namespace,
        device and floating dtype.  As ``scipy.linalg.polar(G, side="right")``.

    Notes
    -----
    ``U = msign(G)`` is the nearest matrix with orthonormal columns (rows when m < n) to
    G ([Stratos 2026, App. Q.3.1][stratos-2026]).  For rank-deficient G, ``U`` is not unique
    (SVD picks one completion; Newton–Schulz gives ``U_r V_rᵀ``), ``H`` is unique.
    Input policy (``docs/backends.md``): a matrix holding NaN/Inf gives NaN ``U`` and ``H``
    (never the backend's ``LinAlgError``); empty input gives empty ``U`` and zero ``H``;
    float16 / bfloat16 are factored in float32 and returned in their own dtype; ``U`` is
    scale-invariant and ``H`` scale-covariant.

    Backends: ``xp.linalg.svd`` for "svd"; standard matmuls for "newton_schulz".
    No host read: the same path runs eager and under ``jax.jit``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import polar
    >>> G = np.random.default_rng(0).standard_normal((5, 3))
    >>> U, H = polar(G)
    >>> bool(np.allclose(U @ H, G)), bool(np.allclose(U.T @ U, np.eye(3)))
    (True, True)
    """
    xp = _array.array_namespace(G, names=("G",), xp=xp)
    if method not in ("svd", "newton_schulz"):
        raise ValueError(f"method must be 'svd' or 'newton_schulz', got {method!r}")
    if G.ndim < 2:
        raise ValueError(f"`G` must be (..., m, n), got shape {tuple(G.shape)}")
    dt = _array.float_dtype(xp, G)
    Gf = _array.as_float(G, xp, dt)
    if method == "svd":
        W, S, Vh = _array.svd(Gf, xp)
        U = W @ Vh
        H = (mT(Vh, xp) * S[..., None, :]) @ Vh
    else:
        U = msign(Gf, steps=steps, schedule=schedule, normalize=normalize,
                  compute_dtype=compute_dtype, eps=eps, xp=xp)
        H = mT(U, xp) @ Gf
    return U, (H + mT(H, xp)) / 2


NORMALIZATIONS = _NORMALIZE  # the ``normalize`` choices of msign / newton_schulz


def newton_schulz(X: Any, coeffs: Any, /, *, normalize: str = "fro", eps: float = 1e-7,
                  scale: float = 1.0, gram: bool = False, gram_restarts: Any = None, xp: Any = None) -> Any:
    """``scale · msign(X)`` by the Newton–Schulz loop of :func:`msign`, in ``X``'s own dtype.

    For callers that validated their input and chose their precision (Muon's batched step):
    no dtype promotion, no zero-size check, no copy of ``X``.

    Parameters
    ----------
    X : array (..., m, n), m, n >= 1
        Real floating, already in the compute dtype.
    coeffs : list of (a, b, c)
        Per-step coefficients, e.g. ``ns_schedule("polar_express", 5)``.
    normalize : {"fro", "spectral_estimate", "aol"}
        As :func:`msign` (see :data:`NORMALIZATIONS`).
    eps : float
        Floor of the Frobenius norm (zero ``X`` gives zeros).
    scale : float
        Folded into the last step's coefficients, so ``scale · msign(X)`` costs no extra pass
        over the result (into the small ``Q`` of the Gram loop).
    gram, gram_restarts
        Gram Newton–Schulz and its restarts, as :func:`msign`.
    xp : namespace, optional

    Returns
    -------
    array (..., m, n)
        ``X``'s namespace, dtype and layout.

    Notes
    -----
    ``[Stratos 2026][stratos-2026]`` Q.3.1 eq. (147), as :func:`msign`.

    Backends: standard Array API matmuls; PyTorch fuses the steps (``addmm`` / ``baddbmm``).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.orthogonalize import newton_schulz, ns_schedule
    >>> X = np.diag([2.0, 1.0])
    >>> np.round(newton_schulz(X, ns_schedule("polar_express", 8), scale=-0.5), 4).tolist()
    [[-0.5, 0.0], [0.0, -0.5]]
    """
    xp = _array.array_namespace(X, names=("X",), xp=xp)
    coeffs = list(coeffs)
    restarts = gram_restarts_checked(gram_restarts, len(coeffs))
    return _newton_schulz(X, coeffs, normalize=normalize, eps=eps, xp=xp, scale=scale,
                          gram=_check_gram(gram), restarts=restarts)


# ----------------------------------------------------------------------------- many matrices

# On a CPU a stack of same-shaped matrices goes through one Newton–Schulz call only while it
# stays this small (bytes in the compute dtype).  Measured (bf16, 2 cores, docs/optim.md Speed):
# batching wins on small matrices (12 × 64×256: 9.2 vs 32 ms unbatched; 12 × 256×1024, 6 MiB:
# 169 vs 188 ms) and loses on big ones (12 × 768×3072 in stacks of 3, 14 MiB: 5.35 vs 4.57 s),
# because glibc hands large blocks back to the system and every step page-faults them in again
# (with MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_ raised the two were equal, 4.41 vs 4.57 s).
# Accelerators take the whole stack: there one launch per shape is the point.
MSIGN_CPU_STACK_BYTES = 8 << 20
# compute_dtype="auto" on a CPU: a bf16 Newton–Schulz call costs about 0.3 ms more than a
# float32 one (casts, oneDNN set-up), then runs its products 2-3x faster (AMX): it pays from
# about 1e8 product FLOPs per call (measured, docs/optim.md "Newton–Schulz precision").
BF16_CPU_MIN_FLOPS = 10**8


def ns_compute_dtype(compute_dtype: Any, G: Any, count: int, steps: int, xp: Any) -> Any:
    """The precision of one Newton–Schulz call on ``count`` matrices shaped like ``G``:
    ``compute_dtype`` as given, except ``"auto"``: :func:`xpmat._array.auto_dtype` of ``G``
    (bf16 for float32 on a device with native bf16 products), and on a CPU only for a call of
    at least :data:`BF16_CPU_MIN_FLOPS` (:func:`ns_flops`), else None (``G``'s dtype)."""
    if not (isinstance(compute_dtype, str) and compute_dtype == _array.AUTO):
        return compute_dtype
    if not _array.supports_bfloat16(xp):  # NumPy, CuPy, array-api-strict, Dask: G's dtype
        return None
    m, n = G.shape[-2:]
    if _array.is_cpu(G) and count * math.prod(G.shape[:-2]) * ns_flops(m, n, steps) < BF16_CPU_MIN_FLOPS:
        return None
    return _array.auto_dtype(G, xp)


def msign_groups(mats: Any, compute_dtype: Any = None,
                 stack_bytes: int | None = MSIGN_CPU_STACK_BYTES) -> list[tuple[list[int], int | None]]:
    """How :func:`msign_many` batches ``mats``: ``[(indices, bytes), ...]``.

    Same shape and dtype, first-seen order; on a CPU each group is cut so that a stack holds at
    most ``stack_bytes`` (in ``compute_dtype``, default each array's dtype; ``None``: no cut).
    ``bytes`` is the size of one matrix of the group on a CPU, ``None`` elsewhere (accelerators
    take a shape whole: one launch per shape).  Each entry is one Newton–Schulz call.
    """
    groups: dict[Any, list[int]] = {}
    for i, a in enumerate(mats):
        groups.setdefault((tuple(a.shape), str(a.dtype)), []).append(i)
    out = []
    for idx in groups.values():
        a = mats[idx[0]]
        size, per = None, len(idx)
        if _array.is_cpu(a):
            size = max(1, math.prod(a.shape) * _array.itemsize(a, compute_dtype))
            if stack_bytes is not None:
                per = max(1, min(per, stack_bytes // size))
        out.extend((idx[c:c + per], size) for c in range(0, len(idx), per))
    return out


def gram_saves(m: int, n: int, steps: int) -> bool:
    """Whether Gram Newton–Schulz (default restarts) takes fewer matrix-product FLOPs than the
    plain loop on an ``m × n`` matrix (:func:`ns_flops`): with 5 steps, when
    ``max(m, n) > 1.5 min(m, n)``; never for a square one."""
    return ns_flops(m, n, steps, gram=True) < ns_flops(m, n, steps)


def _stack_msign(Us: list[Any], coeffs: list, scale: float, gram: Any, kw: dict, xp: Any,
                 cdt: Any = None) -> list[Any]:
    """``scale · msign`` of same-shaped ``Us`` in ONE batched :func:`newton_schulz` call, in
    ``cdt`` (the stack cast once, and the result back to ``Us``' dtype once: the values of a
    cast per matrix, in two operations instead of two per matrix)."""
    U = Us[0][None, ...] if len(Us) == 1 else xp.stack(Us, axis=0)
    m, n = U.shape[-2:]
    use_gram = gram_saves(m, n, len(coeffs)) if gram == "auto" else gram
    O = newton_schulz(_array.cast(U, cdt, xp), coeffs, scale=scale, gram=use_gram, xp=xp, **kw)
    O = _array.cast(O, U.dtype, xp)
    if hasattr(xp, "unstack"):  # one op (torch: unbind) instead of one index per matrix
        return list(xp.unstack(O, axis=0))
    return [O[j, ...] for j in range(len(Us))]


def _split_msign(Us: list[Any], coeffs: list, scale: Any, gram: Any, split: Any, kw: dict,
                 xp: Any, cdt: Any = None) -> list[Any]:
    """:func:`_stack_msign` with ``scale(m, n)``; with ``split`` row blocks, each block its own
    msign and ``scale(s_i, n)`` (the blocks of one size, over all of ``Us``, in one call)."""
    m, n = Us[0].shape[-2:]
    if split is None:
        return _stack_msign(Us, coeffs, scale(m, n), gram, kw, xp, cdt)
    starts = [sum(split[:j]) for j in range(len(split))]
    blocks = [[U[..., o:o + k, :] for o, k in zip(starts, split, strict=True)] for U in Us]
    done: list[list[Any]] = [[None] * len(split) for _ in Us]
    for k in dict.fromkeys(split):  # each distinct block size once, first-seen order
        where = [(i, j) for i in range(len(Us)) for j, kj in enumerate(split) if kj == k]
        outs = _stack_msign([blocks[i][j] for i, j in where], coeffs, scale(k, n), gram, kw, xp, cdt)
        for (i, j), O in zip(where, outs, strict=True):
            done[i][j] = O
    return [xp.concat(parts, axis=-2) for parts in done]


def _check_split(split_sizes: Any, mats: list[Any]) -> tuple[int, ...] | None:
    if split_sizes is None:
        return None
    try:
        split = tuple(k.__index__() for k in split_sizes if not isinstance(k, bool))
        ok = len(split) == len(split_sizes) > 0 and min(split) >= 1
    except (TypeError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(f"`split_sizes` must be None or a sequence of ints >= 1, got {split_sizes!r}")
    for i, G in enumerate(mats):
        if sum(split) != G.shape[-2]:
            raise ValueError(f"`split_sizes` {split} must add up to the rows of `mats[{i}]`, "
                             f"got shape {tuple(G.shape)}")
    return split


def _checked_many(mats: Any, normalize: str, gram: Any, xp: Any) -> tuple[list[Any], Any]:
    mats = list(mats)
    if not mats:
        return mats, xp
    xp = _array.array_namespace(*mats, names=[f"mats[{i}]" for i in range(len(mats))], xp=xp)
    for i, G in enumerate(mats):
        if G.ndim < 2:
            raise ValueError(f"`mats[{i}]` must be (..., m, n), got shape {tuple(G.shape)}")
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize must be one of {_NORMALIZE}, got {normalize!r}")
    if gram != "auto":
        _check_gram(gram)
    return [_array.as_float(G, xp) for G in mats], xp  # integers promoted


def msign_many(mats: Any, /, *, steps: int = 5, schedule: Any = "polar_express", normalize: str = "fro",
               compute_dtype: Any = None, eps: float = 1e-7, scale: Any = 1.0, gram: Any = False,
               split_sizes: Any = None, stack_bytes: int | None = MSIGN_CPU_STACK_BYTES,
               xp: Any = None) -> list[Any]:
    """``scale · msign`` of many matrices of mixed shapes, batched by shape.

    Parameters
    ----------
    mats : sequence of arrays (..., m, n)
        One library and device; shapes may differ.  Leading axes of each are a batch.
    steps, schedule, normalize, compute_dtype, eps
        As :func:`msign`.
    scale : float or callable ``(m, n) -> float``
        Folded into the last Newton–Schulz step (no extra pass over the result); a callable
        gets each matrix's (or, with ``split_sizes``, each row block's) shape.
    gram : bool or "auto"
        Gram Newton–Schulz as :func:`msign`; ``"auto"``: on the shapes where it takes fewer
        matrix products (:func:`gram_saves`), the plain loop elsewhere.
    split_sizes : sequence of int, optional
        The rows of every matrix are blocks of these sizes (a fused QKV weight), each its own
        msign and ``scale(s_i, n)``, put back in place.
    stack_bytes : int or None
        On a CPU, the most bytes (in the compute dtype) one stack may hold
        (:data:`MSIGN_CPU_STACK_BYTES`; ``None``: no limit); accelerators take a shape whole.
    xp : namespace, optional

    Returns
    -------
    list of arrays
        ``out[i]`` in ``mats[i]``'s shape, namespace, device and floating dtype.

    Notes
    -----
    The matrices of one shape and dtype are stacked and go through ONE :func:`newton_schulz`
    call (:func:`msign_groups`): one launch per shape on an accelerator; on a CPU stacks of at
    most ``stack_bytes``, since batching wins on small matrices and loses on big ones (measured
    in ``docs/optim.md``, Speed).  Each result equals :func:`msign` of its matrix (with ``scale``
    applied) to rounding; bitwise where the backend's batched products are.  Empty ``mats``
    gives ``[]``; a zero-size matrix a zero-size result; integer input is promoted.

    Backends: as :func:`msign` (standard matmuls; PyTorch fuses the steps).  No host read.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import msign, msign_many
    >>> rng = np.random.default_rng(0)
    >>> Gs = [rng.standard_normal(s) for s in [(6, 4), (3, 5), (6, 4)]]
    >>> Os = msign_many(Gs)
    >>> [O.shape for O in Os]
    [(6, 4), (3, 5), (6, 4)]
    >>> bool(np.allclose(Os[1], msign(Gs[1])))
    True
    """
    mats, xp = _checked_many(mats, normalize, gram, xp)
    coeffs = ns_schedule(schedule, steps)
    split = _check_split(split_sizes, mats)
    scale_of = scale if callable(scale) else (lambda m, n: scale)
    kw = {"normalize": normalize, "eps": eps}
    out: list[Any] = [None] * len(mats)
    for idx, _ in msign_groups(mats, compute_dtype, stack_bytes):
        G0 = mats[idx[0]]
        dt = G0.dtype
        if 0 in tuple(G0.shape):
            for i in idx:
                out[i] = xp.zeros(G0.shape, dtype=dt, device=_array.device(G0))
            continue
        cdt = ns_compute_dtype(compute_dtype, G0, len(idx), len(coeffs), xp)
        Us = [mats[i] for i in idx]
        for i, O in zip(idx, _split_msign(Us, coeffs, scale_of, gram, split, kw, xp, cdt), strict=True):
            out[i] = O
    return out
