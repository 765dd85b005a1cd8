"""LRE's inner optimizers: small steps on the rank-r projected gradient, chained.

Internal to :mod:`xpmat.optim.lre` ([LRE 2025][lre-2025], "Inner optimizers").  The gradient
of a block is projected, ``ĝ = keep ∘ Qᵀ g`` (nb, r), and ``inner=[name, ...]`` runs the
named steps one after the other, each on the previous one's output ``x`` (the first sees
``ĝ``); :data:`STEPS` maps every name to an :class:`InnerStep`::

    apply(x, st, ctx, h, xp) -> (x, st)      st: the step's own state fields (a dict)

When the basis moves (``Q_old → Q``) every state field is carried to the new coordinates by
``R = Qᵀ Q_old`` (nb, r, r) according to its kind (:func:`rotate`)::

    "vec"     m ← R m                        first moments
    "diag"    v ← diag(R diag(v) Rᵀ) = (R∘R) v  diagonal second moments ("The algorithm" step 5)
    "mat"     V ← R V Rᵀ                     full second moments
    "bfgs"    B ← R B Rᵀ + σ (I − R Rᵀ)      a Hessian estimate: the new directions get σ
    "scalar"  unchanged

The arithmetic of the EMAs is :func:`~xpmat.optim.transforms.ema_update` and Adam's is
:func:`~xpmat.optim.transforms.adam_direction`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.optim._base import one_minus_power
from xpmat.optim.transforms import AdamState, adam_direction, ema_update

__all__ = ["CLIP_DEFAULTS", "HVP_STEPS", "MOMENT_STEPS", "ROOT_STEPS", "STEPS", "InnerContext", "InnerStep",
           "init_fields", "qn_tol", "reciprocal_where", "rotate", "run_chain"]


def qn_tol(dtype: Any, xp: Any) -> float:
    """A secant pair is skipped when ``|denominator| ≤ tol · ‖a‖ ‖s‖``: ``tol = max(1e-8, √eps)``
    (1.5e-8 in float64, 3.5e-4 in float32, where smaller denominators are rounding noise:
    LRE's SR1 on the digits MLP in float32 accepted one and its curvature overflowed)."""
    return max(1e-8, math.sqrt(float(xp.finfo(dtype).eps)))


def reciprocal_where(d: Any, ok: Any, xp: Any) -> Any:
    """``1 / d`` where ``ok`` and finite, else 0 (a denormal ``d`` passes the tolerance test
    when ``tol · ‖a‖ ‖s‖`` underflows to 0, and its reciprocal overflows)."""
    inv = 1.0 / xp.where(ok, d, xp.ones_like(d))
    return xp.where(ok & xp.isfinite(inv), inv, xp.zeros_like(inv))


CLIP_DEFAULTS = {"clip_norm": 1.0, "clip_value": 0.2}  # LRE's ClipNorm / ClipValue defaults


class InnerContext(NamedTuple):
    """What the steps read besides ``x``: ``g`` the projected gradient ĝ (nb, r), ``keep``
    the kept slots (nb, r), ``Lh`` the debiased eigenvalues (nb, r), ``root`` the ``p`` of
    ``"precondition"``, ``step`` the count before this step (0-d), ``s`` / ``y`` the projected
    probe ``Qᵀz`` and Hessian-vector product ``QᵀHz`` (nb, r; Hessian curvatures only), and
    ``rtol`` the eigenvalue cut of the full-matrix steps."""

    g: Any
    keep: Any
    Lh: Any
    root: int
    step: Any
    s: Any = None
    y: Any = None
    rtol: float = 0.0


class InnerStep(NamedTuple):
    """One chain element: its state ``fields`` (name -> kind, see the module doc) and ``apply``."""

    fields: dict[str, str]
    apply: Callable[..., tuple[Any, dict[str, Any]]]


def _debias(M: Any, beta: float, step: Any, xp: Any) -> Any:
    """``M / (1 − βᵗ)`` with ``t = step`` (a 0-d count)."""
    return M / xp.astype(one_minus_power(beta, step), M.dtype)


def _sym_apply(V: Any, m: Any, f: Callable[[Any], Any], rtol: float, xp: Any) -> Any:
    """``E diag(f(w)) Eᵀ m`` for ``V = E diag(w) Eᵀ`` (nb, r, r), ``m`` (nb, r); eigenvalues
    ``|w| ≤ rtol · max|w|`` (rounding noise, empty directions) are dropped, never inverted."""
    w, E = _array.eigh(V, xp)
    top = xp.max(xp.abs(w), axis=-1, keepdims=True)
    ok = (xp.abs(w) > rtol * top) & (top > 0)
    fw = xp.where(ok, f(xp.where(ok, w, xp.ones_like(w))), xp.zeros_like(w))
    return (E @ (fw * _array.matmul_t(E, m[..., None], xp)[..., 0])[..., None])[..., 0]


# ----------------------------------------------------------------------------- moments
def _adam(x, st, ctx, h, xp):
    """Adam (:func:`~xpmat.optim.transforms.adam_direction`): ``m̂ / (√v̂ + ε)``."""
    o, a = adam_direction(x, AdamState(ctx.step, st["exp_avg"], st["exp_avg_sq"]), xp,
                          betas=h["betas"], eps=h["eps"])
    return o, {"exp_avg": a.exp_avg, "exp_avg_sq": a.exp_avg_sq}


def _lion(x, st, ctx, h, xp):
    """Lion: ``sign(β₁ m + (1 − β₁) x)``, then ``m ← β₂ m + (1 − β₂) x``."""
    b1, b2 = h["betas"]
    m = st["exp_avg"]
    out = xp.sign(m + (1.0 - b1) * (x - m))
    return out, {"exp_avg": m + (1.0 - b2) * (x - m)}


def _full_adam(x, st, ctx, h, xp):
    """Full-matrix Adam: ``V ← β₂ V + (1 − β₂) x xᵀ`` (r × r), ``(V̂^(1/2) + ε)⁻¹ m̂``."""
    b1, b2 = h["betas"]
    t = ctx.step + 1
    _, m = ema_update(st["exp_avg"], x, b1, None, xp)
    _, V = ema_update(st["exp_avg_outer"], x[..., :, None] * x[..., None, :], b2, None, xp)
    eps = h["eps"]
    out = _sym_apply(_debias(V, b2, t, xp), _debias(m, b1, t, xp),
                     lambda w: 1.0 / (xp.sqrt(xp.abs(w)) + eps), ctx.rtol, xp)
    return out, {"exp_avg": m, "exp_avg_outer": V}


def _hutchinson_adam(x, st, ctx, h, xp):
    """Adam with Hutchinson's diagonal ``d = (Qᵀz) ∘ (QᵀHz)`` (``E[d] = diag(QᵀHQ)``) in
    place of the squared gradient (squared, as AdaHessian): ``m̂ / (√v̂ + ε)``, ``v`` the EMA
    of ``d²``."""
    b1, b2 = h["betas"]
    t = ctx.step + 1
    d = ctx.s * ctx.y
    _, m = ema_update(st["exp_avg"], x, b1, None, xp)
    _, v = ema_update(st["exp_avg_sq"], d * d, b2, None, xp)
    out = _debias(m, b1, t, xp) / (xp.sqrt(_debias(v, b2, t, xp)) + h["eps"])
    return out, {"exp_avg": m, "exp_avg_sq": v}


def _bfgs_target(B: Any, s: Any, y: Any, xp: Any) -> tuple[Any, Any]:
    """``BFGS(B; s, y) = B + y yᵀ/yᵀs − (Bs)(Bs)ᵀ/sᵀBs`` (nb, r, r) and the mask of pairs
    with a positive ``yᵀs`` (the others leave ``B`` as it is)."""
    tol = qn_tol(B.dtype, xp)
    ys = xp.sum(y * s, axis=-1)
    ns = xp.linalg.vector_norm(s, axis=-1)
    ok = ys > tol * xp.linalg.vector_norm(y, axis=-1) * ns
    Bs = (B @ s[..., None])[..., 0]
    sbs = xp.sum(Bs * s, axis=-1)
    ok_b = sbs > tol * xp.linalg.vector_norm(Bs, axis=-1) * ns
    wy = reciprocal_where(ys, ok, xp)
    wb = reciprocal_where(sbs, ok & ok_b, xp)
    outer = lambda a, w: w[:, None, None] * (a[..., :, None] * a[..., None, :])  # noqa: E731
    return B + outer(y, wy) - outer(Bs, wb), ok


def _full_bfgs_adam(x, st, ctx, h, xp):
    """Adam whose second moment is a BFGS Hessian estimate ``B`` (r × r) of the projected
    pairs ``s = Qᵀz``, ``y = QᵀHz``: ``B`` starts at ``σ I`` (σ = yᵀy / yᵀs of the first
    pair), then moves toward ``BFGS(B; s, y)`` by ``1 − β₂`` each step; output
    ``(B + ε)⁻¹ m̂`` (``m̂`` itself until a pair is accepted)."""
    b1, b2 = h["betas"]
    B, sigma = st["bfgs_matrix"], st["bfgs_scale"]
    s, y = ctx.s, ctx.y
    ys, nrm = xp.sum(y * s, axis=-1), xp.linalg.vector_norm
    inv = reciprocal_where(ys, ys > qn_tol(B.dtype, xp) * nrm(y, axis=-1) * nrm(s, axis=-1), xp)
    first = (sigma == 0) & (inv > 0)
    sigma = xp.where(first, xp.sum(y * y, axis=-1) * inv, sigma)
    eye = xp.eye(B.shape[-1], dtype=B.dtype, device=_array.device(B))
    B = xp.where(first[:, None, None], sigma[:, None, None] * eye, B)
    target, ok = _bfgs_target(B, s, y, xp)
    B = xp.where(ok[:, None, None], B + (1.0 - b2) * (target - B), B)
    _, m = ema_update(st["exp_avg"], x, b1, None, xp)
    mh = _debias(m, b1, ctx.step + 1, xp)
    eps = h["eps"]
    out = _sym_apply(B, mh, lambda w: 1.0 / (xp.abs(w) + eps), ctx.rtol, xp)
    out = xp.where((sigma > 0)[:, None], out, mh)
    return out, {"exp_avg": m, "bfgs_matrix": B, "bfgs_scale": sigma}


# ----------------------------------------------------------------------------- modifiers
def _ema(x, st, ctx, h, xp):
    """``B ← β B + (1 − β) x``, output ``B`` (β = ``ema_beta``; LRE's EMA, not debiased)."""
    _, B = ema_update(st["momentum_buffer"], x, h["ema_beta"], None, xp)
    return B, {"momentum_buffer": B}


def _normalize_by_ema(x, st, ctx, h, xp):
    """``x · ‖â‖ / ‖x‖`` with ``â`` the debiased EMA of ``x`` (β = ``norm_beta``): steps as
    long as their running mean (short when the directions disagree)."""
    out, a = ema_update(st["update_avg"], x, h["norm_beta"], ctx.step + 1, xp)
    nx = xp.linalg.vector_norm(x, axis=-1, keepdims=True)
    na = xp.linalg.vector_norm(out, axis=-1, keepdims=True)
    scale = xp.where(nx > 0, na / xp.where(nx > 0, nx, xp.ones_like(nx)), xp.zeros_like(nx))
    return x * scale, {"update_avg": a}


def _cautious(x, st, ctx, h, xp):
    """Zero the entries whose sign disagrees with the projected gradient: ``x ∘ 1[x ĝ > 0]``."""
    return xp.where(x * ctx.g > 0, x, xp.zeros_like(x)), st


def _clip_norm(x, st, ctx, h, xp):
    """``x · min(1, c / ‖x‖)`` per block (c = ``clip_norm``, 1 if None)."""
    c = h["clip_norm"] if h["clip_norm"] is not None else CLIP_DEFAULTS["clip_norm"]
    nx = xp.linalg.vector_norm(x, axis=-1, keepdims=True)
    return x * xp.where(nx > c, c / xp.where(nx > c, nx, xp.ones_like(nx)), xp.ones_like(nx)), st


def _clip_value(x, st, ctx, h, xp):
    """``x`` clipped to ``[−c, c]`` entry-wise (c = ``clip_value``, 0.2 if None)."""
    c = h["clip_value"] if h["clip_value"] is not None else CLIP_DEFAULTS["clip_value"]
    return xp.clip(x, -c, c), st


def _root(p: int | None) -> Callable[..., tuple[Any, dict[str, Any]]]:
    """``x / (L̂ + ε)^(1/p)`` on the kept slots (``p=None``: the curvature's ``ctx.root``)."""

    def apply(x, st, ctx, h, xp):
        q = ctx.root if p is None else p
        safe = xp.where(ctx.keep, ctx.Lh + h["eps"], xp.ones_like(ctx.Lh))
        f = safe ** (-1.0) if q == 1 else safe ** (-1.0 / q)
        return xp.where(ctx.keep, x * f, xp.zeros_like(x)), st

    return apply


STEPS: dict[str, InnerStep] = {
    "adam": InnerStep({"exp_avg": "vec", "exp_avg_sq": "diag"}, _adam),
    "lion": InnerStep({"exp_avg": "vec"}, _lion),
    "full_adam": InnerStep({"exp_avg": "vec", "exp_avg_outer": "mat"}, _full_adam),
    "hutchinson_adam": InnerStep({"exp_avg": "vec", "exp_avg_sq": "diag"}, _hutchinson_adam),
    "full_bfgs_adam": InnerStep({"exp_avg": "vec", "bfgs_matrix": "bfgs", "bfgs_scale": "scalar"},
                                _full_bfgs_adam),
    "ema": InnerStep({"momentum_buffer": "vec"}, _ema),
    "normalize_by_ema": InnerStep({"update_avg": "vec"}, _normalize_by_ema),
    "cautious": InnerStep({}, _cautious),
    "clip_norm": InnerStep({}, _clip_norm),
    "clip_value": InnerStep({}, _clip_value),
    "precondition": InnerStep({}, _root(None)),
    "inverse": InnerStep({}, _root(1)),
}
MOMENT_STEPS = ("adam", "lion", "full_adam", "hutchinson_adam", "full_bfgs_adam")  # share exp_avg
ROOT_STEPS = ("precondition", "inverse")
HVP_STEPS = ("hutchinson_adam", "full_bfgs_adam")  # read the probes of the Hessian curvatures


def init_fields(names: tuple[str, ...], nb: int, r: int, xp: Any, dt: Any, dev: Any) -> dict[str, Any]:
    """Zero state for the chain ``names``: (nb, r) vectors, (nb, r, r) matrices, (nb,) scalars."""
    shapes = {"vec": (nb, r), "diag": (nb, r), "mat": (nb, r, r), "bfgs": (nb, r, r), "scalar": (nb,)}
    return {f: xp.zeros(shapes[k], dtype=dt, device=dev)
            for name in names for f, k in STEPS[name].fields.items()}


def rotate(st: dict[str, Any], kinds: dict[str, str], R: Any, xp: Any) -> dict[str, Any]:
    """Every field of ``st`` carried to the new basis by ``R = Qᵀ Q_old`` (module doc)."""
    out = dict(st)
    Rt = _array.mT(R, xp)
    for f, kind in kinds.items():
        a = st[f]
        if kind == "vec":
            out[f] = (R @ a[..., None])[..., 0]
        elif kind == "diag":
            out[f] = ((R * R) @ a[..., None])[..., 0]
        elif kind in ("mat", "bfgs"):
            out[f] = R @ a @ Rt
        if kind == "bfgs":  # the directions new to the basis get the base curvature σ
            eye = xp.eye(R.shape[-1], dtype=R.dtype, device=_array.device(R))
            out[f] = out[f] + st["bfgs_scale"][:, None, None] * (eye - R @ Rt)
    return out


def run_chain(names: tuple[str, ...], st: dict[str, Any], R: Any, ctx: InnerContext, h: dict[str, Any],
              xp: Any) -> tuple[Any, dict[str, Any]]:
    """The chain ``names`` on ``ctx.g`` after carrying ``st`` over by ``R`` (None: the basis did
    not move); returns ``(keep ∘ x, new state)``."""
    kinds = {f: k for name in names for f, k in STEPS[name].fields.items()}
    if R is not None:
        st = rotate(st, kinds, R, xp)
    x, new = ctx.g, dict(st)
    for name in names:
        step = STEPS[name]
        x, part = step.apply(x, {f: new[f] for f in step.fields}, ctx, h, xp)
        new.update(part)
    return xp.where(ctx.keep, x, xp.zeros_like(x)), new
