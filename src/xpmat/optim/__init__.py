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

Every method registers itself in :data:`REGISTRY` (name -> :class:`MethodInfo`): the demo
and the tests iterate over it.  A new method adds one module, one torch class in
:mod:`xpmat.optim.torch_optim` and one ``register(...)`` line below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from xpmat.optim import transforms
from xpmat.optim._base import apply_updates
from xpmat.optim.muonclip import qk_clip, qk_clip_
from xpmat.optim.transforms import Transform, chain, route

_TORCH_NAMES = ("LRE", "Adafactor", "AdamNMF", "AdamW", "Dion", "Dion2", "ManifoldMuon", "Muon", "NorMuon",
                "PowerSGD", "PowerSGDPlus", "Shampoo", "XpmatOptimizer")
_TORCH_NAMES += ("SGD", "AdaGrad", "ExponentiatedGradient", "SphereSGD", "SteepestDescent")

__all__ = [
    "LRE",
    "REGISTRY",
    "SGD",
    "AdaGrad",
    "Adafactor",
    "AdamNMF",
    "AdamW",
    "Dion",
    "Dion2",
    "ExponentiatedGradient",
    "ManifoldMuon",
    "MethodInfo",
    "Muon",
    "NorMuon",
    "PowerSGD",
    "PowerSGDPlus",
    "Shampoo",
    "SphereSGD",
    "SteepestDescent",
    "Transform",
    "XpmatOptimizer",
    "apply_updates",
    "chain",
    "core",
    "qk_clip",
    "qk_clip_",
    "register",
    "route",
    "torch_class",
    "transforms",
]


@dataclass(frozen=True)
class MethodInfo:
    """One optimizer: its functional core module, its torch class, demo settings."""

    name: str
    module: str  # functional core, e.g. "xpmat.optim.adamw"
    torch_class: str  # class name in xpmat.optim.torch_optim
    matrix_only: bool = False
    demo: dict[str, Any] = field(default_factory=dict)  # hyper-parameters for the digits MLP demo
    doc: str = ""


REGISTRY: dict[str, MethodInfo] = {}


def register(info: MethodInfo) -> MethodInfo:
    """Add a method to :data:`REGISTRY` (name must be new)."""
    if info.name in REGISTRY:
        raise ValueError(f"optimizer {info.name!r} is already registered")
    REGISTRY[info.name] = info
    return info


def core(name: str) -> Any:
    """The functional core module of a registered method."""
    return importlib.import_module(REGISTRY[name].module)


def torch_class(name: str) -> type:
    """The ``torch.optim.Optimizer`` class of a registered method (imports torch)."""
    return getattr(importlib.import_module("xpmat.optim.torch_optim"), REGISTRY[name].torch_class)


register(MethodInfo("adamw", "xpmat.optim.adamw", "AdamW", demo={"lr": 3e-3},
                    doc="AdamW (§4): bias correction, AMSGrad after correction, Nesterov, atan2"))
register(MethodInfo("muon", "xpmat.optim.muon", "Muon", matrix_only=True,
                    demo={"lr": 0.02, "adamw_lr_ratio": 0.15},
                    doc="Muon (§7): momentum -> batched msign -> shape-scaled update"))
register(MethodInfo("normuon", "xpmat.optim.normuon", "NorMuon", matrix_only=True,
                    demo={"lr": 0.02, "adamw_lr_ratio": 0.15},
                    doc="NorMuon: Muon with each row of msign(U) normalized by an EMA of its mean square"))
register(MethodInfo("dion", "xpmat.optim.dion", "Dion", matrix_only=True,
                    demo={"lr": 0.02, "rank": 0.25, "adamw_lr_ratio": 0.15},
                    doc="Dion: PowerIter1 with error feedback, orthonormal low-rank update"))
register(MethodInfo("dion2", "xpmat.optim.dion2", "Dion2", matrix_only=True,
                    demo={"lr": 0.02, "fraction": 0.5, "adamw_lr_ratio": 0.15},
                    doc="Dion2: msign of the top-f slices of the summed momentum (l1), error-feedback decay"))
register(MethodInfo("powersgd", "xpmat.optim.powersgd", "PowerSGD", matrix_only=True,
                    demo={"lr": 0.05, "rank": 8, "adamw_lr_ratio": 0.06},
                    doc="PowerSGD: rank-r power-step compression, error feedback, momentum SGD"))
register(MethodInfo("powersgd+", "xpmat.optim.powersgd", "PowerSGDPlus", matrix_only=True,
                    demo={"lr": 0.05, "rank": 8, "restart_every": 20, "adamw_lr_ratio": 0.06},
                    doc="PowerSGD+: PowerSGD with an SVD restart every tau steps"))
register(MethodInfo("manifold_muon", "xpmat.optim.manifold_muon", "ManifoldMuon", matrix_only=True,
                    demo={"lr": 0.03, "momentum": 0.9, "radius": 3.0, "adamw_lr_ratio": 0.1},
                    doc="Manifold Muon (§8.2): Stiefel weights, Phi = msign(G + W X), online dual"))
register(MethodInfo("adafactor", "xpmat.optim.adafactor", "Adafactor",
                    demo={"lr": 0.01, "betas": (0.9, 0.999)},
                    doc="Adafactor (§4.7, eq. 52): rank-1 factored V, update clipping, RMS(W) step"))
register(MethodInfo("adamnmf", "xpmat.optim.adamnmf", "AdamNMF", matrix_only=True,
                    demo={"lr": 1e-3, "rank": 4, "betas": (0.9, 0.999), "adamw_lr_ratio": 3.0},
                    doc="AdamNMF (L.2): rank-r NMF second moment, one warm-started EM step a step"))
register(MethodInfo("lre", "xpmat.optim.lre", "LRE", demo={"lr": 0.03, "rank": 16},
                    doc="LRE: gradient-covariance eigenbasis Q L Qᵀ (rank r), Adam inside the basis"))
register(MethodInfo("shampoo", "xpmat.optim.shampoo", "Shampoo", matrix_only=True,
                    demo={"lr": 3e-3, "precondition_every": 10, "adamw_lr_ratio": 1.0},
                    doc="Shampoo (§5, 5.1, 6.2): EMA factors, L^(-1/4) G R^(-1/4), AdamW grafting"))

register(MethodInfo("sgd", "xpmat.optim.sgd", "SGD", demo={"lr": 0.1, "momentum": 0.9, "nesterov": True},
                    doc="SGD (§2.2–2.3.1): heavy ball, Nesterov as double momentum (torch.optim.SGD)"))
register(MethodInfo("adagrad", "xpmat.optim.adagrad", "AdaGrad", demo={"lr": 0.05},
                    doc="AdaGrad (§3.1, eq. 44): diagonal, as torch.optim.Adagrad"))
register(MethodInfo("adagrad_full", "xpmat.optim.adagrad", "AdaGrad",
                    demo={"lr": 0.2, "preconditioner": "full", "rank": 16, "max_dim": 512},
                    doc="full-matrix AdaGrad (§3.2.1): O^(-1/2) g per block, rank-r eigenbasis"))
register(MethodInfo("exponentiated_gradient", "xpmat.optim.exponentiated_gradient", "ExponentiatedGradient",
                    demo={"lr": 10.0, "mirror": "hypentropy", "scale": 0.1, "momentum": 0.9},
                    doc="exponentiated gradient (§1.1, App. D): mirror descent; the demo: hypentropy (EGU±)"))
register(MethodInfo("steepest_descent", "xpmat.optim.steepest_descent", "SteepestDescent",
                    demo={"lr": 0.02, "momentum": 0.95, "nesterov": True},
                    doc="steepest descent under a norm (§7, eq. 69); the demo: spectral, trust region"))
register(MethodInfo("sphere_sgd", "xpmat.optim.sphere_sgd", "SphereSGD",
                    demo={"lr": 0.1, "momentum": 0.9, "radius": 2.0},
                    doc="SGD on the sphere (§8.1): each unit at radius r, classical retraction (eq. 72)"))


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:  # torch classes load torch only when asked for
        return getattr(importlib.import_module("xpmat.optim.torch_optim"), name)
    raise AttributeError(f"module 'xpmat.optim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_TORCH_NAMES))
