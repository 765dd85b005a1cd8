"""Tests for xpmat.orthogonalize: orthonormalize, ns_schedule, msign, polar."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, assert_array, matrix_with_spectrum, rel_err

import xpmat
from xpmat import orthogonalize as orth

METHODS = ("auto", "householder", "cholesky_qr2")
EPS = {"float64": np.finfo(np.float64).eps, "float32": np.finfo(np.float32).eps}


def _orth_err(Q: np.ndarray) -> float:
    r = Q.shape[-1]
    return float(np.abs(np.swapaxes(Q, -1, -2) @ Q - np.eye(r)).max())


def _ref_q(X: np.ndarray) -> np.ndarray:
    q, r = np.linalg.qr(X)
    return q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


# ----------------------------------------------------------------------------- orthonormalize


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kappa", [1.0, 1e2, 1e4])
def test_orthonormalize_conditioned(backend, dtype, method, kappa):
    m, r = 96, 8
    X, *_ = matrix_with_spectrum(m, r, np.geomspace(1, 1 / kappa, r), seed=1)
    Q = orth.orthonormalize(backend.asarray(X, dtype), method=method)
    assert_array(Q, backend, shape=(m, r), dtype=dtype)
    Qn = backend.to_numpy(Q)
    assert _orth_err(Qn) <= 50 * r * EPS[dtype]
    # same Q as Householder with diag(R) > 0 (unique for full rank); error grows with κ·u
    assert np.abs(Qn - _ref_q(X)).max() <= 50 * kappa * EPS[dtype]
    # X = Q R with R = QᵀX upper triangular
    R = Qn.T @ X
    assert np.abs(np.tril(R, -1)).max() <= 50 * kappa * EPS[dtype] * np.abs(R).max()


@pytest.mark.parametrize("method", METHODS)
def test_orthonormalize_batched_and_public(backend, method):
    X = np.random.default_rng(2).standard_normal((3, 2, 40, 5))
    Q = xpmat.orthonormalize(backend.asarray(X), method=method)
    assert_array(Q, backend, shape=X.shape, dtype="float64")
    Qn = backend.to_numpy(Q)
    assert _orth_err(Qn) <= 1e-13
    np.testing.assert_allclose(Qn, _ref_q(X), atol=1e-12)


def test_orthonormalize_cholesky_fallback_ill_conditioned(backend):
    """κ = 1e10 breaks CholeskyQR2 (κ² u ≫ 1): the fallback still returns an orthonormal Q."""
    X, *_ = matrix_with_spectrum(64, 6, np.geomspace(1, 1e-10, 6), seed=3)
    Q = orth.orthonormalize(backend.asarray(X), method="cholesky_qr2")
    assert_array(Q, backend, shape=(64, 6), dtype="float64")
    Qn = backend.to_numpy(Q)
    assert _orth_err(Qn) <= 1e-13
    # a plain (unchecked) CholeskyQR2 would not be orthonormal here: the check matters
    G = X.T @ X
    try:
        L = np.linalg.cholesky(G)
        Q1 = np.linalg.solve(L, X.T).T
        L2 = np.linalg.cholesky(Q1.T @ Q1)
        plain = _orth_err(np.linalg.solve(L2, Q1.T).T)
    except np.linalg.LinAlgError:
        plain = np.inf
    assert not plain <= 1e-13


@pytest.mark.parametrize("method", METHODS)
def test_orthonormalize_rank_deficient_and_zero(backend, method):
    X, *_ = matrix_with_spectrum(50, 6, np.array([1, 1, 0.5, 0, 0, 0.0]), seed=4)
    for A in (X, np.zeros((50, 6)), np.concatenate([X[:, :3], np.zeros((50, 3))], axis=1)):
        Q = orth.orthonormalize(backend.asarray(A), method=method)
        Qn = backend.to_numpy(Q)
        assert np.all(np.isfinite(Qn))
        assert _orth_err(Qn) <= 1e-12
        # the range of A is inside the range of Q
        assert np.linalg.norm(A - Qn @ (Qn.T @ A)) <= 1e-12 * max(1.0, np.linalg.norm(A))


def test_orthonormalize_low_precision_and_int(backend):
    X = np.random.default_rng(5).integers(-5, 5, size=(30, 4))
    Q = orth.orthonormalize(backend.xp.asarray(X, device=backend.device) if not backend.readonly
                            else backend.asarray(X, "float64"))
    assert _orth_err(backend.to_numpy(Q)) <= 1e-5
    if backend.lib == "torch":
        Qb = orth.orthonormalize(backend.asarray(X, "bfloat16"))
        assert Qb.dtype == backend.xp.bfloat16
        assert _orth_err(backend.to_numpy(Qb)) <= 3e-2


def test_orthonormalize_nan_input(backend):
    X = np.random.default_rng(6).standard_normal((20, 3))
    X[4, 1] = np.nan
    for method in METHODS:
        Q = backend.to_numpy(orth.orthonormalize(backend.asarray(X), method=method))
        assert not np.all(np.isfinite(Q))


def test_orthonormalize_bad_input(backend):
    with pytest.raises(ValueError, match="X"):
        orth.orthonormalize(backend.asarray(np.ones((3, 5))))
    with pytest.raises(ValueError, match="X"):
        orth.orthonormalize(backend.asarray(np.ones(5)))
    with pytest.raises(ValueError, match="method"):
        orth.orthonormalize(backend.asarray(np.ones((5, 3))), method="gram_schmidt")


def test_orthonormalize_empty(backend):
    Q = orth.orthonormalize(backend.asarray(np.ones((5, 0))))
    assert_array(Q, backend, shape=(5, 0), dtype="float64")


_ = (TOL, rel_err)
