"""Muon (adaptive-learning-methods §7, Q.3): momentum → msign → scaled update, batched by shape.

Per matrix parameter ``W`` (``m × n`` view; conv kernels ``(out, in·k·k)``), gradient ``G``::

    B = B + (1 − μ)(G − B)                      (momentum buffer, an EMA as in torch.optim.Muon)
    U = G + μ (B − G)  (Nesterov)   or   U = B
    O = msign(U) ≈ U_svd V_svdᵀ                 (xpmat.msign: Newton–Schulz, §Q.3.1)
    W = W − s η λ W − s η a(m, n) O             (decoupled weight decay, §4.4)

``a(m, n)`` (``adjust_lr_fn``): ``"original"`` √max(1, m/n) (Keller Jordan), ``"match_rms_adamw"``
0.2·√max(m, n) (Moonshot), ``"none"`` 1 — the same choices as ``torch.optim.Muon``.  All the
parameters of one call that share a shape (and dtype) are stacked and go through the momentum
arithmetic and ONE batched ``msign`` call together (``torch.optim.Muon`` loops over parameters);
the new momentum buffers are views into the stacked result.
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
    group_by_shape,
    init_params,
    matrix_shape,
    zeros_step,
)
from xpmat.orthogonalize import msign

__all__ = ["DEFAULTS", "MuonState", "State", "adjust_lr", "init", "msign_stacked", "transform", "update"]

DEFAULTS: dict[str, Any] = {
    "lr": 0.02,
    "momentum": 0.95,
    "nesterov": True,
    "weight_decay": 0.0,
    "schedule": 1.0,
    "adjust_lr_fn": "original",
    "ns_steps": 5,
    "ns_schedule": "polar_express",
    "ns_normalize": "fro",
    "compute_dtype": None,
    "eps": 1e-7,
    "state_dtype": None,
}

_ADJUST = ("original", "match_rms_adamw", "none")


class MuonState(NamedTuple):
    """Per-parameter Muon state: the momentum buffer (matrix view)."""

    step: Any
    momentum_buffer: Any


State = MuonState


def adjust_lr(fn: str | None, m: int, n: int) -> float:
    """The shape factor ``a(m, n)`` of ``adjust_lr_fn`` (``None`` means ``"original"``, as torch)."""
    if fn is None or fn == "original":
        return math.sqrt(max(1.0, m / n))
    if fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(m, n))
    if fn == "none":
        return 1.0
    raise ValueError(f"adjust_lr_fn must be one of {_ADJUST} or None, got {fn!r}")


def _validate(h: dict[str, Any]) -> None:
    if not 0.0 <= h["momentum"] < 1.0:
        raise ValueError(f"momentum must lie in [0, 1), got {h['momentum']}")
    if h["lr"] < 0 or h["weight_decay"] < 0:
        raise ValueError(f"lr and weight_decay must be >= 0, got {h['lr']}, {h['weight_decay']}")
    adjust_lr(h["adjust_lr_fn"], 1, 1)


def init(params: list[Any], **hyper: Any) -> list[MuonState]:
    """Zero momentum (in the matrix view) for each matrix parameter."""
    _, items = init_params(params, hyper, DEFAULTS, "muon", _validate)
    out = []
    for i, p, xp, dev, dt in items:
        m, n = matrix_shape(p.shape, f"params[{i}]")
        out.append(MuonState(zeros_step(xp, dev), xp.zeros((m, n), dtype=dt, device=dev)))
    return out


def msign_stacked(U: Any, xp: Any, h: dict[str, Any]) -> Any:
    """``xpmat.msign`` of a stack ``(k, m, n)`` of same-shaped matrices: ONE batched call."""
    return msign(U, steps=h["ns_steps"], schedule=h["ns_schedule"], normalize=h["ns_normalize"],
                 compute_dtype=h["compute_dtype"], eps=h["eps"], xp=xp)


def update(grads: list[Any], state: list[MuonState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[MuonState]]:
    """One Muon step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2; conv kernels viewed as ``(out, in·k·k)``); 1-D ones raise
        ``ValueError`` (use :func:`xpmat.optim.route` or the torch class's AdamW fallback).
    state : list of MuonState
    **hyper
        ``lr`` (η), ``momentum`` (μ), ``nesterov``, ``weight_decay`` (λ, decoupled, times η
        as torch), ``schedule`` (s multiplies η), ``adjust_lr_fn``, and the ``msign`` options
        ``ns_steps``, ``ns_schedule`` (``"polar_express"``, ``"jordan"``, ...), ``ns_normalize``,
        ``compute_dtype`` (``"bfloat16"`` on GPUs), ``eps``; ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of MuonState

    Notes
    -----
    adaptive-learning-methods §7 (eq. 67–69: the spectral-norm steepest descent direction
    U Vᵀ) and Q.3.1 (Newton–Schulz).  With ``ns_schedule="jordan"``, ``ns_normalize="fro"``,
    ``compute_dtype="bfloat16"``, ``eps=1e-7`` it is ``torch.optim.Muon`` (tested to bf16
    precision).  A zero gradient gives a zero direction (msign of 0 is 0).

    Backends: standard Array API; the orthogonalization is :func:`xpmat.msign` (batched).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import muon
    >>> p = [np.zeros((4, 4)), np.zeros((4, 4))]
    >>> g = [np.diag([4.0, 3.0, 2.0, 1.0]), np.eye(4)]
    >>> st = muon.init(p)
    >>> u, st = muon.update(g, st, p, lr=1.0, momentum=0.0, ns_steps=10)
    >>> print(np.allclose(-u[0], np.eye(4), atol=1e-2), np.allclose(-u[1], np.eye(4), atol=1e-2))
    True True
    """
    h = check_hyper(DEFAULTS, hyper, "muon")
    _validate(h)
    _check_lists(params, grads, state)
    lr_t = float(h["schedule"]) * float(h["lr"])
    mu, wd = h["momentum"], h["weight_decay"]
    ups: list[Any] = [None] * len(params)
    new: list[Any] = [None] * len(params)
    for idx in group_by_shape(params).values():
        i0 = idx[0]
        xp = _array.array_namespace(*[grads[i] for i in idx], *[params[i] for i in idx],
                                    names=[f"grads[{i}]" for i in idx] + [f"params[{i}]" for i in idx])
        shape = tuple(params[i0].shape)
        m, n = matrix_shape(shape, f"params[{i0}]")
        dt = state[i0].momentum_buffer.dtype

        def stack(xs, xp=xp):  # one matrix: a view, no copy
            return xs[0][None, ...] if len(xs) == 1 else xp.stack(xs, axis=0)

        G = stack([xp.reshape(_array.as_float(grads[i], xp, dt), (m, n)) for i in idx])
        B0 = stack([state[i].momentum_buffer for i in idx])
        buf = B0 + (1.0 - mu) * (G - B0)
        U = G + mu * (buf - G) if h["nesterov"] else buf
        u = (-lr_t * adjust_lr(h["adjust_lr_fn"], m, n)) * msign_stacked(U, xp, h)
        if wd:
            u = u - (lr_t * wd) * stack([xp.reshape(_array.as_float(params[i], xp, dt), (m, n))
                                         for i in idx])
        for j, i in enumerate(idx):
            ups[i] = xp.reshape(u[j, ...], shape)
            new[i] = MuonState(state[i].step + 1, buf[j, ...])
    return ups, new


def transform(**hyper: Any) -> Transform:
    """:class:`~xpmat.optim.Transform` with these hyper-parameters bound."""
    return bind(DEFAULTS, hyper, "muon", _validate, init, update)
