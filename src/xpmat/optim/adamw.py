"""AdamW ([Stratos 2026, §4, Fig. 1][stratos-2026]): a pure functional core on any Array API library.

Per parameter, with gradient :math:`g_t` and step :math:`t = 1, 2, \\dots`::

    m_t = β₁ m_{t-1} + (1 − β₁) g_t            v_t = β₂ v_{t-1} + (1 − β₂) g_t²
    m̄_t = m_t / (1 − β₁ᵗ)                       (Nesterov, Dozat §4.3:
                                                  m̄_t = β₁ m_t / (1 − β₁ᵗ⁺¹) + (1 − β₁) g_t / (1 − β₁ᵗ))
    v̄_t = v_t / (1 − β₂ᵗ);  AMSGrad: v̄_t ← max(v̄_{t-1}, v̄_t)   (max AFTER bias correction, §4.2)
    o_t = m̄_t / (√v̄_t + ε)      or   atan2(m̄_t, √v̄_t)   (Adam-atan2, §4.1.2, ε-free)
    w_{t+1} = w_t − s_t η o_t − decay                                  (§4.4)

Weight decay (``weight_decay_mode``), with schedule multiplier ``s = schedule``:
``"lr"`` (default, PyTorch's AdamW) decay ``s η λ w``; ``"decoupled"``
([Wortsman et al. 2024][wortsman-2024], §4.4) decay ``s λ w`` independent of η;
``"l2"`` (classic Adam) adds ``λ w`` to the gradient.
With default flags the step equals ``torch.optim.AdamW`` to float precision.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from xpmat import _array
from xpmat.optim._base import Transform, _check_lists, bind, check_hyper, state_dtype_for, zeros_step

__all__ = ["DEFAULTS", "AdamWState", "State", "init", "transform", "update"]

DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 1e-2,
    "weight_decay_mode": "lr",
    "schedule": 1.0,
    "amsgrad": False,
    "nesterov": False,
    "atan2": False,
    "state_dtype": None,
}

_MODES = ("lr", "decoupled", "l2")


class AdamWState(NamedTuple):
    """Per-parameter AdamW state (keys match ``torch.optim.AdamW``'s ``self.state[p]``)."""

    step: Any
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any = None  # bias-corrected running max (AMSGrad only)


State = AdamWState


def _validate(h: dict[str, Any]) -> None:
    b1, b2 = h["betas"]
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"betas must lie in [0, 1), got {h['betas']}")
    if h["lr"] < 0 or h["eps"] < 0 or h["weight_decay"] < 0:
        raise ValueError(f"lr, eps and weight_decay must be >= 0, got lr={h['lr']}, eps={h['eps']}, "
                         f"weight_decay={h['weight_decay']}")
    if h["weight_decay_mode"] not in _MODES:
        raise ValueError(f"weight_decay_mode must be one of {_MODES}, got {h['weight_decay_mode']!r}")


def init_one(p: Any, *, amsgrad: bool = False, state_dtype: Any = None) -> AdamWState:
    """Zero state for one parameter ``p`` (any shape)."""
    xp = _array.array_namespace(p, names=("param",))
    dev = _array.device(p)
    dt = state_dtype_for(p, xp, state_dtype)
    z = xp.zeros(tuple(p.shape), dtype=dt, device=dev)
    return AdamWState(zeros_step(xp, dev), z, xp.zeros_like(z),
                      xp.zeros_like(z) if amsgrad else None)


def init(params: list[Any], **hyper: Any) -> list[AdamWState]:
    """AdamW state for each parameter: ``step = 0``, zero moments (and the AMSGrad max).

    Parameters
    ----------
    params : list of arrays
        Parameters of any shape, from one Array API library.
    **hyper
        The hyper-parameters of :data:`DEFAULTS` (``amsgrad`` and ``state_dtype`` matter here).
    """
    h = check_hyper(DEFAULTS, hyper, "adamw")
    _check_lists(params)
    return [init_one(p, amsgrad=h["amsgrad"], state_dtype=h["state_dtype"]) for p in params]


def adam_direction(g: Any, s: AdamWState, xp: Any, *, betas: tuple[float, float], eps: float,
                   amsgrad: bool, nesterov: bool, atan2: bool) -> tuple[Any, AdamWState]:
    """One Adam moment update and the normalized direction ``o_t`` (no learning rate, no decay).

    ``g`` must already be in the state dtype.  Shared by AdamW, the AdamW fallback of matrix
    methods and PowerSGD's AdamW base.
    """
    b1, b2 = betas
    dt = s.exp_avg.dtype
    step = s.step + 1
    m = s.exp_avg + (1.0 - b1) * (g - s.exp_avg)  # = lerp(m, g, 1 − β₁), as torch
    v = s.exp_avg_sq * b2 + (1.0 - b2) * (g * g)
    bc1 = xp.astype(1.0 - b1 ** step, dt)
    bc2_sqrt = xp.astype(xp.sqrt(1.0 - b2 ** step), dt)
    if nesterov:  # Dozat (§4.3): m̄ = β₁ m_t / (1 − β₁ᵗ⁺¹) + (1 − β₁) g_t / (1 − β₁ᵗ)
        bc1_next = xp.astype(1.0 - b1 ** (step + 1), dt)
        m_bar = (b1 * m) / bc1_next + ((1.0 - b1) * g) / bc1
    else:
        m_bar = m / bc1
    vmax = None
    if amsgrad:  # running max of the bias-corrected second moment (§4.2, Fig. 1)
        v_bar = v / (bc2_sqrt * bc2_sqrt)
        vmax = xp.maximum(s.max_exp_avg_sq, v_bar)
        root = xp.sqrt(vmax)
    else:
        root = xp.sqrt(v) / bc2_sqrt
    o = xp.atan2(m_bar, root) if atan2 else m_bar / (root + eps)
    return o, AdamWState(step, m, v, vmax)


def update(grads: list[Any], state: list[AdamWState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[AdamWState]]:
    """One AdamW step: ``(updates, new_state)`` with ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays
        Same shapes, any shape per entry, one Array API library and device.  Integer
        parameters are promoted to the default floating dtype.
    state : list of AdamWState
        From :func:`init` or a previous :func:`update`.
    **hyper
        ``lr`` (η), ``betas`` (β₁, β₂), ``eps`` (ε), ``weight_decay`` (λ),
        ``weight_decay_mode`` (``"lr"`` | ``"decoupled"`` | ``"l2"``), ``schedule`` (s, the
        multiplier of η and λ), ``amsgrad``, ``nesterov``, ``atan2``, ``state_dtype``.

    Returns
    -------
    updates : list of arrays
        In the state dtype (float32 for bf16 parameters).
    new_state : list of AdamWState

    Notes
    -----
    [Stratos 2026][stratos-2026] §4 (eq. 46), §4.1.1 (ε), §4.1.2 (atan2), §4.2 (AMSGrad max after
    bias correction), §4.3 (Nesterov, [Dozat 2016][dozat-2016]), §4.4 (weight decay), Fig. 1.  NaN or Inf in a
    gradient propagate into that parameter's update and state (no silent skipping).

    Backends: standard Array API only (``atan2``, ``sqrt``, ``maximum``); runs everywhere.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import adamw
    >>> p = [np.ones((2, 2))]
    >>> st = adamw.init(p)
    >>> u, st = adamw.update([np.full((2, 2), 0.5)], st, p, lr=0.1, weight_decay=0.0)
    >>> np.round(u[0], 6).tolist()   # first step: −η · sign(g)
    [[-0.1, -0.1], [-0.1, -0.1]]
    """
    h = check_hyper(DEFAULTS, hyper, "adamw")
    _validate(h)
    _check_lists(params, grads, state)
    lr_t = float(h["schedule"]) * float(h["lr"])
    wd, mode = h["weight_decay"], h["weight_decay_mode"]
    ups, new = [], []
    for i, (g, s, p) in enumerate(zip(grads, state, params, strict=True)):
        xp = _array.array_namespace(g, p, names=(f"grads[{i}]", f"params[{i}]"))
        dt = s.exp_avg.dtype
        g = _array.as_float(g, xp, dt)
        pf = _array.as_float(p, xp, dt)
        if mode == "l2" and wd:
            g = g + wd * pf
        o, s = adam_direction(g, s, xp, betas=h["betas"], eps=h["eps"], amsgrad=h["amsgrad"],
                              nesterov=h["nesterov"], atan2=h["atan2"])
        u = -lr_t * o
        if wd and mode == "lr":
            u = u - (lr_t * wd) * pf
        elif wd and mode == "decoupled":
            u = u - (h["schedule"] * wd) * pf
        ups.append(u)
        new.append(s)
    return ups, new


def transform(**hyper: Any) -> Transform:
    """:class:`~xpmat.optim.Transform` with these hyper-parameters bound."""
    return bind(DEFAULTS, hyper, "adamw", _validate, init, update)
