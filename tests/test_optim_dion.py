"""Dion: error feedback and the orthonormal low-rank update against NumPy, the residual that
vanishes on a repeated low-rank gradient (every orthonormalization), conv kernels."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DASK_OPTIMIZER_LOOP, assert_array, assert_close

import xpmat.optim as xo


@pytest.mark.skip_xp_backends("dask", reason=DASK_OPTIMIZER_LOOP)
@pytest.mark.parametrize("orth", ["auto", "householder", "cholesky_qr2", "rcqr"])
def test_dion_residual_vanishes_on_repeated_gradient(backend, orth):
    """dion-vs-powersgd: fed the same gradient (rank ≤ r) with μ = 0, e ← Δ − P Rᵀ → 0, and as
    the warm-started Q converges the update P Qᵀ tends to U Vᵀ (singular values 1)."""
    from xpmat.optim import dion

    rng = np.random.default_rng(4)
    G, _, _, _ = _lowrank(24, 16, 3, rng)
    p = [backend.asarray(np.zeros((24, 16)))]
    hyper = {"rank": 3, "momentum": 0.0, "lr": 1.0, "lr_scale": None, "orthogonalize": orth}
    st = dion.init(p, **hyper)
    res = []
    g = [backend.asarray(G)]
    for _ in range(40):
        u, st = dion.update(g, st, p, **hyper)
        res.append(np.linalg.norm(backend.to_numpy(st[0].momentum_buffer)) / np.linalg.norm(G))
    assert_array(u[0], backend, shape=(24, 16), dtype="float64")
    assert_array(st[0].Q, backend, shape=(16, 3), dtype="float64")
    assert max(res) < 1e-10, res
    s = np.linalg.svd(backend.to_numpy(u[0]), compute_uv=False)
    np.testing.assert_allclose(s[:3], 1.0, rtol=1e-6)
    assert s[3] < 1e-6


def _lowrank(m, n, r, rng):
    from conftest import matrix_with_spectrum

    s = np.zeros(min(m, n))
    s[:r] = [3.0, 2.0, 1.0][:r]
    return matrix_with_spectrum(m, n, s, seed=int(rng.integers(1 << 30)))


def test_dion_decayed_error_feedback_and_scale(backend):
    """M ← B − (1 − μ) P Rᵀ; update = −η √(m/n) P Qᵀ − η λ X (checked against NumPy)."""
    from xpmat.optim import dion

    rng = np.random.default_rng(5)
    X0 = rng.standard_normal((12, 6))
    gs = [rng.standard_normal((12, 6)) for _ in range(3)]
    hyper = {"rank": 2, "momentum": 0.9, "lr": 0.1, "weight_decay": 0.5}
    p = [backend.asarray(X0)]
    st = dion.init(p, **hyper)
    M, Q = np.zeros((12, 6)), backend.to_numpy(st[0].Q)
    X = X0.copy()
    for g in gs:
        u, st = dion.update([backend.asarray(g)], st, p, **hyper)
        p = xo.apply_updates(p, u)
        B = M + g
        P, _ = np.linalg.qr(B @ Q)
        R = B.T @ P
        M = B - 0.1 * P @ R.T
        Q = R / np.linalg.norm(R, axis=0)
        X = X - 0.1 * np.sqrt(12 / 6) * P @ Q.T - 0.1 * 0.5 * X
    assert_close(st[0].momentum_buffer, M, backend, rtol=1e-9, atol=1e-12)
    assert_close(p[0], X, backend, rtol=1e-9, atol=1e-12)


def test_dion_conv_and_zero_gradient(backend):
    from xpmat.optim import dion

    p = [backend.asarray(np.ones((4, 2, 3, 3)))]
    st = dion.init(p, rank=2)
    u, st = dion.update([backend.asarray(np.zeros((4, 2, 3, 3)))], st, p, rank=2)
    assert_array(u[0], backend, shape=(4, 2, 3, 3), dtype="float64")
    assert_close(u[0], np.zeros((4, 2, 3, 3)), backend, rtol=0, atol=0)
    assert tuple(st[0].momentum_buffer.shape) == (4, 18)
    with pytest.raises(ValueError, match="not a matrix"):
        dion.init([backend.asarray(np.ones(3))])
