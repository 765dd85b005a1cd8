"""Optional dependencies: import one, or say which extra of xpmat brings it.

The primitives need only NumPy and array-api-compat/-extra.  The torch optimizers, the demo
and the benchmark need more; without it they stop with a ``ModuleNotFoundError`` whose message
names the ``pip install 'xpmat[...]'`` that brings what is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# import name -> (name on PyPI, extra of xpmat that installs it)
PROVIDERS: dict[str, tuple[str, str]] = {
    "torch": ("torch", "torch"),
    "sklearn": ("scikit-learn", "bench"),
    "matplotlib": ("matplotlib", "bench"),
    "scipy": ("scipy", "bench"),
}


def missing(modules: tuple[str, ...] | list[str]) -> list[str]:
    """The names among ``modules`` that cannot be imported here (none is imported)."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def install_message(feature: str, modules: list[str]) -> str:
    """``"<feature> needs <packages>: pip install 'xpmat[<extras>]'"``."""
    packages = ", ".join(PROVIDERS.get(m, (m, ""))[0] for m in modules)
    extras = sorted({PROVIDERS[m][1] for m in modules if m in PROVIDERS})
    hint = f"pip install 'xpmat[{','.join(extras)}]'" if extras else f"pip install {packages}"
    return f"{feature} needs {packages}, which is not installed: {hint}"


def require(module: str, feature: str) -> ModuleType:
    """``import module``, or a ``ModuleNotFoundError`` naming the extra that installs it.

    Only the absence of ``module`` itself is translated; an import error from inside an
    installed package propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        raise ModuleNotFoundError(install_message(feature, [module]), name=module) from None
