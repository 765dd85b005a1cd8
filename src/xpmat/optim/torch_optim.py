"""The catalog of torch optimizers: one ``torch.optim.Optimizer`` class per method spec (imports torch).

The base class is :class:`~xpmat.optim.torch_adapter.XpmatOptimizer` (``torch_adapter.py``:
param groups, routing, the step, state).  This module is the catalog: each class is built
from its method's ``SPEC`` (:class:`xpmat.optim._spec.MethodSpec`, listed in
``xpmat.optim._catalog``) by :func:`class_for` — its signature, docstring, core and facts —
plus, for three methods, a small mixin of hooks (Muon's chunked calls, AdaGrad's complex
policy, LRE's closures in :mod:`xpmat.optim.torch_lre`).

Every class is the one adapter over a
functional core: explicit keyword arguments (torch's names: ``lr``, ``momentum``, ``betas``,
``eps``, ``weight_decay``, ``maximize``), each a ``defaults`` entry a param group may override;
``lr``, ``momentum``, ``weight_decay`` (and AdamW's and PowerSGD's ``betas``, the AdamW
fallback's ``adamw_betas``, ``adamw_weight_decay``) may be 1-element tensors, as in torch.optim
(docs/optim.md, "Tensor hyper-parameters");
state keys are the core's field names (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ...).

Matrix methods (:class:`Muon`, :class:`Dion`, :class:`PowerSGD`, :class:`PowerSGDPlus`,
:class:`ManifoldMuon`, :class:`AdamNMF`, :class:`Shampoo`) take four more arguments for their
AdamW fallback — ``adamw_lr_ratio`` (its lr is the group's ``lr`` times this),
``adamw_betas``, ``adamw_eps``, ``adamw_weight_decay`` — and a param-group key ``algorithm``:
the method's name (default) or ``"adamw"``, which runs that whole group on AdamW (embeddings,
output heads), as ``use_muon=False`` does in the reference Muon code.  Parameters with
``ndim < 2`` always go to AdamW.

Non-finite gradients: a parameter whose gradient has a NaN or ±Inf entry is not moved and its
state is not changed; ``state[p]["nonfinite_count"]`` counts such steps (on the device, no
host synchronisation).

Each class equals its functional core on the same inputs: the step is literally
``core.update`` followed by ``p.add_(u)`` (on a CPU Muon makes one such call per 8 MiB of
matrices, :func:`xpmat.optim.muon.calls`; any split gives the same result).
"""

from __future__ import annotations

import importlib
from typing import Any

from xpmat._optional import require
from xpmat.optim import _catalog
from xpmat.optim import muon as _muon
from xpmat.optim._spec import MethodSpec
from xpmat.optim.torch_adapter import XpmatOptimizer, collect_arguments
from xpmat.optim.torch_lre import LREClosures

torch = require("torch", "The torch optimizers of xpmat.optim (xpmat.optim.Muon, AdamW, ...)")


class _MuonCalls:
    """Muon's hook: the core calls of :func:`xpmat.optim.muon.calls`."""

    def _calls(self, params: list[torch.Tensor], group: dict) -> list[list[int]]:
        """The core calls of :func:`xpmat.optim.muon.calls` (on a CPU at most 8 MiB of
        matrices each, so only one chunk's updates are alive at a time); 1-D parameters (AdamW)
        join the first call."""
        if self._is_fallback_group(group):
            return [list(range(len(params)))]
        mats = [i for i, p in enumerate(params) if p.ndim >= 2]
        rest = [i for i, p in enumerate(params) if p.ndim < 2]
        out = [[mats[j] for j in c] for c in _muon.calls([params[i] for i in mats], group["compute_dtype"],
                                                          group["flatten"], group["num_heads"])]
        return [out[0] + rest, *out[1:]] if out else [rest]


class _AdaGradComplex:
    """AdaGrad's hook: complex parameters with the diagonal preconditioner only."""

    def _complex_ok(self, group: dict[str, Any]) -> bool:
        """Complex parameters step as real views with the diagonal preconditioner (as
        ``torch.optim.Adagrad``); ``"full"`` and ``"norm"`` couple entries, so they refuse them."""
        return group["preconditioner"] == "diagonal"

    def _complex_hint(self, group: dict[str, Any]) -> str:
        return (f"; preconditioner={group['preconditioner']!r} couples entries: use "
                "preconditioner='diagonal', which steps complex parameters as real views (as torch)")


# The catalog classes with hooks beyond their spec (a mixin each, before XpmatOptimizer)
HOOKS: dict[str, type] = {"Muon": _MuonCalls, "AdaGrad": _AdaGradComplex, "LRE": LREClosures}
_CLASSES: dict[str, type] = {}


def _init_for(spec: MethodSpec) -> Any:
    """``__init__`` with the spec's explicit signature (its source written and compiled, as
    :mod:`dataclasses` writes ``__init__``), which hands its arguments to the base class."""
    parts, star = [], False
    for p in spec.signature().parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}: {p.annotation!r}")
        elif p.default is p.empty:
            parts.append(p.name if p.name == "self" else f"{p.name}: {p.annotation!r}")
        else:
            parts.append(f"{p.name}: {p.annotation!r} = _defaults[{p.name!r}]")
    src = (f"def __init__({', '.join(parts)}) -> 'None':\n"
           "    _base_init(self, params, _collect(type(self), locals()))\n")
    env = {"_defaults": spec.class_defaults(), "_base_init": XpmatOptimizer.__init__,
           "_collect": collect_arguments}
    exec(compile(src, f"<{spec.class_name}.__init__>", "exec", dont_inherit=True), env)  # our text
    init = env["__init__"]
    init.__qualname__, init.__module__ = f"{spec.class_name}.__init__", __name__
    return init


def class_for(spec: MethodSpec) -> type:
    """The torch class of ``spec`` (built once): an :class:`XpmatOptimizer` subclass (of the
    ``parent`` spec's class if set, after its :data:`HOOKS` mixin) with the spec's signature,
    docstring (shared paragraphs filled), core module and facts."""
    cls = _CLASSES.get(spec.class_name)
    if cls is not None and cls.spec is spec:
        return cls
    parent = class_for(_catalog.spec(spec.parent)) if spec.parent else XpmatOptimizer
    hook = HOOKS.get(spec.class_name)
    cls = type(spec.class_name, (parent,) if hook is None else (hook, parent), {
        "__doc__": spec.class_doc(), "__module__": __name__, "__qualname__": spec.class_name,
        "__init__": _init_for(spec), "spec": spec, "method": importlib.import_module(spec.module),
        "algorithm": spec.name, "matrix_only": spec.matrix_only, "renamed": spec.renamed,
        "complex_as_real": spec.complex_as_real, "reuse_state": spec.reuse_state})
    _CLASSES[spec.class_name] = cls
    return cls


for _spec in _catalog.SPECS:
    globals()[_spec.class_name] = class_for(_spec)
del _spec

__all__ = sorted([s.class_name for s in _catalog.SPECS] + ["XpmatOptimizer", "class_for"])
