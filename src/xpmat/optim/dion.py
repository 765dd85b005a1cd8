"""Dion ([Pethick 2025][pethick-2025]; [Ahn et al. 2025][ahn-2025]): low-rank orthonormal updates.

Per matrix parameter ``X`` (viewed as ``m × n``; conv kernels ``(out, in·k·k)``), with momentum
buffer ``M`` (the error-feedback residual), warm-started right factor ``Q`` ``(n, r)``::

    B        = M + G                               (Δ ← g + e)
    P, R, Q  = PowerIter1(B; Q)                    (P = orth(B Q), R = Bᵀ P, Q = colnorm(R))
    M        = B − (1 − μ) P Rᵀ                    (decayed error feedback; μ = 0: e ← Δ − P Rᵀ)
    X        = X − s η √(m/n) P Qᵀ − s η λ X       (singular values set to 1; decoupled decay)

With ``mu=0`` this is Pethick's algorithm exactly (Δ ← g + e, e ← Δ − P Rᵀ, x ← x − γ P Qᵀ);
``mu > 0`` is the decayed form of microsoft/dion.  ``P Rᵀ`` is the rank-``r`` approximation
(singular values kept), so the residual only holds what the update has not yet used.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.optim._base import (
    Transform,
    _check_lists,
    bind,
    check_hyper,
    init_params,
    matrix_shape,
    resolve_rank,
    zeros_step,
)
from xpmat.orthogonalize import orthonormalize

__all__ = ["DEFAULTS", "DionState", "State", "init", "orthonormalize_rcqr", "transform", "update"]

DEFAULTS: dict[str, Any] = {
    "lr": 0.01,
    "mu": 0.95,
    "rank": 0.25,
    "rank_multiple_of": 1,
    "weight_decay": 0.0,
    "schedule": 1.0,
    "lr_scale": "fan",
    "orthogonalize": "auto",
    "oversample": 1.25,
    "seed": 0,
    "state_dtype": None,
}

_ORTH = ("auto", "householder", "cholesky_qr2", "rcqr")


class DionState(NamedTuple):
    """Per-parameter Dion state: error/momentum ``M`` (matrix view), right factor ``Q``
    ``(n, r)``, and for ``orthogonalize="rcqr"`` the fixed Gaussian ``sketch`` ``(k, m)``."""

    step: Any
    momentum: Any
    Q: Any
    sketch: Any = None


State = DionState


def _validate(h: dict[str, Any]) -> None:
    if not 0.0 <= h["mu"] < 1.0:
        raise ValueError(f"mu must lie in [0, 1), got {h['mu']}")
    if h["lr"] < 0 or h["weight_decay"] < 0:
        raise ValueError(f"lr and weight_decay must be >= 0, got {h['lr']}, {h['weight_decay']}")
    if h["lr_scale"] not in ("fan", None):
        raise ValueError(f"lr_scale must be 'fan' or None, got {h['lr_scale']!r}")
    if h["orthogonalize"] not in _ORTH:
        raise ValueError(f"orthogonalize must be one of {_ORTH}, got {h['orthogonalize']!r}")
    if h["oversample"] < 1.0:
        raise ValueError(f"oversample must be >= 1, got {h['oversample']}")


def init(params: list[Any], **hyper: Any) -> list[DionState]:
    """Zero momentum and a seeded Gaussian, column-normalized ``Q`` per matrix parameter.

    ``Q`` of parameter ``i`` is drawn on the host from ``seed + i`` (same on every backend).
    """
    h, items = init_params(params, hyper, DEFAULTS, "dion", _validate)
    out = []
    for i, p, xp, dev, dt in items:
        m, n = matrix_shape(p.shape, f"params[{i}]")
        r = resolve_rank(h["rank"], h["rank_multiple_of"], m, n)
        Q = _array.random_normal((n, r), seed=h["seed"] + i, xp=xp, dtype=dt, dev=dev)
        Q = Q / xp.linalg.vector_norm(Q, axis=0, keepdims=True)
        sketch = None
        if h["orthogonalize"] == "rcqr":
            k = min(m, max(r, math.ceil(h["oversample"] * r)))
            sketch = _array.random_normal((k, m), seed=h["seed"] + 7919 + i, xp=xp, dtype=dt,
                                          dev=dev) / math.sqrt(k)
        out.append(DionState(zeros_step(xp, dev), xp.zeros((m, n), dtype=dt, device=dev), Q, sketch))
    return out


def orthonormalize_rcqr(Y: Any, S: Any, xp: Any) -> Any:
    """Randomized Cholesky QR of ``Y`` ``(m, r)`` with sketch ``S`` ``(k, m)``, k ≥ r.

    ``R₁`` from a Householder QR of the small ``S Y``, ``Y₁ = Y R₁⁻¹`` (well conditioned with
    high probability), then one CholeskyQR step ``Y₁ = P R₂`` for orthonormality to precision.
    Zero columns are handled by a small diagonal shift.
    """
    _, R1 = xp.linalg.qr(S @ Y)
    d = xp.linalg.diagonal(R1)
    tiny = xp.finfo(Y.dtype).eps * (xp.max(xp.abs(d)) + xp.finfo(Y.dtype).smallest_normal)
    eye = xp.eye(R1.shape[-1], dtype=Y.dtype, device=_array.device(Y))
    R1 = R1 + eye * xp.where(xp.abs(d) < tiny, tiny, xp.zeros_like(d))
    Y1 = _array.solve_triangular(R1, Y, upper=True, left=False, xp=xp)
    G = _array.mT(Y1, xp) @ Y1
    L = xp.linalg.cholesky(G + eye * tiny)
    return _array.solve_triangular(_array.mT(L, xp), Y1, upper=True, left=False, xp=xp)


def _orth_p(Y: Any, s: DionState, xp: Any, method: str) -> Any:
    """``P = orth(Y)`` of ``Y = B Q`` (m, r): :func:`xpmat.orthonormalize`, or ``rcqr`` with
    the state's sketch (the data-parallel Dion calls this between its two all-reduces)."""
    if method == "rcqr":
        return orthonormalize_rcqr(Y, s.sketch, xp)
    return orthonormalize(Y, method=method, xp=xp)


def _power_step(B: Any, s: DionState, xp: Any, method: str) -> tuple[Any, Any, Any]:
    if method != "rcqr":
        from xpmat.iteration import power_iter1

        return power_iter1(B, s.Q, method=method, xp=xp)
    P = _orth_p(B @ s.Q, s, xp, method)
    R = _array.mT(B, xp) @ P
    return P, R, _array.normalize_columns(R, xp)


def _finish(B: Any, P: Any, R: Any, Qn: Any, s: DionState, p: Any, h: dict[str, Any],
            xp: Any) -> tuple[Any, DionState]:
    """After the power step: error feedback ``M = B − (1 − μ) P Rᵀ`` and the update
    ``−s η scale P Qₙᵀ − s η λ W`` (parameter-shaped), with the new state."""
    m, n = B.shape[-2], B.shape[-1]
    lr_t = float(h["schedule"]) * float(h["lr"])
    M = B - (1.0 - h["mu"]) * (P @ _array.mT(R, xp))
    scale = math.sqrt(m / n) if h["lr_scale"] == "fan" else 1.0
    u = xp.reshape((-lr_t * scale) * (P @ _array.mT(Qn, xp)), tuple(p.shape))
    if h["weight_decay"]:
        u = u - (lr_t * h["weight_decay"]) * _array.as_float(p, xp, s.momentum.dtype)
    return u, DionState(s.step + 1, M, Qn, s.sketch)


def update(grads: list[Any], state: list[DionState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[DionState]]:
    """One Dion step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2; conv kernels are viewed as ``(out, in·k·k)``).
    state : list of DionState
    **hyper
        ``lr`` (η), ``mu`` (μ, 0 = plain error feedback), ``rank`` (int, or float fraction of
        ``min(m, n)``), ``rank_multiple_of``, ``weight_decay`` (λ, decoupled, times η),
        ``schedule`` (s), ``lr_scale`` (``"fan"``: √(fan_out / fan_in) = √(m/n); ``None``: 1),
        ``orthogonalize`` (``"auto"``, ``"householder"``, ``"cholesky_qr2"`` through
        :func:`xpmat.power_iter1`, or ``"rcqr"``: randomized Cholesky QR with a fixed Gaussian
        sketch of ``ceil(oversample·r)`` rows), ``seed`` (initial ``Q``), ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of DionState

    Notes
    -----
    [Pethick 2025][pethick-2025] (the Dion loop and PowerIter1).  Fed the same gradient of rank ≤ r
    repeatedly with ``mu=0``, the residual ``M`` goes to zero (tested).  Zero gradients give
    zero updates (no NaN).

    Backends: standard Array API; QR / CholeskyQR2 through :func:`xpmat.orthonormalize`,
    ``rcqr`` uses ``xp.linalg.qr``, ``cholesky`` and :func:`xpmat._array.solve_triangular`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import dion
    >>> p = [np.zeros((4, 3))]
    >>> g = [np.outer([1.0, 2, 0, 0], [1.0, 0, 1])]         # rank 1
    >>> st = dion.init(p, rank=1)
    >>> u, st = dion.update(g, st, p, rank=1, mu=0.0, lr=1.0, lr_scale=None)
    >>> print(np.round(np.linalg.svd(u[0], compute_uv=False), 6), np.abs(st[0].momentum).max() < 1e-12)
    [1. 0. 0.] True
    """
    h = check_hyper(DEFAULTS, hyper, "dion")
    _validate(h)
    _check_lists(params, grads, state)
    ups, new = [], []
    for i, (g, s, p) in enumerate(zip(grads, state, params, strict=True)):
        xp = _array.array_namespace(g, p, names=(f"grads[{i}]", f"params[{i}]"))
        m, n = matrix_shape(p.shape, f"params[{i}]")
        B = s.momentum + xp.reshape(_array.as_float(g, xp, s.momentum.dtype), (m, n))
        P, R, Qn = _power_step(B, s, xp, h["orthogonalize"])
        u, st = _finish(B, P, R, Qn, s, p, h, xp)
        ups.append(u)
        new.append(st)
    return ups, new


def transform(**hyper: Any) -> Transform:
    """:class:`~xpmat.optim.Transform` with these hyper-parameters bound."""
    return bind(DEFAULTS, hyper, "dion", _validate, init, update)
