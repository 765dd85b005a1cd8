"""Shared pieces of the asv suite: backends as a parameter, seeded inputs, device sync.

Every benchmark class takes ``backend`` as its first parameter (``numpy``,
``torch:cpu``, ``torch:cuda``, ``cupy``: those present, see :func:`present_backends`); one
that cannot run after all raises ``NotImplementedError``, which asv reports as skipped.
Inputs come from a seeded host RNG and move to the device once in ``setup``; each timed call
ends with a device synchronisation.

``XPMAT_BENCH_FAST=1`` selects small sizes only (smoke runs in CI or on a laptop).
"""

from __future__ import annotations

import glob
import importlib.util
import os

# torch (OpenMP) and NumPy (OpenBLAS) share these processes: with spinning OpenMP workers the
# two thread pools starve each other on a few cores (measured on 2 cores: a 256² torch matmul
# 2.9 ms instead of 0.41 ms, NumPy power_iter1 8 ms instead of 0.3 ms).  Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

ALL_BACKENDS = ["numpy", "torch:cpu", "torch:cuda", "cupy"]
FAST = os.environ.get("XPMAT_BENCH_FAST", "") not in ("", "0")


def present_backends() -> list[str]:
    """The backends of this machine, found without importing torch or cupy.

    ``XPMAT_BENCH_BACKENDS=numpy,torch:cpu`` overrides.  Otherwise: ``numpy``; ``torch:cpu``
    when torch is installed; ``torch:cuda`` and ``cupy`` only when a GPU device node exists
    (``/dev/nvidia<N>``, ``/dev/kfd``) and the library is installed.  Listing an absent GPU
    backend would cost one child process per benchmark just to skip it.
    """
    env = os.environ.get("XPMAT_BENCH_BACKENDS", "")
    if env:
        names = [b.strip() for b in env.split(",") if b.strip()]
        unknown = sorted(set(names) - set(ALL_BACKENDS))
        if unknown:
            raise ValueError(f"XPMAT_BENCH_BACKENDS: unknown {unknown}; known {ALL_BACKENDS}")
        return names
    gpu = bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd")
    torch = importlib.util.find_spec("torch") is not None
    out = ["numpy"]
    out += ["torch:cpu"] if torch else []
    out += ["torch:cuda"] if torch and gpu else []
    out += ["cupy"] if gpu and importlib.util.find_spec("cupy") is not None else []
    return out


BACKENDS = present_backends()
CPU_BACKENDS = [b for b in BACKENDS if b in ("numpy", "torch:cpu")]  # peakmem_ (process RSS)


def _preimport() -> None:
    """Import the heavy libraries once, in asv's forkserver (``launch_method``), not per benchmark.

    Every benchmark runs in a child forked from a server that imported this suite; importing
    torch (seconds on 2 busy cores), SciPy and scikit-learn here makes each child start with
    them loaded.  Importing torch does not initialize CUDA, so forking stays safe: CUDA starts
    in each child on its first use.  ``XPMAT_BENCH_PREIMPORT=0`` turns this off.
    """
    if os.environ.get("XPMAT_BENCH_PREIMPORT", "1") in ("", "0"):
        return
    for name in ("torch", "scipy.linalg", "scipy.special", "sklearn.decomposition",
                 "sklearn.utils.extmath", "xpmat.optim.torch_optim"):
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            importlib.import_module(name)


_preimport()


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


def host(x) -> np.ndarray:
    """A backend array as a float64 NumPy array (for accuracy against float64 references)."""
    if hasattr(x, "detach"):
        return x.detach().cpu().double().numpy()
    if hasattr(x, "get"):
        return x.get().astype(np.float64)
    return np.asarray(x, dtype=np.float64)


def rel_err(x, ref) -> float:
    """``‖x − ref‖_F / ‖ref‖_F`` on the host in float64."""
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(host(x) - ref) / np.linalg.norm(ref))


def warm_up(bench, *params) -> None:
    """Call every ``time_*`` method of ``bench`` once (ours and the anchors alike).

    A one-sided warm-up makes the other side pay first-call costs (kernels, allocator, lazy
    imports) inside its timing: with ``--quick`` (one call) that flipped ratios by 30-60x.
    Methods that skip this parameter set (``NotImplementedError``) are passed over.
    """
    for name in sorted(dir(bench)):
        if name.startswith("time_"):
            try:
                getattr(bench, name)(*params)
            except NotImplementedError:
                pass


def gemm_fraction(work, flops: float, xp, device, dtype: str = "float32", repeats: int = 3) -> float:
    """Fraction of this machine's GEMM rate that ``work()`` (``flops`` floating-point
    operations) reaches: ``work`` and one 1024² GEMM of the same library and dtype are timed
    in turns, ``repeats`` rounds, medians (so load changes hit both alike).  1 = GEMM speed."""
    import time

    a = to_device(gaussian((1024, 1024), seed=7), xp, device, dtype)
    times: dict[str, list[float]] = {"work": [], "gemm": []}
    for _ in range(repeats):
        for name, fn in (("work", work), ("gemm", lambda: sync(a @ a))):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    work_s, gemm_s = (float(np.median(times[k])) for k in ("work", "gemm"))
    return flops / work_s / (2 * 1024**3 / gemm_s)
