"""inv_root: eigh and coupled Newton routes against float64 eigendecomposition references."""

import warnings

import numpy as np
import pytest
from conftest import (
    DASK_NO_EARLY_STOP,
    DASK_NO_WARNING,
    TOL,
    assert_array,
    get_backend,
    rel_err,
    sym_with_spectrum,
)
from dispatch_counts import torch_counts

from xpmat import inv_root
from xpmat.matfun import ConvergenceWarning


def ref_inv_root(A, p, eps=0.0):
    w, V = np.linalg.eigh(A)
    w = w + eps
    f = np.where(w > 1e-12 * w.max(axis=-1, keepdims=True), np.abs(w) ** (-1.0 / p), 0.0)
    return (V * f[..., None, :]) @ np.swapaxes(V, -1, -2)


@pytest.mark.parametrize("p", [1, 2, 4, 0.5])
def test_eigh_matches_reference(backend, dtype, p):
    A, _ = sym_with_spectrum(24, np.logspace(0, -3, 24), seed=1)
    X = inv_root(backend.asarray(A, dtype), p)
    assert_array(X, backend, shape=(24, 24), dtype=dtype)
    # float32 eigh on kappa = 1e3: error ~ kappa * u / p
    tol = TOL[dtype] if dtype == "float64" else 2e-3
    assert rel_err(X, ref_inv_root(A, p), backend) < tol


@pytest.mark.skip_xp_backends("dask", reason=DASK_NO_EARLY_STOP)
@pytest.mark.parametrize("p", [2, 4])
def test_newton_accuracy_kappa_1e4(backend, dtype, p):
    A, _ = sym_with_spectrum(48, np.logspace(0, -4, 48), seed=2)
    X, info = inv_root(backend.asarray(A, dtype), p, method="newton", return_info=True)
    assert_array(X, backend, shape=(48, 48), dtype=dtype)
    assert bool(backend.to_numpy(info.converged))
    # issue 4: <= 2e-4 float32 (plain coupled Newton floor 8.7e-5 / 3.4e-5), <= 1e-10 float64
    assert rel_err(X, ref_inv_root(A, p), backend) <= (2e-4 if dtype == "float32" else 1e-10)
    assert info.iters < 30


def test_newton_batched_scaled_and_zero(backend):
    A1, _ = sym_with_spectrum(16, np.linspace(1, 10, 16), seed=3)
    A2, _ = sym_with_spectrum(16, 1e6 * np.logspace(0, -2, 16), seed=4)
    A = np.stack([A1, A2, np.zeros((16, 16))])
    for method in ("newton", "eigh"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            X = inv_root(backend.asarray(A), 4, method=method)
        assert_array(X, backend, shape=(3, 16, 16), dtype="float64")
        Xn = backend.to_numpy(X)
        assert np.all(np.isfinite(Xn))
        assert np.array_equal(Xn[2], np.zeros((16, 16)))
        assert rel_err(X[:2, ...], ref_inv_root(A[:2], 4), backend) < 1e-10


def test_eps_regularizes(backend):
    A, _ = sym_with_spectrum(12, np.r_[np.ones(6), np.zeros(6)], seed=5)
    ref = ref_inv_root(A + 1e-2 * np.eye(12), 2)
    for method in ("eigh", "newton"):
        X = inv_root(backend.asarray(A), 2, method=method, eps=1e-2)
        assert rel_err(X, ref, backend) < 1e-10


def test_eigh_is_pseudo_inverse_root_on_singular(backend):
    w = np.r_[4.0 * np.ones(3), np.zeros(5)]
    A, _ = sym_with_spectrum(8, w, seed=6)
    X = backend.to_numpy(inv_root(backend.asarray(A), 2))
    np.testing.assert_allclose(X, A / 8.0, atol=1e-12)  # 4^(-1/2) on the range = A / 8


def test_newton_divergence_frozen_before_overflow(backend):
    # indefinite A: an eigenvalue of M goes negative and grows; frozen, no overflow warnings
    A, _ = sym_with_spectrum(8, np.r_[np.ones(7), -0.5], seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy overflow warnings would fail
        warnings.simplefilter("ignore", ConvergenceWarning)
        X, info = inv_root(backend.asarray(A), 2, method="newton", return_info=True)
    assert not bool(backend.to_numpy(info.converged))
    assert np.all(np.isfinite(backend.to_numpy(X)))


@pytest.mark.skip_xp_backends("dask", reason=DASK_NO_WARNING)
def test_newton_nonconvergence_reported(backend):
    # singular matrix with eps = 0: the zero eigenvalue never converges
    A, _ = sym_with_spectrum(10, np.r_[np.ones(9), 0.0], seed=7)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        inv_root(backend.asarray(A), 2, method="newton", iters=40)
    _, info = inv_root(backend.asarray(A), 2, method="newton", iters=40, return_info=True)
    assert not bool(backend.to_numpy(info.converged))
    assert float(backend.to_numpy(info.error)) > 1e-3
    # too few steps on a well-posed matrix: also reported; enough steps: not
    B, _ = sym_with_spectrum(10, np.logspace(0, -3, 10), seed=8)
    with pytest.warns(ConvergenceWarning):
        inv_root(backend.asarray(B), 2, method="newton", iters=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inv_root(backend.asarray(B), 2, method="newton")


def test_newton_nan_input_reported(backend):
    A = np.eye(4)
    A[1, 2] = A[2, 1] = np.nan
    X, info = inv_root(backend.asarray(A), 2, method="newton", return_info=True)
    assert not bool(backend.to_numpy(info.converged))
    assert np.isnan(backend.to_numpy(X)).any()
    assert np.isnan(backend.to_numpy(inv_root(backend.asarray(A), 2))).any()  # eigh: NaN propagates


def test_integer_input_promoted(backend, xp):
    A = backend.asarray(np.diag([4, 9]), dtype=xp.int64)
    X = inv_root(A, 2)
    assert xp.isdtype(X.dtype, "real floating")
    np.testing.assert_allclose(backend.to_numpy(X), np.diag([0.5, 1 / 3]), rtol=1e-6)


def test_bad_input(backend):
    with pytest.raises(ValueError, match=r"`A` must be a square.*\(3, 4\)"):
        inv_root(backend.asarray(np.ones((3, 4))), 2)
    A = backend.asarray(np.eye(3))
    with pytest.raises(ValueError, match="method"):
        inv_root(A, 2, method="svd")
    with pytest.raises(ValueError, match="integer p"):
        inv_root(A, 2.5, method="newton")
    with pytest.raises(ValueError, match="positive"):
        inv_root(A, -1)
    with pytest.raises(ValueError, match="eps"):
        inv_root(A, 2, eps=-1.0)
    with pytest.raises(TypeError, match="`A` must be an array"):
        inv_root([[1.0]], 2)


# ----------------------------------------------------------------------------- warm precision


@pytest.mark.skip_xp_backends("dask", reason=DASK_NO_EARLY_STOP)
@pytest.mark.parametrize("kappa", [1e2, 1e4])
def test_newton_warm_float32_accuracy_of_the_warm_dtype(backend, kappa):
    """float64 input, early steps in float32: converged to the float64 ``tol``, and as accurate
    as a float32 run (documented: the coupled iteration keeps its early rounding), far from
    float64's own accuracy."""
    A, _ = sym_with_spectrum(32, np.logspace(0, -np.log10(kappa), 32), seed=4)
    ref = ref_inv_root(A, 4)
    X, info = inv_root(backend.asarray(A), 4, method="newton", warm_dtype="float32", return_info=True)
    assert_array(X, backend, shape=(32, 32), dtype="float64")
    assert bool(np.all(backend.to_numpy(info.converged)))
    err = rel_err(X, ref, backend)
    f32 = rel_err(inv_root(backend.asarray(A, "float32"), 4, method="newton"), ref, backend)
    f64 = rel_err(inv_root(backend.asarray(A), 4, method="newton"), ref, backend)
    assert f64 < 1e-12 and err <= 3 * f32 + 1e-6 and err < 50 * kappa * np.finfo(np.float32).eps


def test_newton_warm_host_reads_torch():
    """Host reads (``aten._local_scalar_dense``): one per ``check_every`` steps and one after the
    loop, with and without warm steps (bf16 and TF32 on torch)."""
    torch = pytest.importorskip("torch")
    A, _ = sym_with_spectrum(32, np.logspace(0, -2, 32), seed=5)
    At = torch.tensor(A, dtype=torch.float32)
    for warm in (None, "bfloat16", "tf32"):
        kw = {"method": "newton", "check_every": 3, "warm_dtype": warm}
        X, _, reads = torch_counts(lambda kw=kw: inv_root(At, 2, **kw))  # the final read included
        _, info = inv_root(At, 2, return_info=True, **kw)
        assert bool(info.converged.all()) and X.dtype == torch.float32
        assert reads == -(-info.iters // 3) + 1, (warm, reads, info.iters)
    assert torch.get_float32_matmul_precision() == "highest"  # TF32 restored
    err = rel_err(inv_root(At, 2, method="newton", warm_dtype="bfloat16"), ref_inv_root(A, 2),
                  get_backend("torch"))
    assert err < 0.1  # bf16 accuracy (documented), not float32's


def test_newton_warm_bad_input(backend):
    A = backend.asarray(np.eye(3))
    with pytest.raises(ValueError, match="warm_dtype"):
        inv_root(A, 2, method="newton", warm_dtype="float16")
    if backend.lib != "torch":
        with pytest.raises(ValueError, match="warm_dtype='tf32'"):
            inv_root(A, 2, method="newton", warm_dtype="tf32")
    if backend.lib not in ("torch", "jax"):
        with pytest.raises(ValueError, match="warm_dtype='bfloat16'"):
            inv_root(A, 2, method="newton", warm_dtype="bfloat16")
