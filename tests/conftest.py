"""Test matrix: one `backend` / `xp` fixture over every array library importable here.

Backends: ``numpy``, ``numpy:readonly`` (inputs with the write flag off, catches
in-place mutation), ``array_api_strict`` (on its default device and on ``Device("device1")``:
results must stay on the input's device), ``torch`` (CPU), ``jax`` (CPU, float64 enabled:
``jax_enable_x64``), ``torch:cuda`` and ``cupy`` (GPU only, skipped otherwise), ``dask``
(NumPy chunks; a matrix of 4 rows or more is cut into 2 row chunks, so every test crosses a
chunk boundary).
``XPMAT_TEST_BACKENDS=torch,cupy`` selects a subset.

Markers (reasons also stand in ``backends/<lib>.md``)::

    @pytest.mark.skip_xp_backends("array_api_strict", reason="...")
    @pytest.mark.xfail_xp_backends("cupy", reason="...")   # strict

Tolerances per dtype live in ``TOL`` (one table for the whole suite).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import pytest

ALL_BACKENDS = ("numpy", "numpy:readonly", "array_api_strict", "array_api_strict:device1", "torch",
                "torch:cuda", "cupy", "jax", "dask")

# Relative tolerance of a well-conditioned primitive, per dtype the *result* is in.
# float64: near machine precision times a modest growth; float32: ~1e3 ulp;
# bfloat16 compute (result cast back to float32): a few bf16 ulp (2^-8 = 3.9e-3).
TOL = {"float64": 1e-10, "float32": 2e-4, "bfloat16": 3e-2}

# Skip reasons shared by the test modules (the same words stand in backends/*.md)
DASK_LONG_LOOP = (
    "long lazy loop: building a Dask graph costs time quadratic in its number of steps; the "
    "Dask path is tested in tests/test_dask.py")
DASK_NO_EARLY_STOP = (
    "stops early on a host read, which a lazy Dask array never makes (all iters steps run "
    "there, as documented)")
DASK_NO_INPUT_CHECK = (
    "the input check reads values on the host, which a lazy Dask array never does (skipped "
    "there, as documented)")
DASK_NO_WARNING = (
    "the warning needs a host read, which a lazy Dask array never makes (return_info=True "
    "reports instead, as documented)")
DASK_READS_EVERY_STEP = (
    "a loop that reads every step on the host: one Dask computation per step; the Dask path "
    "is tested in tests/test_dask.py")
DASK_OPTIMIZER_LOOP = (
    "optimizer runs of many steps: a long lazy loop on Dask (graph building quadratic in the "
    "steps); the primitives they compose run on Dask in their own tests")
JAX_SLOW_OPTIMIZER_MODULE = (
    "slow on eager JAX (every new shape compiles: minutes of CPU for this module); "
    "the primitives it composes run on JAX in their own tests")
#: ``pytestmark`` of a module of long optimizer runs: skipped on eager JAX and on Dask
SLOW_OPTIMIZER_MODULE = [
    pytest.mark.skip_xp_backends("jax", reason=JAX_SLOW_OPTIMIZER_MODULE),
    pytest.mark.skip_xp_backends("dask", reason=DASK_OPTIMIZER_LOOP),
]


def _selected() -> tuple[str, ...]:
    env = os.environ.get("XPMAT_TEST_BACKENDS")
    if not env:
        return ALL_BACKENDS
    names = tuple(n.strip() for n in env.split(",") if n.strip())
    unknown = set(names) - set(ALL_BACKENDS)
    if unknown:
        raise ValueError(f"XPMAT_TEST_BACKENDS: unknown {sorted(unknown)}; known {ALL_BACKENDS}")
    return names


@dataclass
class Backend:
    """One array library on one device, with helpers to move test data in and out."""

    name: str
    xp: Any  # the array-api-compat namespace
    device: Any
    readonly: bool = False

    @property
    def lib(self) -> str:
        return self.name.split(":")[0]

    @property
    def has_bfloat16(self) -> bool:
        """PyTorch and JAX have bfloat16; NumPy, CuPy and array-api-strict do not."""
        return self.lib in ("torch", "jax")

    def dtype(self, name: str) -> Any:
        """The backend's dtype object for ``"float64"``, ``"float32"``, ``"bfloat16"``."""
        return getattr(self.xp, name)

    def asarray(self, a: Any, dtype: str | Any = "float64") -> Any:
        """Host data (NumPy / lists) -> an array of this backend, on its device."""
        if isinstance(dtype, str):
            dtype = self.dtype(dtype)
        host = np.asarray(a)
        if self.lib == "torch" and dtype == self.xp.bfloat16:
            out = self.xp.astype(self.xp.asarray(host.astype(np.float32), device=self.device), dtype)
        else:
            out = self.xp.asarray(host, dtype=dtype, device=self.device)
        if self.lib == "dask":
            out = out.rechunk(_dask_test_chunks(host.shape))
        if self.readonly:
            out = np.array(out)
            out.flags.writeable = False
        return out

    def to_numpy(self, x: Any) -> np.ndarray:
        """A backend array -> a float64 (or the array's own integer/bool) NumPy array."""
        if self.lib == "torch":
            x = x.detach().cpu()
            if x.dtype.is_floating_point:
                x = x.double()
            return x.numpy()
        if self.lib == "cupy":
            return x.get()
        if self.lib == "dask":
            return np.asarray(x.compute())
        if self.lib == "array_api_strict":
            import array_api_strict as xps

            x = xps.asarray(x, device=xps.Device("CPU_DEVICE"))
            return np.asarray(x)
        if self.lib == "jax" and x.dtype == self.xp.bfloat16:  # ml_dtypes' bfloat16 on the host
            return np.asarray(x.astype(self.xp.float64))
        return np.asarray(x)


def _dask_test_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Test chunks of a dask array: the rows of a matrix (axis -2) in 2 chunks when there are
    4 or more, every other axis whole (small chunk counts keep dask's per-task overhead low)."""
    chunks = list(shape)
    if len(shape) >= 2 and shape[-2] >= 4:
        chunks[-2] = -(-shape[-2] // 2)
    return tuple(chunks)


def _make_backend(name: str) -> Backend | None:
    if name in ("numpy", "numpy:readonly"):
        return Backend(name, array_api_compat.array_namespace(np.zeros(1)), "cpu",
                       readonly=name == "numpy:readonly")
    if name.startswith("array_api_strict"):
        if importlib.util.find_spec("array_api_strict") is None:
            return None
        import array_api_strict as xps

        return Backend(name, xps, xps.Device("device1" if name.endswith(":device1") else "CPU_DEVICE"))
    if name == "jax":
        if importlib.util.find_spec("jax") is None:
            return None
        import jax

        jax.config.update("jax_enable_x64", True)  # float64 references, as every backend here
        _jax_compilation_cache(jax)
        import jax.numpy as jnp

        return Backend(name, array_api_compat.array_namespace(jnp.zeros(1)), jax.devices("cpu")[0])
    if name.startswith("torch"):
        if importlib.util.find_spec("torch") is None:
            return None
        import torch

        if name == "torch:cuda":
            if not torch.cuda.is_available():
                return None
            # TF32 / reduced precision belong to benchmarks, not to accuracy tests.
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.set_float32_matmul_precision("highest")
            # With its index: results report ``cuda:0``, and ``cuda`` (no index) != ``cuda:0``.
            dev = torch.device("cuda", torch.cuda.current_device())
        else:
            dev = torch.device("cpu")
        return Backend(name, array_api_compat.array_namespace(torch.zeros(1)), dev)
    if name == "cupy":
        if importlib.util.find_spec("cupy") is None:
            return None
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() == 0:
                return None
        except Exception:
            return None
        return Backend(name, array_api_compat.array_namespace(cupy.zeros(1)), cupy.cuda.Device(0))
    if name == "dask":
        if importlib.util.find_spec("dask") is None:
            return None
        import dask.array as da

        xpd = array_api_compat.array_namespace(da.zeros(1))
        return Backend(name, xpd, array_api_compat.device(da.zeros(1)))
    raise ValueError(name)


def _jax_compilation_cache(jax: Any) -> None:
    """Keep JAX's compiled programs in ``.jax_cache/`` (git-ignored) between test runs.

    Eager JAX compiles every operation once per shape, which is most of the ``jax`` column's
    time; a warm cache cut a first ``lowrank_eigh_update`` call from 8.4 s to 3.5 s of CPU.
    ``JAX_COMPILATION_CACHE_DIR`` (JAX's own variable) chooses another folder; empty: none.
    """
    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR",
                            os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache"))
    if folder:
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_CACHE: dict[str, Backend | None] = {}


def get_backend(name: str) -> Backend | None:
    if name not in _CACHE:
        _CACHE[name] = _make_backend(name)
    return _CACHE[name]


def require_backend(name: str) -> Backend:
    """Backend ``name`` for a module of tests that is about it alone; skips the module when the
    backend is missing here or left out by ``XPMAT_TEST_BACKENDS``."""
    b = get_backend(name) if name in _selected() else None
    if b is None:
        pytest.skip(f"backend {name} not available or not selected", allow_module_level=True)
    return b


def _marker_backends(node, marker_name: str):
    for m in node.iter_markers(marker_name):
        yield m.args, m.kwargs.get("reason", "")


@pytest.fixture(params=_selected())
def backend(request) -> Backend:
    """Every backend importable here; GPU ones skip on machines without a GPU."""
    name = request.param
    b = get_backend(name)
    if b is None:
        pytest.skip(f"backend {name} not available here")
    for names, reason in _marker_backends(request.node, "skip_xp_backends"):
        if name in names or b.lib in names:
            pytest.skip(f"{name}: {reason}")
    for names, reason in _marker_backends(request.node, "xfail_xp_backends"):
        if name in names or b.lib in names:
            request.node.add_marker(pytest.mark.xfail(reason=f"{name}: {reason}", strict=True))
    return b


@pytest.fixture
def xp(backend: Backend) -> Any:
    """The array namespace of ``backend`` (array-api-compat wrapped)."""
    return backend.xp


@pytest.fixture(params=["float64", "float32"])
def dtype(request) -> str:
    """Result dtype under test (name); tolerance is ``TOL[dtype]``."""
    return request.param


def assert_array(x: Any, backend: Backend, *, shape: tuple | None = None,
                 dtype: str | Any | None = None) -> None:
    """Check namespace, device, dtype and shape of a result before its values."""
    xp_x = array_api_compat.array_namespace(x)
    if backend.readonly:
        assert array_api_compat.is_numpy_array(x), f"expected a NumPy array, got {type(x)}"
    else:
        assert xp_x is backend.xp, f"result namespace {xp_x.__name__} != {backend.xp.__name__}"
        assert array_api_compat.device(x) == backend.device, (
            f"result on {array_api_compat.device(x)}, inputs on {backend.device}")
    if dtype is not None:
        want = backend.dtype(dtype) if isinstance(dtype, str) else dtype
        assert x.dtype == want, f"result dtype {x.dtype}, expected {want}"
    if shape is not None:
        assert tuple(x.shape) == tuple(shape), f"result shape {tuple(x.shape)}, expected {shape}"


def assert_close(actual: Any, desired: Any, backend: Backend, *, rtol: float,
                 atol: float = 0.0, err_msg: str = "") -> None:
    """Compare a backend array with a NumPy reference (on the host, in float64)."""
    np.testing.assert_allclose(backend.to_numpy(actual), np.asarray(desired, dtype=np.float64),
                               rtol=rtol, atol=atol, err_msg=err_msg)


def rel_err(actual: Any, desired: np.ndarray, backend: Backend) -> float:
    """‖actual − desired‖_F / ‖desired‖_F over all axes (0 when both vanish)."""
    a = backend.to_numpy(actual)
    d = np.asarray(desired, dtype=np.float64)
    den = np.linalg.norm(d)
    return float(np.linalg.norm(a - d) / (den if den > 0 else 1.0))


def matrix_with_spectrum(
    m: int, n: int, s: np.ndarray, *, seed: int = 0, batch: tuple[int, ...] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A float64 ``(*batch, m, n)`` matrix ``U diag(s) Vᵀ`` with Haar-random U, V.

    Returns ``(A, U, s, Vt)``; ``s`` (length ``min(m, n)``) is used as given.
    """
    rng = np.random.default_rng(seed)
    k = min(m, n)
    s = np.asarray(s, dtype=np.float64)
    if s.shape != (k,):
        raise ValueError(f"s must have length min(m, n) = {k}")

    def haar(rows, cols):
        q, r = np.linalg.qr(rng.standard_normal((*batch, rows, cols)))
        return q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]

    U, V = haar(m, k), haar(n, k)
    A = (U * s) @ np.swapaxes(V, -1, -2)
    return A, U, s, np.swapaxes(V, -1, -2)


def sym_with_spectrum(n: int, w: np.ndarray, *, seed: int = 0,
                      batch: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """A float64 symmetric ``(*batch, n, n)`` matrix ``Q diag(w) Qᵀ``; returns ``(A, Q)``."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((*batch, n, n)))
    q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]
    A = (q * np.asarray(w, dtype=np.float64)) @ np.swapaxes(q, -1, -2)
    return (A + np.swapaxes(A, -1, -2)) / 2, q


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line per backend: how many tests passed, failed and skipped on it."""
    counts: dict[str, dict[str, int]] = {}
    for outcome in ("passed", "failed", "skipped", "xfailed", "error"):
        for rep in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(rep, "nodeid", "")
            for name in ALL_BACKENDS:
                if f"[{name}]" in nodeid or f"[{name}-" in nodeid or f"-{name}-" in nodeid \
                        or f"-{name}]" in nodeid:
                    counts.setdefault(name, {}).setdefault(outcome, 0)
                    counts[name][outcome] += 1
                    break
    if counts:
        terminalreporter.write_sep("-", "tests per backend")
        for name in ALL_BACKENDS:
            if name in counts:
                c = counts[name]
                terminalreporter.write_line(
                    f"{name:<18} " + ", ".join(f"{v} {k}" for k, v in sorted(c.items())))
