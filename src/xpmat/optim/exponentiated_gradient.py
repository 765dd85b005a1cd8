"""Exponentiated gradient, mirror descent on the simplex ([Stratos 2026, §1.1, App. D][stratos-2026]).

Mirror descent (eq. 1–3) maps ``w`` to the dual ``∇ψ(w)``, takes a gradient step there and
maps back, then projects onto the feasible set.  ``mirror`` picks ``ψ``; for a parameter whose
rows (last axis; a 1-D parameter is one row) are probability vectors, with ``m`` the gradient
(or its momentum) and step size s η::

    "entropy"    ψ = −H(w):     w ← w ⊙ exp(−s η m) / Σ w ⊙ exp(−s η m)     (eq. 91, Lemma D.1)
    "euclidean"  ψ = ½‖w‖²:     w ← Π_Δ(w − s η m)                          (eq. 2–3: projected SGD)

``"entropy"`` is computed in log space: ``z = log w − s η m``, ``w ← exp(z − max z) / Σ exp(z −
max z)`` per row, so no exponent overflows and a zero entry stays zero (the support never grows:
the method assumes full support, Lemma D.1).  ``"euclidean"`` projects onto the simplex by
sorting (:func:`project_simplex`).  Parameters not on the simplex (an entry < 0, or a row sum
off 1 by more than √(machine ε) of its dtype) are refused with a ``ValueError`` when the state
is created (one host read per parameter, at the first step).

For weights of either sign there is the hyperbolic-entropy mirror ([Ghai, Hazan, Singer
2020][ghai-2020]), ``ψ(w) = Σ w asinh(w / β) − √(w² + β²)`` on all of ``R^d`` (no projection)::

    "hypentropy"  w ← β sinh(asinh(w / β) − s η m)

It is the unnormalized exponentiated gradient with positive and negative weights, EGU± of
[Kivinen & Warmuth 1997][kivinen-warmuth-1997] (``w = w⁺ − w⁻`` with ``w⁺ w⁻ = β²/4``): each
entry moves by about ``−s η √(w² + β²) m`` — gradient descent for ``|w| ≪ β`` (``scale`` β),
multiplicative for ``|w| ≫ β``.  It is computed as the increment
``−2β cosh(asinh(w/β) − s η m / 2) sinh(s η m / 2)`` (exact zero for a zero step, no
cancellation).  ``momentum`` μ > 0 (ours, default 0) feeds ``m ← μ m + (1 − μ) g`` to the
mirror step instead of ``g``.  ``lr = 0`` moves nothing.  As a composition::

    skip_nonfinite(chain(momentum(μ), mirror_step(mirror, s η, β)))
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.optim._base import (
    check_choice,
    check_common,
    check_real,
    is_array_hyper,
    maybe_nonzero,
    resolve_hyper,
    run_init,
    run_update,
    scalar_hyper,
    state_dtype_for,
    step_size,
)
from xpmat.optim._spec import MethodSpec
from xpmat.optim.transforms import EmptyState, Transform, chain, momentum, skip_nonfinite

__all__ = ["DEFAULTS", "MIRRORS", "ExponentiatedGradientState", "State", "check_simplex", "init",
           "mirror_step", "project_simplex", "transform", "update"]

SPEC = MethodSpec(
    name="exponentiated_gradient",
    class_name="ExponentiatedGradient",
    module=__name__,
    defaults={
        "lr": 0.1,
        "mirror": "entropy",
        "scale": 1.0,
        "momentum": 0.0,
        "schedule": 1.0,
        "state_dtype": None,
    },
    decay_follows_lr=False,
    doc="exponentiated gradient (§1.1, App. D): mirror descent; the demo: hypentropy (EGU±)",
    demo={"lr": 10.0, "mirror": "hypentropy", "scale": 0.1, "momentum": 0.9},
    title="Exponentiated gradient",
    source="[Stratos 2026, §1.1, App. D][stratos-2026]; [Ghai, Hazan, Singer 2020][ghai-2020]",
    summary="""\
Exponentiated gradient, mirror descent on the simplex ([Stratos 2026, §1.1, App. D][stratos-2026])
over :mod:`xpmat.optim.exponentiated_gradient`::

    entropy:     w ← w ⊙ exp(−s η m) / Σ w ⊙ exp(−s η m)   (each row on the simplex; eq. 91)
    euclidean:   w ← Π_Δ(w − s η m)                         (projected SGD; eq. 2–3)
    hypentropy:  w ← β sinh(asinh(w / β) − s η m)          (any sign; EGU±)

``m`` is the gradient, or its average ``m ← μ m + (1 − μ) g``.  With ``"entropy"`` /
``"euclidean"`` every row (last axis) of every parameter must be a probability vector
(``ValueError`` at the first step otherwise).
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
mirror : {"entropy", "euclidean", "hypentropy"}
scale : float > 0
    β of ``"hypentropy"``: entries with ``|w| ≪ β`` move as gradient descent with step
    ``η β``, larger ones multiplicatively.
momentum : float in [0, 1) or 1-element tensor
    μ (0: the gradient itself).
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults

# Sharded (DTensor) parameters (xpmat.optim.torch_sharded): last-axis rows step on their own:
# local where the last axis is whole.
LOCAL_SHARDS = "last_axis"

MIRRORS = ("entropy", "euclidean", "hypentropy")
_ON_SIMPLEX = ("entropy", "euclidean")


class ExponentiatedGradientState(NamedTuple):
    """Per-parameter state: the momentum buffer (zero while μ = 0) and the non-finite counter."""

    momentum_buffer: Any = None
    nonfinite_count: Any = None


State = ExponentiatedGradientState


def _rows(x: Any, xp: Any) -> Any:
    """``x`` as rows ``(-1, last)`` (a 0-d array as one row of one)."""
    return xp.reshape(x, (-1, x.shape[-1] if x.ndim else 1))


def check_simplex(p: Any, name: str = "params") -> None:
    """``ValueError`` unless every row of ``p`` (last axis) is a probability vector: finite,
    entries ≥ 0, sum within √(machine ε) of 1 (one host read)."""
    xp = _array.array_namespace(p)
    W = _rows(_array.as_float(p, xp), xp)
    if not math.prod(W.shape) or getattr(p, "is_meta", False):  # meta: no values to check
        return
    sums = xp.sum(W, axis=-1)
    tol = math.sqrt(float(xp.finfo(W.dtype).eps))
    ok = xp.all(xp.isfinite(W)) & xp.all(W >= 0) & xp.all(xp.abs(sums - 1) <= tol)
    if not bool(ok):
        raise ValueError(f"{name} of shape {tuple(p.shape)} is not on the probability simplex: each "
                         f"row (last axis) needs entries >= 0 summing to 1 (within {tol:.1e}); got "
                         f"min entry {float(xp.min(W)):.3g}, row sums in [{float(xp.min(sums)):.6g}, "
                         f"{float(xp.max(sums)):.6g}].  mirror='hypentropy' takes weights of any sign")


def project_simplex(V: Any, /, *, xp: Any = None) -> Any:
    """Euclidean projection of each row (last axis) of ``V`` onto the probability simplex.

    ``Π(v) = max(v − τ, 0)`` with the threshold of [Duchi et al. 2008][duchi-2008] (Fig. 1),
    ``τ = (Σ_{i ≤ ρ} u_i − 1) / ρ`` for the entries ``u`` sorted in decreasing order, written
    as ``τ = max_k (Σ_{i ≤ k} u_i − 1) / k`` (the same number: the sequence rises up to ρ and
    falls after it), so one sort, one cumulative sum and one max per row; no host read.

    Parameters
    ----------
    V : array, shape (..., d), real floating

    Returns
    -------
    array, shape (..., d): rows ≥ 0 summing to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim.exponentiated_gradient import project_simplex
    >>> np.round(project_simplex(np.array([0.5, 0.9, -1.0])), 12).tolist()
    [0.3, 0.7, 0.0]
    """
    xp = _array.array_namespace(V, names=("V",), xp=xp)
    d = V.shape[-1]
    U = xp.sort(V, axis=-1, descending=True)
    k = xp.arange(1, d + 1, dtype=V.dtype, device=_array.device(V))
    tau = xp.max((xp.cumulative_sum(U, axis=-1) - 1) / k, axis=-1, keepdims=True)
    return xp.maximum(V - tau, xp.zeros_like(V))


def _entropy_step(W: Any, M: Any, eta: float, xp: Any) -> Any:
    """Eq. 91 per row in log space: ``softmax(log W − η M)`` (zero entries stay zero)."""
    pos = W > 0
    z = xp.log(xp.where(pos, W, xp.ones_like(W))) - eta * M
    z = xp.where(pos, z, xp.full_like(z, -math.inf))
    e = xp.where(pos, xp.exp(z - xp.max(z, axis=-1, keepdims=True)), xp.zeros_like(z))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _increment(p: Any, m: Any, mirror: str, eta: float, beta: float, dt: Any) -> Any:
    """``w_new − w`` for parameter ``p`` and direction ``m`` (in dtype ``dt``)."""
    xp = _array.array_namespace(p, m)
    W, M = _array.as_float(p, xp, dt), _array.as_float(m, xp, dt)
    if mirror == "hypentropy":
        h = (0.5 * eta) * M
        return (-2.0 * beta) * xp.cosh(xp.asinh(W / beta) - h) * xp.sinh(h)
    Wr, Mr = _rows(W, xp), _rows(M, xp)
    new = _entropy_step(Wr, Mr, eta, xp) if mirror == "entropy" else project_simplex(Wr - eta * Mr, xp=xp)
    return xp.reshape(new - Wr, tuple(p.shape))


def mirror_step(mirror: str = "entropy", lr: float = 0.1, *, scale: float = 1.0,
                state_dtype: Any = None) -> Transform:
    """The mirror-descent step ``w_new − w`` of ``mirror`` with step size ``lr`` (see the module
    doc); stateless.  ``init`` checks that simplex mirrors get parameters on the simplex."""
    check_choice("mirror", mirror, MIRRORS)
    check_real("lr", lr)
    check_real("scale", scale, low_open=True)
    empty = EmptyState()

    def init(params):
        if mirror in _ON_SIMPLEX:
            for i, p in enumerate(params):
                check_simplex(p, f"params[{i}]")
        return [empty] * len(params)

    def update(grads, states, params):
        out = []
        for g, p in zip(grads, params, strict=True):
            xp = _array.array_namespace(p)
            dt = state_dtype_for(p, xp, state_dtype)
            out.append(_increment(p, g, mirror, _eta(lr, p, xp), float(scale), dt) if maybe_nonzero(lr)
                       else xp.zeros(tuple(p.shape), dtype=dt, device=_array.device(p)))
        return out, [empty] * len(grads)

    return Transform(init, update, EmptyState)


def _eta(lr: Any, like: Any, xp: Any) -> Any:
    """The step size as the arithmetic takes it: a host float, or a tensor ``lr`` (not read)."""
    return scalar_hyper(lr, like, xp) if is_array_hyper(lr) else float(lr)


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "exponentiated_gradient")
    check_common(h)
    check_real("momentum", h["momentum"], 0.0, 1.0, high_open=True)
    return h


def transform(**hyper: Any) -> Transform:
    """Exponentiated gradient as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters:
    :func:`update`)."""
    h = _checked(hyper)
    return skip_nonfinite(chain(
        momentum(h["momentum"], state_dtype=h["state_dtype"]),
        mirror_step(h["mirror"], step_size(h), scale=h["scale"],
                    state_dtype=h["state_dtype"]), state=ExponentiatedGradientState))


def init(params: list[Any], **hyper: Any) -> list[ExponentiatedGradientState]:
    """The state of each parameter; simplex mirrors check the parameters (``ValueError``)."""
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[ExponentiatedGradientState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[ExponentiatedGradientState]]:
    """One exponentiated-gradient (mirror descent) step: ``(updates, new_state)``.

    Parameters
    ----------
    grads, params : list of arrays
        ``mirror="entropy"`` / ``"euclidean"``: each row (last axis) of each parameter on the
        probability simplex; ``"hypentropy"``: any values.  One Array API library and device.
    state : list of ExponentiatedGradientState
    **hyper
        ``lr`` (η ≥ 0), ``mirror`` (``"entropy"`` | ``"euclidean"`` | ``"hypentropy"``),
        ``scale`` (β > 0, hypentropy only), ``momentum`` (μ in [0, 1)), ``schedule`` (s ≥ 0,
        multiplies η), ``state_dtype``.

    Returns
    -------
    updates : list of arrays
        ``w_new − w`` in the state dtype (``params + updates`` is the new point; its rows sum
        to 1 up to rounding, which the next step does not accumulate).
    new_state : list of ExponentiatedGradientState

    Notes
    -----
    [Stratos 2026][stratos-2026] §1.1 (mirror descent, eq. 1–3), App. D (eq. 90–91); the
    hyperbolic entropy of [Ghai, Hazan, Singer 2020][ghai-2020].  A gradient with a NaN or ±Inf
    entry leaves its parameter unchanged and counts in ``nonfinite_count``.

    Backends: standard Array API (``sort``, ``cumulative_sum`` for ``"euclidean"``).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import exponentiated_gradient as eg
    >>> p = [np.array([0.5, 0.5])]
    >>> st = eg.init(p)
    >>> u, st = eg.update([np.array([0.0, np.log(3.0)])], st, p, lr=1.0)
    >>> np.round(p[0] + u[0], 12).tolist()   # w ⊙ exp(−g) / Σ: (1/2, 1/6) / (2/3)
    [0.75, 0.25]
    """
    return run_update(transform(**hyper), grads, state, params)
