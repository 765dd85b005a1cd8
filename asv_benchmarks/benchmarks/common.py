"""Shared pieces of the asv suite: backends as a parameter, seeded inputs, device sync.

Every benchmark class takes ``backend`` as its first parameter (``numpy``,
``torch:cpu``, ``torch:cuda``, ``cupy``); missing ones raise ``NotImplementedError``,
which asv reports as skipped.  Inputs come from a seeded host RNG and move to the
device once in ``setup``; each timed call ends with a device synchronisation.

``XPMAT_BENCH_FAST=1`` selects small sizes only (smoke runs in CI or on a laptop).
"""

from __future__ import annotations

import os

import numpy as np

BACKENDS = ["numpy", "torch:cpu", "torch:cuda", "cupy"]
FAST = os.environ.get("XPMAT_BENCH_FAST", "") not in ("", "0")


def sizes(small, medium, large):
    """The size parameter list: only ``small`` in the fast profile."""
    return [small] if FAST else [small, medium, large]


def namespace(backend: str):
    """``(xp, device)`` for a backend name, or ``NotImplementedError`` (asv: skipped)."""
    import array_api_compat

    if backend == "numpy":
        return array_api_compat.array_namespace(np.zeros(1)), "cpu"
    if backend.startswith("torch"):
        try:
            import torch
        except ImportError as exc:
            raise NotImplementedError("torch not installed") from exc
        dev = backend.split(":")[1]
        if dev == "cuda" and not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
        return array_api_compat.array_namespace(torch.zeros(1)), torch.device(dev)
    if backend == "cupy":
        try:
            import cupy

            cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            raise NotImplementedError("cupy with a GPU not available") from exc
        return array_api_compat.array_namespace(cupy.zeros(1)), cupy.cuda.Device(0)
    raise NotImplementedError(backend)


def to_device(host: np.ndarray, xp, device, dtype: str = "float32"):
    """Host data to the backend, in ``dtype``."""
    return xp.asarray(host, dtype=getattr(xp, dtype), device=device)


def sync(x) -> None:
    """Wait for the device (no-op on the CPU)."""
    from xpmat._array import synchronize

    synchronize(x)


def gaussian(shape, seed: int = 0) -> np.ndarray:
    """Seeded standard normal host data."""
    return np.random.default_rng(seed).standard_normal(shape)
