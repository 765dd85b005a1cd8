"""LRE's curvatures and bases: the correction of a step and how it is folded into ``(L, Q)``.

Internal to :mod:`xpmat.optim.lre` ([LRE 2025][lre-2025], "The algorithm" steps 2-4,
"Curvatures" 1-6, "Basis algorithms" 1-7).  Everything works on blocks: ``G`` (nb, bs) the
gradient, ``Z`` / ``HZ`` (nb, bs) the probe and its Hessian-vector product, ``Cb``
(nb, bs, k) given correction vectors (per-sample gradients), and the per-parameter state
``s`` (the fields of :class:`xpmat.optim.lre.LREState`).  :func:`fold` returns the new basis
fields as a dict; :func:`kept` is step 4 (the eigenvalues the inner optimizer sees).
"""

from __future__ import annotations

import math
from typing import Any

from xpmat import _array
from xpmat.iteration import nystrom_eigh
from xpmat.lowrank_eigh import ggt_eigh, lowrank_eigh_update
from xpmat.optim._lre_inner import qn_tol, reciprocal_where
from xpmat.optim.transforms import ema_update
from xpmat.orthogonalize import orthonormalize

__all__ = ["EIGEN_BASES", "PER_SAMPLE_CURVATURES", "PSD_CURVATURES", "correction", "debias", "fold", "kept"]

PER_SAMPLE_CURVATURES = ("fisher", "gauss_newton")
PSD_CURVATURES = ("covariance", *PER_SAMPLE_CURVATURES)
EIGEN_BASES = ("direct", "randomized", "full")  # bases whose (L, Q) is the curvature itself


def correction(h: dict[str, Any], G: Any, s: Any, Z: Any, HZ: Any, Cb: Any, xp: Any):
    """Step 2: correction vectors ``C`` (nb, bs, k), weights (nb, k) or None (all +1), the EMA
    factor (None: a sum) and the new BFGS ``σ`` (None: unchanged)."""
    curv = h["curvature"]
    if curv == "covariance":
        return G[..., None], None, h["beta"], None
    if curv in PER_SAMPLE_CURVATURES:
        return Cb, None, h["beta"], None
    if curv == "hutchinson":  # sym(Hz zᵀ) = ¼ [(a+b)(a+b)ᵀ − (a−b)(a−b)ᵀ]
        C = xp.stack([HZ + Z, HZ - Z], axis=-1)
        w = xp.asarray([0.25, -0.25], dtype=G.dtype, device=_array.device(G))
        return C, xp.broadcast_to(w, (G.shape[0], 2)), h["beta"], None
    tol = qn_tol(G.dtype, xp)
    Qt = _array.mT(s.Q, xp)
    BZ = (s.Q @ (s.L[..., :, None] * (Qt @ Z[..., None])))[..., 0]  # Q L Qᵀ s
    nz = xp.linalg.vector_norm(Z, axis=-1)
    if curv == "bfgs":  # B = σ I + Q L Qᵀ; the low-rank part holds B − σ I
        ys, yy = xp.sum(HZ * Z, axis=-1), xp.sum(HZ * HZ, axis=-1)
        wy = reciprocal_where(ys, ys > tol * xp.sqrt(yy) * nz, xp)
        ok_y = wy > 0
        sigma = xp.where((s.sigma == 0) & ok_y, yy * wy, s.sigma)
        BZ = BZ + sigma[:, None] * Z
        sbs = xp.sum(BZ * Z, axis=-1)
        wb = -reciprocal_where(sbs, ok_y & (sbs > tol * xp.linalg.vector_norm(BZ, axis=-1) * nz), xp)
        return xp.stack([HZ, BZ], axis=-1), xp.stack([wy, wb], axis=-1), None, sigma
    R = HZ - BZ  # sr1
    rs = xp.sum(R * Z, axis=-1)
    w = reciprocal_where(rs, xp.abs(rs) > tol * xp.linalg.vector_norm(R, axis=-1) * nz, xp)
    return R[..., None], w[..., None], None, None


def debias(h: dict[str, Any], step: Any, dt: Any, xp: Any) -> Any:
    """``1 − βᵗ`` (``1 − β^min(t, k)`` for the GGT window); None for sums and quasi-Newton."""
    if h["beta"] is None or h["curvature"] in ("bfgs", "sr1"):
        return None
    t = xp.minimum(step, xp.asarray(float(h["history_size"]), dtype=step.dtype,
                                    device=_array.device(step))) if h["basis"] == "ggt" else step
    return xp.astype(1.0 - h["beta"] ** t, dt)


def kept(L: Any, sigma: Any, step: Any, Q: Any, h: dict[str, Any], xp: Any) -> tuple[Any, Any, float]:
    """Step 4: the debiased eigenvalues ``L̂`` (plus σ for BFGS), the mask of kept slots, and
    the relative cut ``max(eig_rtol, r·eps)``."""
    bc = debias(h, step, L.dtype, xp)
    Lh = L if bc is None else L / bc
    if sigma is not None:  # BFGS: eigenvalues of σ I + Q L Qᵀ along Q
        Lh = Lh + sigma[:, None]
    top = xp.max(xp.abs(Lh), axis=-1, keepdims=True)
    # eigenvalues at rounding level of the (r + k)-sized eigenproblem are noise, not curvature:
    # Adam in the basis would blow their ~eps·top gradient components up to full-size steps
    rtol = max(h["eig_rtol"], Q.shape[-1] * float(xp.finfo(L.dtype).eps))
    return Lh, Lh > rtol * top, rtol


# ----------------------------------------------------------------------------- the bases
def _weighted(C: Any, w: Any) -> Any:
    return C if w is None else C * w[..., None, :]


def _sym(A: Any, xp: Any) -> Any:
    return 0.5 * (A + _array.mT(A, xp))


def _mix(old: Any, new: Any, decay: float | None) -> Any:
    """``decay·old + (1 − decay)·new`` (None: ``old + new``)."""
    return old + new if decay is None else decay * old + (1.0 - decay) * new


def _full(M: Any, C: Any, w: Any, decay: Any, xp: Any) -> tuple[Any, Any, Any]:
    """``basis="full"``: ``M ← decay·M + (1 − decay)·C diag(w) Cᵀ`` (bs × bs, stored) and its
    ``eigh``, descending (LRE's full-matrix basis).

    The ``eigh`` sees ``M / max|M|``, in float64 where the device has it: torch's float32
    ``eigh`` returned NaN, without raising, on first-layer blocks of the digits MLP (pixels
    that are nearly always zero): one block whose entries were all below 4e-10, and, scaled,
    a 64 × 64 block of numerical rank 1 with 31 zero rows."""
    M = _mix(M, _weighted(C, w) @ _array.mT(C, xp), decay)
    scale = xp.max(xp.abs(M), axis=(-2, -1), keepdims=True)
    scale = xp.where(scale > 0, scale, xp.ones_like(scale))
    wide = xp.float64 if _array.supports_float64(xp, _array.device(M)) else M.dtype
    L, Q = _array.eigh(xp.astype(M / scale, wide), xp, descending=True)
    return xp.astype(L, M.dtype) * scale[..., 0], xp.astype(Q, M.dtype), M


def _nystrom(L: Any, Q: Any, C: Any, w: Any, decay: Any, seed: int, xp: Any) -> tuple[Any, Any]:
    """``basis="nystrom"``: :func:`xpmat.nystrom_eigh` of the (never formed) PSD operator
    ``decay·Q diag(L) Qᵀ + (1 − decay)·C diag(w) Cᵀ``, one fixed sketch per parameter."""
    a, b = (1.0, 1.0) if decay is None else (decay, 1.0 - decay)
    Cw = _weighted(C, w)

    def apply(X):
        return a * (Q @ (L[..., :, None] * _array.matmul_t(Q, X, xp))) + b * (Cw @ _array.matmul_t(C, X, xp))

    n = Q.shape[-2]
    return nystrom_eigh(apply, Q.shape[-1], shape=(*Q.shape[:-2], n, n), like=Q, seed=seed, xp=xp)


def _hebbian(Q: Any, mom: Any, sq: Any, C: Any, w: Any, step: Any, h: dict[str, Any], xp: Any):
    """``basis="hebbian"``: one AdamG-style step of Sanger's rule on the Stiefel manifold::

        D = M Q − Q triu(Qᵀ M Q)      (Sanger / generalized Hebbian, M = C diag(w) Cᵀ)
        D ← D − Q sym(Qᵀ D)           (tangent at Q)
        m ← β₁ m + (1 − β₁) D;  v ← β₂ v + (1 − β₂) ‖D‖²_F   (AdamG's scalar v)
        Q ← orthonormalize(Q + η m̂ / √v̂);  m ← m − Q sym(Qᵀ m)

    ``η`` = ``hebbian_lr``, ``(β₁, β₂)`` = ``hebbian_betas``; ``M`` is never formed."""
    b1, b2 = h["hebbian_betas"]
    P = _array.matmul_t(Q, C, xp)  # (nb, r, k)
    Pw = _weighted(P, w)
    D = _weighted(C, w) @ _array.mT(P, xp) - Q @ xp.triu(Pw @ _array.mT(P, xp))
    D = D - Q @ _sym(_array.matmul_t(Q, D, xp), xp)
    _, mom = ema_update(mom, D, b1, None, xp)
    _, sq = ema_update(sq, xp.sum(D * D, axis=(-2, -1)), b2, None, xp)
    t = step + 1
    mh = mom / xp.astype(1.0 - b1 ** t, mom.dtype)
    root = xp.sqrt(sq / xp.astype(1.0 - b2 ** t, sq.dtype))[:, None, None]
    direction = xp.where(root > 0, mh / xp.where(root > 0, root, xp.ones_like(root)), xp.zeros_like(mh))
    Qn = orthonormalize(Q + h["hebbian_lr"] * direction, method="householder", xp=xp)
    return Qn, mom - Qn @ _sym(_array.matmul_t(Qn, mom, xp), xp), sq


def _rayleigh(L: Any, Q: Any, Q_old: Any, C: Any, w: Any, decay: Any, xp: Any) -> Any:
    """The eigenvalue estimates of the bases that do not diagonalize (hebbian, random): the
    EMA of the Rayleigh quotients ``diag(Qᵀ C diag(w) Cᵀ Q)``, the old ones carried over as
    ``(R∘R) L``, ``R = Qᵀ Q_old`` (as Adam's second moment)."""
    P = _array.matmul_t(Q, C, xp)
    rq = xp.sum(_weighted(P * P, w), axis=-1)
    if Q is not Q_old:
        R = _array.matmul_t(Q, Q_old, xp)
        L = ((R * R) @ L[..., None])[..., 0]
    return _mix(L, rq, decay)


def _ggt_window(hist: Any, G: Any, beta: Any, xp: Any) -> Any:
    """The GGT history with ``G`` appended (weights √β per step of age, √(1 − β) new)."""
    old = hist[..., 1:] if beta is None else math.sqrt(beta) * hist[..., 1:]
    return xp.concat([old, (G if beta is None else math.sqrt(1.0 - beta) * G)[..., None]], axis=-1)


def fold(G: Any, s: Any, Z: Any, HZ: Any, Cb: Any, due: bool, i: int, h: dict[str, Any],
         xp: Any) -> dict[str, Any]:
    """Steps 2-3: the basis fields after this step's correction (when ``due``): ``L``, ``Q``,
    ``history``, ``sigma``, ``curvature_matrix``, ``hebbian_momentum``, ``hebbian_sq``."""
    out = {"L": s.L, "Q": s.Q, "history": s.history, "sigma": s.sigma, "curvature_matrix": s.curvature_matrix,
           "hebbian_momentum": s.hebbian_momentum, "hebbian_sq": s.hebbian_sq}
    basis = h["basis"]
    if basis == "ggt":
        out["history"] = _ggt_window(s.history, G, h["beta"], xp)
        if due:
            out["L"], out["Q"] = ggt_eigh(out["history"], rank=s.Q.shape[-1], xp=xp)
        return out
    if not due:
        return out
    C, w, decay, sigma = correction(h, G, s, Z, HZ, Cb, xp)
    if sigma is not None:
        out["sigma"] = sigma
    seed = int(h["seed"]) + i
    if basis in ("direct", "randomized"):
        out["L"], out["Q"] = lowrank_eigh_update(
            s.L, s.Q, C, signs=w, decay=decay, rank=s.Q.shape[-1], method=basis,
            seed=seed if basis == "randomized" else None, xp=xp)
    elif basis == "full":
        out["L"], out["Q"], out["curvature_matrix"] = _full(s.curvature_matrix, C, w, decay, xp)
    elif basis == "nystrom":
        out["L"], out["Q"] = _nystrom(s.L, s.Q, C, w, decay, seed, xp)
    else:  # hebbian, random: Q from its own rule (random: fixed), L = Rayleigh quotients
        if basis == "hebbian":
            out["Q"], out["hebbian_momentum"], out["hebbian_sq"] = _hebbian(
                s.Q, s.hebbian_momentum, s.hebbian_sq, C, w, s.step, h, xp)
        out["L"] = _rayleigh(s.L, out["Q"], s.Q, C, w, decay, xp)
    return out
