"""Tests of the backend layer (`xpmat._array`) itself."""

import warnings

import numpy as np
import pytest
from conftest import TOL, assert_array, assert_close, get_backend, require_backend

from xpmat import _array


def test_namespace_of_one_backend(backend, xp):
    a = backend.asarray(np.ones((2, 3)))
    b = backend.asarray(np.ones((3,)))
    got = _array.array_namespace(a, None, b, names=("a", "skipped", "b"))
    if backend.readonly:
        assert _array.is_numpy(got)
    else:
        assert got is xp


def test_mixed_numpy_torch_names_both():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"`G`.*numpy.*`Q`.*torch"):
        _array.array_namespace(np.ones((2, 2)), torch.ones(2, 2), names=("G", "Q"))


def test_mixed_numpy_strict():
    xps = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match="different libraries"):
        _array.array_namespace(np.ones(2), xps.ones(2), names=("A", "B"))


def test_mixed_devices():
    xps = pytest.importorskip("array_api_strict")
    a = xps.ones(2)
    b = xps.asarray(a, device=xps.Device("device1"))
    with pytest.raises(TypeError, match="different devices.*`A`.*`B`"):
        _array.array_namespace(a, b, names=("A", "B"))


def test_not_an_array():
    with pytest.raises(TypeError, match="`G` must be an array.*list"):
        _array.array_namespace([[1.0]], names=("G",))
    with pytest.raises(TypeError, match="no array"):
        _array.array_namespace(None)


def test_float_dtype_preserved_and_int_promoted(backend, xp):
    for name in ("float32", "float64"):
        a = backend.asarray(np.ones(3), dtype=name)
        assert _array.float_dtype(xp, a) == backend.dtype(name)
        assert _array.as_float(a, xp).dtype == backend.dtype(name)
    i = backend.asarray(np.arange(3), dtype="int64")
    promoted = _array.as_float(i, xp)
    assert xp.isdtype(promoted.dtype, "real floating")
    assert_close(promoted, np.arange(3.0), backend, rtol=0)


def test_complex_refused():
    with pytest.raises(TypeError, match="complex"):
        _array.float_dtype(np, np.ones(2, dtype=np.complex128))


def test_seeded_draws_identical_across_backends(backend, xp):
    ref = np.random.default_rng(7).standard_normal((4, 3))
    got = _array.random_normal((4, 3), seed=7, xp=xp, dtype=xp.float64, dev=backend.device)
    assert_array(got, backend if not backend.readonly else get_backend("numpy"),
                 shape=(4, 3), dtype="float64")
    assert_close(got, ref, backend, rtol=0)
    g32 = _array.random_normal((4, 3), seed=np.random.default_rng(7), xp=xp, dtype="float32",
                               dev=backend.device)
    assert_close(g32, ref, backend, rtol=TOL["float32"])


def test_seed_type_checked():
    with pytest.raises(TypeError, match="seed"):
        _array.rng("abc")


def test_bfloat16_on_torch_and_jax_only(backend, xp):
    a = backend.asarray(np.linspace(0, 1, 5), dtype="float32")
    if backend.has_bfloat16:
        b = _array.cast(a, "bfloat16", xp)
        assert b.dtype == xp.bfloat16
        assert_close(_array.cast(b, xp.float32, xp), np.linspace(0, 1, 5), backend,
                     rtol=TOL["bfloat16"])
        assert _array.supports_bfloat16(xp)
    else:
        with pytest.raises(ValueError, match="bfloat16"):
            _array.cast(a, "bfloat16", xp)
        assert not _array.supports_bfloat16(xp)
    with pytest.raises(ValueError, match="compute_dtype"):
        _array.resolve_dtype(xp, "float8")


@pytest.mark.parametrize("upper", [True, False])
@pytest.mark.parametrize("left", [True, False])
@pytest.mark.parametrize("batch", [(), (3,)])
def test_solve_triangular(backend, xp, upper, left, batch):
    rng = np.random.default_rng(1)
    t = rng.standard_normal((*batch, 5, 5)) + 5 * np.eye(5)
    t = np.triu(t) if upper else np.tril(t)
    b = rng.standard_normal((*batch, 5, 2) if left else (*batch, 2, 5))
    x = _array.solve_triangular(backend.asarray(t), backend.asarray(b), upper=upper, left=left,
                                xp=xp)
    ref = np.linalg.solve(t, b) if left else np.swapaxes(
        np.linalg.solve(np.swapaxes(t, -1, -2), np.swapaxes(b, -1, -2)), -1, -2)
    assert_close(x, ref, backend, rtol=TOL["float64"], atol=1e-12)


def test_eigh_and_svd(backend, xp):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 6, 6))
    a = a + np.swapaxes(a, -1, -2)
    w, v = _array.eigh(backend.asarray(a), xp, descending=True)
    w_np = backend.to_numpy(w)
    assert np.all(np.diff(w_np, axis=-1) <= 0)
    assert_close(w, np.linalg.eigvalsh(a)[..., ::-1], backend, rtol=1e-12, atol=1e-12)
    vn = backend.to_numpy(v)
    assert_close(v @ xp.matrix_transpose(v) if not backend.readonly else vn @ np.swapaxes(vn, -1, -2),
                 np.broadcast_to(np.eye(6), a.shape), backend, rtol=0, atol=1e-12)
    m = rng.standard_normal((3, 5, 4))
    u, s, vh = _array.svd(backend.asarray(m), xp)
    assert_close(s, np.linalg.svd(m, compute_uv=False), backend, rtol=1e-12)
    un, sn, vhn = (backend.to_numpy(t) for t in (u, s, vh))
    np.testing.assert_allclose((un * sn[..., None, :]) @ vhn, m, atol=1e-12)


def test_no_input_mutated(backend, xp):
    host = np.random.default_rng(3).standard_normal((3, 3))
    t = np.triu(host) + 3 * np.eye(3)
    a, b = backend.asarray(t), backend.asarray(host)
    _array.solve_triangular(a, b, upper=True, xp=xp)
    _array.eigh(a + xp.matrix_transpose(a) if not backend.readonly else a + a.T, xp)
    _array.as_float(a, xp)
    assert_close(a, t, backend, rtol=0)
    assert_close(b, host, backend, rtol=0)


def test_supports_float64(backend, xp):
    assert _array.supports_float64(xp, backend.device)


def test_library_name(backend, xp):
    assert _array.library_name(xp) == backend.lib


def test_synchronize_is_safe(backend):
    _array.synchronize(backend.asarray(np.ones(2)))


# A 65 × 65 float32 matrix (zero outside 7 rows/columns, some entries subnormal) captured from
# lowrank_eigh_update(Q = 0, n = 2048, r = 64, seed 11) on which torch's float32 CPU eigh
# (LAPACK ssyevd) raises "failed to converge" here.
_EIGH_BAD_IDX = [0, 1, 2, 61, 62, 63, 64]
_EIGH_BAD_BLOCK = [
    [0.0215324927, -2.02621209e-06, -4.58050499e-06, 9.7554898e-25,
     5.04163539e-15, 7.68124849e-14, -0.000368593086],
    [-2.02621209e-06, 0.0202157553, 1.33176252e-06, -2.83636738e-25,
     -1.46583414e-15, -2.23329063e-14, 0.000107166874],
    [-4.58050499e-06, 1.33176252e-06, 0.0195681937, -6.41196202e-25,
     -3.31370089e-15, -5.04863146e-14, 0.000242264083],
    [9.7554898e-25, -2.83636738e-25, -6.41196202e-25, 1.35925951e-43,
     7.05746972e-34, 1.07524988e-32, -5.15970378e-23],
    [5.04163539e-15, -1.46583414e-15, -3.31370089e-15, 7.05746972e-34,
     -6.75763944e-16, 5.55688957e-23, -2.66653399e-13],
    [7.68124849e-14, -2.23329063e-14, -5.04863146e-14, 1.07524988e-32,
     5.55688957e-23, -6.99011663e-16, -4.06263218e-12],
    [-0.000368593086, 0.000107166874, 0.000242264083, -5.15970378e-23,
     -2.66653399e-13, -4.06263218e-12, 0.0194949824],
]


def _eigh_bad_matrix():
    a = np.zeros((65, 65), dtype=np.float32)
    a[np.ix_(_EIGH_BAD_IDX, _EIGH_BAD_IDX)] = np.array(_EIGH_BAD_BLOCK, dtype=np.float32)
    return a


def test_eigh_float32_hard_case(backend, xp):
    """No backend raises on it; torch retries a failed float32 eigh in float64 and casts back."""
    a = _eigh_bad_matrix()
    w, v = _array.eigh(backend.asarray(a, "float32"), xp)
    assert_array(w, backend, shape=(65,), dtype="float32")
    assert_array(v, backend, shape=(65, 65), dtype="float32")
    ref = np.linalg.eigvalsh(a.astype(np.float64))
    assert_close(w, ref, backend, rtol=0, atol=1e-7)
    vn, wn = backend.to_numpy(v).astype(np.float64), backend.to_numpy(w).astype(np.float64)
    np.testing.assert_allclose((vn * wn) @ vn.T, a, rtol=0, atol=1e-7)


def test_eigh_float32_retry_in_float64(monkeypatch):
    """Platform-independent: a float32 torch eigh that raises is retried once in float64."""
    torch = pytest.importorskip("torch")
    xp = _array.array_namespace(torch.zeros(1))
    real, calls = xp.linalg.eigh, []

    def flaky(a, *args, **kw):
        calls.append(a.dtype)
        if a.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
        return real(a, *args, **kw)

    monkeypatch.setattr(xp.linalg, "eigh", flaky)
    a = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    w, v = _array.eigh(a, xp, descending=True)
    assert calls == [torch.float32, torch.float64]
    assert w.dtype == torch.float32 and v.dtype == torch.float32
    torch.testing.assert_close(w, torch.tensor([3.0, 1.0]))
    monkeypatch.setattr(xp.linalg, "eigh", lambda a: flaky(a.float()))
    with pytest.raises(torch.linalg.LinAlgError):  # a float64 failure is not retried
        _array.eigh(a.double(), xp)


def test_elementwise_helpers_equal_their_formulas(backend, xp):
    """lerp / add_scaled / matmul_add: the torch fast paths (torch.lerp, torch.add(alpha=),
    addmm / baddbmm) give the Array API formula on every backend, 2-D and batched."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 4, 5))
    A, B = (backend.asarray(v) for v in (a, b))
    assert_close(_array.lerp(A, B, 0.3, xp), a + 0.3 * (b - a), backend, rtol=1e-14, atol=1e-15)
    assert_close(_array.lerp(A, B, 0.9, xp), a + 0.9 * (b - a), backend, rtol=1e-14, atol=1e-15)
    low = _array.lerp(A, B, 0.3, xp, "float32")
    assert_array(low, backend, shape=(4, 5), dtype="float32")
    assert_close(low, a + 0.3 * (b - a), backend, rtol=TOL["float32"])
    assert_close(_array.add_scaled(A, -0.25, B, xp), a - 0.25 * b, backend, rtol=1e-14, atol=1e-15)
    for shape in ((4, 4), (3, 4, 4)):
        c, m1, m2 = (rng.standard_normal(shape) for _ in range(3))
        got = _array.matmul_add(*(backend.asarray(v) for v in (c, m1, m2)), beta=2.0, alpha=-0.5, xp=xp)
        assert_close(got, 2.0 * c - 0.5 * (m1 @ m2), backend, rtol=1e-13, atol=1e-14)
    assert _array.is_cpu(A) == (backend.name not in ("torch:cuda", "cupy"))
    assert _array.itemsize(A) == 8 and _array.itemsize(low) == 4
    assert _array.itemsize(A, "bfloat16") == 2 and _array.itemsize(A, backend.dtype("float32")) == 4
    with pytest.raises(ValueError, match="dtype name"):
        _array.itemsize(A, "bf16")


def test_lerp_out_writes_in_place_on_torch_only(backend, xp):
    """``out=`` is honoured on torch (the buffer itself is returned, updated); elsewhere a new
    array comes back and ``out`` is left as it was."""
    a, b = np.zeros((3, 3)), np.ones((3, 3))
    A, B = backend.asarray(a), backend.asarray(b)
    got = _array.lerp(A, B, 0.5, xp, out=A)
    assert_close(got, np.full((3, 3), 0.5), backend, rtol=0)
    if backend.lib == "torch":
        assert got is A
    else:
        assert_close(A, a, backend, rtol=0)


def test_add_scaled_promotes_bfloat16_to_float32():
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xp

    y = torch.ones(2, 3, dtype=torch.bfloat16)
    x = torch.full((2, 3), 4.0)
    got = _array.add_scaled(y, -0.5, x, xp)
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.full((2, 3), -1.0))


def test_is_lazy_only_for_deferred_libraries(backend):
    """Eager arrays of every backend are readable (JAX tracers: tests/test_jax.py)."""
    x = backend.asarray(np.ones((2, 2)))
    assert _array.is_lazy(x) == (backend.lib == "dask")


def test_is_lazy_false_for_torch_meta():
    """A meta tensor counts as readable, so a host read on it raises (tests/test_meta.py)."""
    torch = pytest.importorskip("torch")
    assert not _array.is_lazy(torch.empty(2, device="meta"))


def test_is_lazy_tells_tracers_from_eager_arrays():
    jax = pytest.importorskip("jax")
    x = jax.numpy.ones((2, 2))
    assert not _array.is_lazy(x)
    seen = []
    jax.jit(lambda a: seen.append(_array.is_lazy(a)) or a)(x)
    jax.vmap(lambda a: seen.append(_array.is_lazy(a)) or a)(x)
    jax.grad(lambda a: seen.append(_array.is_lazy(a)) or a.sum())(x)
    assert seen == [True, True, True]
    assert not _array.is_lazy(np.ones(2))


def test_supports_float64_follows_jax_x64_without_a_warning():
    """JAX's default mode (x64 off) gives float32 *with a warning* for a float64 request, so the
    probe asks ``jax.config`` (``tests/test_jax.py`` runs the optimizers in that mode)."""
    jax = pytest.importorskip("jax")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with jax.enable_x64(False):
            assert _array.supports_float64(jax.numpy) is False
            with jax.enable_x64(True):
                assert _array.supports_float64(jax.numpy) is True
            assert _array.supports_float64(jax.numpy) is False
    assert not caught, [str(w.message) for w in caught]


def _gram(n: int = 6, seed: int = 3) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((4 * n, n))
    return X.T @ X


@pytest.mark.parametrize("batch", [(), (3,)])
def test_cholesky_is_the_lower_factor_on_dask(batch):
    """array-api-compat's Dask ``cholesky`` gives the upper factor (``tests/test_dask.py``);
    ``_array.cholesky`` gives the lower one."""
    backend = require_backend("dask")
    G = np.stack([_gram(seed=s) for s in range(3)]) if batch else _gram()
    L = _array.cholesky(backend.asarray(G), backend.xp)
    np.testing.assert_allclose(L.compute(), np.linalg.cholesky(G), rtol=1e-12, atol=1e-12)


def test_cholesky_failure_is_nan_on_dask():
    backend = require_backend("dask")
    bad = backend.asarray(np.diag([1.0, -1.0, 2.0]))
    assert np.isnan(_array.cholesky(bad, backend.xp).compute()).all()


def test_fixed_loop_runs_the_body_steps_times(backend, xp):
    x = backend.asarray(np.ones(3))
    (y,) = _array.fixed_loop(4, lambda s: (s[0] * 2,), (x,))
    assert_close(y, np.full(3, 16.0), backend, rtol=0)


def test_every_name_callers_use_is_exported():
    """``_array`` is a package of topic modules; callers write ``_array.name`` (or ``from
    xpmat._array import name``) and ``__init__`` re-exports each such name in ``__all__``."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    used = set()
    for folder in ("src", "tests", "asv_benchmarks", "docs/scripts"):
        for path in sorted((root / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if "_array" in path.parts or "_array" not in text:  # the package itself, or no caller
                continue
            for node in ast.walk(ast.parse(text)):
                if (isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "_array"
                        and not node.attr.startswith("__")):
                    used.add(node.attr)
                elif isinstance(node, ast.ImportFrom) and node.module == "xpmat._array":
                    used |= {a.name for a in node.names}
    assert used, "no caller found: the scan is broken"
    assert used <= set(_array.__all__), sorted(used - set(_array.__all__))
    assert _array.__all__ == sorted(_array.__all__)


# ----------------------------------------------------------------------------- compute_dtype="auto"
@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_per_backend(backend, xp, monkeypatch, native):
    """``"auto"``: bf16 for float32 torch / JAX arrays where the device multiplies bf16
    natively (the capability check mocked to both answers), the input's dtype elsewhere: other
    libraries, float64 (a user asking for float64 keeps it) and half-precision input."""
    import xpmat._array._dtypes as _dtypes

    monkeypatch.setattr(_dtypes, "_FAST_BF16", {})
    monkeypatch.setattr(_dtypes, "_native_bf16", lambda key: native)
    a32 = backend.asarray(np.ones((4, 3)), dtype="float32")
    want = xp.bfloat16 if native and backend.has_bfloat16 else None
    assert _array.auto_dtype(a32, xp) == want
    assert _array.cast(a32, "auto", xp).dtype == (want or a32.dtype)
    assert _array.itemsize(a32, "auto") == (2 if want is not None else 4)
    a64 = backend.asarray(np.ones((4, 3)), dtype="float64")
    assert _array.auto_dtype(a64, xp) is None
    assert _array.cast(a64, "auto", xp).dtype == a64.dtype
    if backend.has_bfloat16:
        assert _array.auto_dtype(_array.cast(a32, "bfloat16", xp), xp) is None
    with pytest.raises(ValueError, match="auto"):
        _array.resolve_dtype(xp, "auto")  # no array to decide for


def test_native_bf16_capability_checks(monkeypatch):
    """The checks behind ``fast_bfloat16``: torch CPU AMX or AVX512-BF16, CUDA compute
    capability >= 8 (Ampere on), JAX TPU / GPU >= 8.0; MPS, XPU, JAX CPU: no."""
    torch = pytest.importorskip("torch")
    import xpmat._array._dtypes as _dtypes

    for amx, avx in [(True, False), (False, True), (False, False)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx: v)
        assert _dtypes._native_bf16(("torch", "cpu", None)) is (amx or avx)
    monkeypatch.setattr(torch.version, "hip", None)
    for major, want in [(7, False), (8, True), (9, True)]:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i, m=major: (m, 0))
        assert _dtypes._native_bf16(("torch", "cuda", 0)) is want
    assert not _dtypes._native_bf16(("torch", "mps", None))
    assert not _dtypes._native_bf16(("torch", "xpu", 0))
    assert _dtypes._native_bf16(("jax", "tpu", None))
    assert _dtypes._native_bf16(("jax", "gpu", "8.0")) and not _dtypes._native_bf16(("jax", "gpu", "7.5"))
    assert not _dtypes._native_bf16(("jax", "cpu", None))


def test_fast_bfloat16_checks_once_per_device(monkeypatch):
    """One capability check per device, then a cached bool: what a compiled step reads (no
    graph break: the Muon rows of tests/test_optim_compile.py and test_optim_conventions.py
    run the "auto" default under Dynamo)."""
    torch = pytest.importorskip("torch")
    import xpmat._array._dtypes as _dtypes

    seen = []
    monkeypatch.setattr(_dtypes, "_FAST_BF16", {})
    monkeypatch.setattr(_dtypes, "_native_bf16", lambda key: seen.append(key) or True)
    x = torch.ones(3, 3)
    xp = _array.array_namespace(x)
    assert all(_array.fast_bfloat16(x, xp) for _ in range(3))
    assert seen == [("torch", "cpu", None)]

