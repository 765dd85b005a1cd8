"""The functional optimizer framework: transforms, ``chain``, hyper-parameters, helpers.

Every method in :mod:`xpmat.optim` is a module with the same four names::

    DEFAULTS                       # dict: hyper-parameter -> default value
    init(params, **hyper)          # -> state: a list with one NamedTuple of arrays per parameter
    update(grads, state, params, **hyper)   # -> (updates, new_state)
    transform(**hyper)             # -> Transform(init, update) with the hyper-parameters bound

Conventions (optax style, see ``CONVENTIONS.md``):

- ``params`` and ``grads`` are *lists* (or tuples) of arrays from one Array API library
  (NumPy, PyTorch, CuPy, array-api-strict, ...).  Dicts / pytrees are not walked: pass
  ``list(d.values())``.  The state is a list of the same length.
- ``updates`` are *added* to the parameters: ``new_p = p + u`` (:func:`apply_updates`).
  An update carries the learning rate and the sign, so it is a descent step.
- Pure functions: nothing is written into ``grads``, ``state`` or ``params``; new arrays are
  returned.  The step counter is a 0-d array in each parameter's state (``step``), so the
  functions can be traced or captured (no host read of the counter unless a method says so).
- State dtype: the parameter's dtype, except float16/bfloat16 parameters which keep float32
  state (``state_dtype=`` overrides); updates come back in the state dtype and
  :func:`apply_updates` casts the sum back to the parameter dtype.
- Matrix methods (Muon, Dion, ...) view a parameter of shape ``(out, d1, d2, ...)`` as the
  matrix ``(out, d1·d2·...)`` (conv kernels) and refuse 1-D parameters; :func:`route` sends
  those to another transform (AdamW by default in the torch classes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from xpmat import _array

__all__ = [
    "Transform",
    "apply_updates",
    "chain",
    "check_hyper",
    "group_by_shape",
    "matrix_shape",
    "resolve_rank",
    "route",
    "state_dtype_for",
    "zeros_step",
]


class Transform(NamedTuple):
    """A pair of pure functions ``init(params) -> state`` and
    ``update(grads, state, params) -> (updates, state)`` with hyper-parameters bound."""

    init: Callable[[Sequence[Any]], Any]
    update: Callable[[Sequence[Any], Any, Sequence[Any]], tuple[list[Any], Any]]


def check_hyper(defaults: dict[str, Any], hyper: dict[str, Any], method: str) -> dict[str, Any]:
    """``defaults`` updated by ``hyper``; an unknown name is a ``TypeError`` listing the known ones."""
    unknown = set(hyper) - set(defaults)
    if unknown:
        raise TypeError(f"{method}: unknown hyper-parameter(s) {sorted(unknown)}; "
                        f"known: {sorted(defaults)}")
    out = dict(defaults)
    out.update(hyper)
    return out


def bind(defaults: dict[str, Any], hyper: dict[str, Any], method: str, validate: Any,
         init: Any, update: Any) -> Transform:
    """A :class:`Transform` for a method's ``init``/``update`` with checked ``hyper`` bound."""
    h = check_hyper(defaults, hyper, method)
    validate(h)
    return Transform(lambda params: init(params, **h),
                     lambda grads, state, params: update(grads, state, params, **h))


def _check_lists(params: Sequence[Any], grads: Sequence[Any] | None = None,
                 state: Sequence[Any] | None = None) -> None:
    if isinstance(params, dict) or not isinstance(params, (list, tuple)):
        raise TypeError(f"params must be a list or tuple of arrays, got {type(params).__name__} "
                        "(for a dict pass list(d.values()))")
    for name, seq in (("grads", grads), ("state", state)):
        if seq is not None and len(seq) != len(params):
            raise ValueError(f"{name} has {len(seq)} entries but params has {len(params)}")
    if grads is not None:
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(f"grads[{i}] has shape {tuple(g.shape)} but params[{i}] has "
                                 f"shape {tuple(p.shape)}")


def state_dtype_for(p: Any, xp: Any, state_dtype: Any = None) -> Any:
    """The dtype optimizer state of parameter ``p`` is kept in.

    ``state_dtype`` if given (a dtype or a name such as ``"float32"``); otherwise ``p``'s
    dtype, except float16 / bfloat16 parameters whose state is float32.
    """
    if state_dtype is not None:
        return _array.resolve_dtype(xp, state_dtype)
    dt = _array.float_dtype(xp, p)
    low = [getattr(xp, n) for n in ("float16", "bfloat16") if hasattr(xp, n)]
    return xp.float32 if dt in low else dt


def host_steps(state: list[Any], xp: Any) -> list[int]:
    """The ``step`` counters of a list of states on the host: ONE transfer for the whole list
    (one per device when the states live on several)."""
    if not state:
        return []
    if len({str(_array.device(st.step)) for st in state}) > 1:  # model parallel: one read each
        return [int(st.step) for st in state]
    s = xp.stack([st.step for st in state]) if len(state) > 1 else state[0].step[None]
    return [int(v) for v in (s.tolist() if hasattr(s, "tolist") else [s[j] for j in range(len(state))])]


def init_params(params: list[Any], hyper: dict[str, Any], defaults: dict[str, Any], name: str,
                validate: Callable[[dict[str, Any]], None]) -> tuple[dict[str, Any], list[tuple]]:
    """The common start of every ``init``: checked hyper-parameters ``h`` and, per parameter,
    ``(i, p, xp, device, state dtype)``."""
    h = check_hyper(defaults, hyper, name)
    validate(h)
    _check_lists(params)
    items = []
    for i, p in enumerate(params):
        xp = _array.array_namespace(p, names=(f"params[{i}]",))
        items.append((i, p, xp, _array.device(p), state_dtype_for(p, xp, h["state_dtype"])))
    return h, items


def zeros_step(xp: Any, dev: Any) -> Any:
    """A 0-d step counter (float64 where the device has it, else float32), value 0."""
    dt = xp.float64 if _array.supports_float64(xp, dev) else xp.float32
    return xp.zeros((), dtype=dt, device=dev)


def matrix_shape(shape: Sequence[int], name: str = "parameter") -> tuple[int, int]:
    """The matrix view ``(out, prod(rest))`` of a parameter of ndim ≥ 2 (conv: ``(out, in·k·k)``)."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"{name} of shape {shape} is not a matrix: matrix methods need ndim >= 2 "
                         "(route 1-D parameters to AdamW, see xpmat.optim.route)")
    return shape[0], math.prod(shape[1:])


def resolve_rank(rank: int | float, multiple: int, m: int, n: int) -> int:
    """Rank for an ``m × n`` matrix: an int ≥ 1 as given, a float in (0, 1] as that fraction
    of ``min(m, n)`` (rounded up); then rounded up to a multiple of ``multiple``; at most
    ``min(m, n)``."""
    k = min(m, n)
    if isinstance(rank, bool) or not isinstance(rank, (int, float)):
        raise TypeError(f"rank must be an int or a float fraction, got {rank!r}")
    if isinstance(rank, float):
        if not 0.0 < rank <= 1.0:
            raise ValueError(f"a fractional rank must lie in (0, 1], got {rank}")
        r = math.ceil(rank * k)
    else:
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        r = rank
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"rank_multiple_of must be an int >= 1, got {multiple!r}")
    r = -(-r // multiple) * multiple
    return max(1, min(r, k))


def group_by_shape(arrays: Sequence[Any]) -> dict[tuple[int, ...], list[int]]:
    """Indices of ``arrays`` grouped by shape (and dtype), in first-seen order."""
    groups: dict[Any, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault((tuple(a.shape), str(a.dtype)), []).append(i)
    return groups


def apply_updates(params: Sequence[Any], updates: Sequence[Any]) -> list[Any]:
    """``[p + u]`` cast back to each parameter's dtype (new arrays; inputs untouched)."""
    _check_lists(params, updates)
    out = []
    for p, u in zip(params, updates, strict=True):
        xp = _array.array_namespace(p, u, names=("params", "updates"))
        s = xp.astype(p, u.dtype) + u if u.dtype != p.dtype else p + u
        out.append(s if s.dtype == p.dtype else xp.astype(s, p.dtype))
    return out


class ChainState(NamedTuple):
    """State of :func:`chain`: one inner state per chained transform."""

    inner: tuple


def chain(*transforms: Transform) -> Transform:
    """Compose transforms: each one's updates are the next one's gradients (optax's ``chain``).

    Example: clip-free momentum SGD followed by a scale would be ``chain(a, b)``; the state is
    a :class:`ChainState` holding the inner states in order.
    """
    if not transforms:
        raise ValueError("chain() needs at least one transform")

    def init(params):
        return ChainState(tuple(t.init(params) for t in transforms))

    def update(grads, state, params):
        new = []
        for t, s in zip(transforms, state.inner, strict=True):
            grads, s = t.update(grads, s, params)
            new.append(s)
        return grads, ChainState(tuple(new))

    return Transform(init, update)


def route(matrix: Transform, other: Transform,
          is_matrix: Callable[[Any], bool] | None = None) -> Transform:
    """Send matrix parameters (ndim ≥ 2 by default) to ``matrix`` and the rest to ``other``.

    The state is a list aligned with ``params`` (each entry is the state of whichever
    transform owns that parameter), so it can be saved per parameter.
    """
    is_matrix = is_matrix or (lambda p: p.ndim >= 2)

    def split(params):
        mi = [i for i, p in enumerate(params) if is_matrix(p)]
        oi = [i for i, p in enumerate(params) if not is_matrix(p)]
        return mi, oi

    def init(params):
        mi, oi = split(params)
        out: list[Any] = [None] * len(params)
        for idx, t in ((mi, matrix), (oi, other)):
            if idx:
                for i, s in zip(idx, t.init([params[i] for i in idx]), strict=True):
                    out[i] = s
        return out

    def update(grads, state, params):
        _check_lists(params, grads, state)
        mi, oi = split(params)
        ups: list[Any] = [None] * len(params)
        new: list[Any] = [None] * len(params)
        for idx, t in ((mi, matrix), (oi, other)):
            if idx:
                u, s = t.update([grads[i] for i in idx], [state[i] for i in idx],
                                [params[i] for i in idx])
                for j, i in enumerate(idx):
                    ups[i], new[i] = u[j], s[j]
        return ups, new

    return Transform(init, update)
