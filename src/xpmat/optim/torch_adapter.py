"""The base class of xpmat's torch optimizers: the one ``torch.optim.Optimizer`` adapter (imports torch).

:class:`XpmatOptimizer` turns a functional core (a module with ``DEFAULTS`` and ``transform``)
into a torch optimizer.  The catalog :mod:`xpmat.optim.torch_optim` builds one subclass per
method from its spec (signature, docstring, core); this module is the machinery they share.

Hyper-parameters
    Every keyword argument of the class becomes a ``defaults`` entry and may be overridden per
    param group.  Unknown keys (in the constructor or in a group) raise ``TypeError``; a renamed
    one raises a ``TypeError`` naming its new name.  Values are validated when the group is
    added (``ValueError`` naming the argument and its range), not at the first step.  ``lr``,
    ``momentum``, ``betas`` entries and ``weight_decay`` may be 1-element tensors, as in
    ``torch.optim``: a scheduler fills them in place (``fill_``); the step computes with them
    on the device and never reads one there; their range is checked when the group is added
    (one host read each; a tensor in host memory also at each step, where reading is free).
    ``torch.optim``'s ``foreach``, ``fused``, ``capturable``, ``differentiable`` are accepted
    where the value describes xpmat's step and refused otherwise (:func:`check_torch_flags`).
Routing (matrix methods)
    A group's ``algorithm`` key is the method's name (the default) or ``"adamw"``: the whole
    group then runs the AdamW core (missing keys come from the constructor's ``adamw_*``
    settings, and ``lr`` from ``lr × adamw_lr_ratio``).  In a method group, parameters with
    ``ndim < 2`` run AdamW with ``lr = group lr × adamw_lr_ratio`` and the ``adamw_*``
    settings — so a learning-rate scheduler, which sets each group's ``lr``, drives every
    parameter.
Step
    ``step(closure=None)`` runs under ``torch.no_grad()`` (the closure under
    ``torch.enable_grad()``); per group it hands the parameters that have a gradient (sparse
    ones are refused; complex ones go as real views, ``torch.view_as_real``, where
    :meth:`~XpmatOptimizer._complex_ok` — AdamW, SGD, diagonal AdaGrad, as torch.optim — and
    are refused naming the parameter elsewhere; ``maximize`` negates) to the core's ``update``
    and adds the updates in place.  Each class equals its functional core bitwise.  Hooks for
    subclasses: :meth:`~XpmatOptimizer._evaluate` (LRE's Hessian closure), :meth:`~XpmatOptimizer._prepare`
    (DistributedDion's collectives), :meth:`~XpmatOptimizer._main_transform`,
    :meth:`~XpmatOptimizer._calls` (Muon's chunked calls), :meth:`~XpmatOptimizer._finish`.
Sharded parameters
    ``DTensor`` parameters (FSDP2, HSDP, tensor parallel) step with no other class or argument:
    elementwise methods on each rank's shard, whole-matrix methods once per matrix on an owner
    rank (:mod:`xpmat.optim.torch_sharded`); ``sharded_stats`` holds the last step's traffic
    (None without DTensors).
State
    ``self.state[p]`` holds the core's per-parameter NamedTuple as a dict (field names as keys,
    ``None`` fields left out), and every tensor of it keeps its storage from step to step (what
    CUDA graphs replay into): one functional core serves NumPy/JAX (pure, new arrays) and the
    torch path, where the adapter either runs the core's in-place multi-tensor twin
    (:mod:`xpmat.optim.torch_foreach`: AdamW, SGD, Muon's elementwise phases, as
    ``torch._foreach_*`` calls per device and dtype, bitwise equal to the core) or runs the core
    and copies its new state into the old buffers (:func:`keep_storage`, ``copy_``).
    ``load_state_dict`` keeps the saved dtypes (torch's loader would cast the float32 state of
    a bf16 parameter to bf16) and copies the tensors.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from xpmat import _array
from xpmat._optional import require
from xpmat.optim import adamw as _adamw
from xpmat.optim import torch_foreach as _foreach
from xpmat.optim._base import check_bool, check_rank_fits, check_real, matrix_shape, unknown_argument
from xpmat.optim._docs import fill_doc
from xpmat.optim.transforms import Transform, route

# The first xpmat module to import torch: without it, the error names the extra to install.
torch = require("torch", "The torch optimizers of xpmat.optim (xpmat.optim.Muon, AdamW, ...)")

__all__ = ["FALLBACK_RENAMED", "TORCH_FLAGS", "XpmatOptimizer", "check_torch_flags", "collect_arguments",
           "keep_storage"]


class _Run(NamedTuple):
    """One param group's work in a step: its transform, per-parameter state types, and the
    indices of the parameters this rank steps itself (``here``; the sharded step takes the
    whole-matrix DTensors out of it)."""

    group: dict
    params: list
    grads: list
    transform: Transform
    types: dict
    here: list
    fresh: list  # indices of the parameters without state when the step began


if torch.distributed.is_available():
    from torch.distributed.tensor import DTensor as _DTensor
else:  # a torch build without distributed: no DTensor can reach us
    _DTensor = ()


def _is_dtensor(t: Any) -> bool:
    return type(t) is not torch.Tensor and isinstance(t, _DTensor)


def _as_real(t: Any) -> Any:
    """A complex tensor as its real view ``(..., 2)`` (shares storage: ``add_`` on it writes the
    complex tensor); any other tensor as it is."""
    return torch.view_as_real(t) if torch.is_complex(t) else t


def _local(v: Any) -> Any:
    return v.to_local() if _is_dtensor(v) else v


def keep_storage(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` (state key -> tensor) written into ``old``'s tensors where a key keeps its shape,
    dtype and device (``copy_``, in the new value's strides; a tensor the core already updated
    in place is left as is),
    so the state keeps its storage across steps.  A new value that is a view of an old buffer
    is cloned first (the copies never read a buffer already overwritten; ``_base``, not storage
    pointers, which torch.compile cannot trace)."""
    roots = [_root(t) for t in old.values() if torch.is_tensor(t)]
    out = {}
    for k, v in new.items():
        o = old.get(k)
        if (o is None or o is v or not torch.is_tensor(v) or o.shape != v.shape
                or o.dtype != v.dtype or o.device != v.device):
            out[k] = v
        else:
            r = _root(v)
            out[k] = (o, v.clone() if any(r is t for t in roots) else v)
    for k, v in out.items():
        if isinstance(v, tuple):
            o = _restride(*v)
            out[k] = v[1] if o is None else o.copy_(v[1])
    return out


def _root(t: Any) -> Any:
    """The tensor whose storage ``t`` views (``t`` itself when it is no view)."""
    return t if t._base is None else t._base


def _restride(o: Any, v: Any) -> Any:
    """``o`` with ``v``'s strides, on its own storage (a core may return a transposed layout,
    e.g. a QR factor; the next step's products must see the layout the core made, or BLAS may
    round differently), or None when ``o``'s storage cannot hold that layout.  Under
    ``torch.compile``: ``o`` as it is (Dynamo cannot trace ``as_strided_``, and new strides
    would make the next step recompile; a compiled first step, whose state comes from
    ``init``, may so keep ``init``'s layout: LRE's ``Q``)."""
    if o.stride() == v.stride() or torch.compiler.is_compiling():
        return o
    extent = 1 + sum((n - 1) * st for n, st in zip(v.shape, v.stride(), strict=True))
    if min(v.stride(), default=1) < 0 or extent * o.element_size() > o.untyped_storage().nbytes():
        return None
    return o.as_strided_(v.shape, v.stride(), 0)


FALLBACK_RENAMED = {
    "adamw_lr": "adamw_lr_ratio (the AdamW fallback now runs at the group's lr × adamw_lr_ratio, "
                "so learning-rate schedulers reach it; or give the 1-D parameters a group of "
                "their own with algorithm='adamw' and its lr)",
    "fallback": "algorithm, a param-group key (algorithm='adamw' runs a whole group on AdamW; "
                "1-D parameters always go to AdamW)",
}
_FALLBACK_KEYS = ("adamw_lr_ratio", "adamw_betas", "adamw_eps", "adamw_weight_decay")
_GROUP_ONLY = ("params", "param_names")


# torch.optim's implementation switches (same math, other kernels): accepted at their values
# that describe what xpmat's step does, refused otherwise with what it does instead.
TORCH_FLAGS = ("foreach", "fused", "capturable", "differentiable")
_FLAG_ACCEPTS = {"foreach": (None, False), "fused": (None, False), "capturable": (False,),
                 "differentiable": (False,)}
_FLAG_INSTEAD = {
    "foreach": "xpmat picks its kernels itself (AdamW, SGD and Muon's elementwise phases as "
               "torch._foreach_* calls; the other classes' step runs its elementwise work per "
               "parameter, as torch's foreach=False); pass foreach=None or False",
    "fused": "xpmat picks its kernels itself (eager AdamW and SGD run torch's fused kernels: over "
             "the whole list on CPU tensors, one call per parameter with its own non-finite flag on "
             "a GPU; the other classes several kernels per parameter); pass fused=None or False",
    "capturable": "xpmat keeps step counters on the device, takes tensor hyper-parameters (lr, "
                  "momentum, betas, weight_decay: no host read in the step of its elementwise "
                  "classes) and updates its state in place (the same storage every step), but a "
                  "captured step is not verified: the first step makes the state on the host, "
                  "which a CUDA graph cannot replay; pass capturable=False",
    "differentiable": "xpmat steps under torch.no_grad() and writes the parameters in place, so "
                      "autograd cannot differentiate through step; pass differentiable=False",
}


def check_torch_flags(method: str, flags: dict[str, Any]) -> None:
    """``torch.optim``'s ``foreach``, ``fused``, ``capturable``, ``differentiable``: accepted
    where the value describes xpmat's step (``foreach``/``fused`` None or False, ``capturable``
    and ``differentiable`` False), else a ``ValueError`` saying what xpmat does instead (a value
    of the wrong type: ``TypeError``).  They are not kept in ``defaults``."""
    for k, v in flags.items():
        if not (v is None and k in ("foreach", "fused")) and not isinstance(v, bool):
            raise TypeError(f"{method}: {k} must be a bool{' or None' if k in ('foreach', 'fused') else ''}, "
                            f"got {v!r}")
        if v not in _FLAG_ACCEPTS[k]:
            raise ValueError(f"{method}: {k}={v!r} is not supported: {_FLAG_INSTEAD[k]}")


def _hyper_items(group: dict[str, Any]) -> list[tuple[str, Any]]:
    """``(name, value)`` of a group's hyper-parameters, tuple entries (``betas``) one by one."""
    out = []
    for k, v in group.items():
        if k in _GROUP_ONLY:
            continue
        out.extend(((f"{k}[{i}]", e) for i, e in enumerate(v)) if isinstance(v, tuple) else [(k, v)])
    return out


def _host_values(group: dict[str, Any]) -> dict[str, Any]:
    """``group`` with its tensor hyper-parameters read as floats (the range checks of a tensor
    on a device: a host read each, once, where the group is added — as ``torch.optim`` checks
    ``0 <= lr`` at construction; steps never read a tensor on a device)."""
    def host(v: Any) -> Any:
        if isinstance(v, tuple):
            return tuple(host(e) for e in v)
        if torch.is_tensor(v) and v.numel() == 1 and v.is_floating_point():
            return float(v.detach().reshape(()).cpu())
        return v
    return {k: v if k in _GROUP_ONLY else host(v) for k, v in group.items()}


def collect_arguments(cls: type, local: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters of a constructor call, from its ``locals()``: ``**kwargs`` (kept
    only to answer renamed arguments) must be empty."""
    extra = dict(local.get("kwargs") or {})
    check_torch_flags(cls.__name__, {k: extra.pop(k) for k in TORCH_FLAGS if k in extra})
    known = [k for k in local if k not in ("self", "params", "kwargs", "__class__")]
    if extra:
        renamed = {**cls.renamed, **(FALLBACK_RENAMED if cls.matrix_only else {})}
        raise unknown_argument(list(extra), known, cls.__name__, renamed)
    return {k: local[k] for k in known}


class XpmatOptimizer(torch.optim.Optimizer):
    """Base class: a ``torch.optim.Optimizer`` driven by a functional core (see the module doc).

    Subclasses set ``method`` (a core module), ``algorithm`` (its name in param groups),
    ``matrix_only``, ``renamed`` (old -> new argument names) and call
    ``super().__init__(params, collect_arguments(type(self), locals()))``.  A line of
    placeholders ``%(name)s`` in a subclass's docstring names shared parameter paragraphs
    (:mod:`xpmat.optim._docs`), filled in when the class is created.
    """

    method: ClassVar[Any] = None
    algorithm: ClassVar[str] = ""
    matrix_only: ClassVar[bool] = False
    renamed: ClassVar[dict[str, str]] = {}
    # the core may overwrite the state's buffers (its transform takes reuse_state): this class
    # never reads a state again after handing it to update
    reuse_state: ClassVar[bool] = False
    # complex parameters step as real views (torch.view_as_real), as torch.optim's elementwise
    # classes do; see _complex_ok
    complex_as_real: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("__doc__"):  # the shared paragraphs, for help() (the API page: docs/hooks)
            cls.__doc__ = fill_doc(cls.__doc__)

    def __init__(self, params: Any, hyper: dict[str, Any]) -> None:
        if self.method is None:
            raise TypeError("XpmatOptimizer is a base class: use a subclass that sets `method`")
        defaults = dict(hyper)
        if self.matrix_only:
            defaults["algorithm"] = self.algorithm
        for k in self._unused_keys(defaults):
            if defaults.pop(k) != self.method.DEFAULTS[k]:
                raise TypeError(f"{type(self).__name__}: {k} has no effect with base={defaults['base']!r}")
        super().__init__(params, defaults)

    # -- param groups ------------------------------------------------------------------------
    def _unused_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        """Keys the group's settings make meaningless (left out of ``defaults``, so schedulers
        that cycle ``momentum`` or ``betas`` find the one in use)."""
        unused = getattr(self.method, "unused_keys", None)
        if unused is None:
            return ()
        base = getattr(self, "defaults", {}).get("base", self.method.DEFAULTS.get("base"))
        return unused(group.get("base", base))

    def _allowed(self, group: dict[str, Any]) -> set[str]:
        if self._is_fallback_group(group):
            return set(_adamw.DEFAULTS) | {"maximize", "algorithm"}
        keys = set(self.method.DEFAULTS) | {"maximize"}
        if self.matrix_only:
            keys |= {"algorithm", *_FALLBACK_KEYS}
        return keys - set(self._unused_keys(group))

    def _is_fallback_group(self, group: dict[str, Any]) -> bool:
        return self.matrix_only and group.get("algorithm", self.algorithm) == "adamw"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group; unknown keys raise ``TypeError``, bad values ``ValueError``."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        if self.matrix_only and param_group.get("algorithm", self.algorithm) not in (self.algorithm, "adamw"):
            raise ValueError(f"algorithm must be {self.algorithm!r} or 'adamw', "
                             f"got {param_group['algorithm']!r}")
        flags = {k: param_group.pop(k) for k in TORCH_FLAGS if k in param_group}
        check_torch_flags(type(self).__name__, flags)
        allowed = self._allowed(param_group)
        extra = [k for k in param_group if k not in allowed and k not in _GROUP_ONLY]
        if extra:
            raise unknown_argument(extra, allowed, type(self).__name__, {**self.renamed, **(
                FALLBACK_RENAMED if self.matrix_only else {})})
        if self._is_fallback_group(param_group):
            self._fill_fallback(param_group)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for k in [k for k in group if k not in allowed and k not in _GROUP_ONLY]:
            del group[k]  # torch filled in every default; keep those of this group's algorithm
        self._transforms(group)  # validates the hyper-parameters now, not at the first step
        if any(torch.is_tensor(v) for k, v in _hyper_items(group)):
            self._transforms(_host_values(group))  # tensors' ranges: one read each, here only
        if self.matrix_only and "rank" in group and not self._is_fallback_group(group):
            check_rank_fits(group["rank"], [matrix_shape(p.shape) for p in group["params"] if p.ndim >= 2])

    def _fill_fallback(self, group: dict[str, Any]) -> None:
        d = self.defaults
        group.setdefault("lr", d["lr"] * d["adamw_lr_ratio"])
        for k in ("betas", "eps", "weight_decay"):
            group.setdefault(k, d[f"adamw_{k}"])
        for k in ("schedule", "state_dtype"):
            group.setdefault(k, d[k])
        for k, v in _adamw.DEFAULTS.items():
            group.setdefault(k, v)

    # -- the functional transforms of a group ---------------------------------------------------
    def _hyper(self, group: dict[str, Any], module: Any) -> dict[str, Any]:
        return {k: group[k] if k in group else v for k, v in module.DEFAULTS.items()}

    def _main_transform(self, group: dict[str, Any]) -> Transform:
        """The core's transform for a method group (subclasses bind hooks here)."""
        kw = {"reuse_state": True} if self.reuse_state else {}
        return self.method.transform(**kw, **self._hyper(group, self.method))

    def _transforms(self, group: dict[str, Any]) -> tuple[Transform, Transform | None]:
        """``(main, fallback)``: the fallback (AdamW) takes the parameters with ndim < 2."""
        check_bool("maximize", group["maximize"])
        if self._is_fallback_group(group):
            return _adamw.transform(**self._hyper(group, _adamw)), None
        main = self._main_transform(group)
        if not self.matrix_only:
            return main, None
        check_real("adamw_lr_ratio", group["adamw_lr_ratio"])
        return main, _adamw.transform(**self._fallback_hyper(group))

    def _fallback_hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        """The AdamW settings of a method group's parameters with ``ndim < 2``."""
        return {"lr": group["lr"] * group["adamw_lr_ratio"], "betas": group["adamw_betas"],
                "eps": group["adamw_eps"], "weight_decay": group["adamw_weight_decay"],
                "schedule": group["schedule"], "state_dtype": group["state_dtype"]}

    # -- torch.optim.Optimizer API ----------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One optimization step; ``closure`` (re-evaluates the loss) runs with grad enabled."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            self._init_group(group)
        work = []
        for group in self.param_groups:
            params = self._with_grad(group)
            if params:
                work.append((group, params, [-p.grad if group["maximize"] else p.grad for p in params]))
        runs = [self._run(*w) for w in self._prepare(work)]
        sharded = None
        if any(_is_dtensor(p) for r in runs for p in r.params):
            from xpmat.optim.torch_sharded import ShardedStep

            sharded = ShardedStep(self, runs)  # whole-matrix DTensors leave r.here; gather starts
        for r in runs:
            self._step_here(r, sharded)
        self.sharded_stats = sharded.finish() if sharded is not None else None
        self._finish()
        return loss

    def _init_group(self, group: dict) -> None:
        """Create the state of ``group``'s parameters that have a gradient and no state yet (the
        run's fresh parameters, in order, as :meth:`_init_states` does).  torch.optim's name:
        ``torch.compile``'s Dynamo runs a method of this name eagerly while it traces ``step``
        (``torch/_dynamo/variables/optimizer.py``) and guards the state it made, so a compiled
        first step keeps the seeded host draws out of its graph and step 2 reuses that graph.
        It also runs the device's bf16 probe (cached) for ``compute_dtype="auto"``.  Groups with
        sharded (DTensor) parameters create their state in the step instead."""
        fresh = [p for p in group["params"] if p.grad is not None and not self.state[p]]
        if not fresh or any(_is_dtensor(p) for p in fresh):
            return
        self._with_grad(group)  # refuses sparse and complex gradients before any state is made
        main, fallback = self._transforms(group)
        t = main if fallback is None else route(main, fallback)
        for p, s in zip(fresh, t.init([_as_real(p) for p in fresh]), strict=True):
            self._put(p, s)
        for p in fresh:  # the device's bf16 probe (compute_dtype="auto"), cached: a call Dynamo
            _array.fast_bfloat16(p, _array.array_namespace(p))  # skips would break a traced step 1

    def _run(self, group: dict, params: list, grads: list) -> _Run:
        main, fallback = self._transforms(group)
        t = main if fallback is None else route(main, fallback)
        types = {id(p): (main if fallback is None or p.ndim >= 2 else fallback).state for p in params}
        fresh = [i for i, p in enumerate(params) if not self.state[p]]
        return _Run(group, params, list(grads), t, types, list(range(len(params))), fresh)

    def _init_states(self, r: _Run, idx: list[int], tensors: list[torch.Tensor]) -> list[Any]:
        """The core's initial states of ``r.params[i]`` for ``i`` in ``idx`` (``tensors``: what
        the core sees of them), from ``init`` on the list an unsharded step hands it (the run's
        fresh parameters, in order; the others as stand-ins on the meta device), so that states
        drawn by position (Dion's and PowerSGD's seeded Q) are those of the unsharded run."""
        if len(idx) == len(r.fresh):
            return r.transform.init(tensors)
        at = dict(zip(idx, tensors, strict=True))
        states = r.transform.init([at[i] if i in at else torch.empty(
            r.params[i].shape, dtype=r.params[i].dtype, device="meta") for i in r.fresh])
        pos = {i: k for k, i in enumerate(r.fresh)}
        return [states[pos[i]] for i in idx]

    def _method_of(self, group: dict, p: torch.Tensor) -> tuple[Any, dict[str, Any]]:
        """The core module that steps ``p`` in ``group`` and its hyper-parameters."""
        if self._is_fallback_group(group):
            return _adamw, self._hyper(group, _adamw)
        if self.matrix_only and p.ndim < 2:
            return _adamw, {}
        return self.method, self._hyper(group, self.method)

    def _step_here(self, r: _Run, sharded: Any) -> None:
        """Step the parameters of ``r.here`` on this rank (DTensors: their local blocks)."""
        if not r.here:
            return
        ps_full = [r.params[i] for i in r.here]
        if sharded is None:  # complex parameters as real views (only those _complex_ok accepted)
            ps, gs = [_as_real(p) for p in ps_full], [_as_real(r.grads[i]) for i in r.here]
        else:
            ps, gs = sharded.localize(r)
        was_fresh = set(r.fresh)
        fresh = [k for k, i in enumerate(r.here) if i in was_fresh]
        if fresh:
            for k, s in zip(fresh, self._init_states(r, [r.here[k] for k in fresh], [ps[k] for k in fresh]),
                            strict=True):
                self._put(ps_full[k], s)
        for call in self._calls(ps, r.group):
            call = self._foreach(r.group, call, ps, gs, ps_full)  # the twins step what they can, in place
            if not call:
                continue
            states = [self._get(ps_full[k], r.types[id(ps_full[k])]) for k in call]
            updates, new = r.transform.update([gs[k] for k in call], states, [ps[k] for k in call])
            for k, u, s in zip(call, updates, new, strict=True):
                ps[k].add_(u)
                self._put(ps_full[k], s)

    def _foreach(self, group: dict, call: list[int], ps: list, gs: list, ps_full: list) -> list[int]:
        """Step the parameters of ``call`` whose core has a foreach twin
        (:mod:`xpmat.optim.torch_foreach`: AdamW, SGD, the AdamW fallback) in place; returns
        the indices left to the core's ``update``."""
        if self._is_fallback_group(group):
            parts = [((_adamw, self._hyper(group, _adamw)), call)]
        else:
            own = type(self)._main_transform is XpmatOptimizer._main_transform
            main = (self.method, self._hyper(group, self.method)) if own else None
            parts = [(main, call)]
            if self.matrix_only:
                fallback = (_adamw, {**_adamw.DEFAULTS, **self._fallback_hyper(group)})
                parts = [(main, [k for k in call if ps_full[k].ndim >= 2]),
                         (fallback, [k for k in call if ps_full[k].ndim < 2])]
        rest = []
        for core, idx in parts:
            if core is None or not idx:
                rest += idx
                continue
            left = _foreach.step(core[0], core[1], [ps[k] for k in idx], [gs[k] for k in idx],
                                 [self._local_state(ps_full[k]) for k in idx])
            rest += [idx[j] for j in left]
        return sorted(rest)

    def _evaluate(self, closure: Any) -> Any:
        """The closure's loss (under ``torch.enable_grad()``), or None."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _prepare(self, work: list[tuple[dict, list, list]]) -> list[tuple[dict, list, list]]:
        """``(group, params, grads)`` of the groups that step, before any update (hook)."""
        return work

    def _finish(self) -> None:
        """After the updates of a step (hook)."""

    def _with_grad(self, group: dict) -> list[torch.Tensor]:
        """The group's parameters that have a gradient (sparse ones are refused; complex ones
        too unless :meth:`_complex_ok`)."""
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if torch.is_complex(p) and (not self._complex_ok(group) or _is_dtensor(p)):
                i = next(k for k, q in enumerate(group["params"]) if q is p)
                g = next(k for k, q in enumerate(self.param_groups) if q is group)
                raise RuntimeError(
                    f"{type(self).__name__} does not support complex parameters: parameter {i} of "
                    f"param group {g} has shape {tuple(p.shape)} and dtype {p.dtype}"
                    + (" (a sharded DTensor)" if _is_dtensor(p) else self._complex_hint(group)))
        return params

    def _complex_ok(self, group: dict) -> bool:
        """Whether ``group``'s complex parameters step as real views (``torch.view_as_real``:
        each complex entry is two real entries, as torch.optim's AdamW, SGD and Adagrad)."""
        return self.complex_as_real

    def _complex_hint(self, group: dict) -> str:
        return ("; its method works on whole matrices, where a real view is not the complex "
                "matrix (step torch.view_as_real(p) as a real parameter of its own, if meant)"
                if self.matrix_only else "; AdamW, SGD and AdaGrad (diagonal) step complex "
                "parameters as real views, as torch.optim does")

    def _calls(self, params: list[torch.Tensor], group: dict) -> list[list[int]]:
        """Index lists of ``params`` handed to the core's ``update`` one after another (each
        call's updates are applied before the next): all of them in one call by default."""
        return [list(range(len(params)))]

    def _local_state(self, p: torch.Tensor) -> dict[str, Any]:
        """``self.state[p]``, a DTensor parameter's as its local blocks (views: in-place writes
        update the DTensors)."""
        st = self.state[p]
        return {k: _local(v) for k, v in st.items()} if _is_dtensor(p) else st

    def _get(self, p: torch.Tensor, cls: type) -> Any:
        """The core's state of ``p`` (a DTensor parameter's: its local blocks)."""
        st = self.state[p]
        if _is_dtensor(p):
            return cls(**{f: None if st.get(f) is None else _local(st[f]) for f in cls._fields})
        return cls(**{f: st.get(f) for f in cls._fields})

    def _put(self, p: torch.Tensor, s: Any) -> None:
        """Keep the core's state of ``p`` in the buffers it already has: each new value is
        copied into the old tensor of its key (:func:`keep_storage`), so every state tensor keeps
        its storage across steps (CUDA graphs replay into it; a DTensor parameter's state stays
        the same DTensor, its local block updated).  A key that is new, or whose shape or dtype
        changed, takes the new tensor (a DTensor's as a DTensor of its placements; 0-d counters
        stay plain tensors)."""
        old = self.state[p]
        st = {k: v for k, v in s._asdict().items() if v is not None}
        st = keep_storage({k: _local(v) for k, v in old.items()}, st)
        if _is_dtensor(p):
            from xpmat.optim.torch_sharded import local_state_layout, to_dtensor

            st = {k: old[k] if _is_dtensor(old.get(k)) and old[k].to_local() is v
                  else to_dtensor(v, local_state_layout(p, v)) for k, v in st.items()}
        self.state[p] = st

    def load_state_dict(self, state_dict: dict) -> None:
        """Load state; floating state keeps its saved dtype (torch's loader would cast it).

        The tensors are copied, so a state_dict taken from a live optimizer is never shared
        with this one (whose steps may update its buffers in place)."""
        saved = {k: dict(v) for k, v in state_dict["state"].items()}
        ids = {}
        for g_saved, g in zip(state_dict["param_groups"], self.param_groups, strict=True):
            ids.update(zip(g_saved["params"], g["params"], strict=True))
        super().load_state_dict(state_dict)
        for k, st in saved.items():
            p = ids[k]
            for key, v in st.items():
                if torch.is_tensor(v):
                    self.state[p][key] = v.to(device=p.device, copy=True)
