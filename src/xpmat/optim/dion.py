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

from xpmat.optim._base import check_choice, check_common, resolve_hyper, run_init, run_update, step_size
from xpmat.optim.transforms import (
    Transform,
    add_decayed_weights,
    as_matrix,
    chain,
    dion_direction,
    scale_by_lr,
    scale_by_shape,
    skip_nonfinite,
)

__all__ = ["DEFAULTS", "RENAMED", "DionState", "State", "init", "transform", "update"]

DEFAULTS: dict[str, Any] = {
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
}

RENAMED = {"mu": "momentum"}


class DionState(NamedTuple):
    """Per-parameter Dion state: ``momentum_buffer`` M (matrix view; momentum and error
    feedback), right factor ``Q`` ``(n, r)``, for ``orthogonalize="rcqr"`` the fixed Gaussian
    ``sketch`` ``(k, m)``, and the non-finite counter."""

    momentum_buffer: Any = None
    Q: Any = None
    sketch: Any = None
    nonfinite_count: Any = None


State = DionState


def transform(*, reduce: Callable[[list[Any]], list[Any]] | None = None,
              flags: Callable[[list[Any], list[Any]], list[Any]] | None = None,
              **hyper: Any) -> Transform:
    """Dion as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters: :func:`update`).

    ``reduce`` (mean over data-parallel ranks) and ``flags`` (non-finite flags agreed over the
    ranks) are the hooks of :class:`xpmat.distributed.DistributedDion`; see
    :func:`~xpmat.optim.transforms.dion_direction` and
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
