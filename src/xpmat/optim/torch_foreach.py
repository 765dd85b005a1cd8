"""Multi-tensor in-place steps of the elementwise cores on PyTorch (``torch._foreach_*``).

The functional cores (:mod:`~xpmat.optim.adamw`, :mod:`~xpmat.optim.sgd`) stay pure, for NumPy,
JAX and the rest; this module is their torch twin, chosen by the adapter
(:class:`~xpmat.optim.torch_adapter.XpmatOptimizer`): the same arithmetic, operation for
operation (so the parameters equal the core's bitwise — tested on CPU, where each foreach op
is the per-tensor op in a loop), but each operation is ONE ``torch._foreach_*`` call over all
the parameters of a device and dtype (:func:`group_by_device_and_dtype`, as torch.optim's
``_multi_tensor_*`` functions), and the state tensors are written in place.

The non-finite skip without a host read (:class:`Gates`): per parameter a flag ``ok`` = Σ|g|
is finite (one ``_foreach_norm``, in float32 for 16-bit gradients as the core's sum); a bad
gradient is replaced by zeros (one ``where`` per parameter: the only NaN-proof select, and it
has no foreach form) and the step runs with
per-parameter 0-d *gates* that are the hyper-parameter where ``ok`` and the identity where
not (``1 − β₁ → 0``, ``β₂ → 1``, the update ``× 0``), so a skipped parameter keeps its state and
does not move.  The flag is a little stricter than the core's (|Σ g| finite): the two differ
only for a gradient whose entries' magnitudes sum past the float maximum while their signed
sum does not; such a gradient is skipped here and stepped by the core.

Three eager paths (:data:`EAGER_PATH`, chosen per device and dtype group by :func:`eager_path`):

- ``"host"`` — where a read costs nothing (CPU tensors) the flags are read once on the host
  (:func:`host_flags`): a skipped parameter is left out of the lists (its ``nonfinite_count``
  grows by one), and the rest step with no gates (:class:`Gates` with ``known_ok``); AdamW and
  SGD then run torch's single-pass fused kernels over the whole list (``torch._fused_adamw_``,
  ``_fused_adam_``, ``_fused_sgd_``: the same equations, equal to the core to rounding, not
  bitwise: :func:`_adamw_fused`, :func:`_sgd_fused`).
- ``"fused"`` — on the other devices with fused kernels (CUDA, ...) the same kernels run one
  call per parameter, each given its own device-side flag as ``found_inf`` (the kernel returns
  before touching a parameter whose flag is set): one pass per parameter and no host read
  (the gated kernels' slow-route ``_foreach`` calls with 0-d gates launch one kernel per
  parameter each, several times over).
- ``"gated"`` — under ``torch.compile`` (whose compiler fuses the passes itself), where the
  fused kernels don't apply (16-bit parameters with float32 state, hyper-parameters in
  tensors on the device) and for the other methods: the gated kernels above, no host read,
  equal to the core bitwise.

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
from xpmat.optim._base import finite, is_array_hyper, maybe_nonzero, step_size

torch = require("torch", "The torch optimizers of xpmat.optim (xpmat.optim.Muon, AdamW, ...)")

__all__ = ["EAGER_PATH", "Gates", "eager_path", "group_by_device_and_dtype", "host_flags", "step"]

# The eager path: "auto" (host on the CPU, fused on the other devices with fused kernels, else
# gated), or one forced ("host", "fused", "gated": tests run each on the CPU; "host" on a GPU
# reads the flags there: one synchronization per device and dtype group per step).
EAGER_PATH = "auto"
_PATHS = ("auto", "host", "fused", "gated")
_LOW = (torch.float16, torch.bfloat16)


def group_by_device_and_dtype(*lists: list[Any]) -> dict[tuple, list[int]]:
    """Indices of the entries of parallel tensor lists, grouped by every list's (device, dtype)
    at that index (torch.optim's ``_group_tensors_by_device_and_dtype``, ours)."""
    out: dict[tuple, list[int]] = {}
    for i, ts in enumerate(zip(*lists, strict=True)):
        out.setdefault(tuple([(t.device, t.dtype) for t in ts]), []).append(i)
    return out


class Gates:
    """The finite flags of a list of gradients and the 0-d factors the gated step uses;
    ``known_ok``: every gradient is known finite (read on the host), so no gates at all."""

    def __init__(self, grads: list[Any], dtype: Any, known_ok: bool = False) -> None:
        self.known_ok, self.dtype, self.n = known_ok, dtype, len(grads)
        if known_ok:
            return
        low = grads[0].dtype in _LOW  # summed in float32, as the core's
        norms = torch._foreach_norm(grads, 1, dtype=torch.float32) if low else torch._foreach_norm(grads, 1)
        self.okv = torch.stack(norms) < math.inf  # Σ|g| ≥ 0: NaN, ∞ fail
        self.okf = self.okv.to(dtype)
        self.ones = list(self.okf.unbind())  # 1 where ok, 0 where skipped (lists: torch.compile)

    def sanitized(self, grads: list[Any], dtype: Any, stacks: list[list[int]] | None = None) -> list[Any]:
        """New tensors: each gradient, or zeros where it is not finite, in ``dtype`` (the 0-d
        zero of ``dtype`` promotes a 16-bit gradient in the same pass).  ``stacks``: index
        lists of same-shaped gradients selected as one stack (3 ops for the stack, not one per
        gradient; the stack is one more pass over them)."""
        if self.known_ok:  # the caller's gradients themselves: the kernels never write into them
            return [g if g.dtype == dtype else g.to(dtype) for g in grads]
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
        if self.known_ok:
            return self._plain(value)
        return list((self.okf * value).unbind())

    def unless(self, value: Any, other: float) -> list[Any]:
        """``value`` where ok, ``other`` where not."""
        if self.known_ok:
            return self._plain(value)
        v = value.reshape(()).to(self.okf.device, self.okf.dtype) if is_array_hyper(value) else value
        # 1·v + 0·o or 0·v + 1·o: exact; arithmetic, not full_like(v), which Inductor specializes on
        return list((self.okf * v + (1.0 - self.okf) * other).unbind())

    def _plain(self, value: Any) -> Any:
        """A factor of the ungated step: a number, or a tensor in the state dtype (as the gates'
        ``1 · v``)."""
        return [value.reshape(()).to(self.dtype)] * self.n if is_array_hyper(value) else value

    def mask_(self, tensors: list[Any]) -> None:
        """Zero, in place, the entries of the skipped parameters (``× 0``; nothing when known ok)."""
        if not self.known_ok:
            torch._foreach_mul_(tensors, self.ones)

    def found_inf(self) -> list[Any]:
        """Per parameter a float32 0-d ``1`` where skipped, ``0`` where not: the ``found_inf``
        of torch's fused kernels, one parameter per call."""
        return list(self.okv.logical_not().to(torch.float32).unbind())

    def count(self, steps: list[Any], counts: list[Any]) -> None:
        """``step += ok`` (the steps of skipped parameters stay) and ``nonfinite_count += not ok``."""
        if self.known_ok:
            if steps:
                torch._foreach_add_(steps, 1.0)
            return
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


def _add_scaled(us: list[Any], alpha: Any, xs: list[Any]) -> list[Any]:
    """``u + α x`` in new tensors (``us`` may be the caller's gradients)."""
    if is_array_hyper(alpha):
        return torch._foreach_addcmul(us, xs, [_on(alpha, us[0])] * len(us))
    return torch._foreach_add(us, xs, alpha=alpha)


def _scale_(us: list[Any], value: Any) -> None:
    torch._foreach_mul_(us, _on(value, us[0]))


def _bias_corrections(beta: Any, steps: list[Any], dtype: Any, root: bool) -> tuple[Any, ...]:
    """``1 − βᵗ`` (or its square root) per parameter in ``dtype``: the powers per 0-d counter
    as the core takes them, the rest on their stack (exact operations)."""
    powers = (torch._foreach_pow([_on(beta, steps[0])] * len(steps), steps) if is_array_hyper(beta)
              else torch._foreach_pow(beta, steps))
    bc = 1.0 - torch.stack(powers)
    return (bc.sqrt() if root else bc).to(dtype).unbind()


def _adamw_kernel(h: dict[str, Any], params: list[Any], grads: list[Any], states: list[dict],
                  path: str = "gated") -> None:
    """AdamW (:func:`xpmat.optim.adamw.transform`, default flags) on one device and dtype."""
    if path != "gated" and _adamw_fused(h, params, grads, states, path):
        return
    dt = states[0]["exp_avg"].dtype
    gate = Gates(grads, dt, path == "host")
    gs = gate.sanitized(grads, dt)
    (b1, b2), wd, mode = h["betas"], h["weight_decay"], h["weight_decay_mode"]
    if mode == "l2" and maybe_nonzero(wd):
        gs = _add_scaled(gs, wd, params)
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


def _sgd_kernel(h: dict[str, Any], params: list[Any], grads: list[Any], states: list[dict],
                path: str = "gated") -> None:
    """SGD (:func:`xpmat.optim.sgd.transform`) on one device and dtype."""
    if path != "gated" and _sgd_fused(h, params, grads, states, path):
        return
    bufs = [s["momentum_buffer"] for s in states]
    gate = Gates(grads, bufs[0].dtype, path == "host")
    gs = gate.sanitized(grads, bufs[0].dtype)
    mu, wd = h["momentum"], h["weight_decay"]
    if maybe_nonzero(wd):  # d = g + λ w (zero where skipped: the buffer must not move)
        gs = _add_scaled(gs, wd, params)
        gate.mask_(gs)
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


def _host_floats(h: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float] | None:
    """The hyper-parameters ``keys`` as host floats (a tensor read only where it lives on the
    CPU: free there), or None where one lives on a device."""
    out = {}
    for k in keys:
        v = h[k]
        if is_array_hyper(v) and v.device.type != "cpu":
            return None
        out[k] = float(v)
    return out


def _fused_hyper(h: dict[str, Any], keys: tuple[str, ...], params: list[Any], grads: list[Any],
                 states: list[dict], buffers: tuple[str, ...]) -> dict[str, float] | None:
    """The hyper-parameters ``keys`` as floats for torch's fused kernels, or None where they
    can't run: state ``buffers`` not in the parameter's dtype (16-bit parameters have float32
    state here: the composed kernel steps those), a parameter, gradient or buffer not
    contiguous (the kernels walk the four tensors' memory in step: a transposed parameter's
    row-major state would be updated at the wrong entries), a tensor ``lr`` on another device
    than the parameters' but the CPU."""
    for p, g, s in zip(params, grads, states, strict=True):  # loops, not generators: per step
        if not (p.is_contiguous() and g.is_contiguous()):
            return None
        for b in buffers:
            if s[b].dtype != p.dtype or not s[b].is_contiguous():
                return None
    lr = h["lr"]
    if is_array_hyper(lr) and lr.device.type != "cpu" and lr.device != params[0].device:
        return None
    return _host_floats(h, keys)


def _fused_lr(h: dict[str, Any], like: Any) -> Any:
    """``s η`` for the fused kernels: a float (a CPU tensor read: free) or, for a tensor on
    ``like``'s device, a 0-d tensor there (float32 off the CPU, as the CUDA kernels read it)."""
    slr = step_size(h)
    if not is_array_hyper(slr):
        return slr
    if like.device.type == "cpu":
        return slr.reshape(()).to(torch.float64)
    return float(slr) if slr.device.type == "cpu" else slr.reshape(()).to(torch.float32)


def _adamw_fused(h: dict[str, Any], params: list[Any], grads: list[Any], states: list[dict],
                 path: str) -> bool:
    """AdamW by ``torch._fused_adamw_`` (mode ``"lr"``), ``_fused_adam_`` (``"l2"``: λ p
    added to g) or ``p ← (1 − sλ) p`` then ``_fused_adam_`` (``"decoupled"``); one pass per
    parameter.  ``path`` ``"host"``: every gradient known finite, one call for the list;
    ``"fused"``: one call per parameter with its flag.  False (nothing done) where the kernels
    don't take these tensors."""
    f = _fused_hyper({**h, "b1": h["betas"][0], "b2": h["betas"][1]},
                     ("b1", "b2", "eps", "weight_decay", "schedule"), params, grads, states,
                     ("exp_avg", "exp_avg_sq"))
    if f is None:
        return False
    mode, wd = h["weight_decay_mode"], f["weight_decay"]
    gate = None if path == "host" else Gates(grads, params[0].dtype)
    if mode == "decoupled" and wd:
        torch._foreach_mul_(params, 1.0 - f["schedule"] * wd if gate is None
                            else gate.unless(1.0 - f["schedule"] * wd, 1.0))
    kernel = torch._fused_adamw_ if mode == "lr" else torch._fused_adam_
    kw = {"lr": _fused_lr(h, params[0]), "beta1": f["b1"], "beta2": f["b2"], "eps": f["eps"],
          "weight_decay": 0.0 if mode == "decoupled" else wd, "amsgrad": False, "maximize": False}
    m, v, steps = ([s[k] for s in states] for k in ("exp_avg", "exp_avg_sq", "step"))
    if gate is None:
        torch._foreach_add_(steps, 1.0)
        kernel(params, grads, m, v, [], steps, **kw)
        return True
    gate.count(steps, [s["nonfinite_count"] for s in states])
    t32 = torch.stack(steps).to(torch.float32).unbind()  # the CUDA kernels read float32 steps
    for one in zip(params, grads, m, v, t32, gate.found_inf(), strict=True):
        kernel(*([x] for x in one[:4]), [], [one[4]], found_inf=one[5], **kw)
    return True


def _sgd_fused(h: dict[str, Any], params: list[Any], grads: list[Any], states: list[dict],
               path: str) -> bool:
    """SGD by ``torch._fused_sgd_`` (zero-initialized buffer, no dampening: its
    ``is_first_step=False`` update is the core's ``B ← μ B + d``); ``path`` as in
    :func:`_adamw_fused`.  False where it can't."""
    f = _fused_hyper(h, ("momentum", "weight_decay"), params, grads, states, ("momentum_buffer",))
    if f is None:
        return False
    bufs = [s["momentum_buffer"] for s in states]
    kw = {"weight_decay": f["weight_decay"], "momentum": f["momentum"], "lr": _fused_lr(h, params[0]),
          "dampening": 0.0, "nesterov": bool(h["nesterov"]), "maximize": False, "is_first_step": False}
    if path == "host":
        torch._fused_sgd_(params, grads, bufs if f["momentum"] else [], **kw)
        return True
    gate = Gates(grads, params[0].dtype)
    for p, g, b, inf in zip(params, grads, bufs, gate.found_inf(), strict=True):
        torch._fused_sgd_([p], [g], [b] if f["momentum"] else [], found_inf=inf, **kw)
    gate.count([], [s["nonfinite_count"] for s in states])
    return True


def eager_path(grads: list[Any]) -> str:
    """The path of one device and dtype group (module docstring): ``"gated"`` while compiling,
    else :data:`EAGER_PATH`, whose ``"auto"`` is ``"host"`` on the CPU and ``"fused"`` on the other
    devices that have torch's fused kernels."""
    if EAGER_PATH not in _PATHS:
        raise ValueError(f"torch_foreach.EAGER_PATH must be one of {_PATHS}, got {EAGER_PATH!r}")
    if not grads or torch.compiler.is_compiling():
        return "gated"
    if EAGER_PATH != "auto":
        return EAGER_PATH
    kind = grads[0].device.type
    if kind == "cpu":
        return "host"
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return "fused" if kind in _get_fused_kernels_supported_devices() else "gated"


def host_flags(grads: list[Any]) -> list[bool]:
    """The core's finite flags (:func:`~xpmat.optim._base.finite`: |Σ g| < ∞) read on the
    host (the ``"host"`` path: free on the CPU).  A finite ‖g‖₂ (one vectorized
    ``_foreach_norm``) implies a finite sum; only a gradient whose ‖g‖₂ is not finite is
    summed."""
    fine = (torch.stack(torch._foreach_norm(grads, 2)) < math.inf).tolist()  # NaN, ∞ fail
    return [ok or bool(finite(g, _array.array_namespace(g))) for ok, g in zip(fine, grads, strict=True)]


def _finish(gate: Gates, params: list[Any], updates: list[Any], steps: list[Any], counts: list[Any]) -> None:
    """Zero the skipped parameters' updates, apply all, count steps and skips."""
    gate.mask_(updates)
    torch._foreach_add_(params, updates)
    gate.count(steps, counts)


def _muon_kernel(h: dict[str, Any], params: list[Any], grads: list[Any], states: list[dict],
                 path: str = "gated") -> None:
    """Muon (:func:`xpmat.optim.muon.transform`) on one device and dtype: the momentum and the
    update in foreach calls, Newton–Schulz batched by shape as the core
    (:func:`xpmat.optim.muon.orthogonalized`)."""
    bufs = [s["momentum_buffer"] for s in states]
    stacks = _muon.chunks(bufs, h["compute_dtype"])  # same-shaped matrix views, Newton–Schulz's batches
    gate = Gates(grads, bufs[0].dtype, path == "host")
    gs = gate.sanitized([_view(g, b.shape) for g, b in zip(grads, bufs, strict=True)], bufs[0].dtype, stacks)
    mu, xp = h["momentum"], _array.array_namespace(bufs[0])
    torch._foreach_lerp_(bufs, gs, gate.times(1.0 - mu))  # B ← B + (1 − μ)(G − B); kept where skipped
    us = bufs
    if h["nesterov"]:  # G + μ (B − G)
        us = (torch._foreach_lerp(gs, bufs, [_on(mu, gs[0])] * len(gs)) if is_array_hyper(mu)
              else torch._foreach_lerp(gs, bufs, mu))
    os_ = [None] * len(us)
    for idx in stacks:  # one batched Newton–Schulz call per stack, cast to its compute dtype as a stack
        for i, o in zip(idx, _muon.orthogonalized(h, [us[i] for i in idx], xp), strict=True):
            os_[i] = o
    decay = step_size(h) * h["weight_decay"]
    if maybe_nonzero(decay):  # decoupled weight decay, O read in its compute dtype
        ws = [_view(p, b.shape) for p, b in zip(params, bufs, strict=True)]
        os_ = (torch._foreach_addcmul(os_, ws, [_on(-decay, os_[0])] * len(ws)) if is_array_hyper(decay)
               else torch._foreach_add(os_, ws, alpha=-decay))
    os_ = [o if o.dtype == b.dtype else o.to(b.dtype) for o, b in zip(os_, bufs, strict=True)]
    gate.mask_(os_)
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
    if not (p.numel() and p.dtype.is_floating_point and g.dtype == p.dtype):
        return False
    for k in keys:  # a loop, not a generator: per parameter and step
        if not isinstance(s.get(k), torch.Tensor):
            return False
    wide = torch.float32 if p.dtype in _LOW else p.dtype
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
        path = eager_path([grads[i] for i in ix])
        if path == "host":  # the skipped ones only count; the rest step ungated
            ok = host_flags([grads[i] for i in ix])
            bad = [i for i, good in zip(ix, ok, strict=True) if not good]
            if bad:
                torch._foreach_add_([states[i]["nonfinite_count"] for i in bad], 1.0)
            ix = [i for i, good in zip(ix, ok, strict=True) if good]
            if not ix:
                continue
        kernel(hyper, [params[i] for i in ix], [grads[i] for i in ix], [states[i] for i in ix], path)
    return rest
