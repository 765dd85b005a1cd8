"""Internal helpers shared by the optimizer modules: hyper-parameter checks, lists, shapes, dtypes.

Documented here once; the building blocks of :mod:`xpmat.optim.transforms` and every method
module use them.  Nothing here knows an optimizer.

Hyper-parameters
    :func:`resolve_hyper` merges a method's ``DEFAULTS`` with the caller's values: an unknown
    name is a ``TypeError`` listing the known ones, a renamed one a ``TypeError`` naming its new
    name.  ``check_*`` raise a ``ValueError`` that names the argument and its allowed range
    (``TypeError`` for a value of the wrong kind), and accept no NaN.
Lists
    ``params``, ``grads`` and states are lists (or tuples) of equal length
    (:func:`check_lists`).
Tensor hyper-parameters
    A hyper-parameter a scheduler moves (``lr``, ``momentum``, ``betas`` entries,
    ``weight_decay``: :data:`TENSOR_HYPER`) may be a 1-element array of the parameters' library
    (a PyTorch tensor, as ``torch.optim`` takes) instead of a number: :func:`resolve_hyper`
    views it as 0-d, and the blocks compute with it on the device — never ``float()``, so it is
    neither a host synchronisation nor a constant ``torch.compile`` specializes on.  Scalar
    arithmetic on it (``1 − β``, ``s η``) stays a 0-d array op in its own dtype;
    :func:`scalar_hyper` hands it to the parameter-sized arithmetic; :func:`maybe_nonzero`
    replaces ``if β:`` (an array is never read, the work is kept); :func:`step_size` is
    ``schedule × lr``.  :func:`check_real` checks such a value's size and dtype always, and its
    range only where reading it is free (host memory, not traced); an array for any other
    name is a ``ValueError``, and :func:`refuse_tensor_hyper` refuses one where a method's
    structure depends on the value (Shampoo's ``betas``).
Shapes
    Matrix methods view a parameter ``(out, d1, d2, ...)`` as ``(out, d1·d2·...)``
    (:func:`matrix_shape`); :func:`resolve_rank` turns ``rank`` into an integer per matrix.
    Methods that precondition a flattened parameter cut it into equal blocks
    (:func:`block_layout`, :func:`to_blocks`, :func:`from_blocks`: AdaGrad, LRE); Shampoo cuts a
    matrix into a grid of blocks (:func:`block_grid`, :func:`to_block_grid`,
    :func:`from_block_grid`).
Dtypes
    State is kept in the parameter's dtype, float32 for float16 / bfloat16 parameters
    (:func:`state_dtype_for`); counters are 0-d arrays (:func:`zeros_step`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from xpmat import _array

__all__ = [
    "TENSOR_HYPER",
    "apply_updates",
    "block_grid",
    "block_layout",
    "check_betas",
    "check_bool",
    "check_choice",
    "check_common",
    "check_dtype",
    "check_int",
    "check_lists",
    "check_lowrank",
    "check_rank",
    "check_rank_fits",
    "check_real",
    "finite",
    "from_block_grid",
    "from_blocks",
    "host_steps",
    "is_array_hyper",
    "matrix_shape",
    "maybe_nonzero",
    "one_minus_power",
    "refuse_tensor_hyper",
    "resolve_hyper",
    "resolve_rank",
    "run_init",
    "run_update",
    "scalar_hyper",
    "seeded_q",
    "state_dtype_for",
    "step_size",
    "to_block_grid",
    "to_blocks",
    "zeros_step",
]


# ----------------------------------------------------------------------------- hyper-parameters
def resolve_hyper(defaults: dict[str, Any], hyper: dict[str, Any], method: str,
                  renamed: dict[str, str] | None = None) -> dict[str, Any]:
    """``defaults`` updated by ``hyper``.

    A name in ``renamed`` (old -> new) raises a ``TypeError`` naming the new one; any other
    unknown name a ``TypeError`` listing the known ones.
    """
    unknown = [k for k in hyper if k not in defaults]
    if unknown:
        raise unknown_argument(unknown, defaults, method, renamed)
    out = dict(defaults)
    out.update({k: _as_scalar(k, v) for k, v in hyper.items()})
    return out


def is_array_hyper(value: Any) -> bool:
    """True when a hyper-parameter is an array (a tensor ``lr``), not a Python number."""
    return (not isinstance(value, (numbers.Number, str, tuple, list, dict)) and value is not None
            and hasattr(value, "shape") and hasattr(value, "dtype"))


def _as_scalar(name: str, value: Any) -> Any:
    """A 1-element array hyper-parameter as a 0-d view (no copy: a scheduler's in-place
    ``fill_`` of the caller's tensor reaches it); tuples (``betas``) entry by entry; other
    values unchanged.  Any other size is torch's ``ValueError``."""
    if isinstance(value, tuple):
        out = tuple(_as_scalar(f"{name}[{i}]", v) for i, v in enumerate(value))
        return value if all(a is b for a, b in zip(out, value, strict=True)) else out
    if not is_array_hyper(value):
        return value
    if math.prod(tuple(value.shape)) != 1:
        raise ValueError(f"Tensor {name} must be 1-element, got shape {tuple(value.shape)}")
    if value.ndim == 0:
        return value
    return _array.array_namespace(value).reshape(value, ())


def maybe_nonzero(value: Any) -> bool:
    """``bool(value)`` for a number; True for an array hyper-parameter, whose value is not read
    (a block that skips work at zero keeps the work for an array, which gives the same result)."""
    return True if is_array_hyper(value) else bool(value)


def step_size(h: dict[str, Any]) -> Any:
    """``schedule × lr`` of hyper-parameters ``h``: a host float for numbers (as before), a 0-d
    array (computed on its device, no host read) when either is an array."""
    s, lr = h["schedule"], h["lr"]
    if not is_array_hyper(s) and not is_array_hyper(lr):
        return float(s) * float(lr)
    return (s if is_array_hyper(s) else float(s)) * (lr if is_array_hyper(lr) else float(lr))


def scalar_hyper(value: Any, like: Any, xp: Any) -> Any:
    """``value`` ready to meet array ``like`` in arithmetic: a number unchanged; a 0-d array
    hyper-parameter in ``like``'s dtype (NumPy and JAX would promote ``like`` to a wider 0-d
    array's dtype; PyTorch does not, so its tensor is kept) on ``like``'s device (PyTorch: a
    non-blocking copy when they differ — keep tensor hyper-parameters on the parameters'
    device, as torch's ``capturable`` does, to avoid it).  The scalar arithmetic before this
    (``1 − β``, ``s η``) runs in the hyper-parameter's own dtype, so a float64 tensor gives the
    float path's values bitwise."""
    if type(value) in (int, float) or not hasattr(value, "dtype"):
        return value
    if _array.is_torch(xp):
        dev = getattr(like, "device", None)
        if not is_array_hyper(value) or dev is None or value.device == dev:
            return value
        return value.to(dev, non_blocking=True)
    if value.dtype == like.dtype:  # a NumPy scalar (np.float64(...) - 0.1) is strong as well
        return value
    return xp.asarray(value, dtype=like.dtype) if not is_array_hyper(value) else xp.astype(value, like.dtype)


def one_minus_power(beta: Any, step: Any) -> Any:
    """``1 − βᵗ`` for a 0-d array count ``t`` and ``β`` a number or a 0-d array, in array
    arithmetic: ``β`` enters as ``t·0 + β`` (exactly β, in ``t``'s dtype), the same values as
    ``β ** t``.  With a float ``β``, ``β ** t`` is PyTorch's ``aten.pow.Scalar``, which Inductor
    cannot turn into a graph input under ``torch.compile(..., dynamic=True)`` and specializes
    instead: a recompile each time a scheduler moves β₁ (``OneCycleLR``; torch 2.13)."""
    return 1.0 - (step * 0 + beta) ** step


def check_common(h: dict[str, Any]) -> None:
    """The hyper-parameters every method has: ``lr``, ``weight_decay`` (if any), ``schedule``."""
    check_real("lr", h["lr"])
    if "weight_decay" in h:
        check_real("weight_decay", h["weight_decay"])
    check_real("schedule", h["schedule"])
    check_dtype("state_dtype", h.get("state_dtype"))


def run_init(t: Any, params: Sequence[Any]) -> list[Any]:
    """``t.init(params)`` after checking ``params`` is a list (the module-level ``init``)."""
    check_lists(params)
    return t.init(list(params))


def run_update(t: Any, grads: Sequence[Any], state: Sequence[Any], params: Sequence[Any]):
    """``t.update(grads, state, params)`` after checking the lists (the module-level ``update``)."""
    check_lists(params, grads, state)
    return t.update(list(grads), list(state), list(params))


def unknown_argument(names: Sequence[str], known: Any, method: str,
                     renamed: dict[str, str] | None = None) -> TypeError:
    """The ``TypeError`` for unknown argument ``names`` (renamed ones name their successor)."""
    renamed = renamed or {}
    old = [k for k in names if k in renamed]
    if old:
        return TypeError(f"{method}: " + "; ".join(f"`{k}` was renamed: {renamed[k]}" for k in old)
                         + " (see 'Migration' in docs/optim.md)")
    return TypeError(f"{method}: unknown argument(s) {sorted(names)}; known: {sorted(known)}")


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    lo = "(" if low_open or low == -math.inf else "["
    hi = ")" if high_open or high == math.inf else "]"
    return f"{lo}{low:g}, {'inf' if high == math.inf else f'{high:g}'}{hi}"


def check_real(name: str, value: Any, low: float = 0.0, high: float = math.inf, *,
               low_open: bool = False, high_open: bool = False, none: bool = False) -> None:
    """``value`` is a real number in the interval (``None`` too when ``none``), or — for a name
    in :data:`TENSOR_HYPER` — a 1-element real floating array whose range is checked where
    reading it is free (see the module doc)."""
    if value is None and none:
        return
    if is_array_hyper(value):
        if name.split("[")[0] not in TENSOR_HYPER:
            raise ValueError(f"{name} as a Tensor is not supported (pass a float): tensors are taken "
                             f"for {', '.join(sorted(TENSOR_HYPER - {'beta'}))}, the hyper-parameters "
                             "a scheduler moves")
        value = _host_value(name, value)
        if value is None:  # on a device, or traced: range checked where the optimizer is built
            return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number or a 1-element floating tensor"
                        f"{' or None' if none else ''}, got {value!r}")
    ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:  # NaN fails both comparisons
        raise ValueError(f"{name} must lie in {_interval(low, high, low_open, high_open)}"
                         f"{' or be None' if none else ''}, got {value!r}")


# The names (tuple entries: ``betas[0]``) whose values may be 1-element arrays; ``beta`` is
# the coefficient of the momentum / EMA blocks (:mod:`xpmat.optim.transforms`).
TENSOR_HYPER = frozenset({"lr", "momentum", "betas", "beta", "weight_decay"})


def refuse_tensor_hyper(h: dict[str, Any], names: Sequence[str], method: str, why: str) -> None:
    """A ``ValueError`` when one of ``names`` in ``h`` (tuple entries too) is an array: a method
    whose structure depends on that value (``why``) takes it as a number only."""
    for k in names:
        v = h.get(k)
        if is_array_hyper(v) or (isinstance(v, tuple) and any(is_array_hyper(e) for e in v)):
            raise ValueError(f"{k} as a Tensor is not supported by {method}: {why}; pass a float")


def _host_value(name: str, value: Any) -> float | None:
    """An array hyper-parameter's value as a float where reading it is free (host memory, not
    traced by ``torch.compile`` or JAX), else None; a size other than 1 or a dtype that is not
    real floating raises."""
    if math.prod(tuple(value.shape)) != 1:
        raise ValueError(f"Tensor {name} must be 1-element, got shape {tuple(value.shape)}")
    xp = _array.array_namespace(value)
    if not xp.isdtype(value.dtype, "real floating"):
        raise TypeError(f"Tensor {name} must have a real floating dtype, got {value.dtype}")
    if not _array.is_cpu(value) or _array.is_compiling(xp) or _array.is_lazy(value):
        return None
    try:
        return float(xp.reshape(value, ()))
    except Exception:  # a JAX tracer: its value is not known yet
        return None


def check_int(name: str, value: Any, low: int = 1, *, none: bool = False) -> None:
    """``value`` is an ``int >= low`` (``None`` too when ``none``)."""
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}{' or None' if none else ''}, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """``value`` is one of ``choices``."""
    if not any(value is c or (isinstance(value, str) and value == c) for c in choices):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def check_betas(name: str, value: Any, n: int = 2, *, none: Sequence[int] = ()) -> None:
    """``value`` is a tuple of ``n`` coefficients in [0, 1) (entries in ``none`` may be None)."""
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise ValueError(f"{name} must be a tuple of {n} numbers in [0, 1), got {value!r}")
    for i, b in enumerate(value):
        check_real(f"{name}[{i}]", b, 0.0, 1.0, high_open=True, none=i in none)


def check_dtype(name: str, value: Any, auto: bool = False) -> None:
    """``None``, a dtype name of ``_array.FLOAT_NAMES`` (``"bfloat16"``, ...) or a dtype object;
    with ``auto`` also ``"auto"`` (a ``compute_dtype``: :data:`xpmat._array.AUTO`)."""
    names = (_array.AUTO, *_array.FLOAT_NAMES) if auto else _array.FLOAT_NAMES
    if value is None or (isinstance(value, str) and value in names):
        return
    if isinstance(value, (str, bool, int, float, tuple, list)):
        raise ValueError(f"{name} must be None, one of {names} or a dtype, got {value!r}")


def check_rank(value: Any, name: str = "rank") -> None:
    """An ``int >= 1`` or a ``float`` fraction in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be an int >= 1 or a float in (0, 1], got {value!r}")
    if isinstance(value, int):
        check_int(name, value, 1)
    else:
        check_real(name, value, 0.0, 1.0, low_open=True)


# ----------------------------------------------------------------------------- lists
def check_lists(params: Sequence[Any], grads: Sequence[Any] | None = None,
                state: Sequence[Any] | None = None) -> None:
    """``params`` is a list or tuple; ``grads`` / ``state`` have its length (and shapes)."""
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


def apply_updates(params: Sequence[Any], updates: Sequence[Any]) -> list[Any]:
    """``[p + u]`` cast back to each parameter's dtype (new arrays; inputs untouched)."""
    check_lists(params, updates)
    out = []
    for p, u in zip(params, updates, strict=True):
        xp = _array.array_namespace(p, u, names=("params", "updates"))
        s = xp.astype(p, u.dtype) + u if u.dtype != p.dtype else p + u
        out.append(s if s.dtype == p.dtype else xp.astype(s, p.dtype))
    return out


# ----------------------------------------------------------------------------- dtypes, counters
def state_dtype_for(p: Any, xp: Any, state_dtype: Any = None) -> Any:
    """The dtype optimizer state of parameter ``p`` is kept in.

    ``state_dtype`` if given (a dtype or a name such as ``"float32"``); otherwise ``p``'s
    dtype, except float16 / bfloat16 parameters whose state is float32.
    """
    if state_dtype is not None:
        return _array.resolve_dtype(xp, state_dtype)
    dt = _array.float_dtype(xp, p)
    return xp.float32 if _array.is_low_precision(dt, xp) else dt


def finite(g: Any, xp: Any) -> Any:
    """0-d bool: every entry of ``g`` is finite (one reduction; low precision sums in float32).

    A sum that overflows (|Σ g| above the float32 / float64 maximum) counts as non-finite."""
    dt = g.dtype if g.dtype in (xp.float32, getattr(xp, "float64", None)) else xp.float32
    return xp.isfinite(xp.sum(_array.as_float(g, xp, dt)))


def zeros_step(xp: Any, dev: Any) -> Any:
    """A 0-d counter (float64 where the device has it, else float32), value 0."""
    dt = xp.float64 if _array.supports_float64(xp, dev) else xp.float32
    return xp.zeros((), dtype=dt, device=dev)


def host_steps(steps: Sequence[Any], xp: Any) -> list[int]:
    """0-d counters on the host: ONE transfer for the whole list (one per device when they
    live on several)."""
    if not steps:
        return []
    if len({str(_array.device(s)) for s in steps}) > 1:  # model parallel: one read each
        return [int(s) for s in steps]
    s = xp.stack(list(steps)) if len(steps) > 1 else steps[0][None]
    return [int(v) for v in (s.tolist() if hasattr(s, "tolist") else [s[j] for j in range(len(steps))])]


# ----------------------------------------------------------------------------- shapes
def matrix_shape(shape: Sequence[int], name: str = "parameter") -> tuple[int, int]:
    """The matrix view ``(out, prod(rest))`` of a parameter of ndim ≥ 2 (conv: ``(out, in·k·k)``)."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"{name} of shape {shape} is not a matrix: matrix methods need ndim >= 2 "
                         "(route 1-D parameters to AdamW, see xpmat.optim.route)")
    return shape[0], math.prod(shape[1:])


def matrix_view_shape(shape: Sequence[int], flatten: bool = True, name: str = "parameter",
                      num_heads: int | None = None) -> tuple[int, ...]:
    """The shape a matrix method sees a parameter of ndim ≥ 2 as: with ``flatten``,
    :func:`matrix_shape` (conv kernels ``(out, in·k·k)``); without, the shape itself, whose
    leading axes are a batch of matrices (a stack of experts ``(E, m, n)``).  ``num_heads`` H
    (> 1; 2-D parameters only): the rows are H heads, ``(H·d, n)`` is seen as ``(H, d, n)``."""
    mat = matrix_shape(shape, name)
    if num_heads is not None and num_heads > 1:
        if len(shape) != 2 or shape[0] % num_heads:
            raise ValueError(f"num_heads={num_heads} needs a 2-D {name} whose rows split into "
                             f"{num_heads} heads, got shape {tuple(shape)}")
        return num_heads, shape[0] // num_heads, shape[1]
    return mat if flatten or len(shape) == 2 else tuple(shape)


def resolve_rank(rank: int | float, multiple: int, m: int, n: int) -> int:
    """Rank for an ``m × n`` matrix: an int ≥ 1 as given, a float in (0, 1] as that fraction
    of ``min(m, n)`` (rounded up); then rounded up to a multiple of ``multiple``; at most
    ``min(m, n)`` (an int rank above it means full rank), at least 1."""
    check_rank(rank)
    check_int("rank_multiple_of", multiple, 1)
    k = min(m, n)
    r = math.ceil(rank * k) if isinstance(rank, float) else rank
    r = -(-r // multiple) * multiple
    return max(1, min(r, k))


def check_rank_fits(rank: int | float, shapes: Sequence[tuple[int, int]]) -> None:
    """An int ``rank`` above ``min(m, n)`` of EVERY matrix ``(m, n)`` in ``shapes`` is a
    ``ValueError`` (a rank that fits no matrix is a mistake, not a request for full rank); one
    that fits some is capped per matrix by :func:`resolve_rank`."""
    sizes = [min(s) for s in shapes if min(s) > 0]
    if isinstance(rank, int) and sizes and rank > max(sizes):
        raise ValueError(f"rank={rank} exceeds min(m, n) of every matrix (largest {max(sizes)}): "
                         f"use rank <= {max(sizes)}, or a fraction in (0, 1]")


def check_lowrank(rank: Any, rank_multiple_of: Any, orthogonalize: Any, seed: Any,
                  choices: Sequence[str]) -> None:
    """The arguments every low-rank method (Dion, PowerSGD) shares, checked."""
    resolve_rank(rank, rank_multiple_of, 1, 1)
    check_choice("orthogonalize", orthogonalize, choices)
    check_int("seed", seed, 0)


def seeded_q(p: Any, i: int, rank: Any, multiple: int, seed: int, state_dtype: Any):
    """``(xp, dt, dev, (m, n), r, Q)``: a seeded Gaussian right factor ``Q`` ``(n, r)`` for the
    matrix ``p`` (host draw from ``seed + i``, the same on every backend)."""
    xp, dev = _array.array_namespace(p), _array.device(p)
    dt = state_dtype_for(p, xp, state_dtype)
    m, n = p.shape
    r = resolve_rank(rank, multiple, m, n)
    return xp, dt, dev, (m, n), r, _array.random_normal((n, r), seed=seed + i, xp=xp, dtype=dt, dev=dev)


def block_layout(n: int, max_dim: int) -> tuple[int, int]:
    """``(nb, bs)``: ``n`` entries cut into ``nb = ceil(n / max_dim)`` blocks of
    ``bs = ceil(n / nb)`` entries (the last one zero-padded)."""
    nb = max(1, -(-n // max_dim))
    return nb, max(1, -(-n // nb))


def to_blocks(x: Any, nb: int, bs: int, xp: Any, dtype: Any) -> Any:
    """A parameter-shaped array, flattened (row-major) and zero-padded, as ``(nb, bs)`` in ``dtype``."""
    v = xp.reshape(_array.as_float(x, xp, dtype), (-1,))
    pad = nb * bs - v.shape[0]
    if pad:
        v = xp.concat([v, xp.zeros((pad,), dtype=dtype, device=_array.device(v))])
    return xp.reshape(v, (nb, bs))


def from_blocks(u: Any, shape: Sequence[int], xp: Any) -> Any:
    """The inverse of :func:`to_blocks`: ``(nb, bs)`` blocks back to ``shape`` (padding dropped)."""
    n = math.prod(shape)
    v = xp.reshape(u, (-1,))
    return xp.reshape(v[:n] if v.shape[0] != n else v, tuple(shape))


def block_grid(m: int, n: int, max_dim: int) -> tuple[int, int, int, int]:
    """``(bm, bn, gm, gn)``: an ``m × n`` matrix cut into blocks of ``bm × bn``
    (``bm = min(m, max_dim)``), a ``gm × gn`` grid (Shampoo's blocked preconditioners).

    Block ``(i, j)`` holds rows ``i·bm … min((i+1)·bm, m) − 1`` and columns
    ``j·bn … min((j+1)·bn, n) − 1``; blocks are numbered row-major (``i·gn + j``).
    """
    bm, bn = min(m, max_dim), min(n, max_dim)
    return bm, bn, -(-m // bm), -(-n // bn)


def to_block_grid(X: Any, lay: tuple[int, int, int, int], xp: Any) -> Any:
    """``(m, n)`` -> ``(gm·gn, bm, bn)``, zero-padded at the bottom / right."""
    bm, bn, gm, gn = lay
    m, n = X.shape
    if gm * bm != m:
        X = xp.concat([X, xp.zeros((gm * bm - m, n), dtype=X.dtype, device=_array.device(X))], axis=0)
    if gn * bn != n:
        X = xp.concat([X, xp.zeros((X.shape[0], gn * bn - n), dtype=X.dtype,
                                   device=_array.device(X))], axis=1)
    if gm == gn == 1:
        return X[None, ...]
    X = xp.reshape(X, (gm, bm, gn, bn))
    return xp.reshape(xp.permute_dims(X, (0, 2, 1, 3)), (gm * gn, bm, bn))


def from_block_grid(B: Any, lay: tuple[int, int, int, int], m: int, n: int, xp: Any) -> Any:
    """Inverse of :func:`to_block_grid`: ``(gm·gn, bm, bn)`` -> ``(m, n)`` (padding dropped)."""
    bm, bn, gm, gn = lay
    if gm == gn == 1:
        X = B[0, ...]
    else:
        X = xp.reshape(xp.permute_dims(xp.reshape(B, (gm, gn, bm, bn)), (0, 2, 1, 3)),
                       (gm * bm, gn * bn))
    return X if (gm * bm, gn * bn) == (m, n) else X[:m, :n]
