"""The list of xpmat's optimizers: the method modules whose ``SPEC`` the package derives from.

:data:`SPECS` (every module's ``SPEC``, or its ``SPECS`` when it declares several: PowerSGD and
PowerSGD+) feeds :data:`xpmat.optim.REGISTRY`, ``xpmat.optim.__all__`` and the torch catalog
:mod:`xpmat.optim.torch_optim`.  Adding an optimizer: write its module (with a ``SPEC``, see
:mod:`xpmat.optim._spec`) and name it here, once (docs/architecture.md, "Adding an optimizer").
The order is the registry's (the demo's).
"""

from __future__ import annotations

from xpmat.optim import (
    adafactor,
    adagrad,
    adamnmf,
    adamw,
    dion,
    dion2,
    exponentiated_gradient,
    lre,
    manifold_muon,
    muon,
    normuon,
    powersgd,
    sgd,
    shampoo,
    sphere_sgd,
    steepest_descent,
)
from xpmat.optim._spec import MethodSpec

__all__ = ["MODULES", "SPECS", "spec"]

MODULES = (adamw, muon, normuon, dion, dion2, powersgd, manifold_muon, adafactor, adamnmf, lre, shampoo,
           sgd, adagrad, exponentiated_gradient, steepest_descent, sphere_sgd)

SPECS: tuple[MethodSpec, ...] = tuple(s for m in MODULES for s in getattr(m, "SPECS", (m.SPEC,)))


def spec(name: str) -> MethodSpec:
    """The spec of the method ``name`` (its registry name)."""
    for s in SPECS:
        if s.name == name:
            return s
    raise KeyError(f"no optimizer spec named {name!r}")
