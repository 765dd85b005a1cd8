"""PowerSGD and PowerSGD+ ([Xie et al. 2025][xie-chen-yuan-2025] §3–4, eq. 7a–7c, Alg. 2), in one process.

Per matrix parameter ``X`` (``m × n`` view) with error ``e``, warm-started ``Q`` ``(n, r)``::

    Δ_t = g_t + e_t                                              (7a)
    P̃_t = QR(Δ_t Q_{t−1}),  Q_t = Δ_tᵀ P̃_t,  Δ̂_t = P̃_t Q_tᵀ      (7b, eq. 9: PowerIter1)
      PowerSGD+ (``restart_every=τ``), when t mod τ = 0:  P̃_t = U[:, :r] of SVD(Δ_t)   (Alg. 2)
    e_{t+1} = Δ_t − Δ̂_t
    m_t = μ m_{t−1} + Δ̂_t,  X_{t+1} = X_t − η m_t                 (7c, base="sgd")
    or Δ̂_t fed to the AdamW direction as its gradient              (base="adamw")

``t`` counts from 0, so PowerSGD+ starts with an SVD step.  The restart decision reads the
step counter on the host once per step (one scalar copy; nothing else leaves the device).
The multi-process form (all-reduce of P and Q) belongs to :mod:`xpmat.distributed`.
"""

from __future__ import annotations

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
from xpmat.optim.adamw import AdamWState, adam_direction

__all__ = ["DEFAULTS", "PowerSGDState", "State", "init", "transform", "update"]

DEFAULTS: dict[str, Any] = {
    "lr": 0.01,
    "momentum": 0.9,
    "rank": 4,
    "rank_multiple_of": 1,
    "restart_every": None,
    "svd": "full",
    "base": "sgd",
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.0,
    "schedule": 1.0,
    "orthogonalize": "auto",
    "seed": 0,
    "state_dtype": None,
}


class PowerSGDState(NamedTuple):
    """Per-parameter state: ``error`` e and ``exp_avg`` (momentum m, or Adam's first moment)
    in the matrix view, ``Q`` ``(n, r)``, and ``exp_avg_sq`` for ``base="adamw"``."""

    step: Any
    error: Any
    Q: Any
    exp_avg: Any
    exp_avg_sq: Any = None


State = PowerSGDState


def _validate(h: dict[str, Any]) -> None:
    if not 0.0 <= h["momentum"] < 1.0:
        raise ValueError(f"momentum must lie in [0, 1), got {h['momentum']}")
    if h["base"] not in ("sgd", "adamw"):
        raise ValueError(f"base must be 'sgd' or 'adamw', got {h['base']!r}")
    if h["svd"] not in ("full", "randomized"):
        raise ValueError(f"svd must be 'full' or 'randomized', got {h['svd']!r}")
    tau = h["restart_every"]
    if tau is not None and (isinstance(tau, bool) or not isinstance(tau, int) or tau < 1):
        raise ValueError(f"restart_every must be None or an int >= 1, got {tau!r}")
    if h["lr"] < 0 or h["weight_decay"] < 0:
        raise ValueError(f"lr and weight_decay must be >= 0, got {h['lr']}, {h['weight_decay']}")


def init(params: list[Any], **hyper: Any) -> list[PowerSGDState]:
    """Zero error and momentum, seeded Gaussian ``Q`` (parameter ``i`` from ``seed + i``)."""
    h, items = init_params(params, hyper, DEFAULTS, "powersgd", _validate)
    out = []
    for i, p, xp, dev, dt in items:
        m, n = matrix_shape(p.shape, f"params[{i}]")
        r = resolve_rank(h["rank"], h["rank_multiple_of"], m, n)
        Q = _array.random_normal((n, r), seed=h["seed"] + i, xp=xp, dtype=dt, dev=dev)
        z = xp.zeros((m, n), dtype=dt, device=dev)
        out.append(PowerSGDState(zeros_step(xp, dev), z, Q, xp.zeros_like(z),
                                 xp.zeros_like(z) if h["base"] == "adamw" else None))
    return out


def _svd_compress(D: Any, r: int, xp: Any, how: str, seed: int) -> tuple[Any, Any, Any]:
    """SVD-Comp of Alg. 1: ``P̃ = U[:, :r]``, ``R = Δᵀ P̃``, ``Q = colnorm(R)``."""
    if how == "full":
        U, _, _ = _array.svd(D, xp)
        P = U[:, :r]
    else:
        from xpmat.iteration import randomized_svd

        P, _, _ = randomized_svd(D, r, seed=seed, xp=xp)
    R = _array.mT(D, xp) @ P
    return P, R, _array.normalize_columns(R, xp)


def update(grads: list[Any], state: list[PowerSGDState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[PowerSGDState]]:
    """One PowerSGD / PowerSGD+ step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2; conv kernels viewed as ``(out, in·k·k)``).
    state : list of PowerSGDState
    **hyper
        ``lr`` (η), ``momentum`` (μ of eq. 7c), ``rank`` (int or float fraction),
        ``rank_multiple_of``, ``restart_every`` (τ: ``None`` = PowerSGD, int = PowerSGD+),
        ``svd`` (``"full"`` or ``"randomized"`` for the restart), ``base`` (``"sgd"`` or
        ``"adamw"``; ``betas``, ``eps`` for the latter), ``weight_decay`` (decoupled, times η),
        ``schedule`` (s multiplies η), ``orthogonalize`` (passed to
        :func:`xpmat.power_iter1`), ``seed``, ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of PowerSGDState

    Notes
    -----
    [Xie et al. 2025][xie-chen-yuan-2025] eq. (7a)–(7c), (9), Algorithm 2.  Theorem 1 (eq. 10): on the 2×2
    counterexample PowerSGD's updates stay in span(B) in exact arithmetic while PowerSGD+'s
    SVD restarts escape; see ``docs/optim.md`` for what floating point does here.

    Backends: standard Array API; ``xp.linalg.svd`` for the restart (or
    :func:`xpmat.randomized_svd`), :func:`xpmat.power_iter1` otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import powersgd
    >>> p = [np.zeros((3, 3))]
    >>> g = [np.diag([3.0, 2.0, 1.0])]
    >>> st = powersgd.init(p, rank=1, restart_every=10)
    >>> u, st = powersgd.update(g, st, p, rank=1, restart_every=10, lr=1.0, momentum=0.0)
    >>> np.round(-u[0], 6).tolist(), np.round(st[0].error, 6).tolist()[1]
    ([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [0.0, 2.0, 0.0])
    """
    h = check_hyper(DEFAULTS, hyper, "powersgd")
    _validate(h)
    _check_lists(params, grads, state)
    lr_t = float(h["schedule"]) * float(h["lr"])
    tau = h["restart_every"]
    ups, new = [], []
    for i, (g, s, p) in enumerate(zip(grads, state, params, strict=True)):
        xp = _array.array_namespace(g, p, names=(f"grads[{i}]", f"params[{i}]"))
        m, n = matrix_shape(p.shape, f"params[{i}]")
        dt = s.error.dtype
        D = s.error + xp.reshape(_array.as_float(g, xp, dt), (m, n))  # (7a)
        t = None
        if tau is not None:
            t = int(s.step)  # host read: the SVD branch of Alg. 2 is a Python branch
        if t is not None and t % tau == 0:
            P, R, Qn = _svd_compress(D, s.Q.shape[-1], xp, h["svd"], h["seed"] + t)
        else:
            from xpmat.iteration import power_iter1

            P, R, Qn = power_iter1(D, s.Q, method=h["orthogonalize"], xp=xp)
        D_hat = P @ _array.mT(R, xp)  # (7b)
        err = D - D_hat
        if h["base"] == "sgd":
            mom = h["momentum"] * s.exp_avg + D_hat  # (7c)
            u = -lr_t * mom
            st = PowerSGDState(s.step + 1, err, Qn, mom, None)
        else:
            o, a = adam_direction(D_hat, AdamWState(s.step, s.exp_avg, s.exp_avg_sq), xp,
                                  betas=h["betas"], eps=h["eps"], amsgrad=False, nesterov=False,
                                  atan2=False)
            u = -lr_t * o
            st = PowerSGDState(a.step, err, Qn, a.exp_avg, a.exp_avg_sq)
        u = xp.reshape(u, tuple(p.shape))
        if h["weight_decay"]:
            u = u - (lr_t * h["weight_decay"]) * _array.as_float(p, xp, dt)
        ups.append(u)
        new.append(st)
    return ups, new


def transform(**hyper: Any) -> Transform:
    """:class:`~xpmat.optim.Transform` with these hyper-parameters bound."""
    return bind(DEFAULTS, hyper, "powersgd", _validate, init, update)
