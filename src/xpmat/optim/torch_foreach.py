"""Multi-tensor in-place steps of the elementwise cores on PyTorch (``torch._foreach_*``).

The functional cores (:mod:`~xpmat.optim.adamw`, :mod:`~xpmat.optim.sgd`) stay pure, for NumPy,
JAX and the rest; this module is their torch twin, chosen by the adapter
(:class:`~xpmat.optim.torch_adapter.XpmatOptimizer`): the same arithmetic, operation for
operation (so the parameters equal the core's bitwise — tested on CPU, where each foreach op
is the per-tensor op in a loop), but each operation is ONE ``torch._foreach_*`` call over all
the parameters of a device and dtype (:func:`group_by_device_and_dtype`, as torch.optim's
``_multi_tensor_*`` functions), and the state tensors are written in place.

The non-finite skip without a host read (:class:`Gates`): per parameter a flag ``ok`` = Σ|g|
is finite (one ``_foreach_norm``); a bad gradient is replaced by zeros (one ``where`` per
parameter: the only NaN-proof select, and it has no foreach form) and the step runs with
per-parameter 0-d *gates* that are the hyper-parameter where ``ok`` and the identity where
not (``1 − β₁ → 0``, ``β₂ → 1``, the update ``× 0``), so a skipped parameter keeps its state and
does not move.  The flag is a little stricter than the core's (|Σ g| finite): the two differ
only for a gradient whose entries' magnitudes sum past the float maximum while their signed
sum does not; such a gradient is skipped here and stepped by the core.

Configurations without a twin (AdamW's ``amsgrad``, ``nesterov``, ``atan2``; zero-size
parameters) run the core, whose results the adapter copies into the same buffers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from xpmat import _array
from xpmat._optional import require
from xpmat.optim import adamw as _adamw
from xpmat.optim import muon as _muon
from xpmat.optim import sgd as _sgd
from xpmat.optim._base import is_array_hyper, maybe_nonzero, step_size

torch = require("torch", "The torch optimizers of xpmat.optim (xpmat.optim.Muon, AdamW, ...)")

__all__ = ["Gates", "group_by_device_and_dtype", "step"]


def group_by_device_and_dtype(*lists: list[Any]) -> dict[tuple, list[int]]:
    """Indices of the entries of parallel tensor lists, grouped by every list's (device, dtype)
    at that index (torch.optim's ``_group_tensors_by_device_and_dtype``, ours)."""
    out: dict[tuple, list[int]] = {}
    for i, ts in enumerate(zip(*lists, strict=True)):
        out.setdefault(tuple((t.device, t.dtype) for t in ts), []).append(i)
    return out


def _vec(value: Any, like: Any) -> Any:
    """``value`` (a number or a 0-d tensor hyper-parameter) as a vector shaped and typed as ``like``."""
    if is_array_hyper(value):
        return value.reshape(()).to(device=like.device, dtype=like.dtype).expand(like.shape)
    return torch.full_like(like, value)


class Gates:
    """The finite flags of a list of gradients and the 0-d factors the gated step uses."""

    def __init__(self, grads: list[Any], dtype: Any) -> None:
        self.okv = torch.stack(torch._foreach_norm(grads, 1)) < math.inf  # Σ|g| ≥ 0: NaN, ∞ fail
        self.okf = self.okv.to(dtype)
        self.ones = list(self.okf.unbind())  # 1 where ok, 0 where skipped (lists: torch.compile)

    def sanitized(self, grads: list[Any], dtype: Any, stacks: list[list[int]] | None = None) -> list[Any]:
        """New tensors: each gradient, or zeros where it is not finite, in ``dtype`` (the 0-d
        zero of ``dtype`` promotes a 16-bit gradient in the same pass).  ``stacks``: index
        lists of same-shaped gradients selected as one stack (3 ops for the stack, not one per
        gradient; the stack is one more pass over them)."""
        zero, oks = self.okf.new_zeros(()), self.okv.unbind()
        if stacks is None:
            return [torch.where(ok, g, zero).to(dtype) for ok, g in zip(oks, grads, strict=True)]
        out = [None] * len(grads)
        for idx in stacks:
            ok = torch.stack([oks[i] for i in idx]).reshape(-1, *([1] * grads[idx[0]].ndim))
            picked = torch.where(ok, torch.stack([grads[i] for i in idx]), zero).to(dtype)
            for i, g in zip(idx, picked.unbind(), strict=True):
                out[i] = g
        return out

    def times(self, value: Any) -> list[Any]:
        """``value`` where ok, 0 where not (exact: ``1 · v``, ``0 · v``)."""
        return list((self.okf * value).unbind())

    def unless(self, value: Any, other: float) -> list[Any]:
        """``value`` where ok, ``other`` where not."""
        return list(torch.where(self.okv, _vec(value, self.okf), other).unbind())

    def count(self, steps: list[Any], counts: list[Any]) -> None:
        """``step += ok`` (the steps of skipped parameters stay) and ``nonfinite_count += not ok``."""
        if steps:
            torch._foreach_add_(steps, self.okv.to(steps[0].dtype).unbind())
        torch._foreach_add_(counts, self.okv.logical_not().to(counts[0].dtype).unbind())


def _on(value: Any, like: Any) -> Any:
    """A tensor hyper-parameter as a 0-d tensor on ``like``'s device (as the core's
    ``scalar_hyper``; a 1-element tensor of any shape is a scalar, as in torch.optim)."""
    return value.reshape(()).to(like.device, non_blocking=True) if is_array_hyper(value) else value


def _add_scaled_(us: list[Any], alpha: Any, xs: list[Any]) -> None:
    """``u ← u + α x`` (the core's ``_array.add_scaled``: ``add`` with ``alpha``, or ``addcmul``
    for a 0-d tensor α)."""
    if is_array_hyper(alpha):
        torch._foreach_addcmul_(us, xs, [_on(alpha, us[0])] * len(us))
    else:
        torch._foreach_add_(us, xs, alpha=alpha)


def _scale_(us: list[Any], value: Any) -> None:
    torch._foreach_mul_(us, _on(value, us[0]))


def _bias_corrections(beta: Any, steps: list[Any], dtype: Any, root: bool) -> tuple[Any, ...]:
    """``1 − βᵗ`` (or its square root) per parameter in ``dtype``: the powers per 0-d counter
    as the core takes them, the rest on their stack (exact operations)."""
    powers = (torch._foreach_pow([_on(beta, steps[0])] * len(steps), steps) if is_array_hyper(beta)
              else torch._foreach_pow(beta, steps))
    bc = 1.0 - torch.stack(powers)
    return (bc.sqrt() if root else bc).to(dtype).unbind()


def _adamw_kernel(h: dict[str, Any], params: list[Any], grads: list[Any], states: list[dict]) -> None:
    """AdamW (:func:`xpmat.optim.adamw.transform`, default flags) on one device and dtype."""
    dt = states[0]["exp_avg"].dtype
    gate = Gates(grads, dt)
    gs = gate.sanitized(grads, dt)
    (b1, b2), wd, mode = h["betas"], h["weight_decay"], h["weight_decay_mode"]
    if mode == "l2" and maybe_nonzero(wd):
        _add_scaled_(gs, wd, params)
    m, v = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
    steps = [s["step"] for s in states]
    torch._foreach_lerp_(m, gs, gate.times(1.0 - b1))  # m ← m + (1 − β₁)(g − m)
    sq = torch._foreach_mul(gs, gs)  # v ← β₂ v + (1 − β₂) g²
    torch._foreach_mul_(sq, gate.times(1.0 - b2))
    torch._foreach_mul_(v, gate.unless(b2, 1.0))
    torch._foreach_add_(v, sq)
    t = torch._foreach_add(steps, 1.0)
    o = torch._foreach_div(m, _bias_corrections(b1, t, dt, root=False))
    root = torch._foreach_sqrt(v)
    torch._foreach_div_(root, _bias_corrections(b2, t, dt, root=True))
    torch._foreach_add_(root, h["eps"])
    torch._foreach_div_(o, root)  # m̂ / (√v̂ + ε)
    s = h["schedule"] if is_array_hyper(h["schedule"]) else float(h["schedule"])
    if mode == "lr" and maybe_nonzero(wd):
        _add_scaled_(o, wd, params)
    _scale_(o, -step_size(h))
    if mode == "decoupled" and maybe_nonzero(-s * wd):
        _add_scaled_(o, -s * wd, params)
    _finish(gate, params, o, steps, [st["nonfinite_count"] for st in states])


def _sgd_kernel(h: dict[str, Any], params: list[Any], grads: list[Any], states: list[dict]) -> None:
    """SGD (:func:`xpmat.optim.sgd.transform`) on one device and dtype."""
    bufs = [s["momentum_buffer"] for s in states]
    gate = Gates(grads, bufs[0].dtype)
    gs = gate.sanitized(grads, bufs[0].dtype)
    mu, wd = h["momentum"], h["weight_decay"]
    if maybe_nonzero(wd):  # d = g + λ w (zero where skipped: the buffer must not move)
        _add_scaled_(gs, wd, params)
        torch._foreach_mul_(gs, gate.ones)
    if not maybe_nonzero(mu):
        u = gs
    else:
        torch._foreach_mul_(bufs, gate.unless(mu, 1.0))  # B ← μ B + d
        torch._foreach_add_(bufs, gs)
        u = bufs
        if h["nesterov"]:  # d + μ B
            u = torch._foreach_mul(bufs, _on(mu, bufs[0]))
            torch._foreach_add_(u, gs)
    u = torch._foreach_mul(u, _on(-step_size(h), u[0]))
    _finish(gate, params, u, [], [st["nonfinite_count"] for st in states])


def _finish(gate: Gates, params: list[Any], updates: list[Any], steps: list[Any], counts: list[Any]) -> None:
    """Zero the skipped parameters' updates, apply all, count steps and skips."""
    torch._foreach_mul_(updates, gate.ones)
    torch._foreach_add_(params, updates)
    gate.count(steps, counts)


def _muon_kernel(h: dict[str, Any], params: list[Any], grads: list[Any], states: list[dict]) -> None:
    """Muon (:func:`xpmat.optim.muon.transform`) on one device and dtype: the momentum and the
    update in foreach calls, Newton–Schulz batched by shape as the core
    (:func:`xpmat.optim.muon.orthogonalized`)."""
    bufs = [s["momentum_buffer"] for s in states]
    stacks = _muon.chunks(bufs, h["compute_dtype"])  # same-shaped matrix views, Newton–Schulz's batches
    gate = Gates(grads, bufs[0].dtype)
    gs = gate.sanitized([_view(g, b.shape) for g, b in zip(grads, bufs, strict=True)], bufs[0].dtype, stacks)
    mu, xp = h["momentum"], _array.array_namespace(bufs[0])
    torch._foreach_lerp_(bufs, gs, gate.times(1.0 - mu))  # B ← B + (1 − μ)(G − B); kept where skipped
    us = bufs
    if h["nesterov"]:  # G + μ (B − G)
        us = (torch._foreach_lerp(gs, bufs, [_on(mu, gs[0])] * len(gs)) if is_array_hyper(mu)
              else torch._foreach_lerp(gs, bufs, mu))
    cdts = {i: _muon.momentum_dtype(h, [bufs[j] for j in idx], xp) for idx in stacks for i in idx}
    us = [u if cdts[i] in (None, u.dtype) else u.to(cdts[i]) for i, u in enumerate(us)]
    os_ = [None] * len(us)
    for idx in stacks:  # one batched Newton–Schulz call per stack
        for i, o in zip(idx, _muon.orthogonalized(h, [us[i] for i in idx], xp), strict=True):
            os_[i] = o
    decay = step_size(h) * h["weight_decay"]
    if maybe_nonzero(decay):  # decoupled weight decay, O read in its compute dtype
        ws = [_view(p, b.shape) for p, b in zip(params, bufs, strict=True)]
        os_ = (torch._foreach_addcmul(os_, ws, [_on(-decay, os_[0])] * len(ws)) if is_array_hyper(decay)
               else torch._foreach_add(os_, ws, alpha=-decay))
    os_ = [o if o.dtype == b.dtype else o.to(b.dtype) for o, b in zip(os_, bufs, strict=True)]
    torch._foreach_mul_(os_, gate.ones)
    torch._foreach_add_(params, [_view(o, p.shape) for o, p in zip(os_, params, strict=True)])
    gate.count([], [st["nonfinite_count"] for st in states])


def _view(t: Any, shape: Any) -> Any:
    return t if t.shape == shape else t.reshape(shape)


def _muon_ok(h: dict[str, Any]) -> bool:
    return h["flatten"] and not (h["cautious_weight_decay"] or h["num_heads"] is not None
                                 or h["split_sizes"] is not None)


def _adamw_ok(h: dict[str, Any]) -> bool:
    return not (h["amsgrad"] or h["nesterov"] or h["atan2"])


# core module's name (a module is no dict key under torch.compile) -> (kernel, whether a
# resolved hyper dict has a twin, the state keys it needs; the first is a parameter-sized
# buffer, whose dtype is the state dtype)
_KERNELS: dict[Any, tuple[Callable, Callable[[dict], bool], tuple[str, ...]]] = {
    _adamw.__name__: (_adamw_kernel, _adamw_ok, ("exp_avg", "exp_avg_sq", "step", "nonfinite_count")),
    _sgd.__name__: (_sgd_kernel, lambda h: True, ("momentum_buffer", "nonfinite_count")),
    _muon.__name__: (_muon_kernel, _muon_ok, ("momentum_buffer", "nonfinite_count")),
}


def _fits(p: Any, g: Any, s: dict, keys: tuple[str, ...]) -> bool:
    """A parameter the twins step as the core does: non-empty, its state made, the state in
    the default state dtype of ``p`` (float32 for 16-bit floats, else ``p``'s), ``g`` as ``p``
    (other dtype mixes promote differently in the core)."""
    if not (p.numel() and p.dtype.is_floating_point and g.dtype == p.dtype
            and all(torch.is_tensor(s.get(k)) for k in keys)):
        return False
    wide = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
    return s[keys[0]].dtype == wide


def step(module: Any, hyper: dict[str, Any], params: list[Any], grads: list[Any],
         states: list[dict]) -> list[int]:
    """Step ``params`` in place (state dicts ``states`` updated in place) with the foreach twin
    of the core ``module`` at ``hyper`` (every key of its ``DEFAULTS``); returns the indices it
    left to the core (all, where the module or its settings have no twin)."""
    twin = _KERNELS.get(getattr(module, "__name__", None))  # a core may be any namespace
    if twin is None or not twin[1](hyper):
        return list(range(len(params)))
    kernel, _, keys = twin
    rest, live = [], []
    for i, (p, g, s) in enumerate(zip(params, grads, states, strict=True)):
        (live if _fits(p, g, s, keys) else rest).append(i)
    lists = [[params[i] for i in live], [grads[i] for i in live], [states[i][keys[0]] for i in live]]
    for idx in group_by_device_and_dtype(*lists).values():
        ix = [live[k] for k in idx]
        kernel(hyper, [params[i] for i in ix], [grads[i] for i in ix], [states[i] for i in ix])
    return rest
