"""Dion2 ([microsoft/dion][dion-code], ``Dion2``): orthogonalize only the largest slices of the momentum.

Per matrix parameter ``W`` (``m × n`` view), gradient ``G``, ``L = min(m, n)`` slices of the
shorter side (rows when ``m ≤ n``, else columns), ``k = max(1, ⌈f L⌉)``::

    B = B + G                                    (momentum: a plain sum, decayed below)
    I = the k slices of B with the largest ℓ1 norms
    O = msign(B[I])                              (xpmat.msign on the k × max(m, n) submatrix)
    B[I] = ef · B[I]                             (error feedback: the selected slices decay)
    W = W − s η λ W;   W[I] = W[I] − s η a(m, n) O

Only the selected slices move each step (besides the decay); the others keep accumulating their
gradients until they are large enough to be selected.  ``f = 1, ef = 0`` is Muon without
momentum (tested).  Selection by ``argsort`` of the slice norms (standard Array API, no library
top-k or scatter): ``B[I]`` is a ``take`` of the k slices, and the update puts ``O``'s rows back
by a ``take`` from ``O`` with a zero row appended (each slice's place in the order, or the zero
row), so selecting costs ``O(L max(m, n))`` copies, not an ``L × k`` product.  Same-shaped
matrices go through one batched Newton–Schulz call.  Options shared with Muon:
``adjust_lr_fn`` (``a``), ``flatten``, ``use_gram_newton_schulz``, the ``ns_*`` ones.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from xpmat import _array
from xpmat._array import mT
from xpmat.optim import muon
from xpmat.optim._base import (
    check_bool,
    check_choice,
    check_common,
    check_dtype,
    check_real,
    is_array_hyper,
    matrix_view_shape,
    maybe_nonzero,
    resolve_hyper,
    run_init,
    run_update,
    scalar_hyper,
    state_dtype_for,
    step_size,
    zeros_step,
)
from xpmat.optim._spec import NS_DEFAULTS, MethodSpec
from xpmat.optim.transforms import Transform, finite, ns_schedule_checked
from xpmat.orthogonalize import NORMALIZATIONS, msign_many

__all__ = ["DEFAULTS", "Dion2State", "State", "init", "select", "transform", "update"]

SPEC = MethodSpec(
    name="dion2",
    class_name="Dion2",
    module=__name__,
    defaults={
        "lr": 0.01,
        "fraction": 0.25,
        "ef_decay": 0.95,
        "weight_decay": 0.0,
        "schedule": 1.0,
        "adjust_lr_fn": "original",
        **NS_DEFAULTS,
        "state_dtype": None,
        "use_gram_newton_schulz": False,
        "flatten": True,
    },
    types={"adjust_lr_fn": "str | None", "ns_schedule": "Any"},
    matrix_only=True,
    fallback_lr_ratio=0.05,
    doc="Dion2: msign of the top-f slices of the summed momentum (l1), error-feedback decay",
    demo={"lr": 0.02, "fraction": 0.5, "adamw_lr_ratio": 0.15},
    source="[microsoft/dion][dion-code] (`Dion2`)",
    summary="""\
Dion2 (microsoft/dion's ``Dion2``) over :mod:`xpmat.optim.dion2`: each step only the
``⌈f L⌉`` slices of the shorter side with the largest ℓ1 momentum are orthogonalized and
applied, and decay in the momentum by ``ef_decay``::

    B ← B + G;   I = top-⌈f L⌉ slices of B by ℓ1 norm;   O = msign(B[I]);   B[I] ← ef · B[I]
    W ← W − s η λ W;   W[I] ← W[I] − s η a(m, n) O

1-D parameters go to AdamW.  State: ``momentum_buffer`` (the matrix view).
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
fraction : float in (0, 1]
    Share of the shorter side's slices (rows when ``m ≤ n``, else columns) used per step.
ef_decay : float in [0, 1]
    Error-feedback factor of the selected slices of the momentum.
weight_decay : float >= 0 or 1-element tensor
    Decoupled, times ``lr``, on the whole matrix (as dion).
adjust_lr_fn : {"original", "match_rms_adamw", "none"} or None
    ``a(m, n)`` as :class:`Muon` (of the whole matrix).
flatten : bool
    As :class:`Muon`.
ns_steps, ns_schedule, ns_normalize, use_gram_newton_schulz, compute_dtype, eps
    The ``msign`` of the selected submatrix, as :class:`Muon`.
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults


class Dion2State(NamedTuple):
    """Per-parameter Dion2 state: the momentum sum (matrix view) and the non-finite counter."""

    momentum_buffer: Any = None
    nonfinite_count: Any = None


State = Dion2State


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "dion2")
    check_common(h)
    check_real("fraction", h["fraction"], 0.0, 1.0, low_open=True)
    check_real("ef_decay", h["ef_decay"], 0.0, 1.0)
    check_choice("adjust_lr_fn", h["adjust_lr_fn"], ("original", "match_rms_adamw", "none", None))
    ns_schedule_checked(h["ns_schedule"], h["ns_steps"])
    check_choice("ns_normalize", h["ns_normalize"], NORMALIZATIONS)
    check_real("eps", h["eps"])
    check_dtype("compute_dtype", h["compute_dtype"], auto=True)
    check_bool("use_gram_newton_schulz", h["use_gram_newton_schulz"])
    check_bool("flatten", h["flatten"])
    return h


def select(B: Any, fraction: float, xp: Any) -> tuple[Any, Any]:
    """``(idx, pos)`` for the ``k = max(1, ⌈f L⌉)`` rows of ``B`` ``(..., L, c)`` with the
    largest ℓ1 norms (ties: the lower index): their indices ``(..., k)``, largest first, and
    each row's place in that order ``(..., L)`` (``pos < k``: selected)."""
    k = max(1, math.ceil(fraction * B.shape[-2]))
    order = xp.argsort(xp.sum(xp.abs(B), axis=-1), axis=-1, descending=True, stable=True)
    return order[..., :k], xp.argsort(order, axis=-1, stable=True)


def _take_rows(X: Any, idx: Any, xp: Any) -> Any:
    """``X[..., idx, :]`` for ``X`` ``(..., L, c)`` and indices ``idx`` ``(..., j)`` per matrix
    (one ``take`` on the stacked rows)."""
    lead, (L, c) = tuple(X.shape[:-2]), X.shape[-2:]
    if not lead:
        return xp.take(X, idx, axis=0)
    nb = math.prod(lead)
    off = xp.reshape(xp.arange(nb, dtype=idx.dtype, device=_array.device(idx)) * L, (nb, 1))
    flat = xp.reshape(xp.reshape(idx, (nb, -1)) + off, (-1,))
    return xp.reshape(xp.take(xp.reshape(X, (nb * L, c)), flat, axis=0), (*lead, idx.shape[-1], c))


def _place_rows(O: Any, pos: Any, xp: Any) -> Any:
    """``(..., L, c)``: row ``r`` is ``O``'s row ``pos[r]`` where ``pos[r] < k``, else zero."""
    k = O.shape[-2]
    zero = xp.zeros((*O.shape[:-2], 1, O.shape[-1]), dtype=O.dtype, device=_array.device(O))
    return _take_rows(xp.concat([O, zero], axis=-2), xp.where(pos < k, pos, k), xp)


def transform(**hyper: Any) -> Transform:
    """Dion2 (see the module doc): per-parameter ``Dion2State``; 1-D parameters raise."""
    h = _checked(hyper)

    def views(params):
        return [matrix_view_shape(p.shape, h["flatten"], f"params[{i}]") for i, p in enumerate(params)]

    def init_(params):
        out = []
        for p, view in zip(params, views(params), strict=True):
            xp, dev = _array.array_namespace(p), _array.device(p)
            out.append(Dion2State(xp.zeros(view, dtype=state_dtype_for(p, xp, h["state_dtype"]), device=dev),
                                  zeros_step(xp, dev)))
        return out

    def update_(grads, states, params):
        ups, new = list(grads), list(states)
        live = [i for i, p in enumerate(params) if math.prod(p.shape)]
        shapes = views(params)
        mats = [_array.array_namespace(params[i]).reshape(params[i], shapes[i]) for i in live]
        for chunk in muon.chunks(mats, h["compute_dtype"], flatten=False):
            idx = [live[j] for j in chunk]
            for i, u, s in zip(idx, *_chunk(h, [grads[i] for i in idx], [states[i] for i in idx],
                                             [params[i] for i in idx], shapes[idx[0]]), strict=True):
                ups[i], new[i] = u, s
        return ups, new

    return Transform(init_, update_, Dion2State)


def _chunk(h: dict[str, Any], grads: list[Any], states: list[Dion2State], params: list[Any],
           view: tuple[int, ...]) -> tuple[list[Any], list[Dion2State]]:
    """One batched Newton–Schulz call for the selected slices of same-shaped matrices."""
    xp = _array.array_namespace(*grads, *params)
    m, n = view[-2:]
    cols = m > n  # select the shorter side: work on the transpose when it is the columns
    dt = states[0].momentum_buffer.dtype
    lr_t = step_size(h)
    oks, bufs, places, Us = [], [], [], []
    for g, s in zip(grads, states, strict=True):
        g = xp.reshape(_array.as_float(g, xp, dt), view)
        ok = finite(g, xp)
        B = s.momentum_buffer + xp.where(ok, g, xp.zeros((), dtype=dt, device=_array.device(g)))
        Bs = mT(B, xp) if cols else B
        idx, pos = select(Bs, h["fraction"], xp)
        Us.append(_take_rows(Bs, idx, xp))
        mask = xp.astype(pos < idx.shape[-1], Bs.dtype)[..., None]
        Bs = Bs * (1.0 - (1.0 - h["ef_decay"]) * mask)
        oks.append(ok)
        bufs.append(xp.where(ok, mT(Bs, xp) if cols else Bs, s.momentum_buffer))
        places.append(pos)
    coeffs = ns_schedule_checked(h["ns_schedule"], h["ns_steps"])
    a, tensor = muon.adjust_lr(h["adjust_lr_fn"], m, n), is_array_hyper(lr_t)
    Os = msign_many(Us, steps=len(coeffs), schedule=coeffs, normalize=h["ns_normalize"], eps=h["eps"],
                    compute_dtype=h["compute_dtype"], scale=a if tensor else -lr_t * a,
                    gram="auto" if h["use_gram_newton_schulz"] else False,
                    stack_bytes=None, xp=xp)
    if tensor:  # a tensor lr is not folded into Newton–Schulz (its GEMMs take host floats)
        Os = [scalar_hyper(-lr_t, O, xp) * O for O in Os]
    decay = lr_t * h["weight_decay"]
    ups, new = [], []
    for O, pos, ok, buf, s, p in zip(Os, places, oks, bufs, states, params, strict=True):
        full = _place_rows(_array.as_float(O, xp, dt), pos, xp)
        u = mT(full, xp) if cols else full
        if maybe_nonzero(decay):
            W = xp.reshape(_array.as_float(p, xp, dt), view)
            u = _array.add_scaled(u, scalar_hyper(-decay, u, xp), W, xp)
        ups.append(xp.reshape(xp.where(ok, u, xp.zeros((), dtype=dt, device=_array.device(u))),
                              tuple(p.shape)))
        count = s.nonfinite_count
        new.append(Dion2State(buf, count + xp.astype(xp.logical_not(ok), count.dtype)))
    return ups, new


def init(params: list[Any], **hyper: Any) -> list[Dion2State]:
    """Zero momentum (in the matrix view) for each matrix parameter."""
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[Dion2State], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[Dion2State]]:
    """One Dion2 step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2; ``flatten`` as Muon); 1-D ones raise ``ValueError``.
    state : list of Dion2State
    **hyper
        ``lr`` (η), ``fraction`` (f in (0, 1]: the share of the shorter side's slices
        orthogonalized each step), ``ef_decay`` (in [0, 1]: the factor of the selected slices of
        the momentum after they are used), ``weight_decay`` (λ, decoupled, on the whole
        matrix), ``schedule``, ``adjust_lr_fn``, ``flatten``, ``use_gram_newton_schulz``,
        ``ns_steps``, ``ns_schedule``, ``ns_normalize``, ``compute_dtype``, ``eps``,
        ``state_dtype``: as :func:`xpmat.optim.muon.update`.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of Dion2State

    Notes
    -----
    The update rule of microsoft/dion's ``Dion2`` (``dion2_pre_orthogonalize`` /
    ``dion2_post_orthogonalize``: sum momentum, top-k slices by ℓ1 norm on the shorter side,
    error-feedback decay of those slices, decay of the whole weight, the orthogonalized
    slices added back); its learning-rate adjustment is replaced by Muon's ``a(m, n)``.  A
    gradient with a NaN / Inf leaves the parameter and its momentum unchanged
    (``nonfinite_count``).  A zero gradient with a zero momentum gives a zero step.

    Backends: standard Array API (``argsort``, a one-hot selector and matmuls); no host read.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import dion2
    >>> p = [np.zeros((4, 8))]
    >>> g = [np.diag([4.0, 0.0, 0.0, 0.0]) @ np.ones((4, 8))]       # only row 0 is non-zero
    >>> u, st = dion2.update(g, dion2.init(p), p, lr=1.0, fraction=0.25)
    >>> bool(np.all(u[0][1:] == 0)), bool(u[0][0, 0] < 0)          # one row of four moves
    (True, True)
    """
    return run_update(transform(**hyper), grads, state, params)
