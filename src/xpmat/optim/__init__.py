"""Optimizers on the xpmat primitives: composable transforms, a functional core per method, torch classes.

Functional cores (any Array API library, no torch import), one module per method::

    from xpmat.optim import adamw
    state = adamw.init(params)                                   # params: list of arrays
    updates, state = adamw.update(grads, state, params, lr=1e-3)
    params = xpmat.optim.apply_updates(params, updates)          # p + u

Each method is a short composition of the building blocks of :mod:`xpmat.optim.transforms`
(momentum, Adam, msign, low-rank directions, decay, step size, the non-finite guard, routing).

Torch classes (``torch.optim.Optimizer`` subclasses, imported on first access)::

    opt = xpmat.optim.Muon(model.parameters(), lr=0.02)         # 1-D params -> AdamW

QK-clip (MuonClip's attention-logit guard), called by the training loop after ``step``:
:func:`qk_clip_` (torch weights, in place) and :func:`qk_clip` (any library, new arrays).

Every method is declared once, by a ``SPEC`` in its module (:mod:`xpmat.optim._spec`): the
registry :data:`REGISTRY` (name -> :class:`MethodInfo`; the demo and the tests iterate over it),
``__all__`` and the torch classes derive from it.  A new method adds one module, which
``xpmat.optim._catalog`` finds by its ``SPEC`` (docs/architecture.md, "Adding an optimizer").
"""

from __future__ import annotations

import importlib
from typing import Any

from xpmat.optim import _catalog, transforms
from xpmat.optim._base import apply_updates
from xpmat.optim._spec import MethodInfo, MethodSpec
from xpmat.optim.muonclip import qk_clip, qk_clip_
from xpmat.optim.transforms import Transform, chain, route

_TORCH_NAMES = (*(s.class_name for s in _catalog.SPECS), "XpmatOptimizer")

__all__ = ["REGISTRY", "MethodInfo", "Transform", "apply_updates", "chain", "core", "qk_clip", "qk_clip_",
           "register", "route", "torch_class", "transforms"]
__all__ += _TORCH_NAMES  # the torch classes, one per spec
__all__.sort()

REGISTRY: dict[str, MethodInfo] = {}


def register(info: MethodInfo | MethodSpec) -> MethodInfo:
    """Add a method to :data:`REGISTRY` (its name must be new): a :class:`MethodInfo`, or a
    :class:`~xpmat.optim._spec.MethodSpec`, whose entries (its own and those of ``also``) are
    added and whose torch class :func:`torch_class` builds; returns the (first) entry."""
    infos = info.infos() if isinstance(info, MethodSpec) else [info]
    taken = [i.name for i in infos if i.name in REGISTRY]
    if taken:
        raise ValueError(f"optimizer {taken[0]!r} is already registered")
    REGISTRY.update((i.name, i) for i in infos)
    return infos[0]


def core(name: str) -> Any:
    """The functional core module of a registered method."""
    return importlib.import_module(REGISTRY[name].module)


def torch_class(name: str) -> type:
    """The ``torch.optim.Optimizer`` class of a registered method (imports torch)."""
    info = REGISTRY[name]
    catalog = importlib.import_module("xpmat.optim.torch_optim")
    if info.spec is not None:
        return catalog.class_for(info.spec)
    return getattr(catalog, info.torch_class)


for _spec in _catalog.SPECS:
    register(_spec)
del _spec


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:  # torch classes load torch only when asked for
        return getattr(importlib.import_module("xpmat.optim.torch_optim"), name)
    raise AttributeError(f"module 'xpmat.optim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TORCH_NAMES))
