"""Dion ([Pethick 2025][pethick-2025]; [Ahn et al. 2025][ahn-2025]): low-rank orthonormal updates.

Per matrix parameter ``X`` (viewed as ``m × n``; conv kernels ``(out, in·k·k)``), with momentum
buffer ``M`` (the error-feedback residual), warm-started right factor ``Q`` ``(n, r)``::

    B        = M + G                               (Δ ← g + e)
    P, R, Q  = PowerIter1(B; Q)                    (P = orth(B Q), R = Bᵀ P, Q = colnorm(R))
    M        = B − (1 − μ) P Rᵀ                    (decayed error feedback; μ = 0: e ← Δ − P Rᵀ)
    X        = X − s η √(m/n) P Qᵀ − s η λ X       (singular values set to 1; decoupled decay)

As a composition::

    skip_nonfinite(as_matrix(chain(dion_direction(rank, momentum=μ), scale_by_shape(√(m/n)),
                                   add_decayed_weights(λ), scale_by_lr(s η))))

With ``momentum=0`` this is Pethick's algorithm exactly (Δ ← g + e, e ← Δ − P Rᵀ,
x ← x − γ P Qᵀ); ``momentum > 0`` is the decayed form of microsoft/dion.  ``P Rᵀ`` is the rank-r
approximation (singular values kept), so the residual only holds what the update has not yet
used.  :class:`xpmat.distributed.DistributedDion` is this transform with a ``reduce`` hook.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.iteration import power_iter1
from xpmat.optim._base import (
    check_choice,
    check_common,
    check_lowrank,
    check_rank_fits,
    check_real,
    maybe_nonzero,
    resolve_hyper,
    run_init,
    run_update,
    scalar_hyper,
    seeded_q,
    step_size,
)
from xpmat.optim._spec import MethodSpec
from xpmat.optim.transforms import (
    Transform,
    add_decayed_weights,
    as_matrix,
    chain,
    finite,
    scale_by_lr,
    scale_by_shape,
    skip_nonfinite,
)
from xpmat.orthogonalize import orthonormalize

__all__ = ["DEFAULTS", "ORTHOGONALIZE", "RENAMED", "DionDirectionState", "DionState", "RowSharded", "State",
           "dion_direction", "init", "row_sharded", "transform", "update"]

RENAMED = {"mu": "momentum"}

SPEC = MethodSpec(
    name="dion",
    class_name="Dion",
    module=__name__,
    defaults={
        "lr": 0.01,
        "momentum": 0.95,
        "rank": 0.25,
        "rank_multiple_of": 1,
        "weight_decay": 0.0,
        "schedule": 1.0,
        "lr_scale": "fan",
        "orthogonalize": "auto",
        "oversample": 1.25,
        "seed": 0,
        "state_dtype": None,
    },
    types={"lr_scale": "str | None"},
    matrix_only=True,
    renamed=RENAMED,
    doc="Dion: PowerIter1 with error feedback, orthonormal low-rank update",
    demo={"lr": 0.02, "rank": 0.25, "adamw_lr_ratio": 0.15},
    source="[Pethick 2025][pethick-2025]; [Ahn et al. 2025][ahn-2025]",
    summary="""\
Dion ([Pethick 2025][pethick-2025]) over :mod:`xpmat.optim.dion`::

    B = M + G;  P, R, Q = PowerIter1(B; Q);  M ← B − (1 − μ) P Rᵀ
    X ← X − s η √(m/n) P Qᵀ − s η λ X

1-D parameters go to AdamW.
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
momentum : float in [0, 1) or 1-element tensor
    μ (was ``mu``); 0 is Pethick's plain error feedback.
rank : int >= 1 or float in (0, 1]
    Absolute, or a fraction of ``min(m, n)`` (rounded up); capped at ``min(m, n)``.
rank_multiple_of : int >= 1
weight_decay : float >= 0 or 1-element tensor
lr_scale : {"fan", None}
    √(m/n), or 1.
orthogonalize : {"auto", "householder", "cholesky_qr2", "rcqr"}
oversample : float >= 1
    Rows of the rcqr sketch per rank.
seed : int >= 0
    The initial ``Q`` (parameter ``i`` from ``seed + i``).
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults



class DionState(NamedTuple):
    """Per-parameter Dion state: ``momentum_buffer`` M (matrix view; momentum and error
    feedback), right factor ``Q`` ``(n, r)``, for ``orthogonalize="rcqr"`` the fixed Gaussian
    ``sketch`` ``(k, m)``, and the non-finite counter."""

    momentum_buffer: Any = None
    Q: Any = None
    sketch: Any = None
    nonfinite_count: Any = None


State = DionState
#: the ``orthogonalize`` choices: :func:`xpmat.orthonormalize`'s methods
ORTHOGONALIZE = ("auto", "householder", "cholesky_qr2", "rcqr")


class DionDirectionState(NamedTuple):
    """``momentum_buffer`` M (m, n) (momentum and error feedback), the right factor ``Q``
    (n, r), and for ``orthogonalize="rcqr"`` the fixed Gaussian ``sketch`` (k, m)."""

    momentum_buffer: Any
    Q: Any
    sketch: Any = None


def dion_direction(rank: int | float = 0.25, *, momentum: float = 0.95, rank_multiple_of: int = 1,
                   orthogonalize: str = "auto", oversample: float = 1.25, seed: int = 0,
                   state_dtype: Any = None,
                   reduce: Callable[[list[Any]], list[Any]] | None = None) -> Transform:
    """Dion's orthonormal low-rank direction with error feedback ([Pethick 2025][pethick-2025])::

        B = M + G;  P, R, Q = PowerIter1(B; Q);  M ← B − (1 − μ) P Rᵀ;  output P Qᵀ

    on matrices ``G`` (m, n), state :class:`DionDirectionState` (``Q`` drawn from
    ``seed + i`` for the i-th matrix); PowerIter1 is :func:`xpmat.power_iter1`.  ``rank``: an
    int, or a float fraction of ``min(m, n)`` (rounded up, then to a multiple of
    ``rank_multiple_of``).  ``orthogonalize``: a method of :func:`xpmat.orthonormalize`
    (``"rcqr"`` with a sketch of ``ceil(oversample·r)`` rows, drawn once from ``seed + 7919 + i``).

    ``reduce(arrays) -> arrays`` (data parallel: the mean over ranks) is applied to ``B Q`` and
    ``Bᵀ P`` — two calls per update for all the matrices together; matrices for which
    ``(m + n) r ≥ m n`` have their gradient reduced whole (in the first call) instead.
    """
    check_real("momentum", momentum, 0.0, 1.0, high_open=True)
    check_lowrank(rank, rank_multiple_of, orthogonalize, seed, ORTHOGONALIZE)
    check_real("oversample", oversample, 1.0)

    def init(params):
        check_rank_fits(rank, [tuple(p.shape) for p in params])
        out = []
        for i, p in enumerate(params):
            xp, dt, dev, (m, n), r, Q = seeded_q(p, i, rank, rank_multiple_of, seed, state_dtype)
            sketch = None
            if orthogonalize == "rcqr":
                k = min(m, max(r, math.ceil(oversample * r)))
                sketch = _array.random_normal((k, m), seed=seed + 7919 + i, xp=xp, dtype=dt,
                                              dev=dev) / math.sqrt(k)
            Q = Q / xp.linalg.vector_norm(Q, axis=0, keepdims=True)
            out.append(DionDirectionState(xp.zeros((m, n), dtype=dt, device=dev), Q, sketch))
        return out

    def power(B, states, idx, red):  # PowerIter1 of the matrices idx: {i: (P, R, Q_new)}
        res = power_iter1([B[i] for i in idx], [states[i].Q for i in idx], method=orthogonalize,
                          sketch=[states[i].sketch for i in idx], reduce=red)
        return dict(zip(idx, zip(*res, strict=True), strict=True))

    def update(grads, states, params):
        G = [_array.as_float(g, _array.array_namespace(g), s.momentum_buffer.dtype)
             for g, s in zip(grads, states, strict=True)]
        dense = [reduce is not None and (g.shape[0] + g.shape[1]) * s.Q.shape[-1] >= g.shape[0] * g.shape[1]
                 for g, s in zip(G, states, strict=True)]
        hook, means = _rounds(reduce, G, dense)
        B = [None if d else s.momentum_buffer + g for g, s, d in zip(G, states, dense, strict=True)]
        out = power(B, states, [i for i, d in enumerate(dense) if not d], hook)
        whole = [i for i, d in enumerate(dense) if d]  # B = M + mean G, after the first round
        for i in whole:
            B[i] = states[i].momentum_buffer + means[i]
        out.update(power(B, states, whole, None))
        ups, new = [], []
        for i, (b, s) in enumerate(zip(B, states, strict=True)):
            xp, (P, R, Qn) = _array.array_namespace(b), out[i]
            ups.append(P @ _array.mT(Qn, xp))
            keep = scalar_hyper(1.0 - momentum, b, xp)
            new.append(DionDirectionState(b - keep * (P @ _array.mT(R, xp)), Qn, s.sketch))
        return ups, new

    return Transform(init, update, DionDirectionState)


def _rounds(reduce: Any, G: list[Any], dense: list[bool]) -> tuple[Any, dict[int, Any]]:
    """The ``reduce`` hook :func:`xpmat.power_iter1` gets for the low-rank matrices, and the
    reduced gradients of the dense ones, which ride in its first call (so a step makes two
    calls in all: ``B Q`` with the dense gradients, in parameter order, then ``Bᵀ P``)."""
    means: dict[int, Any] = {}
    if reduce is None:
        return None, means

    def first(arrays):
        it = iter(arrays)
        out = list(reduce([g if d else next(it) for g, d in zip(G, dense, strict=True)]))
        means.update((i, out[i]) for i, d in enumerate(dense) if d)
        return [out[i] for i, d in enumerate(dense) if not d]

    calls = iter([first, reduce])
    if all(dense) and G:
        next(calls)([])  # no low-rank matrix: power_iter1 makes no call, the gradients go alone
    return (lambda arrays: next(calls)(arrays)), means


def _orth_method(method: str, xp: Any) -> str:
    """``"auto"`` is Householder while ``torch.compile`` traces (CholeskyQR2 reads the host)."""
    return "householder" if method == "auto" and _array.is_compiling(xp) else method


def transform(*, reduce: Callable[[list[Any]], list[Any]] | None = None,
              flags: Callable[[list[Any], list[Any]], list[Any]] | None = None,
              **hyper: Any) -> Transform:
    """Dion as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters: :func:`update`).

    ``reduce`` (mean over data-parallel ranks) and ``flags`` (non-finite flags agreed over the
    ranks) are the hooks of :class:`xpmat.distributed.DistributedDion`; see
    :func:`dion_direction` and
    :func:`~xpmat.optim.transforms.skip_nonfinite`.
    """
    h = resolve_hyper(DEFAULTS, hyper, "dion", RENAMED)
    check_common(h)
    check_choice("lr_scale", h["lr_scale"], ("fan", None))
    steps = [dion_direction(h["rank"], momentum=h["momentum"], rank_multiple_of=h["rank_multiple_of"],
                            orthogonalize=h["orthogonalize"], oversample=h["oversample"],
                            seed=h["seed"], state_dtype=h["state_dtype"], reduce=reduce)]
    if h["lr_scale"] == "fan":
        steps.append(scale_by_shape(lambda m, n: math.sqrt(m / n)))
    steps += [add_decayed_weights(h["weight_decay"]), scale_by_lr(step_size(h))]
    return skip_nonfinite(as_matrix(chain(*steps, state=DionState)), flags=flags)


class RowSharded(NamedTuple):
    """Dion on row blocks of matrices sharded by rows (see :func:`row_sharded`)."""

    rows: tuple[str, ...]          # state fields split by rows like the matrix; the others whole
    update: Callable[..., tuple[list[Any], list[DionState]]]


def row_sharded(**hyper: Any) -> RowSharded | None:
    """Dion for a caller holding row blocks ``W_l`` of matrices split by rows over ranks
    (FSDP2's ``Shard(0)``: xpmat.optim.torch_sharded), in the spirit of the sharded Dion of
    [Ahn et al. 2025][ahn-2025]: nothing whole moves, only the low-rank factors::

        B_l = M_l + G_l;   P = orth(gather_rows(B_l Q));   R = sum_all(B_lᵀ P_l)
        M_l ← B_l − (1 − μ) P_l Rᵀ;   Q ← colnorm(R);   u_l = −s η (a P_l Qᵀ + λ W_l)

    ``update(grads, states, params, shapes, rows, gather_rows, sum_all)``: blocks ``(m_l, ...)``,
    their states (``momentum_buffer`` rows, ``Q`` whole), the whole matrices' ``(m, n)``, the
    block's row range ``(a, b)`` in the whole, ``gather_rows(list of (m_l, r)) -> list of
    (m, r)`` (the blocks of every rank, in row order) and ``sum_all(list) -> list`` (the sum
    over ranks).  Per matrix one gather of ``m r`` and one sum of ``n r`` values.  The
    orthonormalization sees the same whole ``P`` as unsharded Dion; ``R`` sums in another order,
    so a step equals unsharded Dion to rounding.  Flags must agree over ranks (a gradient
    poisoned everywhere if non-finite anywhere).  None for ``orthogonalize="rcqr"`` (its sketch
    spans all rows: such matrices step whole on an owner).
    """
    h = resolve_hyper(DEFAULTS, hyper, "dion", RENAMED)
    check_common(h)
    if h["orthogonalize"] == "rcqr":
        return None
    lr_t, mu, wd = step_size(h), h["momentum"], h["weight_decay"]

    def update(grads, states, params, shapes, rows, gather_rows, sum_all):
        xp = _array.array_namespace(*grads, *params)
        dts = [s.momentum_buffer.dtype for s in states]
        G = [xp.reshape(_array.as_float(g, xp, dt), tuple(s.momentum_buffer.shape))
             for g, s, dt in zip(grads, states, dts, strict=True)]
        oks = [finite(g, xp) for g in G]
        B = [s.momentum_buffer + xp.where(ok, g, xp.zeros_like(g))
             for g, s, ok in zip(G, states, oks, strict=True)]
        P = [orthonormalize(p, method=_orth_method(h["orthogonalize"], xp), xp=xp)[a:b, ...]
             for p, (a, b) in
             zip(gather_rows([b @ s.Q for b, s in zip(B, states, strict=True)]), rows, strict=True)]
        R = sum_all([_array.mT(b, xp) @ q for b, q in zip(B, P, strict=True)])
        ups, new = [], []
        for k, (b, q, r, s) in enumerate(zip(B, P, R, states, strict=True)):
            m, n = shapes[k]
            Qn = _array.normalize_columns(r, xp)
            u = q @ _array.mT(Qn, xp)
            if h["lr_scale"] == "fan":
                u = math.sqrt(m / n) * u
            if maybe_nonzero(wd):
                W = _array.as_float(xp.reshape(params[k], tuple(b.shape)), xp, dts[k])
                u = _array.add_scaled(u, scalar_hyper(wd, u, xp), W, xp)
            u = scalar_hyper(-lr_t, u, xp) * u
            zero = xp.zeros((), dtype=dts[k], device=_array.device(u))
            ups.append(xp.reshape(xp.where(oks[k], u, zero), tuple(params[k].shape)))
            count = s.nonfinite_count + xp.astype(xp.logical_not(oks[k]), s.nonfinite_count.dtype)
            keep = scalar_hyper(1.0 - mu, b, xp)
            new.append(DionState(xp.where(oks[k], b - keep * (q @ _array.mT(r, xp)), s.momentum_buffer),
                                 xp.where(oks[k], Qn, s.Q), None, count))
        return ups, new

    return RowSharded(("momentum_buffer",), update)


def init(params: list[Any], **hyper: Any) -> list[DionState]:
    """Zero momentum and a seeded Gaussian, column-normalized ``Q`` per matrix parameter.

    ``Q`` of parameter ``i`` is drawn on the host from ``seed + i`` (same on every backend).
    """
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[DionState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[DionState]]:
    """One Dion step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2; conv kernels are viewed as ``(out, in·k·k)``).
    state : list of DionState
    **hyper
        ``lr`` (η ≥ 0), ``momentum`` (μ in [0, 1); 0 = plain error feedback), ``rank`` (int
        ≥ 1, or a float fraction in (0, 1] of ``min(m, n)``; capped at ``min(m, n)``),
        ``rank_multiple_of``, ``weight_decay`` (λ ≥ 0, decoupled, times η), ``schedule`` (s),
        ``lr_scale`` (``"fan"``: √(fan_out / fan_in) = √(m/n); ``None``: 1), ``orthogonalize``
        (``"auto"``, ``"householder"``, ``"cholesky_qr2"`` through
        :func:`xpmat.orthonormalize`, or ``"rcqr"``: randomized Cholesky QR with a fixed
        Gaussian sketch of ``ceil(oversample·r)`` rows), ``seed`` (initial ``Q``),
        ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of DionState

    Notes
    -----
    [Pethick 2025][pethick-2025] (the Dion loop and PowerIter1).  Fed the same gradient of rank ≤ r
    repeatedly with ``momentum=0``, the residual ``M`` goes to zero (tested).  Zero gradients
    give zero updates (no NaN); a gradient with a NaN or ±Inf entry is skipped
    (``nonfinite_count``).

    Backends: standard Array API; QR / CholeskyQR2 through :func:`xpmat.orthonormalize`,
    ``rcqr`` uses ``xp.linalg.qr``, ``cholesky`` and a triangular solve.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import dion
    >>> p = [np.zeros((4, 3))]
    >>> g = [np.outer([1.0, 2, 0, 0], [1.0, 0, 1])]         # rank 1
    >>> st = dion.init(p, rank=1)
    >>> u, st = dion.update(g, st, p, rank=1, momentum=0.0, lr=1.0, lr_scale=None)
    >>> print(np.round(np.linalg.svd(u[0], compute_uv=False), 6), np.abs(st[0].momentum_buffer).max() < 1e-12)
    [1. 0. 0.] True
    """
    return run_update(transform(**hyper), grads, state, params)
