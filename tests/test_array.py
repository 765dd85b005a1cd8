"""Tests of the backend layer (`xpmat._array`) itself."""

import numpy as np
import pytest
from conftest import TOL, assert_array, assert_close, get_backend

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


def test_bfloat16_only_on_torch(backend, xp):
    a = backend.asarray(np.linspace(0, 1, 5), dtype="float32")
    if backend.lib == "torch":
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
