"""PowerSGD and PowerSGD+ ([Xie et al. 2025][xie-chen-yuan-2025] §3–4, eq. 7a–7c, Alg. 2), in one process.

Per matrix parameter ``X`` (``m × n`` view) with error ``e``, warm-started ``Q`` ``(n, r)``::

    Δ_t = g_t + e_t                                              (7a)
    P̃_t = QR(Δ_t Q_{t−1}),  Q_t = Δ_tᵀ P̃_t,  Δ̂_t = P̃_t Q_tᵀ      (7b, eq. 9: PowerIter1)
      PowerSGD+ (``restart_every=τ``), when t mod τ = 0:  P̃_t = U[:, :r] of SVD(Δ_t)   (Alg. 2)
    e_{t+1} = Δ_t − Δ̂_t
    m_t = μ m_{t−1} + Δ̂_t,  X_{t+1} = X_t − η m_t                 (7c, base="sgd")
    or Δ̂_t fed to Adam as its gradient                             (base="adamw")

As a composition::

    skip_nonfinite(as_matrix(chain(powersgd_compress(rank, restart_every),
                                   momentum(μ, kind="heavy_ball")  |  scale_by_adam(betas, eps),
                                   add_decayed_weights(λ), scale_by_lr(s η))))

``t`` counts from 0, so PowerSGD+ starts with an SVD step.  The restart decision reads the
step counters on the host (one transfer per step for all matrices); under ``torch.compile`` it
is a ``torch.cond`` on the device instead.  The multi-process form (all-reduce of P and Q)
belongs to :mod:`xpmat.distributed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.iteration import power_iter1, randomized_svd
from xpmat.optim._base import (
    check_betas,
    check_choice,
    check_common,
    check_int,
    check_lowrank,
    check_rank_fits,
    check_real,
    host_steps,
    resolve_hyper,
    run_init,
    run_update,
    seeded_q,
    step_size,
    zeros_step,
)
from xpmat.optim._spec import MethodSpec
from xpmat.optim.transforms import (
    Transform,
    add_decayed_weights,
    as_matrix,
    chain,
    momentum,
    scale_by_adam,
    scale_by_lr,
    skip_nonfinite,
)

__all__ = ["DEFAULTS", "ORTHOGONALIZE", "PowerSGDCompressState", "PowerSGDState", "State", "init",
           "powersgd_compress", "transform", "unused_keys", "update"]

SPEC = MethodSpec(
    name="powersgd",
    class_name="PowerSGD",
    module=__name__,
    defaults={
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
    },
    types={"rank": "float", "restart_every": "int | None"},
    matrix_only=True,
    doc="PowerSGD: rank-r power-step compression, error feedback, momentum SGD",
    demo={"lr": 0.05, "rank": 8, "adamw_lr_ratio": 0.06},
    title="PowerSGD / PowerSGD+",
    source="[Xie, Chen, Yuan 2025, §3–4, Alg. 2][xie-chen-yuan-2025]; [Vogels et al. 2019][vogels-2019]",
    summary="""\
PowerSGD / PowerSGD+ ([Xie, Chen, Yuan 2025][xie-chen-yuan-2025] §3–4, Alg. 2)
over :mod:`xpmat.optim.powersgd`, in one process::

%(powersgd_update)s
""",
    parameters="""\
%(powersgd_params)s
restart_every : int >= 1 or None
    τ: None = PowerSGD, an int = PowerSGD+.
%(powersgd_compression)s
""",
)

PLUS_SPEC = MethodSpec(
    name="powersgd+",
    class_name="PowerSGDPlus",
    module=__name__,
    defaults={**SPEC.defaults, "restart_every": 100},
    types=SPEC.types,
    matrix_only=True,
    parent="powersgd",
    doc="PowerSGD+: PowerSGD with an SVD restart every tau steps",
    demo={"lr": 0.05, "rank": 8, "restart_every": 20, "adamw_lr_ratio": 0.06},
    summary="""\
PowerSGD+ ([Xie, Chen, Yuan 2025][xie-chen-yuan-2025] §4, Alg. 2) over
:mod:`xpmat.optim.powersgd`: :class:`PowerSGD` with ``restart_every=100`` by default, so
the power iteration restarts from an SVD every τ steps, in one process::

%(powersgd_update)s
""",
    parameters="""\
restart_every : int >= 1 or None
    τ, steps between two SVD restarts (default 100; None = plain :class:`PowerSGD`).
%(powersgd_params)s
%(powersgd_compression)s
""",
)
SPECS = (SPEC, PLUS_SPEC)
DEFAULTS: dict[str, Any] = SPEC.defaults


class PowerSGDState(NamedTuple):
    """Per-parameter state (matrix view): ``step``, ``error`` e, ``Q`` ``(n, r)``; the base's
    ``momentum_buffer`` (``base="sgd"``) or ``exp_avg``, ``exp_avg_sq`` (``base="adamw"``);
    the non-finite counter."""

    step: Any = None
    error: Any = None
    Q: Any = None
    momentum_buffer: Any = None
    exp_avg: Any = None
    exp_avg_sq: Any = None
    max_exp_avg_sq: Any = None
    nonfinite_count: Any = None


State = PowerSGDState


def unused_keys(base: str) -> tuple[str, ...]:
    """The hyper-parameters ``base`` does not read (``momentum`` for Adam, ``betas``, ``eps``
    for SGD): the torch classes leave them out of their ``defaults``, so learning-rate
    schedulers that cycle momentum find the right key."""
    return ("betas", "eps") if base == "sgd" else ("momentum",)


#: the ``orthogonalize`` choices: :func:`xpmat.orthonormalize`'s methods (``"rcqr"`` is Dion's)
ORTHOGONALIZE = ("auto", "householder", "cholesky_qr2")


class PowerSGDCompressState(NamedTuple):
    """``step``, the error feedback ``error`` e (m, n) and the warm-started ``Q`` (n, r)."""

    step: Any
    error: Any
    Q: Any


def powersgd_compress(rank: int | float = 4, *, rank_multiple_of: int = 1,
                      restart_every: int | None = None, svd: str = "full",
                      orthogonalize: str = "auto", seed: int = 0,
                      state_dtype: Any = None) -> Transform:
    """PowerSGD's rank-r compression with error feedback
    ([Xie, Chen, Yuan 2025][xie-chen-yuan-2025] eq. 7a–7b, 9, Alg. 2)::

        Δ = G + e;  P, R, Q = PowerIter1(Δ; Q);  Δ̂ = P Rᵀ;  e ← Δ − Δ̂;  output Δ̂

    PowerIter1 is :func:`xpmat.power_iter1`.  PowerSGD+ (``restart_every=τ``): at steps ``t``
    (counted from 0) with ``t mod τ = 0``, ``P = U[:, :r]`` of ``SVD(Δ)`` (``svd="full"``, or
    ``"randomized"``: :func:`xpmat.randomized_svd` seeded ``seed + t``).  The branch reads the
    step counters on the host (one transfer for all matrices); under ``torch.compile`` it is a
    ``torch.cond`` (``svd="full"``) instead.  State :class:`PowerSGDCompressState`.
    """
    if orthogonalize == "rcqr":
        raise ValueError("orthogonalize='rcqr' is Dion's; PowerSGD takes 'auto', 'householder' "
                         "or 'cholesky_qr2'")
    check_lowrank(rank, rank_multiple_of, orthogonalize, seed, ORTHOGONALIZE)
    check_int("restart_every", restart_every, 1, none=True)
    check_choice("svd", svd, ("full", "randomized"))

    def init(params):
        check_rank_fits(rank, [tuple(p.shape) for p in params])
        out = []
        for i, p in enumerate(params):
            xp, dt, dev, (m, n), _, Q = seeded_q(p, i, rank, rank_multiple_of, seed, state_dtype)
            out.append(PowerSGDCompressState(zeros_step(xp, dev), xp.zeros((m, n), dtype=dt, device=dev), Q))
        return out

    def restart(D, Q, t):
        xp = _array.array_namespace(D)
        if svd == "full":
            P = _array.svd(D, xp)[0][:, :Q.shape[-1]]
        else:
            P = randomized_svd(D, Q.shape[-1], seed=seed + t, xp=xp)[0]
        R = _array.mT(D, xp) @ P
        return P, R, _array.normalize_columns(R, xp)

    def power(D, Q):
        return power_iter1(D, Q, method=orthogonalize)

    def update(grads, states, params):
        Ds = [s.error + _array.as_float(g, _array.array_namespace(g), s.error.dtype)
              for g, s in zip(grads, states, strict=True)]
        steps = _restart_steps(restart_every, svd, states, Ds)
        ups, new = [], []
        for D, s, t in zip(Ds, states, steps, strict=True):
            xp = _array.array_namespace(D)
            if restart_every is None or (t is not None and t % restart_every):
                P, R, Qn = power(D, s.Q)
            elif t is not None:
                P, R, Qn = restart(D, s.Q, t)
            else:  # traced by torch.compile: both branches in the graph, one runs
                P, R, Qn = _array.cond(s.step % restart_every == 0, lambda D, Q: restart(D, Q, 0),
                                       power, (D, s.Q), xp=xp)
            Dh = P @ _array.mT(R, xp)
            ups.append(Dh)
            new.append(PowerSGDCompressState(s.step + 1, D - Dh, Qn))
        return ups, new

    return Transform(init, update, PowerSGDCompressState)


def _restart_steps(tau: Any, svd: str, states: Sequence[Any], arrays: Sequence[Any]) -> list[Any]:
    """Host step counters for the restart decision (one transfer), or ``None`` each while
    ``torch.compile`` traces (the decision then stays on the device)."""
    if tau is None or not states:
        return [None] * len(states)
    xp = _array.array_namespace(arrays[0])
    if _array.is_compiling(xp) and svd == "full":
        return [None] * len(states)
    return host_steps([s.step for s in states], xp)


def transform(**hyper: Any) -> Transform:
    """PowerSGD / PowerSGD+ as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters:
    :func:`update`)."""
    h = resolve_hyper(DEFAULTS, hyper, "powersgd")
    check_common(h)
    check_choice("base", h["base"], ("sgd", "adamw"))
    check_real("momentum", h["momentum"], 0.0, 1.0, high_open=True)
    check_betas("betas", h["betas"])
    check_real("eps", h["eps"])
    sd = h["state_dtype"]
    compress = powersgd_compress(h["rank"], rank_multiple_of=h["rank_multiple_of"],
                                 restart_every=h["restart_every"], svd=h["svd"],
                                 orthogonalize=h["orthogonalize"], seed=h["seed"], state_dtype=sd)
    base = (momentum(h["momentum"], kind="heavy_ball", state_dtype=sd) if h["base"] == "sgd"
            else scale_by_adam(h["betas"], h["eps"], state_dtype=sd))
    return skip_nonfinite(as_matrix(chain(compress, base, add_decayed_weights(h["weight_decay"]),
                                          scale_by_lr(step_size(h)),
                                          state=PowerSGDState)))


def init(params: list[Any], **hyper: Any) -> list[PowerSGDState]:
    """Zero error and momentum, seeded Gaussian ``Q`` (parameter ``i`` from ``seed + i``)."""
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[PowerSGDState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[PowerSGDState]]:
    """One PowerSGD / PowerSGD+ step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2; conv kernels viewed as ``(out, in·k·k)``).
    state : list of PowerSGDState
    **hyper
        ``lr`` (η ≥ 0), ``momentum`` (μ in [0, 1) of eq. 7c), ``rank`` (int ≥ 1 or a float
        fraction in (0, 1]), ``rank_multiple_of``, ``restart_every`` (τ: ``None`` = PowerSGD,
        int ≥ 1 = PowerSGD+), ``svd`` (``"full"`` or ``"randomized"`` for the restart), ``base``
        (``"sgd"`` or ``"adamw"``; ``betas``, ``eps`` for the latter), ``weight_decay``
        (decoupled, times η), ``schedule`` (s multiplies η), ``orthogonalize`` (for
        :func:`xpmat.orthonormalize`), ``seed``, ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of PowerSGDState

    Notes
    -----
    [Xie et al. 2025][xie-chen-yuan-2025] eq. (7a)–(7c), (9), Algorithm 2.  Theorem 1 (eq. 10): on the 2×2
    counterexample PowerSGD's updates stay in span(B) in exact arithmetic while PowerSGD+'s
    SVD restarts escape; see ``docs/optim.md`` for what floating point does here.  A gradient
    with a NaN or ±Inf entry is skipped (``nonfinite_count``).

    Backends: standard Array API; ``xp.linalg.svd`` for the restart (or
    :func:`xpmat.randomized_svd`), :func:`xpmat.orthonormalize` otherwise.

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
    return run_update(transform(**hyper), grads, state, params)
