"""Kronecker rearrangement, nearest Kronecker product, Kronecker matmul, Shampoo factors."""

import numpy as np
import pytest
from conftest import TOL, assert_array, assert_close, get_backend, rel_err

import xpmat as xm


def _res(backend):
    """Results of the readonly backend are plain NumPy arrays."""
    return get_backend("numpy") if backend.readonly else backend


def _sign_fix(A, B):
    """Host reference of the sign convention: largest |entry| of A positive (positive wins ties)."""
    s = np.where(A.max(axis=(-2, -1), keepdims=True) >= -A.min(axis=(-2, -1), keepdims=True), 1.0, -1.0)
    return A * s, B * s


def _ref_nearest(C, a_shape, b_shape):
    (m, d), (n, l) = a_shape, b_shape
    R = C.reshape(*C.shape[:-2], m, n, d, l).swapaxes(-3, -2).reshape(*C.shape[:-2], m * d, n * l)
    U, S, Vh = np.linalg.svd(R)
    r = np.sqrt(S[..., :1])[..., None]
    A = U[..., :, 0].reshape(*C.shape[:-2], m, d) * r
    B = Vh[..., 0, :].reshape(*C.shape[:-2], n, l) * r
    return _sign_fix(A, B)


def _bkron(A, B):
    """Batched np.kron over the last two axes."""
    out = A[..., :, None, :, None] * B[..., None, :, None, :]
    s = out.shape
    return out.reshape(*s[:-4], s[-4] * s[-3], s[-2] * s[-1])


@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_rearrange_definition_and_involution(backend, xp, batch):
    rng = np.random.default_rng(0)
    m, d, n, l = 2, 3, 4, 5
    A, B = rng.normal(size=(*batch, m, d)), rng.normal(size=(*batch, n, l))
    K = _bkron(A, B)
    got = xm.kron_rearrange(backend.asarray(K), (m, d), (n, l))
    assert_array(got, _res(backend), shape=(*batch, m * d, n * l), dtype="float64")
    outer = A.reshape(*batch, m * d, 1) * B.reshape(*batch, 1, n * l)
    assert_close(got, outer, backend, rtol=0)  # eq. (101), exactly (a permutation)
    # entrywise definition eq. (102) on a generic H
    H = rng.normal(size=(*batch, m * n, d * l))
    R = backend.to_numpy(xm.kron_rearrange(backend.asarray(H), (m, d), (n, l)))
    for i1, i2, j1, j2 in [(0, 0, 0, 0), (1, 2, 3, 4), (1, 0, 2, 3), (0, 2, 1, 1)]:
        np.testing.assert_array_equal(R[..., i1 * d + i2, j1 * l + j2], H[..., i1 * n + j1, i2 * l + j2])
    back = xm.kron_rearrange(xm.kron_rearrange(backend.asarray(H), (m, d), (n, l)), (m, n), (d, l))
    assert_close(back, H, backend, rtol=0)  # eq. (103), exact round trip


def test_rearrange_keeps_dtype(backend, xp, dtype):
    H = backend.asarray(np.arange(24.0).reshape(6, 4), dtype=dtype)
    assert_array(xm.kron_rearrange(H, (2, 2), (3, 2)), _res(backend), shape=(4, 6), dtype=dtype)


def test_rearrange_bad_shapes(backend):
    H = backend.asarray(np.zeros((6, 4)))
    with pytest.raises(ValueError, match="H.*shape"):
        xm.kron_rearrange(H, (2, 2), (2, 2))
    with pytest.raises(ValueError, match="a_shape"):
        xm.kron_rearrange(H, (2, 0), (3, 2))
    with pytest.raises(ValueError, match="b_shape"):
        xm.kron_rearrange(H, (2, 2), 3)


@pytest.mark.parametrize("batch", [(), (2,)])
def test_kron_matmul_matches_explicit(backend, xp, dtype, batch):
    rng = np.random.default_rng(1)
    for m, d, n, l in [(3, 2, 4, 5), (6, 6, 2, 2), (1, 7, 3, 1)]:
        A, B = rng.normal(size=(*batch, m, d)), rng.normal(size=(*batch, n, l))
        X = rng.normal(size=(*batch, d, l))
        got = xm.kron_matmul(*(backend.asarray(v, dtype) for v in (A, B, X)))
        assert_array(got, _res(backend), shape=(*batch, m, n), dtype=dtype)
        want = (_bkron(A, B) @ X.reshape(*batch, d * l, 1)).reshape(*batch, m, n)
        assert rel_err(got, want, backend) < 10 * TOL[dtype]


def test_kron_matmul_bad_shapes(backend):
    A, B, X = (backend.asarray(np.ones(s)) for s in ((3, 2), (4, 5), (2, 4)))
    with pytest.raises(ValueError, match="`X`"):
        xm.kron_matmul(A, B, X)


@pytest.mark.parametrize("method", ["svd", "power"])
@pytest.mark.parametrize("batch", [(), (3,)])
def test_nearest_kron_exact_product(backend, xp, dtype, method, batch):
    rng = np.random.default_rng(2)
    A0, B0 = rng.normal(size=(*batch, 3, 4)), rng.normal(size=(*batch, 5, 2))
    C = _bkron(A0, B0)
    A, B = xm.nearest_kron(backend.asarray(C, dtype), (3, 4), (5, 2), method=method, iters=4, seed=0)
    assert_array(A, _res(backend), shape=(*batch, 3, 4), dtype=dtype)
    assert_array(B, _res(backend), shape=(*batch, 5, 2), dtype=dtype)
    An, Bn = backend.to_numpy(A), backend.to_numpy(B)
    # the convention: ‖A‖ = ‖B‖ = sqrt(σ₁) and the largest-|entry| of A positive
    a0, b0 = np.linalg.norm(A0, axis=(-2, -1)), np.linalg.norm(B0, axis=(-2, -1))
    k = np.sqrt(a0 * b0)[..., None, None]
    A_ref, B_ref = _sign_fix(A0 / a0[..., None, None] * k, B0 / b0[..., None, None] * k)
    tol = 50 * TOL[dtype]
    np.testing.assert_allclose(An, A_ref, rtol=tol, atol=tol * np.abs(A_ref).max())
    np.testing.assert_allclose(Bn, B_ref, rtol=tol, atol=tol * np.abs(B_ref).max())
    assert np.linalg.norm(_bkron(An, Bn) - C) <= tol * np.linalg.norm(C)


@pytest.mark.parametrize("method", ["svd", "power"])
def test_nearest_kron_noisy_matches_svd_solution(backend, xp, method):
    rng = np.random.default_rng(3)
    A0, B0 = rng.normal(size=(4, 4)), rng.normal(size=(6, 6))
    C = np.kron(A0, B0) + 0.05 * rng.normal(size=(24, 24))
    A_ref, B_ref = _ref_nearest(C, (4, 4), (6, 6))
    A, B = xm.nearest_kron(backend.asarray(C), (4, 4), (6, 6), method=method, iters=30, seed=1)
    An, Bn = backend.to_numpy(A), backend.to_numpy(B)
    err_ref = np.linalg.norm(C - np.kron(A_ref, B_ref))
    err = np.linalg.norm(C - np.kron(An, Bn))
    assert err <= err_ref * (1 + 1e-10)
    np.testing.assert_allclose(An, A_ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(Bn, B_ref, rtol=1e-8, atol=1e-8)
    # any other Kronecker product is worse (Corollary G.2)
    assert np.linalg.norm(C - np.kron(A0, B0)) >= err_ref


def test_nearest_kron_zero_and_nan(backend, xp):
    for method in ("svd", "power"):
        A, B = xm.nearest_kron(backend.asarray(np.zeros((6, 6))), (2, 3), (3, 2), method=method, seed=0)
        assert_close(A, np.zeros((2, 3)), backend, rtol=0)
        assert_close(B, np.zeros((3, 2)), backend, rtol=0)
    # NaN propagates (documented)
    C = np.ones((4, 4))
    C[0, 0] = np.nan
    A, _ = xm.nearest_kron(backend.asarray(C), (2, 2), (2, 2), method="power", seed=0)
    assert np.isnan(backend.to_numpy(A)).any()


def test_nearest_kron_bad_input(backend):
    C = backend.asarray(np.ones((6, 6)))
    with pytest.raises(ValueError, match="method"):
        xm.nearest_kron(C, (2, 3), (3, 2), method="qr")
    with pytest.raises(ValueError, match="H.*shape"):
        xm.nearest_kron(C, (2, 2), (3, 2))
    with pytest.raises(ValueError, match="iters"):
        xm.nearest_kron(C, (2, 3), (3, 2), method="power", iters=0)
    with pytest.raises(ValueError, match="init"):
        xm.nearest_kron((lambda v: v, lambda u: u), (2, 3), (3, 2), method="power")


def test_nearest_kron_implicit_operator_from_gradients(backend, xp):
    """Power method on E[G ⊗ G] given implicitly (no mn × mn matrix) equals the explicit one."""
    rng = np.random.default_rng(4)
    m, n, T = 4, 3, 10
    Gs = rng.normal(size=(T, m, n)) + 2.0 * rng.normal(size=(1, m, n))
    F = sum(np.outer(G.ravel(), G.ravel()) for G in Gs) / T  # E[g gᵀ], (mn, mn)
    A_ref, B_ref = _ref_nearest(F, (m, m), (n, n))
    Gb = backend.asarray(Gs)
    Gt = xp.permute_dims(Gb, (0, 2, 1))

    def matvec(V):  # R vec(V) = vec(mean_t G V Gᵀ)
        return xp.mean(Gb @ V @ Gt, axis=0)

    def rmatvec(U):  # Rᵀ vec(U) = vec(mean_t Gᵀ U G)
        return xp.mean(Gt @ U @ Gb, axis=0)

    init = backend.asarray(np.eye(n))  # the Shampoo start vec(I) (seed §6.2)
    A, B = xm.nearest_kron((matvec, rmatvec), (m, m), (n, n), method="power", iters=60, init=init)
    assert_array(A, _res(backend), shape=(m, m), dtype="float64")
    assert_close(A, A_ref, backend, rtol=1e-7, atol=1e-7)
    assert_close(B, B_ref, backend, rtol=1e-7, atol=1e-7)


def test_shampoo_lemma_6_1_exact_when_rank_one(backend, xp, dtype):
    """Lemma 6.1: rearrange(E[g gᵀ]) rank 1  =>  E[g gᵀ] = E[G Gᵀ] ⊗ E[Gᵀ G] / tr E[G Gᵀ]."""
    rng = np.random.default_rng(5)
    m, n = 3, 4
    P, Q = rng.normal(size=(m, m)), rng.normal(size=(n, n))
    # G_k = P E_k Qᵀ over all unit matrices E_k: E[g gᵀ] = (P ⊗ Q)(P ⊗ Q)ᵀ / (m n), a Kronecker product
    Gs = [P @ np.eye(m * n)[k].reshape(m, n) @ Q.T for k in range(m * n)]
    F = sum(np.outer(G.ravel(), G.ravel()) for G in Gs) / len(Gs)
    st = None
    for G in Gs:
        st = xm.shampoo_factors(backend.asarray(G, dtype), st)
    A, B = xm.shampoo_kron(st)
    assert_array(A, _res(backend), shape=(m, m), dtype=dtype)
    assert_array(B, _res(backend), shape=(n, n), dtype=dtype)
    An, Bn = backend.to_numpy(A), backend.to_numpy(B)
    assert np.linalg.norm(np.kron(An, Bn) - F) <= 20 * TOL[dtype] * np.linalg.norm(F)
    assert_close(st.L / st.weight, sum(G @ G.T for G in Gs) / len(Gs), backend, rtol=20 * TOL[dtype])


def test_shampoo_not_exact_in_general_and_ema(backend, xp):
    rng = np.random.default_rng(6)
    Gs = rng.normal(size=(8, 3, 2))
    F = sum(np.outer(G.ravel(), G.ravel()) for G in Gs) / len(Gs)
    st = None
    for G in Gs:
        st = xm.shampoo_factors(backend.asarray(G), st)
    A, B = (backend.to_numpy(x) for x in xm.shampoo_kron(st))
    A_opt, B_opt = _ref_nearest(F, (3, 3), (2, 2))
    e_shampoo = np.linalg.norm(F - np.kron(A, B))
    e_opt = np.linalg.norm(F - np.kron(A_opt, B_opt))
    assert e_opt < e_shampoo  # rank > 1: Lemma 6.1 does not apply, the nearest one is better
    # EMA with bias correction: weight = 1 - beta^t, and L / weight is a weighted mean
    beta = 0.9
    st = None
    for G in Gs:
        st = xm.shampoo_factors(backend.asarray(G), st, beta=beta)
    w = beta ** np.arange(len(Gs))[::-1]
    L_ref = sum(wi * G @ G.T for wi, G in zip(w, Gs, strict=True)) / w.sum()
    assert_close(st.L / st.weight, L_ref, backend, rtol=1e-12)
    assert_close(st.weight, [[1 - beta ** len(Gs)]], backend, rtol=1e-12)


def test_shampoo_zero_gradients(backend, xp):
    st = xm.shampoo_factors(backend.asarray(np.zeros((3, 2))))
    A, B = xm.shampoo_kron(st)
    assert_close(A, np.zeros((3, 3)), backend, rtol=0)
    assert_close(B, np.zeros((2, 2)), backend, rtol=0)
    with pytest.raises(ValueError, match="G"):
        xm.shampoo_factors(backend.asarray(np.zeros((2, 3))), st)
