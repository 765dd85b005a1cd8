"""AdamNMF ([Stratos 2026, App. L.2][stratos-2026], two fixes): rank-r NMF second moment.

Per matrix parameter ``W`` (``m × n`` view; conv kernels ``(out, in·k·k)``), gradient ``G``::

    A₀ ~ U(0, ε)^{m×r},  B₀ ~ U(0, ε)^{r×n}                  (step 1, xpmat.nmf_online_init)
    A, B ← one blockwise EM step on G² from (A, B)            (step (b), xpmat.nmf_online_step;
                                                                G ∈ R^{m×n}, footnote 22)
    A, B ← max(A, floor), max(B, floor)                        (keeps the factors strictly positive)
    M ← β₁ M + (1 − β₁) G,  M̄ = M / (1 − β₁ᵗ)                 (only if beta1 > 0; published: G)
    W ← W − s η M̄ / (√(A B) + ε) − s η λ W                    (step (c))

Memory for the second moment: ``(m + n) r`` numbers instead of Adam's ``m n``.  ``beta`` (not in
the notes) makes the EM target the EMA ``β A B + (1 − β) G²`` instead of ``G²``.  The factor
floor is our addition: a multiplicative EM update cannot leave 0, so a gradient row that is
exactly zero once would otherwise pin that row of ``A B`` at 0 for good.  Matrix-only: 1-D
parameters go to AdamW (the torch class does it, or :func:`xpmat.optim.route`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from xpmat import _array
from xpmat.nmf import nmf_online_init, nmf_online_step
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

__all__ = ["DEFAULTS", "AdamNMFState", "State", "init", "transform", "update"]

DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "rank": 1,
    "beta1": 0.0,
    "beta": None,
    "eps": 1e-8,
    "init_scale": 1e-3,
    "factor_floor": 1e-12,
    "nmf_eps": 1e-30,
    "weight_decay": 0.0,
    "schedule": 1.0,
    "seed": 0,
    "state_dtype": None,
}


class AdamNMFState(NamedTuple):
    """Per-parameter AdamNMF state: factors ``A`` (m, r), ``B`` (r, n), optional momentum."""

    step: Any
    A: Any
    B: Any
    exp_avg: Any = None


State = AdamNMFState


def _validate(h: dict[str, Any]) -> None:
    if not 0.0 <= h["beta1"] < 1.0:
        raise ValueError(f"beta1 must lie in [0, 1), got {h['beta1']}")
    if h["beta"] is not None and not 0.0 <= h["beta"] < 1.0:
        raise ValueError(f"beta must be None or lie in [0, 1), got {h['beta']}")
    if h["lr"] < 0 or h["eps"] < 0 or h["weight_decay"] < 0 or h["factor_floor"] < 0:
        raise ValueError("lr, eps, weight_decay and factor_floor must be >= 0")
    if not h["init_scale"] > 0:
        raise ValueError(f"init_scale must be > 0, got {h['init_scale']}")
    resolve_rank(h["rank"], 1, 1, 1)


def init(params: list[Any], **hyper: Any) -> list[AdamNMFState]:
    """Random ``U(0, init_scale)`` factors (host draw, seed ``seed + i`` for ``params[i]``)."""
    h, items = init_params(params, hyper, DEFAULTS, "adamnmf", _validate)
    out = []
    for i, p, xp, dev, dt in items:
        m, n = matrix_shape(p.shape, f"params[{i}]")
        r = resolve_rank(h["rank"], 1, m, n)
        ref = xp.zeros((m, n), dtype=dt, device=dev)
        A, B = nmf_online_init(ref, r, scale=h["init_scale"], seed=int(h["seed"]) + i, xp=xp)
        out.append(AdamNMFState(zeros_step(xp, dev), A, B, xp.zeros_like(ref) if h["beta1"] else None))
    return out


def update(grads: list[Any], state: list[AdamNMFState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[AdamNMFState]]:
    """One AdamNMF step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2); 1-D ones raise ``ValueError`` (route them to AdamW).
    state : list of AdamNMFState
    **hyper
        ``lr`` (η), ``rank`` (r: int, or a fraction of min(m, n)), ``beta1`` (momentum, 0 =
        the raw gradient, as published), ``beta`` (None = EM target G², else the EMA target),
        ``eps`` (ε in the denominator), ``init_scale`` (ε of step 1), ``factor_floor``,
        ``nmf_eps`` (floor of ``A B`` inside the EM ratio), ``weight_decay`` (λ, decoupled,
        times s η), ``schedule`` (s), ``seed``, ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of AdamNMFState

    Notes
    -----
    [Stratos 2026, App. L.2][stratos-2026] (AdamNMF), eq. (124) and footnote 22 (blockwise
    EM, [References][departure-nmf-blockwise]).  The factors stay nonnegative
    (≥ ``factor_floor``); with rank 1 a single EM step already gives the rank-1
    I-divergence optimum ``G² 1 1ᵀ G² / (1ᵀ G² 1)`` of §4.7.
    A zero gradient gives a zero update.  NaN/Inf gradients propagate.

    Backends: standard Array API (the EM step has a NumPy fast path in :mod:`xpmat.nmf`).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import adamnmf
    >>> p = [np.zeros((3, 2))]
    >>> G = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    >>> st = adamnmf.init(p, rank=1)
    >>> u, st = adamnmf.update([G], st, p, lr=1.0, eps=0.0)
    >>> V = G**2
    >>> bool(np.allclose(st[0].A @ st[0].B, V.sum(1, keepdims=True) * V.sum(0) / V.sum()))
    True
    """
    h = check_hyper(DEFAULTS, hyper, "adamnmf")
    _validate(h)
    _check_lists(params, grads, state)
    lr_t = float(h["schedule"]) * float(h["lr"])
    b1, wd, floor = h["beta1"], h["weight_decay"], h["factor_floor"]
    ups, new = [], []
    for i, (g, s, p) in enumerate(zip(grads, state, params, strict=True)):
        xp = _array.array_namespace(g, p, names=(f"grads[{i}]", f"params[{i}]"))
        dt = s.A.dtype
        shape = matrix_shape(p.shape, f"params[{i}]")
        G = xp.reshape(_array.as_float(g, xp, dt), shape)
        step = s.step + 1
        A, B = nmf_online_step(G, s.A, s.B, beta=h["beta"], eps=h["nmf_eps"], xp=xp)
        if floor:
            A, B = xp.clip(A, min=floor), xp.clip(B, min=floor)
        M = None
        if b1:
            M = s.exp_avg + (1.0 - b1) * (G - s.exp_avg)
            num = M / xp.astype(1.0 - b1 ** step, dt)
        else:
            num = G
        u = -lr_t * (num / (xp.sqrt(A @ B) + h["eps"]))
        if wd:
            u = u - (lr_t * wd) * xp.reshape(_array.as_float(p, xp, dt), shape)
        ups.append(xp.reshape(u, tuple(p.shape)))
        new.append(AdamNMFState(step, A, B, M))
    return ups, new


def transform(**hyper: Any) -> Transform:
    """:class:`~xpmat.optim.Transform` with these hyper-parameters bound."""
    return bind(DEFAULTS, hyper, "adamnmf", _validate, init, update)
