"""SGD on the sphere: each unit's weight vector kept at radius r ([Stratos 2026, §8.1][stratos-2026]).

A parameter's rows are its units (the matrix view ``(out, prod(rest))``: one row per output
unit, conv kernels included); a 1-D parameter is one vector.  Each row ``w`` is first put on
the sphere (``w̄ = r w / ‖w‖``; a zero row stays zero), then, with ``v`` the gradient (or its
momentum), ``v⊥ = v − w̄ (w̄ᵀ v) / r²`` its tangent part and step size s η::

    "pin"           x = w̄ − s η v                                      (eq. 70, pin-to-sphere)
    "classical"     x = w̄ − s η v⊥                                     (eq. 72)
    "trust_region"  x = w̄ − s η z,  z = argmax {zᵀ v : ‖z‖ ≤ 1, zᵀ w̄ = 0}   (eq. 73)
    w ← r x / ‖x‖                                                      (the retraction)

For ``"classical"`` the retraction is eq. 72's factor ``r / √(r² + s²η²‖v⊥‖²)``, computed as a
norm so the result lies on the sphere to rounding.  ``"trust_region"`` takes ``norm="l2"``
(``z = v⊥ / ‖v⊥‖``, the classical direction rescaled) or ``norm="linf"`` by the duality of
Lemma S.21: ``λ* = argmin_λ ‖v + λ w̄‖₁`` is a weighted median of ``−v_i / w̄_i`` (weights
``|w̄_i|``; one sort per row), and ``z ∈ ∂‖v + λ* w̄‖₁ ⟂ w̄`` is ``sign(v + λ* w̄)`` off the
median, with the median entries set to the value in [−1, 1] that makes ``zᵀ w̄ = 0``.

Weight normalization with a frozen scale ``s = r`` under SGD is the classical step with
``α_t = η r² / ‖v_t‖²`` (Lemma 8.1, eq. 76; tested with
``torch.nn.utils.parametrizations.weight_norm``).  ``momentum`` μ (heavy ball, as
:mod:`xpmat.optim.sgd`; Nesterov with ``nesterov``) averages the ambient gradient; so
``"pin"`` is an SGD step followed by the retraction.  ``lr = 0`` moves nothing (no retraction
either).  As a composition::

    skip_nonfinite(chain(momentum(μ, nesterov, kind="heavy_ball"), sphere_step(method, norm, r, s η)))
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.optim._base import (
    check_bool,
    check_choice,
    check_common,
    check_real,
    is_array_hyper,
    matrix_shape,
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

__all__ = ["DEFAULTS", "METHODS", "NORMS", "SphereSGDState", "State", "init", "linf_tangent_direction",
           "sphere_step", "transform", "update"]

SPEC = MethodSpec(
    name="sphere_sgd",
    class_name="SphereSGD",
    module=__name__,
    defaults={
        "lr": 0.05,
        "method": "classical",
        "norm": "l2",
        "radius": 1.0,
        "momentum": 0.0,
        "nesterov": False,
        "schedule": 1.0,
        "state_dtype": None,
    },
    decay_follows_lr=False,
    doc="SGD on the sphere (§8.1): each unit at radius r, classical retraction (eq. 72)",
    demo={"lr": 0.1, "momentum": 0.9, "radius": 2.0},
    title="SGD on the sphere",
    source="[Stratos 2026, §8.1][stratos-2026]; [Salimans & Kingma 2016][salimans-kingma-2016]",
    summary="""\
SGD with each unit on the sphere ([Stratos 2026, §8.1][stratos-2026]) over
:mod:`xpmat.optim.sphere_sgd`: every row of a parameter's matrix view (a 1-D parameter:
the vector) is kept at norm ``radius``::

    v ← μ v + g;  w̄ = r w / ‖w‖;  v⊥ = v − w̄ (w̄ᵀ v) / r²
    pin: x = w̄ − s η v;  classical: x = w̄ − s η v⊥;  trust_region: x = w̄ − s η z (‖z‖ ≤ 1, z ⟂ w̄)
    w ← r x / ‖x‖
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
method : {"pin", "classical", "trust_region"}
    Eq. 70, 72, 73.
norm : {"l2", "linf"}
    The trust region's norm (``"linf"``: the duality of Lemma S.21).
radius : float > 0
momentum : float in [0, 1) or 1-element tensor
    Heavy ball on the gradient (0: none).
nesterov : bool
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults

# Sharded (DTensor) parameters (xpmat.optim.torch_sharded): rows of the matrix view step on their own:
# local where no row is cut.
LOCAL_SHARDS = "rows"

METHODS = ("pin", "classical", "trust_region")
NORMS = ("l2", "linf")


class SphereSGDState(NamedTuple):
    """Per-parameter state: the momentum buffer (zero while μ = 0) and the non-finite counter."""

    momentum_buffer: Any = None
    nonfinite_count: Any = None


State = SphereSGDState


def _units(x: Any, xp: Any) -> Any:
    """``x`` as rows: the matrix view for ndim ≥ 2, one row for a vector (or a 0-d value)."""
    if x.ndim >= 2:
        return xp.reshape(x, matrix_shape(x.shape))
    return xp.reshape(x, (1, max(1, math.prod(x.shape))))


def _to_radius(X: Any, r: float, xp: Any, fallback: Any = None) -> Any:
    """Rows of ``X`` scaled to norm ``r``; a zero row becomes the row of ``fallback`` (or stays 0)."""
    n = xp.linalg.vector_norm(X, axis=-1, keepdims=True)
    out = X * (r / xp.where(n > 0, n, xp.ones_like(n)))
    return out if fallback is None else xp.where(n > 0, out, fallback)


def linf_tangent_direction(V: Any, W: Any, /, *, xp: Any = None) -> Any:
    """Row-wise ``z = argmax {zᵀ v : ‖z‖_∞ ≤ 1, zᵀ w = 0}`` (eq. 73 under ℓ∞, Lemma S.21).

    Parameters
    ----------
    V, W : arrays, shape (R, d)
        Directions ``v`` and the points ``w`` (rows).

    Returns
    -------
    Z : array, shape (R, d), entries in [−1, 1], each row orthogonal to ``w`` (to rounding).

    Notes
    -----
    ``λ* = argmin_λ ‖v + λ w‖₁ = argmin_λ Σ_i |w_i| |λ − (−v_i / w_i)|`` is a weighted median
    (sort the ratios, carry the weights, take the first where the cumulative weight reaches
    half).  ``z = sign(v + λ* w)`` where ``v_i + λ* w_i ≠ 0``; the entries at the median get
    ``α sign(w_i)`` with ``α`` fixed by ``zᵀ w = 0`` (in [−1, 1] by optimality).  Then
    ``zᵀ v = ‖v + λ* w‖₁``, the dual optimum.  Cost: one sort of each row.
    """
    xp = _array.array_namespace(V, W, names=("V", "W"), xp=xp)
    R, d = V.shape
    a = xp.abs(W)
    pos = a > 0
    ratio = xp.where(pos, -V / xp.where(pos, W, xp.ones_like(W)), xp.zeros_like(V))
    order = xp.argsort(ratio, axis=-1)
    flat = xp.reshape(order + xp.arange(R, device=_array.device(V))[:, None] * d, (-1,))
    r_sorted = xp.reshape(xp.take(xp.reshape(ratio, (-1,)), flat, axis=0), (R, d))
    cw = xp.cumulative_sum(xp.reshape(xp.take(xp.reshape(a, (-1,)), flat, axis=0), (R, d)), axis=-1)
    reached = cw >= cw[:, -1:] / 2
    lam = xp.min(xp.where(reached, r_sorted, xp.full_like(r_sorted, math.inf)), axis=-1, keepdims=True)
    H = V + lam * W
    tiny = 8 * float(xp.finfo(V.dtype).eps)
    tie = pos & (xp.abs(H) <= tiny * (xp.abs(V) + xp.abs(lam * W)))
    off = xp.sum(xp.where(tie, xp.zeros_like(W), W * xp.sign(H)), axis=-1, keepdims=True)
    mass = xp.sum(xp.where(tie, a, xp.zeros_like(a)), axis=-1, keepdims=True)
    alpha = xp.clip(-off / xp.where(mass > 0, mass, xp.ones_like(mass)), min=-1.0, max=1.0)
    return xp.where(tie, alpha * xp.sign(W), xp.sign(H))


def _sphere_rows(W: Any, V: Any, method: str, norm: str, r: float, eta: float, xp: Any) -> Any:
    """The new rows ``r x / ‖x‖`` of one parameter (rows ``W``, directions ``V``)."""
    Wb = _to_radius(W, r, xp)
    if method == "pin":
        D = V
    elif method == "trust_region" and norm == "linf":
        D = linf_tangent_direction(V, Wb, xp=xp)
    else:
        D = V - Wb * (xp.sum(Wb * V, axis=-1, keepdims=True) / (r * r))
        if method == "trust_region":
            n = xp.linalg.vector_norm(D, axis=-1, keepdims=True)
            D = D / xp.where(n > 0, n, xp.ones_like(n))
    return _to_radius(Wb - eta * D, r, xp, fallback=Wb)


def sphere_step(method: str = "classical", norm: str = "l2", radius: float = 1.0, lr: float = 0.05, *,
                state_dtype: Any = None) -> Transform:
    """The sphere step ``w_new − w`` of each unit (see the module doc); stateless."""
    check_choice("method", method, METHODS)
    check_choice("norm", norm, NORMS)
    if norm != "l2" and method != "trust_region":
        raise ValueError(f"norm={norm!r} needs method='trust_region' (pin and classical steps are ℓ2)")
    check_real("radius", radius, low_open=True)
    check_real("lr", lr)
    empty = EmptyState()

    def update(grads, states, params):
        out = []
        for g, p in zip(grads, params, strict=True):
            xp = _array.array_namespace(g, p)
            dt = state_dtype_for(p, xp, state_dtype)
            W = _units(_array.as_float(p, xp, dt), xp)
            if maybe_nonzero(lr):
                eta = scalar_hyper(lr, W, xp) if is_array_hyper(lr) else float(lr)
                u = _sphere_rows(W, _units(_array.as_float(g, xp, dt), xp), method, norm, float(radius),
                                 eta, xp) - W
            else:
                u = xp.zeros_like(W)
            out.append(xp.reshape(u, tuple(p.shape)))
        return out, [empty] * len(grads)

    return Transform(lambda params: [empty] * len(params), update, EmptyState)


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "sphere_sgd")
    check_common(h)
    check_real("momentum", h["momentum"], 0.0, 1.0, high_open=True)
    check_bool("nesterov", h["nesterov"])
    return h


def transform(**hyper: Any) -> Transform:
    """SphereSGD as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters: :func:`update`)."""
    h = _checked(hyper)
    return skip_nonfinite(chain(
        momentum(h["momentum"], nesterov=h["nesterov"], kind="heavy_ball", state_dtype=h["state_dtype"]),
        sphere_step(h["method"], h["norm"], h["radius"], step_size(h),
                    state_dtype=h["state_dtype"]), state=SphereSGDState))


def init(params: list[Any], **hyper: Any) -> list[SphereSGDState]:
    """Zero momentum for each parameter."""
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[SphereSGDState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[SphereSGDState]]:
    """One step on the sphere: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays
        Any shapes (rows of the matrix view are the units; a vector is one unit), one Array API
        library and device.
    state : list of SphereSGDState
    **hyper
        ``lr`` (η ≥ 0), ``method`` (``"pin"`` | ``"classical"`` | ``"trust_region"``),
        ``norm`` (``"l2"`` | ``"linf"``, trust region only), ``radius`` (r > 0), ``momentum``
        (μ in [0, 1)), ``nesterov``, ``schedule`` (s ≥ 0, multiplies η), ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of SphereSGDState

    Notes
    -----
    [Stratos 2026][stratos-2026] §8.1: eq. 70 (pin), 71 (its first-order view, Lemma S.19), 72
    (classical), 73 and Lemma S.21 (trust region), §8.1.4 and Lemma 8.1 (weight normalization).
    A gradient with a NaN or ±Inf entry leaves its parameter unchanged and counts in
    ``nonfinite_count``.

    Backends: standard Array API (``argsort``, ``take``, ``cumulative_sum`` for ``norm="linf"``).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import sphere_sgd
    >>> p = [np.array([[1.0, 0.0]])]
    >>> st = sphere_sgd.init(p)
    >>> u, st = sphere_sgd.update([np.array([[5.0, -1.0]])], st, p, lr=1.0, method="trust_region")
    >>> np.round(p[0] + u[0], 6).tolist()   # tangent step of length 1, then back to radius 1
    [[0.707107, 0.707107]]
    """
    return run_update(transform(**hyper), grads, state, params)
