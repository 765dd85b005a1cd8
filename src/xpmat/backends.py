"""Which array libraries are importable here, their devices and dtype support.

Used by ``python -m xpmat info``, the demo and the benchmarks.  Importing a library
happens only when one of these functions is called, never at ``import xpmat``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from xpmat import _array

__all__ = ["BackendInfo", "available_backends", "library_versions"]

_LIBRARIES = (
    "xpmat", "numpy", "array_api_compat", "array_api_extra", "array_api_strict",
    "scipy", "sklearn", "torch", "cupy", "jax", "asv",
)


@dataclass
class BackendInfo:
    """One usable (library, device) pair."""

    name: str  # "numpy", "torch:cpu", "torch:cuda", "cupy", "array_api_strict"
    xp: Any = field(repr=False)
    device: Any
    float64: bool
    bfloat16: bool
    detail: str = ""


def library_versions() -> dict[str, str | None]:
    """Installed version of each library xpmat knows about (``None`` when absent)."""
    out: dict[str, str | None] = {}
    for name in _LIBRARIES:
        if importlib.util.find_spec(name) is None:
            out[name] = None
            continue
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception as exc:  # importable spec but broken install: say so
            out[name] = f"import failed: {exc.__class__.__name__}"
    return out


def _jax_backend() -> BackendInfo:
    """JAX on its default device (where ``jax.numpy`` places new arrays): ``jax:cpu``,
    ``jax:gpu``...; float64 only with ``jax_enable_x64`` (JAX computes in float32 otherwise)."""
    import jax
    import jax.numpy as jnp

    x64 = bool(jax.config.jax_enable_x64)
    dev = jax.devices()[0]
    detail = "x64 on" if x64 else "x64 off: jax.config.update('jax_enable_x64', True)"
    return BackendInfo(f"jax:{dev.platform}", jnp, dev, x64, True, detail)


def available_backends() -> list[BackendInfo]:
    """Every backend usable here: NumPy and array-api-strict, torch CPU/CUDA, JAX, CuPy."""
    import array_api_compat

    found: list[BackendInfo] = []
    import numpy as np

    xp = array_api_compat.array_namespace(np.zeros(1))
    found.append(BackendInfo("numpy", xp, "cpu", True, False))
    if importlib.util.find_spec("array_api_strict"):
        import array_api_strict as xps

        found.append(BackendInfo("array_api_strict", xps, xps.Device("CPU_DEVICE"), True, False))
    if importlib.util.find_spec("torch"):
        import torch

        xpt = array_api_compat.array_namespace(torch.zeros(1))
        found.append(BackendInfo("torch:cpu", xpt, torch.device("cpu"), True, True,
                                 f"{torch.get_num_threads()} threads"))
        if torch.cuda.is_available():
            dev = torch.device("cuda")
            found.append(BackendInfo("torch:cuda", xpt, dev, _array.supports_float64(xpt, dev),
                                     True, torch.cuda.get_device_name(dev)))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            found.append(BackendInfo("torch:mps", xpt, torch.device("mps"), False, True))
    if importlib.util.find_spec("jax"):
        found.append(_jax_backend())
    if importlib.util.find_spec("cupy"):
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                xpc = array_api_compat.array_namespace(cupy.zeros(1))
                props = cupy.cuda.runtime.getDeviceProperties(0)
                found.append(BackendInfo("cupy", xpc, cupy.cuda.Device(0), True, False,
                                         props["name"].decode()))
        except Exception:  # CuPy installed without a usable GPU or driver
            pass
    return found
