"""xpmat's optimizers: every method module of :mod:`xpmat.optim`, found by its ``SPEC``.

A method module is a public module of this package (not ``torch_*``) that declares ``SPEC``
(:class:`xpmat.optim._spec.MethodSpec`), or ``SPECS`` when it declares several (PowerSGD and
PowerSGD+).  :data:`SPECS`, in module-name order, feeds :data:`xpmat.optim.REGISTRY`,
``xpmat.optim.__all__`` and the torch catalog :mod:`xpmat.optim.torch_optim`: adding an
optimizer is adding its module, with no list to edit (docs/architecture.md, "Adding an
optimizer").  The modules are imported here, when ``xpmat.optim`` is; none imports torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from xpmat.optim._spec import MethodSpec

__all__ = ["SPECS", "method_modules", "spec"]


def method_modules() -> list[str]:
    """The names of the public non-torch modules of :mod:`xpmat.optim` that declare a spec."""
    found = pkgutil.iter_modules([str(Path(__file__).parent)])
    names = sorted(m.name for m in found if not m.ispkg and not m.name.startswith(("_", "torch_")))
    return [n for n in names if hasattr(importlib.import_module(f"xpmat.optim.{n}"), "SPEC")]


def _specs() -> tuple[MethodSpec, ...]:
    mods = [importlib.import_module(f"xpmat.optim.{n}") for n in method_modules()]
    return tuple(s for m in mods for s in getattr(m, "SPECS", (m.SPEC,)))


SPECS: tuple[MethodSpec, ...] = _specs()


def spec(name: str) -> MethodSpec:
    """The spec of the method ``name`` (its registry name)."""
    for s in SPECS:
        if s.name == name:
            return s
    raise KeyError(f"no optimizer spec named {name!r}")
