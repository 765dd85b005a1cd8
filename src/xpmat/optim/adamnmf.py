"""AdamNMF ([Stratos 2026, App. L.2][stratos-2026], two fixes): rank-r NMF second moment.

Per matrix parameter ``W`` (``m × n`` view; conv kernels ``(out, in·k·k)``), gradient ``G``::

    A₀ ~ U(0, ε)^{m×r},  B₀ ~ U(0, ε)^{r×n}                  (step 1, xpmat.nmf_online_init)
    A, B ← one blockwise EM step on G² from (A, B)            (step (b), xpmat.nmf_online_step;
                                                                G ∈ R^{m×n}, footnote 22)
    A, B ← max(A, floor), max(B, floor)                        (keeps the factors strictly positive)
    M ← β₁ M + (1 − β₁) G,  M̄ = M / (1 − β₁ᵗ)                 (only if β₁ > 0; published: G)
    W ← W − s η M̄ / (√(A B) + ε) − s η λ W                    (step (c))

Memory for the second moment: ``(m + n) r`` numbers instead of Adam's ``m n``.  ``betas[1] = β``
(not in the published method; None there) makes the EM target the EMA ``β A B + (1 − β) G²`` instead of
``G²``.  The factor
floor is our addition: a multiplicative EM update cannot leave 0, so a gradient row that is
exactly zero once would otherwise pin that row of ``A B`` at 0 for good.  Matrix-only: 1-D
parameters go to AdamW (the torch class does it, or :func:`xpmat.optim.route`).  As a
composition: ``skip_nonfinite(as_matrix(chain(scale_by_nmf(rank, betas, eps),
add_decayed_weights(λ), scale_by_lr(s η))))``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from xpmat import _array
from xpmat.nmf import nmf_online_init, nmf_online_step
from xpmat.optim._base import (
    check_betas,
    check_common,
    check_int,
    check_rank,
    check_rank_fits,
    check_real,
    refuse_tensor_hyper,
    resolve_hyper,
    resolve_rank,
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
    as_matrix,
    chain,
    ema_update,
    scale_by_lr,
    skip_nonfinite,
)

__all__ = ["DEFAULTS", "RENAMED", "AdamNMFState", "State", "init", "scale_by_nmf", "transform", "update"]

RENAMED = {"beta1": "betas=(beta1, beta)", "beta": "betas=(beta1, beta)"}

SPEC = MethodSpec(
    name="adamnmf",
    class_name="AdamNMF",
    module=__name__,
    defaults={
        "lr": 1e-3,
        "rank": 1,
        "betas": (0.0, None),
        "eps": 1e-8,
        "init_scale": 1e-3,
        "factor_floor": 1e-12,
        "nmf_eps": 1e-30,
        "weight_decay": 0.0,
        "schedule": 1.0,
        "seed": 0,
        "state_dtype": None,
    },
    types={"rank": "float", "betas": "tuple[float, float | None]"},
    matrix_only=True,
    fallback_lr_ratio=1.0,
    renamed=RENAMED,
    doc="AdamNMF (L.2): rank-r NMF second moment, one warm-started EM step a step",
    demo={"lr": 1e-3, "rank": 4, "betas": (0.9, 0.999), "adamw_lr_ratio": 3.0},
    source="[Stratos 2026, App. L.2][stratos-2026]",
    summary="""\
AdamNMF ([Stratos 2026, App. L.2][stratos-2026]) over :mod:`xpmat.optim.adamnmf`::

    A, B ← one warm-started EM step of the rank-r NMF of G² (or of β A B + (1 − β) G²)
    W ← W − s η M̄ / (√(A B) + ε) − s η λ W       (M̄ = G, or bias-corrected momentum)

1-D parameters go to AdamW.
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
rank : int >= 1 or float in (0, 1]
betas : (float, float or None)
    β₁ momentum in [0, 1) (0: the raw gradient); β the EMA of the EM target (None: G²).
eps : float >= 0
init_scale : float > 0
factor_floor, nmf_eps : float >= 0
weight_decay : float >= 0 or 1-element tensor
seed : int >= 0
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults



class AdamNMFState(NamedTuple):
    """Per-parameter AdamNMF state: factors ``A`` (m, r), ``B`` (r, n), ``step``, the optional
    momentum ``exp_avg`` (β₁ > 0) and the non-finite counter."""

    step: Any = None
    A: Any = None
    B: Any = None
    exp_avg: Any = None
    nonfinite_count: Any = None


class NMFState(NamedTuple):
    """The state of :func:`scale_by_nmf`."""

    step: Any
    A: Any
    B: Any
    exp_avg: Any = None


State = AdamNMFState


def scale_by_nmf(rank: int | float = 1, betas: tuple[float, float | None] = (0.0, None),
                 eps: float = 1e-8, *, init_scale: float = 1e-3, factor_floor: float = 1e-12,
                 nmf_eps: float = 1e-30, seed: int = 0, state_dtype: Any = None) -> Transform:
    """``M̄ / (√(A B) + ε)`` on matrices: the second moment a rank-r NMF ``A B`` of ``G²``
    refreshed by one warm-started EM step (:func:`xpmat.nmf_online_step`), ``M̄`` the
    bias-corrected momentum (β₁ > 0) or ``G``; state :class:`NMFState` (factors drawn
    ``U(0, init_scale)`` from ``seed + i``)."""
    b1, beta = betas

    def init(params):
        check_rank_fits(rank, [tuple(p.shape) for p in params])
        out = []
        for i, p in enumerate(params):
            xp, dev = _array.array_namespace(p), _array.device(p)
            ref = xp.zeros(tuple(p.shape), dtype=state_dtype_for(p, xp, state_dtype), device=dev)
            r = resolve_rank(rank, 1, *p.shape)
            A, B = nmf_online_init(ref, r, scale=init_scale, seed=int(seed) + i, xp=xp)
            out.append(NMFState(zeros_step(xp, dev), A, B, ref if b1 else None))
        return out

    def update(grads, states, params):
        ups, new = [], []
        for g, s in zip(grads, states, strict=True):
            xp = _array.array_namespace(g)
            G, step = _array.as_float(g, xp, s.A.dtype), s.step + 1
            A, B = nmf_online_step(G, s.A, s.B, beta=beta, eps=nmf_eps, xp=xp)
            if factor_floor:
                # max(X, floor) by where, not clip: array-api-compat's clip checks a float bound
                # with math.isnan, a graph break under torch.compile(dynamic=True) (a symbol)
                A, B = (xp.where(X < factor_floor, factor_floor, X) for X in (A, B))
            num, M = ema_update(s.exp_avg, G, b1, step, xp) if b1 else (G, None)
            ups.append(num / (xp.sqrt(A @ B) + eps))
            new.append(NMFState(step, A, B, M))
        return ups, new

    return Transform(init, update, NMFState)


def transform(**hyper: Any) -> Transform:
    """AdamNMF as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters: :func:`update`)."""
    h = resolve_hyper(DEFAULTS, hyper, "adamnmf", RENAMED)
    check_common(h)
    refuse_tensor_hyper(h, ("betas",), "adamnmf", "β₁ = 0 decides whether a first moment is kept")
    check_betas("betas", h["betas"], none=(1,))
    check_rank(h["rank"])
    for k in ("eps", "factor_floor", "nmf_eps"):
        check_real(k, h[k])
    check_real("init_scale", h["init_scale"], low_open=True)
    check_int("seed", h["seed"], 0)
    nmf = scale_by_nmf(h["rank"], h["betas"], h["eps"], init_scale=h["init_scale"], seed=h["seed"],
                       factor_floor=h["factor_floor"], nmf_eps=h["nmf_eps"], state_dtype=h["state_dtype"])
    return skip_nonfinite(as_matrix(chain(nmf, add_decayed_weights(h["weight_decay"]),
                                          scale_by_lr(step_size(h)),
                                          state=AdamNMFState)))


def init(params: list[Any], **hyper: Any) -> list[AdamNMFState]:
    """Random ``U(0, init_scale)`` factors (host draw, seed ``seed + i`` for ``params[i]``)."""
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[AdamNMFState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[AdamNMFState]]:
    """One AdamNMF step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2); 1-D ones raise ``ValueError`` (route them to AdamW).
    state : list of AdamNMFState
    **hyper
        ``lr`` (η ≥ 0), ``rank`` (r: int ≥ 1, or a fraction in (0, 1] of min(m, n)),
        ``betas`` (β₁: momentum in [0, 1), 0 = the raw gradient, as published; β: None = EM target G²,
        else the EMA target), ``eps`` (ε ≥ 0 in the denominator), ``init_scale`` (ε of step 1,
        > 0), ``factor_floor``,
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
    (≥ ``factor_floor``); with rank 1 a single EM step already gives the rank-1 I-divergence
    optimum ``G² 1 1ᵀ G² / (1ᵀ G² 1)`` of §4.7.
    A zero gradient gives a zero update; a gradient with a NaN or ±Inf entry is skipped
    (``nonfinite_count``).

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
    return run_update(transform(**hyper), grads, state, params)
