"""Adafactor ([Stratos 2026, §4.7, eq. 52, and §4.7.1][stratos-2026]): factored second moment.

Per matrix parameter ``W`` (``m × n`` view; conv kernels ``(out, in·k·k)``), gradient ``G``::

    β₂ₜ = 1 − t^(−c)   (beta2_decay = −c, §4.7.1 item 5)   or a fixed β₂ (beta2_decay=None)
    a ← β₂ₜ a + (1 − β₂ₜ) (G² + ε₁) 1ₙ      s ← β₂ₜ s + (1 − β₂ₜ) (G² + ε₁)ᵀ 1ₘ      (eq. 52)
    w ← β₂ₜ w + (1 − β₂ₜ)                     (= 1 − β₂ᵗ for a fixed β₂; = 1 with the schedule)
    V̂ = a sᵀ / (w · 1ᵀ a)                     (xpmat.adafactor_second_moment)
    O = G / √V̂;   O ← O / max(1, RMS(O) / d)  (update clipping, item 3)
    M ← β₁ M + (1 − β₁) O  (only if β₁ > 0; item 2: no first moment by default)
    W ← W − s η · max(ε₂, RMS(W)) · M − s η λ W   (relative step / parameter scaling, item 4)

1-D (and 0-d) parameters keep an unfactored second moment ``v`` (same EMA on ``G² + ε₁``,
``V̂ = v / w``), as [Shazeer & Stern 2018][shazeer-stern-2018] do; so this method is NOT
matrix-only and needs no AdamW fallback.  As a composition::

    skip_nonfinite(chain(scale_by_factored_rms(β₂, c, ε₁), clip_by_rms(d), [ema(β₁)],
                         [scale_by_param_rms(ε₂)], add_decayed_weights(λ), scale_by_lr(s η)))

Hyper-parameter names follow ``torch.optim.Adafactor`` (``beta2_decay``, ``d``, ``eps`` as the
pair ``(ε₁, ε₂)``) and Adam (``betas = (β₁, β₂)``; β₁ = 0: no first moment, as the paper's
default).  With a fixed β₂ the factors are folded by :func:`xpmat.adafactor_factors`; with the
``1 − t^(−c)`` schedule β₂ₜ is a 0-d array computed from the step counter (no host read) and
the same eq. (52) fold is written out here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.nmf import AdafactorFactors, adafactor_factors, adafactor_second_moment
from xpmat.optim._base import (
    check_betas,
    check_bool,
    check_common,
    check_real,
    refuse_tensor_hyper,
    resolve_hyper,
    run_init,
    run_update,
    state_dtype_for,
    step_size,
    zeros_step,
)
from xpmat.optim._spec import MethodSpec
from xpmat.optim.transforms import (
    Transform,
    add_decayed_weights,
    chain,
    ema,
    per_parameter,
    scale_by_lr,
    skip_nonfinite,
)

__all__ = ["DEFAULTS", "RENAMED", "AdafactorState", "State", "clip_by_rms", "init",
           "scale_by_factored_rms", "scale_by_param_rms", "transform", "update"]

RENAMED = {"beta1": "betas=(beta1, beta2)", "beta2": "betas=(beta1, beta2)",
           "decay_rate": "beta2_decay", "eps1": "eps=(eps1, eps2)", "eps2": "eps=(eps1, eps2)",
           "clip_threshold": "d"}

SPEC = MethodSpec(
    name="adafactor",
    class_name="Adafactor",
    module=__name__,
    defaults={
        "lr": 1e-2,
        "betas": (0.0, 0.999),
        "beta2_decay": -0.8,
        "eps": (1e-30, 1e-3),
        "d": 1.0,
        "scale_parameter": True,
        "weight_decay": 0.0,
        "schedule": 1.0,
        "state_dtype": None,
    },
    types={"beta2_decay": "float | None"},
    renamed=RENAMED,
    doc="Adafactor (§4.7, eq. 52): rank-1 factored V, update clipping, RMS(W) step",
    demo={"lr": 0.01, "betas": (0.9, 0.999)},
    source="[Stratos 2026, §4.7][stratos-2026]; [Shazeer & Stern 2018][shazeer-stern-2018]",
    summary="""\
Adafactor ([Stratos 2026][stratos-2026] §4.7 eq. 52, §4.7.1) over :mod:`xpmat.optim.adafactor`::

    V̂ = rank-1 factored EMA of G² + ε₁ (β₂ₜ = 1 − t^beta2_decay);  O = G / √V̂
    O ← O / max(1, RMS(O) / d);  [M ← β₁ M + (1 − β₁) O];  W ← W − s η max(ε₂, RMS(W)) O − s η λ W

1-D parameters keep an unfactored second moment (no AdamW fallback).  Names as
``torch.optim.Adafactor`` (``beta2_decay``, ``eps``, ``d``).
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
betas : (float, float) in [0, 1)
    β₁ (0: no first moment, the paper's default), β₂ (used when ``beta2_decay`` is None).
beta2_decay : float < 0 or None
eps : (float, float) >= 0
    ε₁ added to G², ε₂ the floor of RMS(W).
d : float > 0
    Update clipping threshold.
scale_parameter : bool
    Relative step size ``max(ε₂, RMS(W))``.
weight_decay : float >= 0 or 1-element tensor
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults



class AdafactorState(NamedTuple):
    """Per-parameter state: row/column EMAs ``exp_avg_sq_row`` (m,), ``exp_avg_sq_col`` (n,)
    for matrices, ``exp_avg_sq`` for 1-D parameters, the weight ``w`` (0-d), the optional first
    moment ``exp_avg`` (β₁ > 0), ``step`` and the non-finite counter."""

    step: Any = None
    weight: Any = None
    exp_avg_sq_row: Any = None
    exp_avg_sq_col: Any = None
    exp_avg_sq: Any = None
    exp_avg: Any = None
    nonfinite_count: Any = None


class FactoredState(NamedTuple):
    """The state of :func:`scale_by_factored_rms`."""

    step: Any
    weight: Any
    exp_avg_sq_row: Any = None
    exp_avg_sq_col: Any = None
    exp_avg_sq: Any = None


State = AdafactorState


def _view(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape if len(shape) < 2 else (shape[0], math.prod(shape[1:]))


def _rms(x: Any, xp: Any) -> Any:
    return xp.sqrt(xp.mean(x * x)) if x.ndim else xp.abs(x)


def _fold(G: Any, s: FactoredState, b2: Any, eps1: float, xp: Any) -> tuple[Any, FactoredState]:
    """Eq. (52) with β₂ a float or a 0-d array: the new state and ``V̂``."""
    step = s.step + 1
    if G.ndim < 2:
        v = b2 * s.exp_avg_sq + (1.0 - b2) * (G * G + eps1)
        w = b2 * s.weight + (1.0 - b2)
        return v / w, FactoredState(step, w, exp_avg_sq=v)
    prev = AdafactorFactors(s.exp_avg_sq_row, s.exp_avg_sq_col, s.weight)
    if isinstance(b2, float):
        f = adafactor_factors(G, prev, beta2=b2, eps=eps1, xp=xp)
    else:  # a time-varying β₂ₜ
        V = G * G + eps1
        f = AdafactorFactors(b2 * prev.a + (1.0 - b2) * xp.sum(V, axis=-1),
                             b2 * prev.s + (1.0 - b2) * xp.sum(V, axis=-2), b2 * prev.weight + (1.0 - b2))
    return adafactor_second_moment(f, xp=xp), FactoredState(step, f.weight, f.a, f.s)


def scale_by_factored_rms(beta2: float = 0.999, beta2_decay: float | None = -0.8, eps1: float = 1e-30,
                          *, state_dtype: Any = None) -> Transform:
    """``G / √V̂`` with Adafactor's factored second moment (eq. 52; 0 where ``V̂ = 0``): rank-1
    row/column EMAs for ndim ≥ 2 (the ``(out, prod(rest))`` view), an unfactored EMA for 1-D
    and 0-d; β₂ₜ = ``1 − t^beta2_decay`` (a 0-d array, no host read) or a fixed ``beta2``."""

    def init_one(p, xp):
        dev, dt = _array.device(p), state_dtype_for(p, xp, state_dtype)
        shape = _view(tuple(p.shape))
        z = xp.zeros((), dtype=dt, device=dev)
        if len(shape) == 2:
            return FactoredState(zeros_step(xp, dev), z, xp.zeros((shape[0],), dtype=dt, device=dev),
                                 xp.zeros((shape[1],), dtype=dt, device=dev))
        return FactoredState(zeros_step(xp, dev), z, exp_avg_sq=xp.zeros(shape, dtype=dt, device=dev))

    def update_one(g, s, p, xp):
        dt = s.weight.dtype
        G = xp.reshape(_array.as_float(g, xp, dt), _view(tuple(p.shape)))
        b2 = beta2 if beta2_decay is None else xp.astype(1.0 - (s.step + 1) ** float(beta2_decay), dt)
        Vhat, s = _fold(G, s, b2, eps1, xp)
        pos = Vhat > 0
        O = xp.where(pos, G / xp.sqrt(xp.where(pos, Vhat, xp.ones_like(Vhat))), xp.zeros_like(G))
        return xp.reshape(O, tuple(p.shape)), s

    return per_parameter(init_one, update_one, FactoredState)


def clip_by_rms(d: float) -> Transform:
    """Update clipping (§4.7.1 item 3): ``u / max(1, RMS(u) / d)``, per parameter."""
    check_real("d", d, low_open=True)

    def update_one(u, s, p, xp):
        r = _rms(u, xp) / d
        return u / xp.where(r > 1.0, r, xp.ones_like(r)), s

    return per_parameter(None, update_one)


def scale_by_param_rms(eps2: float) -> Transform:
    """Relative step size (§4.7.1 item 4): ``max(ε₂, RMS(W)) u``."""

    def update_one(u, s, p, xp):
        rw = _rms(_array.as_float(p, xp, u.dtype), xp)
        return xp.where(rw > eps2, rw, xp.full_like(rw, eps2)) * u, s

    return per_parameter(None, update_one)


def transform(**hyper: Any) -> Transform:
    """Adafactor as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters:
    :func:`update`)."""
    h = resolve_hyper(DEFAULTS, hyper, "adafactor", RENAMED)
    check_common(h)
    refuse_tensor_hyper(h, ("betas",), "adafactor", "β₁ = 0 decides whether a first moment is kept")
    (b1, b2), (eps1, eps2), c = h["betas"], h["eps"], h["beta2_decay"]
    check_betas("betas", h["betas"])
    check_real("beta2_decay", c, -math.inf, 0.0, high_open=True, none=True)
    check_real("eps[0]", eps1)
    check_real("eps[1]", eps2)
    check_bool("scale_parameter", h["scale_parameter"])
    steps = [scale_by_factored_rms(b2, c, eps1, state_dtype=h["state_dtype"]), clip_by_rms(h["d"])]
    if b1:
        steps.append(ema(b1, state_dtype=h["state_dtype"]))
    if h["scale_parameter"]:
        steps.append(scale_by_param_rms(eps2))
    steps += [add_decayed_weights(h["weight_decay"]), scale_by_lr(step_size(h))]
    return skip_nonfinite(chain(*steps, state=AdafactorState))


def init(params: list[Any], **hyper: Any) -> list[AdafactorState]:
    """Zero factors (matrices), zero ``exp_avg_sq`` (1-D), ``weight = 0``, ``step = 0``."""
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[AdafactorState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[AdafactorState]]:
    """One Adafactor step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays
        Any shapes; ndim ≥ 2 are factored in the ``(out, prod(rest))`` view, 1-D / 0-d are not.
    state : list of AdafactorState
    **hyper
        ``lr`` (η ≥ 0), ``betas`` (β₁, β₂ in [0, 1): β₁ = 0 keeps no first moment; β₂ is used
        when ``beta2_decay`` is None, then bias-corrected by ``w = 1 − β₂ᵗ``), ``beta2_decay``
        (−c < 0: β₂ₜ = 1 − t^(−c)), ``eps`` (``(ε₁, ε₂)``: ε₁ added to G², ε₂ the floor of
        RMS(W)), ``d`` (clipping threshold > 0), ``scale_parameter`` (relative step: multiply η
        by max(ε₂, RMS(W))), ``weight_decay`` (λ ≥ 0, decoupled, times s η), ``schedule`` (s),
        ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of AdafactorState

    Notes
    -----
    [Stratos 2026][stratos-2026] §4.7 eq. (52) and §4.7.1 items 1–5.  Memory: ``m + n`` numbers
    per matrix instead of ``m n`` (plus ``m n`` for the optional first moment).  A zero
    gradient gives a zero update (``ε₁ > 0`` keeps V̂ positive; with ``ε₁ = 0`` entries with
    V̂ = 0 give 0, not NaN).  A gradient with a NaN or ±Inf entry is skipped
    (``nonfinite_count``); the state never holds NaN.

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
    return run_update(transform(**hyper), grads, state, params)
