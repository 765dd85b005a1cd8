"""The asv suite's one framework: backends as a parameter, seeded inputs, device sync, and the
benchmark classes' base and mixins (scikit-learn's ``asv_benchmarks/benchmarks/common.py`` is the
model).  Every ``bench_<module>.py`` file imports what it needs from here; nothing is copied.

Every benchmark class takes ``backend`` as its first parameter (``numpy``, ``torch:cpu``,
``torch:cuda``, ``cupy``: those present, see :func:`present_backends`); one that cannot run
raises :class:`SkipNotImplemented`, which asv reports as skipped.  Inputs come from a seeded
host RNG and move to the device once in ``setup``; each timed call ends with a device
synchronisation.

A primitive's classes are written as one private spec class (``_Polar(Benchmark)``: ``make``
builds the inputs, ``ours`` / ``anchor`` return results, ``err`` is a result's float64 error)
and public classes that add the benchmark kinds by mixin::

    class Polar(TimeMixin, TrackMixin, _Polar): ...       # time_ours / time_anchor, track_err_*
    class PolarMemory(MemoryMixin, _Polar): ...            # peakmem_ours / peakmem_anchor

:class:`Benchmark` and the mixins are abstract (``make`` and ``ours`` are abstract methods), so
asv, which skips abstract classes, finds no benchmark in them wherever they are imported.

``XPMAT_BENCH_FAST=1`` selects small sizes only (smoke runs in CI or on a laptop).
"""

from __future__ import annotations

import glob
import importlib.util
import os
from abc import ABC, abstractmethod

# torch (OpenMP) and NumPy (OpenBLAS) share these processes: with spinning OpenMP workers the
# two thread pools starve each other on a few cores (measured on 2 cores: a 256² torch matmul
# 2.9 ms instead of 0.41 ms, NumPy power_iter1 8 ms instead of 0.3 ms).  Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

try:
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # older asv: NotImplementedError is what it skips on
    SkipNotImplemented = NotImplementedError

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


# ----------------------------------------------------------------------------- inputs and checks


def known_spectrum(n, s, *, symmetric, seed=0):
    """Dense ``H₁ diag(s) H₂`` (``H₂ = H₁`` when symmetric) and ``H₁``'s generator ``u``.

    ``H = I − 2 u uᵀ`` are Householder reflectors (dense, orthogonal), applied in O(n²): a
    matrix with a prescribed spectrum, exact optimal errors and eigenvectors, and no O(n³)
    set-up."""
    rng = np.random.default_rng(seed)
    u = _unit(n, rng)
    v = u if symmetric else _unit(n, rng)
    A = _reflect(_reflect(np.diag(s), u, "left"), v, "right")
    return A, u


def _reflect(M, u, side):
    """``H M`` (side="left") or ``M H`` with ``H = I − 2 u uᵀ``, in O(n²)."""
    if side == "left":
        return M - 2 * np.outer(u, u @ M)
    return M - 2 * np.outer(M @ u, u)


def _unit(n, rng):
    u = rng.standard_normal(n)
    return u / np.linalg.norm(u)


def decaying(n, k=32):
    """Spectrum with a clear top-k: ``10·0.9^i`` then a flat tail ``0.1·(1 − i/n)``."""
    return np.concatenate([10 * 0.9 ** np.arange(k), 0.1 * (1 - np.arange(n - k) / n)])


def orthonormal_basis(n, r, seed):
    """Seeded ``n × r`` host matrix with orthonormal columns (QR of a Gaussian)."""
    return np.linalg.qr(gaussian((n, r), seed))[0]


def poisson_counts(shape, r=20, seed=0):
    """Seeded Poisson counts of a rank-``r`` nonnegative matrix (NMF inputs), float64."""
    rng = np.random.default_rng(seed)
    m, n = shape
    return rng.poisson(rng.random((m, r)) @ rng.random((r, n))).astype(np.float64)


def require_gloo() -> None:
    """``NotImplementedError`` (asv skips the benchmark) unless ``torch.distributed`` with gloo is
    there: the spawned-rank benchmarks' ``setup_cache``."""
    try:
        import torch.distributed as dist
    except ImportError as exc:
        raise NotImplementedError("torch not installed") from exc
    if not dist.is_available() or not dist.is_gloo_available():
        raise NotImplementedError("torch.distributed with gloo not available")


def sync_all(out) -> None:
    """Synchronize on the arrays of a result (an array, a tuple or a NamedTuple of them)."""
    for x in out if isinstance(out, (tuple, list)) else (out,):
        if hasattr(x, "shape"):
            sync(x)


def rank_err(L, ref) -> float:
    """Relative error of the top eigen/singular values (sorted descending on both sides)."""
    got = np.sort(host(L).ravel())[::-1][: len(ref)]
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


# ----------------------------------------------------------------------------- base and mixins


class Benchmark(ABC):
    """One primitive (or step) on one backend: the base of every benchmark class.

    ``setup(backend, *params)`` resolves the backend (skipped when absent), calls
    ``make(*params)`` to build the inputs on the device, then (``warm = True``) calls every
    ``time_*`` method once (:func:`warm_up`: kernels, allocator, lazy imports, both sides).
    ``ours()`` / ``anchor()`` return results, ``err(result)`` is a result's float64 error.
    ``anchor_err = False`` where the anchor computes another quantity; ``anchor_on``
    restricts the anchor to some backends (host-only libraries: scikit-learn, SciPy).
    """

    param_names = ["backend", "n"]
    timeout = 300
    anchor_err = True
    anchor_on: tuple[str, ...] | None = None  # None: every backend
    warm = True  # warm-up calls in setup (not for peakmem_: ru_maxrss would count them)

    def setup(self, backend, *params):
        try:
            self.xp, self.dev = namespace(backend)
        except NotImplementedError as exc:
            raise SkipNotImplemented(str(exc)) from exc
        self.backend = backend
        self.make(*params)
        if self.warm:
            self.first_calls(backend, *params)

    def first_calls(self, *params):
        """The warm-up of ``setup``: every ``time_*`` method once (override to do less)."""
        warm_up(self, *params)

    @abstractmethod
    def make(self, *params):
        """Build the inputs (host references, device arrays) for one parameter set."""

    @abstractmethod
    def ours(self):
        """One call of ours; returns its result."""

    def anchor(self):
        """One call of the anchor; returns its result."""
        raise SkipNotImplemented(f"{type(self).__name__}: no anchor")

    def err(self, out) -> float:
        """A result's float64 error (``track_err_*``)."""
        raise SkipNotImplemented(f"{type(self).__name__}: no error measure")

    def put(self, a, dtype="float32"):
        """Host data to this benchmark's backend and device."""
        return to_device(np.ascontiguousarray(a), self.xp, self.dev, dtype)

    def anchor_here(self) -> bool:
        return self.anchor_on is None or self.backend in self.anchor_on

    def need_anchor(self) -> None:
        if not self.anchor_here():
            raise SkipNotImplemented(f"{type(self).__name__}: anchor only on {self.anchor_on}")


class TimeMixin(Benchmark):
    """``time_ours`` / ``time_anchor``: one call, device synchronized."""

    def time_ours(self, backend, *params):
        sync_all(self.ours())

    def time_anchor(self, backend, *params):
        self.need_anchor()
        sync_all(self.anchor())


class MemoryMixin(Benchmark):
    """``peakmem_ours`` / ``peakmem_anchor``; CPU backends only (it is the process's peak RSS,
    ``ru_maxrss``: setup does no warm-up call, so each figure holds one call of one side)."""

    warm = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if hasattr(cls, "params"):
            cls.params = [CPU_BACKENDS, *cls.params[1:]]

    def need_cpu(self) -> None:
        if self.backend not in CPU_BACKENDS:
            raise SkipNotImplemented("peakmem_ measures host RSS: CPU backends only")

    def peakmem_ours(self, backend, *params):
        self.need_cpu()
        self.ours()

    def peakmem_anchor(self, backend, *params):
        self.need_cpu()
        self.need_anchor()
        self.anchor()


class TrackMixin(Benchmark):
    """``track_err_ours`` / ``track_err_anchor``: float32 results against a float64 reference."""

    def track_err_ours(self, backend, *params):
        return self.err(self.ours())

    def track_err_anchor(self, backend, *params):
        if not self.anchor_err:
            raise SkipNotImplemented(f"{type(self).__name__}: the anchor computes another quantity")
        self.need_anchor()
        return self.err(self.anchor())

    track_err_ours.unit = "relative error"
    track_err_anchor.unit = "relative error"


def gpt2_shapes(layers, d):
    """The matrix parameters of ``layers`` GPT-2 blocks of width ``d``: ``[d×4d, 4d×d, d×3d, d×d]``
    each (GPT-2 small: 12 layers, d = 768; the 1-D LayerNorm and bias parameters left out)."""
    return [s for _ in range(layers) for s in ((d, 4 * d), (4 * d, d), (d, 3 * d), (d, d))]
