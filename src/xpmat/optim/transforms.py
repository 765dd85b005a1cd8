"""Composable transforms: the building blocks every optimizer of :mod:`xpmat.optim` is made of.

The model is optax's, in our Array-API form.  A :class:`Transform` is three things::

    init(params) -> states                      # one NamedTuple of arrays per parameter
    update(grads, states, params) -> (updates, states)
    state                                       # that NamedTuple type (its fields are the keys
                                                # of optimizer.state[p] in the torch classes)

``params``, ``grads`` and ``updates`` are lists of arrays of one Array API library; nothing is
written into the inputs.  A transform maps "gradients" to "updates"; :func:`chain` feeds each
one's updates to the next as its gradients, so a method is a short composition, e.g. AdamW::

    chain(scale_by_adam(betas, eps), add_decayed_weights(weight_decay), scale_by_lr(lr))

and the final updates are *added* to the parameters (:func:`xpmat.optim.apply_updates`):
:func:`scale_by_lr` carries the sign.  Blocks, in the order a method usually chains them:

- guards: :func:`skip_nonfinite` (the non-finite policy, zero-size parameters),
  :func:`as_matrix` (conv kernels as matrices);
- momentum: :func:`momentum` (``momentum_buffer``: EMA or heavy ball, Nesterov), :func:`ema`
  (``exp_avg``, optionally bias-corrected);
- adaptive scaling: :func:`scale_by_adam` (the one Adam: ``exp_avg``, ``exp_avg_sq``), with
  :func:`adam_direction` for methods that need its arithmetic inside a larger block;
- directions: :func:`steepest_direction` (steepest descent under the Frobenius, ℓ∞ or
  spectral norm, trust-region or majorization-minimization scaling), :func:`msign_direction`
  (Muon; Newton–Schulz batched by shape is :func:`xpmat.msign_many`);
- decay and step size: :func:`add_decayed_weights`, :func:`scale_by_shape`, :func:`scale_by_lr`;
- composition: :func:`chain`, :func:`route` (a per-parameter partition), :func:`per_parameter`
  (a new block from one-parameter functions).

Blocks with a state of their own that one method uses live with that method (Dion's low-rank
direction ``dion.dion_direction``, PowerSGD's compression ``powersgd.powersgd_compress``,
Shampoo's Kronecker factors, LRE's eigenbasis, Adafactor's and AdamNMF's factored second
moments); the matrix primitives they run on live below the optimizer floor
(:func:`xpmat.msign_many`, :func:`xpmat.power_iter1`, :func:`xpmat.orthonormalize`).

Hyper-parameters: numbers, or — for the coefficients a scheduler moves (``lr``, ``momentum``,
``beta``/``betas``, ``weight_decay``) — 0-d arrays of the parameters' library (tensor
hyper-parameters, :mod:`xpmat.optim._base`): the blocks never read those on the host (a block
that skips its work at a zero coefficient keeps the work for an array) and meet the arrays
with them through :func:`~xpmat.optim._base.scalar_hyper`.

State: each block's per-parameter state is a NamedTuple (``EmptyState`` when it has none);
:func:`chain` merges them into one flat NamedTuple, so a field name may appear once per chain
— except ``step``: blocks that count steps share one counter (each sees the count before the
step and returns it plus one).  State arrays are kept in the parameter's dtype (float32 for
float16 / bfloat16 parameters; ``state_dtype`` overrides); each stateful block casts its input
to that dtype.
"""

from __future__ import annotations

import math
import operator
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.optim._base import (
    check_betas,
    check_bool,
    check_choice,
    check_int,
    check_real,
    finite,
    matrix_view_shape,
    maybe_nonzero,
    one_minus_power,
    scalar_hyper,
    state_dtype_for,
    zeros_step,
)
from xpmat.orthogonalize import NORMALIZATIONS, msign_many, ns_schedule

__all__ = [
    "STEEPEST_NORMS",
    "STEEPEST_SCALINGS",
    "AdamState",
    "EmaState",
    "EmptyState",
    "MomentumState",
    "NonFiniteState",
    "Transform",
    "adam_direction",
    "add_decayed_weights",
    "as_matrix",
    "chain",
    "check_split_sizes",
    "ema",
    "ema_momentum",
    "ema_update",
    "finite",
    "momentum",
    "msign_direction",
    "ns_schedule_checked",
    "per_parameter",
    "route",
    "scale_by_adam",
    "scale_by_lr",
    "scale_by_shape",
    "skip_nonfinite",
    "steepest_direction",
]


class EmptyState(NamedTuple):
    """The state of a block that keeps none."""


class Transform(NamedTuple):
    """``init(params) -> states``, ``update(grads, states, params) -> (updates, states)`` and
    the per-parameter ``state`` type (a NamedTuple class)."""

    init: Callable[[Sequence[Any]], list[Any]]
    update: Callable[[Sequence[Any], Sequence[Any], Sequence[Any]], tuple[list[Any], list[Any]]]
    state: type = EmptyState


def _ns(*arrays: Any) -> Any:
    return _array.array_namespace(*arrays)


def per_parameter(init_one: Callable[[Any, Any], Any] | None,
                  update_one: Callable[[Any, Any, Any, Any], tuple[Any, Any]],
                  state: type = EmptyState) -> Transform:
    """A :class:`Transform` from one-parameter functions ``init_one(p, xp) -> state`` and
    ``update_one(g, state, p, xp) -> (u, state)`` (``init_one=None``: stateless)."""
    empty = EmptyState()

    def init(params):
        return [empty if init_one is None else init_one(p, _ns(p)) for p in params]

    def update(grads, states, params):
        out = [update_one(g, s, p, _ns(g, p)) for g, s, p in zip(grads, states, params, strict=True)]
        return [u for u, _ in out], [s for _, s in out]

    return Transform(init, update, state)


# ----------------------------------------------------------------------------- composition
def _merged_fields(types: Sequence[type]) -> list[str]:
    fields: list[str] = []
    for t in types:
        for f in t._fields:
            if f in fields and f != "step":
                raise ValueError(f"state field {f!r} appears in two chained transforms "
                                 "(only `step` may be shared)")
            if f not in fields:
                fields.append(f)
    return fields


def _state_type(fields: Sequence[str], state: type | None) -> type:
    if state is None:
        return namedtuple("ChainState", fields, defaults=(None,) * len(fields))
    missing = set(fields) - set(state._fields)
    if missing:
        raise ValueError(f"state type {state.__name__} lacks the field(s) {sorted(missing)}")
    return state


def _getter(t: type) -> Callable[[Any], Any]:
    """``s -> t(*fields of s)`` for a merged state ``s``."""
    if not t._fields:
        empty = t()
        return lambda s: empty
    get = operator.attrgetter(*t._fields)
    if len(t._fields) == 1:
        return lambda s: t(get(s))
    return lambda s: t(*get(s))


def chain(*transforms: Transform, state: type | None = None) -> Transform:
    """Compose transforms: each one's updates are the next one's gradients (optax's ``chain``).

    The per-parameter state is ONE flat NamedTuple holding every block's fields (``state``:
    the type to use, which may have more fields, left ``None``; default: a new ``ChainState``
    type).  A field may appear in one block only, except ``step`` (see the module doc).
    """
    if not transforms:
        raise ValueError("chain() needs at least one transform")
    types = [t.state for t in transforms]
    fields = _merged_fields(types)
    out_type = _state_type(fields, state)
    getters = [_getter(t) for t in types]

    def merge(parts):
        kw: dict[str, Any] = {}
        for p in parts:
            kw.update(p._asdict())
        return out_type(**kw)

    def init(params):
        per = [t.init(params) for t in transforms]
        return [merge(parts) for parts in zip(*per, strict=True)] if params else []

    def update(grads, states, params):
        new = []
        for t, get in zip(transforms, getters, strict=True):
            grads, s = t.update(grads, [get(st) for st in states], params)
            new.append(s)
        return grads, [merge(parts) for parts in zip(*new, strict=True)] if params else []

    return Transform(init, update, out_type)


def route(main: Transform, other: Transform, is_main: Callable[[Any], bool] | None = None) -> Transform:
    """Send the parameters ``is_main`` accepts (ndim ≥ 2 by default) to ``main``, the rest to
    ``other``.

    The states stay aligned with ``params`` (each is the state of the transform that owns the
    parameter), so route is the outermost transform; its ``state`` is ``main``'s.
    """
    is_main = is_main or (lambda p: p.ndim >= 2)

    def split(params):
        owner = [bool(is_main(p)) for p in params]
        return [i for i, m in enumerate(owner) if m], [i for i, m in enumerate(owner) if not m]

    def init(params):
        out: list[Any] = [None] * len(params)
        for idx, t in zip(split(params), (main, other), strict=True):
            for i, s in zip(idx, t.init([params[i] for i in idx]) if idx else [], strict=True):
                out[i] = s
        return out

    def update(grads, states, params):
        ups: list[Any] = [None] * len(params)
        new: list[Any] = [None] * len(params)
        for idx, t in zip(split(params), (main, other), strict=True):
            if idx:
                u, s = t.update([grads[i] for i in idx], [states[i] for i in idx],
                                [params[i] for i in idx])
                for k, i in enumerate(idx):
                    ups[i], new[i] = u[k], s[k]
        return ups, new

    return Transform(init, update, main.state)


# ----------------------------------------------------------------------------- guards
class NonFiniteState(NamedTuple):
    """``nonfinite_count`` (0-d): steps skipped because the gradient was not finite."""

    nonfinite_count: Any


def _select(ok: Any, new: Any, old: Any, xp: Any) -> Any:
    """``new`` where ``ok`` else ``old``, field by field (None fields stay None)."""
    return type(new)(*(n if n is None else xp.where(ok, n, o) for n, o in zip(new, old, strict=True)))


def skip_nonfinite(inner: Transform, *, sanitize: bool = True,
                   flags: Callable[[list[Any], list[Any]], list[Any]] | None = None) -> Transform:
    """The non-finite policy: a parameter whose gradient holds a NaN or ±Inf is not moved.

    For such a parameter the update is zero, its state keeps its previous values (``step``
    included), and its ``nonfinite_count`` grows by one; the others step as usual.  All of it
    happens on the device with ``where``: no host synchronisation.  ``sanitize`` hands ``inner``
    a zero gradient in place of the bad one (needed by blocks that factorize, which would raise
    on NaN; purely elementwise ones may skip that pass).  ``flags(grads, params)`` overrides the
    per-parameter 0-d flags (data-parallel optimizers agree on them across ranks).

    Zero-size parameters get zero-size updates and no inner state (its fields are None).
    """
    out_type = _with_count(inner.state)
    get_inner = _getter(inner.state)
    none_inner = inner.state(*([None] * len(inner.state._fields)))

    def join(s, count):
        kw = s._asdict()
        kw["nonfinite_count"] = count
        return out_type(**kw)

    def init(params):
        live = [i for i, p in enumerate(params) if math.prod(p.shape)]
        inner_states = dict(zip(live, inner.init([params[i] for i in live]) if live else [], strict=True))
        return [join(inner_states.get(i, none_inner), zeros_step(_ns(p), _array.device(p)))
                for i, p in enumerate(params)]

    def update(grads, states, params):
        live = [i for i, p in enumerate(params) if math.prod(p.shape)]
        ups, out = list(grads), list(states)  # zero-size: the (empty) gradient is the update
        if not live:
            return ups, out
        gs, ps = [grads[i] for i in live], [params[i] for i in live]
        oks = flags(gs, ps) if flags is not None else [finite(g, _ns(g)) for g in gs]
        if sanitize:
            gs = [_ns(g).where(ok, g, _zero(g)) for g, ok in zip(gs, oks, strict=True)]
        old = [get_inner(states[i]) for i in live]
        u, new = inner.update(gs, old, ps)
        for k, i in enumerate(live):
            xp, ok, count = _ns(u[k]), oks[k], states[i].nonfinite_count
            ups[i] = xp.where(ok, u[k], _zero(u[k]))
            out[i] = join(_select(ok, new[k], old[k], xp),
                          count + xp.astype(xp.logical_not(ok), count.dtype))
        return ups, out

    return Transform(init, update, out_type)


def _zero(a: Any) -> Any:
    """A 0-d zero of ``a``'s dtype and device."""
    return _ns(a).zeros((), dtype=a.dtype, device=_array.device(a))


_COUNTED: dict[type, type] = {}


def _with_count(state: type) -> type:
    """``state`` plus a ``nonfinite_count`` field: the type itself when it already has one."""
    if "nonfinite_count" in state._fields:
        return state
    if state not in _COUNTED:
        fields = (*state._fields, "nonfinite_count")
        _COUNTED[state] = namedtuple(state.__name__, fields, defaults=(None,) * len(fields))
    return _COUNTED[state]


def as_matrix(inner: Transform, *, flatten: bool = True, num_heads: int | None = None) -> Transform:
    """Run ``inner`` on the matrix views ``(out, prod(rest))`` of parameters of ndim ≥ 2 (conv
    kernels ``(out, in·k·k)``); updates come back in the parameters' shapes.  ``flatten=False``:
    a parameter of ndim ≥ 3 is left as it is, a batch of matrices over its leading axes (a stack
    of experts ``(E, m, n)``).  ``num_heads`` H: a 2-D ``(H·d, n)`` parameter is the batch
    ``(H, d, n)`` of its heads.  A 1-D parameter raises ``ValueError`` (route it elsewhere,
    :func:`route`)."""

    def views(arrays, params):
        return [_ns(a).reshape(a, matrix_view_shape(p.shape, flatten, f"params[{i}]", num_heads))
                for i, (a, p) in enumerate(zip(arrays, params, strict=True))]

    def init(params):
        return inner.init(views(params, params))

    def update(grads, states, params):
        u, s = inner.update(views(grads, params), states, views(params, params))
        return [_ns(x).reshape(x, tuple(p.shape)) for x, p in zip(u, params, strict=True)], s

    return Transform(init, update, inner.state)


# ----------------------------------------------------------------------------- momentum
class MomentumState(NamedTuple):
    """``momentum_buffer``: the momentum, shaped as the block's input (torch's name)."""

    momentum_buffer: Any


_KINDS = ("ema", "heavy_ball")


def ema_momentum(buf: Any, g: Any, beta: float, xp: Any, *, nesterov: bool = False,
                 dtype: Any = None, out: Any = None) -> tuple[Any, Any]:
    """One EMA momentum step: ``B ← B + (1 − β)(G − B)``; returns ``(U, B)`` with
    ``U = G + β (B − G)`` (Nesterov) or ``B``.

    ``U`` comes in ``dtype`` (default the buffer's; on PyTorch ``torch.lerp`` writes it
    directly); ``out`` receives the new buffer in place (PyTorch; may be ``buf`` itself).  This
    is ``torch.optim.Muon``'s momentum (``momentum_buffer.lerp_(grad, 1 − momentum)``).
    """
    buf = _array.lerp(buf, g, scalar_hyper(1.0 - beta, buf, xp), xp, out=out)
    if not nesterov:
        return _array.cast(buf, dtype, xp), buf
    U = _array.lerp(g, buf, scalar_hyper(beta, buf, xp), xp, dtype)
    return U, buf


def momentum(beta: float, *, nesterov: bool = False, kind: str = "ema",
             state_dtype: Any = None) -> Transform:
    """Momentum on the gradient, state ``momentum_buffer`` ``B``.

    ``kind="ema"`` (Muon, Manifold Muon): ``B ← B + (1 − β)(G − B)``, output
    ``G + β (B − G)`` with ``nesterov`` else ``B``.  ``kind="heavy_ball"`` (``torch.optim.SGD``
    with ``dampening=0``; PowerSGD eq. 7c): ``B ← β B + G``, output ``G + β B`` with ``nesterov``
    else ``B``.  ``β = 0`` passes the gradient through (and keeps a zero buffer).  A 0-d array
    ``β`` (a tensor hyper-parameter, see :mod:`xpmat.optim._base`) is never read: the buffer
    is always updated (at β = 0 the output is the gradient all the same; the buffer holds it).
    """
    check_real("momentum", beta, 0.0, 1.0, high_open=True)
    check_choice("kind", kind, _KINDS)

    def init_one(p, xp):
        return MomentumState(xp.zeros(tuple(p.shape), dtype=state_dtype_for(p, xp, state_dtype),
                                      device=_array.device(p)))

    def update_one(g, s, p, xp):
        B = s.momentum_buffer
        g = _array.as_float(g, xp, B.dtype)
        if not maybe_nonzero(beta):
            return g, s
        if kind == "ema":
            U, B = ema_momentum(B, g, beta, xp, nesterov=nesterov)
        else:
            b = scalar_hyper(beta, B, xp)
            B = b * B + g
            U = g + b * B if nesterov else B
        return U, MomentumState(B)

    return per_parameter(init_one, update_one, MomentumState)


class EmaState(NamedTuple):
    """``step`` and ``exp_avg``: an exponential moving average (Adam's first moment)."""

    step: Any
    exp_avg: Any


def ema(beta: float, *, debias: bool = False, state_dtype: Any = None) -> Transform:
    """``M ← M + (1 − β)(G − M)``, output ``M`` or, with ``debias``, ``M / (1 − βᵗ)``.

    ``β = 0`` passes the gradient through unchanged (the state still counts steps).
    """
    check_real("beta", beta, 0.0, 1.0, high_open=True)

    def init_one(p, xp):
        dev = _array.device(p)
        return EmaState(zeros_step(xp, dev), xp.zeros(tuple(p.shape), device=dev,
                                                      dtype=state_dtype_for(p, xp, state_dtype)))

    def update_one(g, s, p, xp):
        if s.exp_avg is None:
            raise ValueError("a first moment (beta > 0) needs `exp_avg` in the state, which was "
                             "made with beta = 0: start with beta > 0 to change it later")
        step = s.step + 1
        g = _array.as_float(g, xp, s.exp_avg.dtype)
        if not maybe_nonzero(beta):
            return g, EmaState(step, s.exp_avg)
        out, M = ema_update(s.exp_avg, g, beta, step if debias else None, xp)
        return out, EmaState(step, M)

    return per_parameter(init_one, update_one, EmaState)


def ema_update(M: Any, g: Any, beta: float, step: Any, xp: Any) -> tuple[Any, Any]:
    """``M ← M + (1 − β)(g − M)``; returns ``(M / (1 − βᵗ), M)`` with ``t = step`` (the count
    after this update; ``None``: no bias correction, ``(M, M)``)."""
    M = M + scalar_hyper(1.0 - beta, M, xp) * (g - M)
    return (M if step is None else M / xp.astype(one_minus_power(beta, step), M.dtype)), M


# ----------------------------------------------------------------------------- Adam
class AdamState(NamedTuple):
    """Adam's state (``torch.optim.AdamW``'s keys): ``step``, ``exp_avg`` m, ``exp_avg_sq`` v,
    and ``max_exp_avg_sq`` (AMSGrad only, else None)."""

    step: Any
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any = None


def adam_direction(g: Any, s: AdamState, xp: Any, *, betas: tuple[float, float], eps: float,
                   amsgrad: bool = False, nesterov: bool = False,
                   atan2: bool = False) -> tuple[Any, AdamState]:
    """One Adam step on ``g`` (already in the state dtype): the normalized direction and the
    new state ([Stratos 2026, §4, Fig. 1][stratos-2026])::

        m ← β₁ m + (1 − β₁) g,  v ← β₂ v + (1 − β₂) g²,  m̄ = m / (1 − β₁ᵗ)
        (Nesterov, Dozat §4.3: m̄ = β₁ m / (1 − β₁ᵗ⁺¹) + (1 − β₁) g / (1 − β₁ᵗ))
        v̄ = v / (1 − β₂ᵗ);  AMSGrad: v̄ ← max(v̄_prev, v̄)  (max AFTER bias correction, §4.2)
        o = m̄ / (√v̄ + ε)   or   atan2(m̄, √v̄)   (§4.1.2, ε-free)

    The arithmetic follows ``torch.optim.AdamW`` (``m`` by a lerp — ``torch.lerp`` on PyTorch,
    one pass —, ``√v / √(1 − β₂ᵗ) + ε``).
    """
    b1, b2 = betas
    dt = s.exp_avg.dtype
    step = s.step + 1

    def c(v):  # a scalar (number or tensor hyper-parameter) meeting the state arrays
        return scalar_hyper(v, g, xp)

    m = _array.lerp(s.exp_avg, g, c(1.0 - b1), xp)  # m + (1 − β₁)(g − m): torch.lerp on PyTorch
    v = s.exp_avg_sq * c(b2) + c(1.0 - b2) * (g * g)
    bc1 = xp.astype(one_minus_power(b1, step), dt)
    bc2_sqrt = xp.astype(xp.sqrt(one_minus_power(b2, step)), dt)
    if nesterov:
        m_bar = (c(b1) * m) / xp.astype(one_minus_power(b1, step + 1), dt) + (c(1.0 - b1) * g) / bc1
    else:
        m_bar = m / bc1
    vmax = None
    if amsgrad:
        vmax = xp.maximum(s.max_exp_avg_sq, v / (bc2_sqrt * bc2_sqrt))
        root = xp.sqrt(vmax)
    else:
        root = xp.sqrt(v) / bc2_sqrt
    o = xp.atan2(m_bar, root) if atan2 else m_bar / (root + c(eps))
    return o, AdamState(step, m, v, vmax)


def scale_by_adam(betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *,
                  amsgrad: bool = False, nesterov: bool = False, atan2: bool = False,
                  state_dtype: Any = None) -> Transform:
    """Adam's normalized direction :func:`adam_direction` (no learning rate, no decay); state
    :class:`AdamState`.  The one Adam of AdamW, the AdamW fallback of the matrix methods and
    PowerSGD's ``base="adamw"``."""
    check_betas("betas", betas)
    check_real("eps", eps)

    def init_one(p, xp):
        z = xp.zeros(tuple(p.shape), dtype=state_dtype_for(p, xp, state_dtype), device=_array.device(p))
        return AdamState(zeros_step(xp, _array.device(p)), z, xp.zeros_like(z),
                         xp.zeros_like(z) if amsgrad else None)

    def update_one(g, s, p, xp):
        return adam_direction(_array.as_float(g, xp, s.exp_avg.dtype), s, xp, betas=betas, eps=eps,
                              amsgrad=amsgrad, nesterov=nesterov, atan2=atan2)

    return per_parameter(init_one, update_one, AdamState)


# ----------------------------------------------------------------------------- decay, scaling
def add_decayed_weights(weight_decay: float, *, cautious: bool = False) -> Transform:
    """``u + λ p`` (in the wider of ``u``'s dtype and ``p``'s state dtype; λ = 0: the identity).

    Before :func:`scale_by_lr` this is decoupled weight decay that follows the learning rate
    (``−η (u + λ p)``, torch's AdamW); after it, a negative λ decays independently of η.
    ``cautious``: cautious weight decay, ``u + λ p ⊙ 1[u ⊙ p ≥ 0]`` — decay only the entries
    where the update direction ``u`` (the step is ``−η u``) has the sign of the weight, that is
    where the step already moves the weight toward zero ([Chen et al. 2025][chen-2025-cwd], the
    CWD update rule; ``cautious_wd`` of [microsoft/dion][dion-code], the decay mask of
    [modded-nanogpt][modded-nanogpt]'s Muon step).  A zero product counts as agreeing (``≥``),
    as in both codes.
    """
    check_real("weight_decay", weight_decay, -math.inf)
    check_bool("cautious", cautious)
    if not maybe_nonzero(weight_decay):
        return per_parameter(None, lambda g, s, p, xp: (g, s))

    def update_one(u, s, p, xp):
        dt = xp.result_type(u.dtype, state_dtype_for(p, xp))
        u, p = _array.as_float(u, xp, dt), _array.as_float(p, xp, dt)
        if cautious:
            p = xp.where(u * p >= 0, p, xp.zeros((), dtype=dt, device=_array.device(p)))
        return _array.add_scaled(u, scalar_hyper(weight_decay, u, xp), p, xp), s

    return per_parameter(None, update_one)


def scale_by_lr(lr: Any) -> Transform:
    """``−η u``: the step size, and the sign that makes ``params + updates`` a descent step.

    ``lr``: a number, or a 0-d array (a tensor learning rate that a scheduler fills in place:
    read on the device at every step, never on the host)."""
    check_real("lr", lr)
    neg = -lr  # a tensor: one 0-d op per step, on its device
    return per_parameter(None, lambda u, s, p, xp: (scalar_hyper(neg, u, xp) * u, s))


def scale_by_shape(factor: Callable[[int, int], float], *,
                   split_sizes: Sequence[int] | None = None) -> Transform:
    """``a(m, n) u`` for matrix updates ``u`` ``(m, n)`` (e.g. Muon's √max(1, m/n), Dion's
    √(m/n)); ``factor(m, n)`` is a host float.  ``split_sizes``: the rows are blocks of these
    sizes (a fused QKV weight), each scaled by its own ``a(s_i, n)``."""

    def update_one(u, s, p, xp):
        n = u.shape[-1]
        if split_sizes is None:
            return factor(u.shape[-2], n) * u, s
        dev = _array.device(u)
        rows = xp.concat([xp.full((k,), factor(k, n), dtype=u.dtype, device=dev) for k in split_sizes])
        return rows[:, None] * u, s

    return per_parameter(None, update_one)


def check_split_sizes(split_sizes: Any, shape: Sequence[int] | None = None, name: str = "parameter") -> None:
    """``split_sizes`` is None or a non-empty sequence of ints >= 1; with ``shape``, a 2-D one
    whose rows they add up to.  ``ValueError`` naming ``split_sizes`` (and the parameter)."""
    if split_sizes is None:
        return
    try:
        sizes = list(split_sizes)
    except TypeError:
        sizes = None
    if not sizes or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in sizes):
        raise ValueError(f"split_sizes must be None or a sequence of ints >= 1, got {split_sizes!r}")
    if shape is not None and (len(shape) != 2 or sum(sizes) != shape[0]):
        raise ValueError(f"split_sizes {tuple(sizes)} must add up to the rows of a 2-D {name}, "
                         f"got shape {tuple(shape)}")


# ----------------------------------------------------------------------------- msign (Muon)
def msign_direction(*, ns_steps: int = 5, ns_schedule: Any = "polar_express", ns_normalize: str = "fro",
                    compute_dtype: Any = None, eps: float = 1e-7,
                    scale: Callable[[int, int], float] | None = None,
                    use_gram_newton_schulz: bool = False,
                    split_sizes: Sequence[int] | None = None) -> Transform:
    """``a(m, n) · msign(U)`` for matrices ``U`` (..., m, n): the spectral-norm steepest descent
    direction ([Stratos 2026][stratos-2026] §7 eq. 69; Newton–Schulz, Q.3.1).

    Same-shaped matrices go through one batched call (:func:`xpmat.msign_many`), in
    ``compute_dtype`` (e.g. ``"bfloat16"``); the result comes back in the input's dtype.
    ``scale(m, n)`` (a host float, default 1) is folded into the last Newton–Schulz step.
    Leading axes of ``U`` are a batch (each matrix its own msign).  ``use_gram_newton_schulz``:
    Gram Newton–Schulz on the shapes where it takes fewer products
    (:func:`xpmat.orthogonalize.gram_saves`).  ``split_sizes``: a 2-D ``U`` is row blocks of these
    sizes (a fused QKV weight), each its own msign and ``scale(s_i, n)``.  Stateless.  Zero ``U``
    gives zero (msign of 0 is 0).
    """
    coeffs = ns_schedule_checked(ns_schedule, ns_steps)
    check_choice("ns_normalize", ns_normalize, NORMALIZATIONS)
    check_real("eps", eps)
    check_bool("use_gram_newton_schulz", use_gram_newton_schulz)
    check_split_sizes(split_sizes)
    split = None if split_sizes is None else tuple(split_sizes)
    empty = EmptyState()

    def update(grads, states, params):
        if split is not None:
            for g in grads:
                check_split_sizes(split, tuple(g.shape), f"matrix of shape {tuple(g.shape)}")
        out = msign_many(grads, steps=len(coeffs), schedule=coeffs, normalize=ns_normalize,
                         compute_dtype=compute_dtype, eps=eps, scale=scale or 1.0, split_sizes=split,
                         gram="auto" if use_gram_newton_schulz else False)
        return out, [empty] * len(grads)

    return Transform(lambda params: [empty] * len(params), update, EmptyState)


def ns_schedule_checked(schedule: Any, steps: Any) -> list[tuple[float, float, float]]:
    """:func:`xpmat.ns_schedule` with the errors naming ``ns_schedule`` / ``ns_steps``."""
    check_int("ns_steps", steps, 0)
    try:
        return ns_schedule(schedule, steps)
    except ValueError as exc:
        raise ValueError(f"ns_schedule: {exc}") from None


# ----------------------------------------------------------------------------- steepest descent
STEEPEST_NORMS = ("fro", "linf", "spectral")
STEEPEST_SCALINGS = ("tr", "mm")


def steepest_direction(norm: str = "spectral", scaling: str = "tr", *, ns_steps: int = 5,
                       ns_schedule: Any = "polar_express", ns_normalize: str = "fro",
                       compute_dtype: Any = None, eps: float = 1e-7, use_gram_newton_schulz: bool = False,
                       flatten: bool = True, split_sizes: Sequence[int] | None = None) -> Transform:
    """The steepest descent direction under a norm ([Stratos 2026, §7 eq. 69][stratos-2026]),
    without the step size (:func:`scale_by_lr` adds ``−η``)::

        norm        scaling="tr" (trust region, eq. 67)   scaling="mm" (majorization-minimization, eq. 68)
        "fro"       G / ‖G‖_F                              G
        "linf"      sign(G)                                ‖G‖₁ sign(G)       (elementwise norms)
        "spectral"  U Vᵀ = msign(G)                        ‖G‖_nuc U Vᵀ,  ‖G‖_nuc = ⟨G, msign(G)⟩

    ``"fro"`` and ``"linf"`` act on a parameter of any shape as one vector (the elementwise
    norms of eq. 69, footnote 12).  ``"spectral"`` acts on the matrix view ``(out, prod(rest))``
    of a parameter of ndim ≥ 2 through :func:`msign_direction` (same-shaped matrices in one
    batched Newton–Schulz call; options ``ns_*``, ``compute_dtype``, ``eps`` as there), and on
    a parameter of ndim ≤ 1 as a column ``(n, 1)``, whose spectral norm is ``‖g‖₂``: ``g / ‖g‖₂``
    (TR) and ``g`` (MM), exactly.  The nuclear norm of MM costs one elementwise product and a
    sum (no extra matrix product); with an inexact ``msign = U f(Σ) Vᵀ`` it is ``Σᵢ σᵢ f(σᵢ)``,
    as close to ``‖G‖_nuc`` as ``f`` is to 1 on the spectrum.  ``flatten=False``: a parameter
    of ndim ≥ 3 is a batch of matrices over its leading axes (each its own msign and nuclear
    norm).  ``use_gram_newton_schulz``, ``split_sizes`` (spectral / trust region only): as
    :func:`msign_direction`.  A zero gradient gives a zero direction.  Stateless.
    """
    check_choice("norm", norm, STEEPEST_NORMS)
    check_choice("scaling", scaling, STEEPEST_SCALINGS)
    check_bool("flatten", flatten)
    if split_sizes is not None and (norm, scaling) != ("spectral", "tr"):
        raise ValueError(f"split_sizes needs norm='spectral', scaling='tr', got {norm!r}, {scaling!r}")
    msign_t = msign_direction(ns_steps=ns_steps, ns_schedule=ns_schedule, ns_normalize=ns_normalize,
                              compute_dtype=compute_dtype, eps=eps, split_sizes=split_sizes,
                              use_gram_newton_schulz=use_gram_newton_schulz) if norm == "spectral" else None
    empty = EmptyState()

    def update(grads, states, params):
        out = list(grads)
        mats = [i for i, g in enumerate(grads) if msign_t is not None and g.ndim >= 2 and math.prod(g.shape)]
        if mats:
            views = [_ns(grads[i]).reshape(grads[i], matrix_view_shape(grads[i].shape, flatten))
                     for i in mats]
            Os, _ = msign_t.update(views, [empty] * len(views), views)
            for i, v, O in zip(mats, views, Os, strict=True):
                xp = _ns(O)
                if scaling == "mm":
                    O = xp.sum(v * O, axis=(-2, -1), keepdims=True) * O
                out[i] = xp.reshape(O, tuple(grads[i].shape))
        done = set(mats)
        for i in (i for i in range(len(grads)) if i not in done):
            out[i] = _elementwise_steepest(grads[i], "fro" if norm == "spectral" else norm, scaling)
        return out, [empty] * len(grads)

    return Transform(lambda params: [empty] * len(params), update, EmptyState)


def _elementwise_steepest(g: Any, norm: str, scaling: str) -> Any:
    """Eq. 69 for the Frobenius (ℓ2) and elementwise ℓ∞ norms, on ``g`` as one vector."""
    xp = _ns(g)
    if norm == "linf":
        s = xp.sign(g)
        return xp.sum(xp.abs(g)) * s if scaling == "mm" else s
    if scaling == "mm":
        return g
    nrm = xp.linalg.vector_norm(g)
    return g / xp.where(nrm > 0, nrm, xp.ones_like(nrm))
