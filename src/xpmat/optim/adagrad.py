"""AdaGrad ([Stratos 2026, §3][stratos-2026]): diagonal, full-matrix (exact or low rank) and norm.

Per parameter ``w`` with gradient ``g``, weight decay λ (added to the gradient, as torch),
initial accumulator ``v`` and step size s η, with ``d = g + λ w`` and ``t`` counted from 1::

    "diagonal" (eq. 44):  S ← S + d ⊙ d;             u = d / (√S + ε)        (S₀ = v, per entry)
    "full"     (§3.2.1):  O ← O + d dᵀ;              u = A⁺ d,  A = O^{1/2}  (O₀ = v I, per block)
    "norm"     (eq. 33):  s ← s + ‖d‖²;              u = d / (√s + ε)        (s₀ = v, per parameter)
    w ← w − s η u / (1 + (t − 1) · lr_decay)

``"full"`` flattens the parameter (row-major) into blocks of at most ``max_dim`` entries (the
last one zero-padded; :func:`xpmat.optim._base.block_layout`) and keeps one ``O`` per block:

- exactly (``rank=None``, or a block no larger than ``rank``): ``O`` itself, ``(bs, bs)``, and
  ``A⁺ d = V diag(f) Vᵀ d`` from ``eigh(O)``, ``f = 1 / (√λ + ε)`` on the eigenvalues above
  ``bs · u · max λ`` and 0 on the others (the pseudo-inverse; with ε = 0 it is
  ``xpmat.inv_root(O, 2) @ d``, tested);
- at rank ``r`` (larger blocks): the best rank-``r`` approximation ``Q diag(L) Qᵀ`` of the
  running sum ``Σ d dᵀ``, updated each step by :func:`xpmat.lowrank_eigh_update` (O(bs r²)),
  and ``A⁺ d = Q diag(f) Qᵀ d + (d − Q Qᵀ d) / (√v + ε)`` with ``f = 1 / (√(L + v) + ε)`` —
  the exact inverse root of ``v I + Q diag(L) Qᵀ``; with ``v = 0`` the part of ``d`` outside
  ``span(Q)`` is dropped (a pseudo-inverse, as LRE's).  While ``t ≤ r`` nothing is truncated
  and it equals the exact form.

The learning rate is the regret-bound scale ``D`` of §3.1.1 / §3.2.1 (``η_t = D``: regret at
most ``3D/2 · Σᵢ √(Σₜ gₜᵢ²)`` diagonal, ``3D/2 · tr(O_T^{1/2})`` full, eq. 43; ``"norm"`` is
eq. 33's ``η_t = D / √(Σ ‖g_l‖²)`` per parameter, eq. 34).  ``momentum`` μ > 0 (ours, not in
the source; default 0) averages the preconditioned direction: ``m ← μ m + (1 − μ) u``, step
``m``.  As a composition::

    skip_nonfinite(chain(add_decayed_weights(λ), scale_by_adagrad(...), momentum(μ),
                         scale_by_lr(s η)))

With ``preconditioner="diagonal"`` and ``momentum=0`` it is ``torch.optim.Adagrad`` (same
names: ``lr_decay``, ``initial_accumulator_value``, ``eps``; tested).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.lowrank_eigh import lowrank_eigh_update
from xpmat.optim._base import (
    block_layout,
    check_choice,
    check_common,
    check_int,
    check_real,
    from_blocks,
    resolve_hyper,
    run_init,
    run_update,
    state_dtype_for,
    step_size,
    to_blocks,
    zeros_step,
)
from xpmat.optim._spec import MethodSpec
from xpmat.optim.transforms import (
    Transform,
    add_decayed_weights,
    chain,
    momentum,
    per_parameter,
    scale_by_lr,
    skip_nonfinite,
)

__all__ = ["DEFAULTS", "PRECONDITIONERS", "AdaGradState", "PreconditionState", "State", "init",
           "scale_by_adagrad", "transform", "update"]

SPEC = MethodSpec(
    name="adagrad",
    class_name="AdaGrad",
    module=__name__,
    defaults={
        "lr": 1e-2,
        "lr_decay": 0.0,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "eps": 1e-10,
        "momentum": 0.0,
        "preconditioner": "diagonal",
        "rank": None,
        "max_dim": 256,
        "schedule": 1.0,
        "state_dtype": None,
    },
    positional=5,
    types={"rank": "int | None"},
    decay_follows_lr=False,
    doc="AdaGrad (§3.1, eq. 44): diagonal, as torch.optim.Adagrad",
    demo={"lr": 0.05},
    also=(("adagrad_full", {"lr": 0.2, "preconditioner": "full", "rank": 16, "max_dim": 512},
           "full-matrix AdaGrad (§3.2.1): O^(-1/2) g per block, rank-r eigenbasis"),),
    title="AdaGrad (diagonal, full, norm)",
    source="[Stratos 2026, §3][stratos-2026]; [Duchi et al. 2011][duchi-2011]",
    summary="""\
AdaGrad ([Stratos 2026, §3][stratos-2026]) over :mod:`xpmat.optim.adagrad`::

    d = g + λ w;  diagonal: S ← S + d²,  u = d / (√S + ε)            (eq. 44)
                  full: O ← O + d dᵀ per block,  u = O^{-1/2} d    (§3.2.1; exact or rank r)
                  norm: s ← s + ‖d‖²,  u = d / (√s + ε)            (eq. 33)
    m ← μ m + (1 − μ) u  (μ > 0);  w ← w − s η m / (1 + (t − 1) lr_decay)

With the defaults it is ``torch.optim.Adagrad`` (same names; tested equal, complex
parameters included: the diagonal preconditioner steps them as real views, as torch).
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
    η, the scale D of the regret bounds (§3.1.1, §3.2.1).
lr_decay : float >= 0
weight_decay : float >= 0 or 1-element tensor
    λ, added to the gradient (as torch).
initial_accumulator_value : float >= 0
    ``S₀`` (full: ``v I``).
eps : float >= 0
    Added to the square roots.
momentum : float in [0, 1) or 1-element tensor
    μ, an average of the preconditioned direction (0: none, as torch).
preconditioner : {"diagonal", "full", "norm"}
rank : int >= 1 or None
    ``"full"``: None keeps each block's ``O`` exactly; an int r keeps the blocks larger
    than r at rank r (:func:`xpmat.lowrank_eigh_update`).
max_dim : int >= 1
    ``"full"``: the flattened parameter is cut into blocks of at most this many entries.
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults


def LOCAL_SHARDS(h: dict[str, Any], ndim: int, sharded_dims: frozenset[int]) -> bool:
    """Sharded (DTensor) parameters: the diagonal preconditioner is elementwise, so each rank
    steps its local shard; ``"full"`` and ``"norm"`` need the whole parameter (an owner rank)."""
    return h["preconditioner"] == "diagonal"

PRECONDITIONERS = ("diagonal", "full", "norm")


class PreconditionState(NamedTuple):
    """The state of :func:`scale_by_adagrad`: ``step``; ``sum`` (diagonal: parameter-shaped;
    norm: 0-d; full, exact: ``O`` as ``(nb, bs, bs)``); the low-rank full form keeps
    ``eigvals`` ``(nb, r)`` and ``eigvecs`` ``(nb, bs, r)`` instead of ``sum``."""

    step: Any
    sum: Any = None
    eigvals: Any = None
    eigvecs: Any = None


class AdaGradState(NamedTuple):
    """Per-parameter AdaGrad state (``step`` and ``sum`` are ``torch.optim.Adagrad``'s keys),
    the momentum buffer and the non-finite counter."""

    step: Any = None
    sum: Any = None
    eigvals: Any = None
    eigvecs: Any = None
    momentum_buffer: Any = None
    nonfinite_count: Any = None


State = AdaGradState


def _full_layout(p: Any, rank: int | None, max_dim: int) -> tuple[int, int, int | None]:
    """``(nb, bs, r)``: the block layout of ``p`` and its rank (None: exact)."""
    nb, bs = block_layout(math.prod(tuple(p.shape)), max_dim)
    return nb, bs, None if rank is None or rank >= bs else rank


def _init_full(p: Any, xp: Any, dt: Any, v: float, rank: int | None, max_dim: int) -> PreconditionState:
    dev = _array.device(p)
    nb, bs, r = _full_layout(p, rank, max_dim)
    step = zeros_step(xp, dev)
    if r is None:
        eye = xp.eye(bs, dtype=dt, device=dev)
        return PreconditionState(step, xp.zeros((nb, 1, 1), dtype=dt, device=dev) + v * eye)
    Q = xp.zeros((nb, 1, 1), dtype=dt, device=dev) + xp.eye(bs, r, dtype=dt, device=dev)
    return PreconditionState(step, None, xp.zeros((nb, r), dtype=dt, device=dev), Q)


def _inv_sqrt_weights(lam: Any, eps: float, xp: Any) -> Any:
    """``1 / (√λ + ε)`` on eigenvalues above ``n · u · max λ`` (per block), 0 on the others."""
    n = lam.shape[-1]
    cut = n * float(xp.finfo(lam.dtype).eps) / 2 * xp.max(lam, axis=-1, keepdims=True)
    keep = lam > cut
    return xp.where(keep, 1.0 / (xp.sqrt(xp.where(keep, lam, xp.ones_like(lam))) + eps), xp.zeros_like(lam))


def _apply_basis(Q: Any, f: Any, G: Any, xp: Any) -> Any:
    """``Q diag(f) Qᵀ G`` for blocks ``G`` ``(nb, bs)``, ``Q`` ``(nb, bs, k)``, ``f`` ``(nb, k)``."""
    c = _array.mT(Q, xp) @ G[..., None]
    return (Q @ (f[..., None] * c))[..., 0]


def _full_step(G: Any, s: PreconditionState, v: float, eps: float, xp: Any) -> tuple[Any, Any, Any, Any]:
    """One full-matrix AdaGrad step on blocks ``G`` ``(nb, bs)``: ``(U, sum, eigvals, eigvecs)``."""
    if s.sum is not None:  # exact
        O = s.sum + G[:, :, None] * G[:, None, :]
        lam, V = _array.eigh(O, xp)
        return _apply_basis(V, _inv_sqrt_weights(lam, eps, xp), G, xp), O, None, None
    L, Q = lowrank_eigh_update(s.eigvals, s.eigvecs, G[:, :, None], rank=s.eigvals.shape[-1], xp=xp)
    U = _apply_basis(Q, _inv_sqrt_weights(L + v, eps, xp), G, xp)
    if v > 0:  # the complement of span(Q) sees the initial accumulator v I
        U = U + (G - _apply_basis(Q, xp.ones_like(L), G, xp)) / (math.sqrt(v) + eps)
    return U, None, L, Q


def scale_by_adagrad(preconditioner: str = "diagonal", *, eps: float = 1e-10,
                     initial_accumulator_value: float = 0.0, lr_decay: float = 0.0,
                     rank: int | None = None, max_dim: int = 256, state_dtype: Any = None) -> Transform:
    """AdaGrad's preconditioned direction ``u / (1 + (t − 1) lr_decay)`` (see the module doc);
    state :class:`PreconditionState`."""
    check_choice("preconditioner", preconditioner, PRECONDITIONERS)
    check_real("eps", eps)
    check_real("initial_accumulator_value", initial_accumulator_value)
    check_real("lr_decay", lr_decay)
    check_int("rank", rank, 1, none=True)
    check_int("max_dim", max_dim, 1)
    v = float(initial_accumulator_value)

    def init_one(p, xp):
        dt, dev = state_dtype_for(p, xp, state_dtype), _array.device(p)
        if preconditioner == "full":
            return _init_full(p, xp, dt, v, rank, max_dim)
        shape = () if preconditioner == "norm" else tuple(p.shape)
        return PreconditionState(zeros_step(xp, dev), xp.full(shape, v, dtype=dt, device=dev))

    def update_one(g, s, p, xp):
        dt = (s.sum if s.sum is not None else s.eigvals).dtype
        d = _array.as_float(g, xp, dt)
        if preconditioner == "full":
            nb, bs, _ = _full_layout(p, rank, max_dim)
            U, S, L, Q = _full_step(to_blocks(d, nb, bs, xp, dt), s, v, eps, xp)
            u = from_blocks(U, tuple(p.shape), xp)
        else:
            S, L, Q = s.sum + (d * d if preconditioner == "diagonal" else xp.sum(d * d)), None, None
            u = d / (xp.sqrt(S) + eps)
        if lr_decay:
            u = u / xp.astype(1.0 + lr_decay * s.step, dt)
        return u, PreconditionState(s.step + 1, S, L, Q)

    return per_parameter(init_one, update_one, PreconditionState)


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "adagrad")
    check_common(h)
    check_real("momentum", h["momentum"], 0.0, 1.0, high_open=True)
    return h


def transform(**hyper: Any) -> Transform:
    """AdaGrad as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters: :func:`update`)."""
    h = _checked(hyper)
    return skip_nonfinite(chain(
        add_decayed_weights(h["weight_decay"]),
        scale_by_adagrad(h["preconditioner"], eps=h["eps"], lr_decay=h["lr_decay"],
                         initial_accumulator_value=h["initial_accumulator_value"], rank=h["rank"],
                         max_dim=h["max_dim"], state_dtype=h["state_dtype"]),
        momentum(h["momentum"], state_dtype=h["state_dtype"]),
        scale_by_lr(step_size(h)), state=AdaGradState),
        sanitize=h["preconditioner"] == "full")


def init(params: list[Any], **hyper: Any) -> list[AdaGradState]:
    """AdaGrad state for each parameter: ``step = 0``, the accumulator at
    ``initial_accumulator_value`` (full: ``v I`` per block, or an empty rank-r basis)."""
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[AdaGradState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[AdaGradState]]:
    """One AdaGrad step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays
        Any shapes, one Array API library and device.
    state : list of AdaGradState
    **hyper
        ``lr`` (η ≥ 0, the scale D), ``lr_decay`` (≥ 0), ``weight_decay`` (λ ≥ 0, added to the
        gradient), ``initial_accumulator_value`` (v ≥ 0), ``eps`` (ε ≥ 0), ``momentum``
        (μ in [0, 1)), ``preconditioner`` (``"diagonal"`` | ``"full"`` | ``"norm"``), and for
        ``"full"``: ``rank`` (None: exact; an int r: blocks larger than r keep rank r) and
        ``max_dim`` (block size); ``schedule`` (s ≥ 0, multiplies η), ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of AdaGradState

    Notes
    -----
    [Stratos 2026][stratos-2026] eq. 44 (diagonal), §3.2.1 (full, per-step preconditioner
    ``O_t^{1/2}``), eq. 33 (norm); the regret bounds eq. 34, 39, 43.  Cost per step and block of
    ``"full"``: one ``eigh`` of ``bs × bs`` (exact) or ``O(bs r²)`` (rank r).  A gradient with
    a NaN or ±Inf entry leaves its parameter and state unchanged and counts in
    ``nonfinite_count``.

    Backends: standard Array API (``"full"``: ``xp.linalg.eigh`` and QR).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import adagrad
    >>> p = [np.zeros(2)]
    >>> st = adagrad.init(p)
    >>> u, st = adagrad.update([np.array([3.0, -0.5])], st, p, lr=0.1, eps=0.0)
    >>> u[0].tolist()                      # the first step is −η sign(g) (eq. 44)
    [-0.1, 0.1]
    """
    return run_update(transform(**hyper), grads, state, params)
