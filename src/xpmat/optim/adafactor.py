"""Adafactor ([Stratos 2026, §4.7, eq. 52, and §4.7.1][stratos-2026]): factored second moment.

Per matrix parameter ``W`` (``m × n`` view; conv kernels ``(out, in·k·k)``), gradient ``G``::

    β₂ₜ = 1 − t^(−c)   (decay_rate = −c, §4.7.1 item 5)   or a fixed β₂ (decay_rate=None)
    a ← β₂ₜ a + (1 − β₂ₜ) (G² + ε₁) 1ₙ      s ← β₂ₜ s + (1 − β₂ₜ) (G² + ε₁)ᵀ 1ₘ      (eq. 52)
    w ← β₂ₜ w + (1 − β₂ₜ)                     (= 1 − β₂ᵗ for a fixed β₂; = 1 with the schedule)
    V̂ = a sᵀ / (w · 1ᵀ a)                     (xpmat.adafactor_second_moment)
    O = G / √V̂;   O ← O / max(1, RMS(O) / d)  (update clipping, item 3)
    M ← β₁ M + (1 − β₁) O  (only if beta1 is set; item 2: no first moment by default)
    W ← W − s η · max(ε₂, RMS(W)) · M − s η λ W   (relative step / parameter scaling, item 4)

1-D (and 0-d) parameters keep an unfactored second moment ``v`` (same EMA on ``G² + ε₁``,
``V̂ = v / w``), as [Shazeer & Stern 2018][shazeer-stern-2018] do; so this method is NOT
matrix-only and needs no AdamW fallback.
With a fixed β₂ the factors are folded by :func:`xpmat.adafactor_factors`; with the
``1 − t^(−c)`` schedule β₂ₜ is a 0-d array computed from the step counter (no host read) and
the same eq. (52) fold is written out here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.nmf import AdafactorFactors, adafactor_factors, adafactor_second_moment
from xpmat.optim._base import (
    Transform,
    _check_lists,
    bind,
    check_hyper,
    init_params,
    zeros_step,
)

__all__ = ["DEFAULTS", "AdafactorState", "State", "init", "transform", "update"]

DEFAULTS: dict[str, Any] = {
    "lr": 1e-2,
    "beta1": None,
    "beta2": 0.999,
    "decay_rate": -0.8,
    "eps1": 1e-30,
    "eps2": 1e-3,
    "clip_threshold": 1.0,
    "scale_parameter": True,
    "weight_decay": 0.0,
    "schedule": 1.0,
    "state_dtype": None,
}


class AdafactorState(NamedTuple):
    """Per-parameter state: row/column EMAs ``a`` (m,), ``s`` (n,) for matrices, ``v`` for
    1-D parameters, the weight ``w`` (0-d) and the optional first moment (matrix view)."""

    step: Any
    weight: Any
    exp_avg_sq_row: Any = None
    exp_avg_sq_col: Any = None
    exp_avg_sq: Any = None
    exp_avg: Any = None


State = AdafactorState


def _validate(h: dict[str, Any]) -> None:
    if h["beta1"] is not None and not 0.0 <= h["beta1"] < 1.0:
        raise ValueError(f"beta1 must be None or lie in [0, 1), got {h['beta1']}")
    if h["decay_rate"] is None:
        if not 0.0 <= h["beta2"] < 1.0:
            raise ValueError(f"beta2 must lie in [0, 1), got {h['beta2']}")
    elif not h["decay_rate"] < 0.0:
        raise ValueError(f"decay_rate must be < 0 (β₂ = 1 − t^decay_rate) or None, got {h['decay_rate']}")
    if h["lr"] < 0 or h["eps1"] < 0 or h["eps2"] < 0 or h["weight_decay"] < 0:
        raise ValueError("lr, eps1, eps2 and weight_decay must be >= 0")
    if not h["clip_threshold"] > 0:
        raise ValueError(f"clip_threshold must be > 0, got {h['clip_threshold']}")


def _view(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape if len(shape) < 2 else (shape[0], math.prod(shape[1:]))


def init(params: list[Any], **hyper: Any) -> list[AdafactorState]:
    """Zero factors (matrices), zero ``v`` (1-D), ``weight = 0``, ``step = 0``."""
    h, items = init_params(params, hyper, DEFAULTS, "adafactor", _validate)
    out = []
    for _, p, xp, dev, dt in items:
        shape = _view(tuple(p.shape))
        z = xp.zeros((), dtype=dt, device=dev)
        m1 = xp.zeros(shape, dtype=dt, device=dev) if h["beta1"] is not None else None
        if len(shape) == 2:
            out.append(AdafactorState(zeros_step(xp, dev), z, xp.zeros((shape[0],), dtype=dt, device=dev),
                                      xp.zeros((shape[1],), dtype=dt, device=dev), None, m1))
        else:
            out.append(AdafactorState(zeros_step(xp, dev), z, None, None,
                                      xp.zeros(shape, dtype=dt, device=dev), m1))
    return out


def _rms(x: Any, xp: Any) -> Any:
    return xp.sqrt(xp.mean(x * x)) if x.ndim else xp.abs(x)


def update(grads: list[Any], state: list[AdafactorState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[AdafactorState]]:
    """One Adafactor step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays
        Any shapes; ndim ≥ 2 are factored in the ``(out, prod(rest))`` view, 1-D / 0-d are not.
    state : list of AdafactorState
    **hyper
        ``lr`` (η), ``beta1`` (None: no first moment), ``beta2`` (fixed β₂, used when
        ``decay_rate`` is None, then bias-corrected by ``w = 1 − β₂ᵗ``), ``decay_rate`` (−c:
        β₂ₜ = 1 − t^(−c)), ``eps1`` (added to G²), ``eps2`` (floor of RMS(W)),
        ``clip_threshold`` (d), ``scale_parameter`` (relative step: multiply η by
        max(ε₂, RMS(W))), ``weight_decay`` (λ, decoupled, times s η), ``schedule`` (s),
        ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of AdafactorState

    Notes
    -----
    [Stratos 2026][stratos-2026] §4.7 eq. (52) and §4.7.1 items 1–5.  Memory: ``m + n`` numbers
    per matrix instead of ``m n`` (plus ``m n`` for the optional first moment).  A zero
    gradient gives a zero update (``ε₁ > 0`` keeps V̂ positive; with ``eps1=0`` entries with
    V̂ = 0 give 0, not NaN).  NaN/Inf gradients propagate into the update and state.

    Backends: standard Array API only; runs everywhere.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import adafactor
    >>> p = [np.ones((3, 2))]
    >>> st = adafactor.init(p)
    >>> u, st = adafactor.update([np.full((3, 2), 0.5)], st, p, lr=0.1)
    >>> np.round(u[0], 6).tolist()    # first step: −η · RMS(W) · sign(G) (β₂₁ = 0)
    [[-0.1, -0.1], [-0.1, -0.1], [-0.1, -0.1]]
    """
    h = check_hyper(DEFAULTS, hyper, "adafactor")
    _validate(h)
    _check_lists(params, grads, state)
    lr_t = float(h["schedule"]) * float(h["lr"])
    b1, c, eps1, d, wd = h["beta1"], h["decay_rate"], h["eps1"], h["clip_threshold"], h["weight_decay"]
    ups, new = [], []
    for i, (g, s, p) in enumerate(zip(grads, state, params, strict=True)):
        xp = _array.array_namespace(g, p, names=(f"grads[{i}]", f"params[{i}]"))
        dt = s.weight.dtype
        shape = _view(tuple(p.shape))
        G = xp.reshape(_array.as_float(g, xp, dt), shape)
        P = xp.reshape(_array.as_float(p, xp, dt), shape)
        step = s.step + 1
        if c is None:
            b2 = h["beta2"]
        else:  # β₂ₜ = 1 − t^(−c): a 0-d array, no host read of the counter
            b2 = xp.astype(1.0 - step ** float(c), dt)
        row = col = v = None
        if len(shape) == 2:
            prev = AdafactorFactors(s.exp_avg_sq_row, s.exp_avg_sq_col, s.weight)
            if c is None:
                f = adafactor_factors(G, prev, beta2=b2, eps=eps1, xp=xp)
            else:  # eq. (52) with a time-varying β₂ₜ
                V = G * G + eps1
                f = AdafactorFactors(b2 * prev.a + (1.0 - b2) * xp.sum(V, axis=-1),
                                     b2 * prev.s + (1.0 - b2) * xp.sum(V, axis=-2),
                                     b2 * prev.weight + (1.0 - b2))
            row, col, w = f.a, f.s, f.weight
            Vhat = adafactor_second_moment(f, xp=xp)
        else:
            v = b2 * s.exp_avg_sq + (1.0 - b2) * (G * G + eps1)
            w = b2 * s.weight + (1.0 - b2)
            Vhat = v / w
        pos = Vhat > 0
        O = xp.where(pos, G / xp.sqrt(xp.where(pos, Vhat, xp.ones_like(Vhat))), xp.zeros_like(G))
        r = _rms(O, xp) / d
        O = O / xp.where(r > 1.0, r, xp.ones_like(r))                 # update clipping (item 3)
        m1 = None
        if b1 is not None:
            m1 = s.exp_avg + (1.0 - b1) * (O - s.exp_avg)
            O = m1
        if h["scale_parameter"]:                                      # relative step (item 4)
            rw = _rms(P, xp)
            scale = xp.where(rw > h["eps2"], rw, xp.full_like(rw, h["eps2"]))
            u = (-lr_t) * scale * O
        else:
            u = -lr_t * O
        if wd:
            u = u - (lr_t * wd) * P
        ups.append(xp.reshape(u, tuple(p.shape)))
        new.append(AdafactorState(step, w, row, col, v, m1))
    return ups, new


def transform(**hyper: Any) -> Transform:
    """:class:`~xpmat.optim.Transform` with these hyper-parameters bound."""
    return bind(DEFAULTS, hyper, "adafactor", _validate, init, update)
