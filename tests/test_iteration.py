"""Tests of xpmat.iteration: power / orthogonal iteration, PowerIter1, randomized SVD/eigh, Nyström.

References are float64 NumPy eigh/svd on matrices with known spectra (``sym_with_spectrum``,
``matrix_with_spectrum``).  Eigenvectors are compared as subspaces (sin Θ = ‖(I − V Vᵀ) Q‖₂)
or up to sign, never raw.
"""

import itertools

import numpy as np
import pytest
from conftest import (
    DASK_LONG_LOOP,
    DASK_READS_EVERY_STEP,
    TOL,
    assert_array,
    assert_close,
    get_backend,
    matrix_with_spectrum,
    sym_with_spectrum,
)

import xpmat as xm

# ----------------------------------------------------------------------------- helpers


def _np(backend, x):
    return backend.to_numpy(x)


def sin_theta(Q, V):
    """Largest principal angle sine between span(Q) and span(V) (orthonormal, same size)."""
    Q, V = np.asarray(Q), np.asarray(V)
    return float(np.max(np.linalg.norm(Q - V @ (np.swapaxes(V, -1, -2) @ Q), ord=2, axis=(-2, -1))))


def tan_theta(Q, V, Vperp):
    """tan Θ(span Q, span V) = ‖(V⊥ᵀ Q)(Vᵀ Q)⁻¹‖₂."""
    return float(np.linalg.norm((Vperp.T @ Q) @ np.linalg.inv(V.T @ Q), 2))


def haar(n, r, seed):
    q, rr = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, r)))
    return q * np.sign(np.diag(rr))


def count_flips(Qs):
    """Sign flips (<q_i^t, q_i^{t-1}> < 0) and order flips (best match of column i not i)."""
    signs = orders = 0
    for prev, cur in itertools.pairwise(Qs):
        C = prev.T @ cur
        signs += int(np.sum(np.diag(C) < 0))
        orders += int(np.sum(np.argmax(np.abs(C), axis=1) != np.arange(C.shape[0])))
    return signs, orders


# ----------------------------------------------------------------------------- power_iteration


@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_power_iteration_geometric_spectrum(backend, xp, dtype):
    n = 60
    w = 0.7 ** np.arange(n)
    A, V = sym_with_spectrum(n, w, seed=1)
    lam, v = xm.power_iteration(backend.asarray(A, dtype), seed=0, iters=200, tol=None)
    assert_array(lam, backend, shape=(), dtype=dtype)
    assert_array(v, backend, shape=(n,), dtype=dtype)
    tol = TOL[dtype] * 10
    assert_close(lam, 1.0, backend, rtol=tol)
    vn = _np(backend, v)
    # 200 steps at ratio 0.7: 0.7^200 ≈ 1e-31, i.e. converged to rounding
    assert abs(abs(vn @ V[:, 0]) - 1) < tol
    assert vn[np.argmax(np.abs(vn))] > 0  # documented sign convention


@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_power_iteration_batched_negative_and_early_stop(backend, xp):
    w1 = np.array([-3.0, 2.0, 1.0, 0.5, 0.1])  # dominant eigenvalue is negative
    w2 = np.array([4.0, 1.0, -1.0, 0.2, 0.0])
    A1, V1 = sym_with_spectrum(5, w1, seed=2)
    A2, V2 = sym_with_spectrum(5, w2, seed=3)
    A = backend.asarray(np.stack([A1, A2]))
    lam, v = xm.power_iteration(A, seed=0, iters=500, tol=1e-12, check_every=5)
    assert_array(lam, backend, shape=(2,), dtype="float64")
    assert_array(v, backend, shape=(2, 5), dtype="float64")
    assert_close(lam, [-3.0, 4.0], backend, rtol=1e-10)
    vn = _np(backend, v)
    assert abs(abs(vn[0] @ V1[:, 0]) - 1) < 1e-10
    assert abs(abs(vn[1] @ V2[:, 0]) - 1) < 1e-10


@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_power_iteration_tiny_gap(backend, xp):
    # λ1/λ2 = 1 + 1e-6: the direction does not converge inside span(v1, v2), λ does
    n = 40
    w = np.concatenate([[1.0, 1.0 - 1e-6], 0.5 * 0.9 ** np.arange(n - 2)])
    A, V = sym_with_spectrum(n, w, seed=5)
    lam, v = xm.power_iteration(backend.asarray(A), seed=1, iters=300, tol=None)
    assert abs(float(_np(backend, lam)) - 1.0) < 2e-6
    vn = _np(backend, v)
    assert np.linalg.norm(vn - V[:, :2] @ (V[:, :2].T @ vn)) < 1e-8  # in the top-2 eigenspace


@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_power_iteration_callable_and_x0(backend, xp):
    n = 30
    w = np.linspace(2.0, 0.1, n)
    A, _V = sym_with_spectrum(n, w, seed=7)
    Ab = backend.asarray(A)
    x0 = backend.asarray(np.ones(n))
    lam1, v1 = xm.power_iteration(Ab, x0=x0, iters=400, tol=1e-10)
    lam2, v2 = xm.power_iteration(lambda u: Ab @ u, x0=x0, iters=400, tol=1e-10)
    assert_array(v2, backend, shape=(n,), dtype="float64")
    assert_close(lam2, _np(backend, lam1), backend, rtol=1e-12)
    assert_close(v2, _np(backend, v1), backend, rtol=0, atol=1e-12)
    assert_close(lam2, 2.0, backend, rtol=1e-8)
    lam3, v3 = xm.power_iteration(lambda u: Ab @ u, shape=n, like=Ab, iters=400, seed=3, tol=1e-10)
    assert_array(v3, backend, shape=(n,), dtype="float64")
    assert_close(lam3, 2.0, backend, rtol=1e-8)


def test_power_iteration_zero_and_nan(backend, xp):
    lam, v = xm.power_iteration(backend.asarray(np.zeros((2, 4, 4))), seed=0)
    assert_array(v, backend, shape=(2, 4), dtype="float64")
    assert_close(lam, np.zeros(2), backend, rtol=0)
    assert_close(v, np.zeros((2, 4)), backend, rtol=0)  # zero direction, no NaN
    A = np.eye(3)
    A[0, 1] = A[1, 0] = np.nan
    lam, v = xm.power_iteration(backend.asarray(A), seed=0, iters=20)
    assert np.isnan(_np(backend, lam))


def test_power_iteration_errors():
    with pytest.raises(ValueError, match="`A` must be a square"):
        xm.power_iteration(np.ones((3, 4)))
    with pytest.raises(ValueError, match="`x0` must have shape"):
        xm.power_iteration(np.eye(3), x0=np.ones(4))
    with pytest.raises(TypeError, match="callable.*like="):
        xm.power_iteration(lambda v: v)
    with pytest.raises(ValueError, match="iters"):
        xm.power_iteration(np.eye(3), iters=-1)
    with pytest.raises(ValueError, match="keep the last axis"):
        xm.power_iteration(lambda v: v[..., :2], x0=np.ones(3))


# ----------------------------------------------------------------------------- orthogonal_iteration


@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_orthogonal_iteration_gap(backend, xp, dtype):
    n, r = 50, 4
    w = np.concatenate([[5.0, 4.0, 3.0, 2.0], 1.0 * 0.9 ** np.arange(n - r)])  # ratio 0.5 at r
    A, V = sym_with_spectrum(n, w, seed=11)
    Q0 = backend.asarray(haar(n, r, 0), dtype)
    Q, lam = xm.orthogonal_iteration(backend.asarray(A, dtype), Q0, iters=80)
    assert_array(Q, backend, shape=(n, r), dtype=dtype)
    assert_array(lam, backend, shape=(r,), dtype=dtype)
    tol = TOL[dtype] * 10
    assert_close(lam, w[:r], backend, rtol=tol)
    Qn = _np(backend, Q)
    assert np.allclose(Qn.T @ Qn, np.eye(r), atol=tol)
    assert sin_theta(Qn, V[:, :r]) < tol
    # columns are individual eigenvectors (distinct eigenvalues inside), in descending order
    assert np.allclose(np.abs(np.sum(Qn * V[:, :r], axis=0)), 1, atol=tol)


@pytest.mark.skip_xp_backends("dask", reason=DASK_READS_EVERY_STEP)
@pytest.mark.parametrize("ratio", [0.5, 0.8])
def test_orthogonal_iteration_rate(backend, xp, ratio):
    """Theory (Q.2): tan Θ(A^k Q0, V_r) <= (λ_{r+1}/λ_r)^k tan Θ(Q0, V_r)."""
    n, r = 40, 3
    w = np.concatenate([[3.0, 2.0, 1.0], ratio * 0.95 ** np.arange(n - r)])
    A, V = sym_with_spectrum(n, w, seed=13)
    Q0n = haar(n, r, 1)
    tan0 = tan_theta(Q0n, V[:, :r], V[:, r:])
    Ab, Q = backend.asarray(A), backend.asarray(Q0n)
    errs = []
    for k in range(1, 31):
        Q, _ = xm.orthogonal_iteration(Ab, Q, iters=1)
        Qn = _np(backend, Q)
        sk = sin_theta(Qn, V[:, :r])
        errs.append(sk)
        assert sk <= ratio**k * tan0 * (1 + 1e-8) + 1e-13, (k, sk, ratio**k * tan0)
    # ... and the rate is not much better than the bound: the observed ratio tends to λ_{r+1}/λ_r
    observed = (errs[-1] / errs[-11]) ** (1 / 10)
    assert ratio * 0.9 < observed <= ratio * 1.01


def test_orthogonal_iteration_exact_ritz_and_plain(backend, xp):
    n, r = 30, 3
    w = np.linspace(3.0, 0.1, n)
    A, _V = sym_with_spectrum(n, w, seed=17)
    Q0n = haar(n, r, 2)
    Q, lam = xm.orthogonal_iteration(backend.asarray(A), backend.asarray(Q0n), iters=1)
    # lam: the Ritz values of A on the entering basis, descending
    ritz = np.sort(np.linalg.eigvalsh(Q0n.T @ A @ Q0n))[::-1]
    assert_close(lam, ritz, backend, rtol=1e-12)
    # span(Q) = span(A Q0)
    Y = np.linalg.qr(A @ Q0n)[0]
    assert sin_theta(_np(backend, Q), Y) < 1e-12
    Qp, lamp = xm.orthogonal_iteration(backend.asarray(A), backend.asarray(Q0n), iters=1, ritz=False)
    rq = np.diag(Q0n.T @ A @ Q0n)
    assert_close(lamp, np.sort(rq)[::-1], backend, rtol=1e-12)
    assert sin_theta(_np(backend, Qp), Y) < 1e-12


@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_orthogonal_iteration_tiny_gap_inside_and_low_rank(backend, xp):
    n, r = 40, 3
    # tiny gap (1e-6 relative) inside the top-3: the subspace still converges at λ4/λ3
    w = np.concatenate([[2.0, 2.0 * (1 - 1e-6), 1.0], 0.2 * 0.9 ** np.arange(n - r)])
    A, V = sym_with_spectrum(n, w, seed=19)
    Q, lam = xm.orthogonal_iteration(backend.asarray(A), backend.asarray(haar(n, r, 3)), iters=40)
    assert sin_theta(_np(backend, Q), V[:, :r]) < 1e-12
    assert_close(lam, w[:r], backend, rtol=1e-12)
    # exact rank r: one step spans the range exactly
    w = np.concatenate([[3.0, 2.0, 1.0], np.zeros(n - r)])
    A, V = sym_with_spectrum(n, w, seed=23)
    Q, lam = xm.orthogonal_iteration(backend.asarray(A), backend.asarray(haar(n, r, 4)), iters=2)
    assert sin_theta(_np(backend, Q), V[:, :r]) < 1e-12
    assert_close(lam, w[:r], backend, rtol=1e-12)


@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_orthogonal_iteration_batched_callable_zero(backend, xp):
    n, r = 20, 2
    mats = [sym_with_spectrum(n, np.concatenate([[4.0, 3.0], 0.5 * np.ones(n - r)]), seed=s) for s in (1, 2)]
    A = backend.asarray(np.stack([m[0] for m in mats]))
    Q0 = backend.asarray(np.stack([haar(n, r, 5), haar(n, r, 6)]))
    Q, lam = xm.orthogonal_iteration(A, Q0, iters=30)  # ratio 0.5/3: (1/6)^30 ~ 1e-23
    assert_array(Q, backend, shape=(2, n, r), dtype="float64")
    assert_array(lam, backend, shape=(2, r), dtype="float64")
    assert_close(lam, [[4.0, 3.0]] * 2, backend, rtol=1e-12)
    for i in range(2):
        assert sin_theta(_np(backend, Q)[i], mats[i][1][:, :r]) < 1e-12
    Qc, lamc = xm.orthogonal_iteration(lambda X: A @ X, Q0, iters=30)
    assert_close(Qc, _np(backend, Q), backend, rtol=0, atol=1e-12)
    assert_close(lamc, _np(backend, lam), backend, rtol=1e-12)
    Qz, lamz = xm.orthogonal_iteration(backend.asarray(np.zeros((n, n))), backend.asarray(haar(n, r, 7)))
    assert np.all(np.isfinite(_np(backend, Qz)))
    assert_close(lamz, np.zeros(r), backend, rtol=0)


def test_orthogonal_iteration_align_to_permuted_flipped(backend, xp):
    n, r = 25, 4
    w = np.concatenate([[4.0, 3.0, 2.0, 1.5], 0.3 * np.ones(n - r)])
    A, V = sym_with_spectrum(n, w, seed=29)
    prev = V[:, :r][:, [2, 0, 3, 1]] * np.array([-1, 1, -1, 1])  # a labelled, signed previous basis
    Q, lam = xm.orthogonal_iteration(backend.asarray(A), backend.asarray(prev), iters=1,
                                     align_to=backend.asarray(prev))
    Qn = _np(backend, Q)
    C = prev.T @ Qn
    assert np.allclose(np.diag(C), 1, atol=1e-10)  # same order, same signs
    assert_close(lam, w[:r][[2, 0, 3, 1]], backend, rtol=1e-10)
    for ritz in (True, False):  # without align_to: descending
        _, lam2 = xm.orthogonal_iteration(backend.asarray(A), backend.asarray(prev), ritz=ritz)
        assert_close(lam2, w[:r], backend, rtol=1e-10)


def _rotating(n, r, steps, seed=0, eps=0.02):
    rng = np.random.default_rng(seed)
    import scipy.linalg

    G = rng.standard_normal((n, n))
    K = eps * (G - G.T) / np.sqrt(2 * n)
    Rstep = scipy.linalg.expm(K)
    w = np.concatenate([[5.0, 4.0, 3.0, 2.5], 1.0 * 0.9 ** np.arange(n - r)])
    _, R = sym_with_spectrum(n, w, seed=seed + 1)
    out = []
    for _ in range(steps + 1):
        out.append(((R * w) @ R.T, R[:, :r].copy()))
        R = Rstep @ R
    return out, w


@pytest.mark.skip_xp_backends("dask", reason=DASK_READS_EVERY_STEP)
@pytest.mark.parametrize("ritz", [True, False])
def test_online_tracker_no_flips(backend, xp, ritz):
    """Q.2.1: one aligned step per drifting matrix, 200 steps: no sign or order flip."""
    n, r, steps = 30, 4, 200
    seq, w = _rotating(n, r, steps)
    Q = backend.asarray(seq[0][1])
    Qs, worst = [seq[0][1]], 0.0
    for A, Vt in seq[1:]:
        Q, lam = xm.orthogonal_iteration(backend.asarray(A), Q, iters=1, align_to=Q, ritz=ritz)
        Qn = _np(backend, Q)
        Qs.append(Qn)
        worst = max(worst, sin_theta(Qn, Vt))
        # labels follow the true eigenvectors R(t) e_i
        assert np.all(np.abs(np.sum(Qn * Vt, axis=0)) > 0.95)
    assert count_flips(Qs) == (0, 0)
    assert worst < 0.05
    assert_close(lam, w[:r], backend, rtol=0.02)


def test_flip_counter_detects_flips():
    Q = haar(10, 3, 0)
    assert count_flips([Q, Q]) == (0, 0)
    assert count_flips([Q, Q * [1, -1, 1]]) == (1, 0)
    assert count_flips([Q, Q[:, [1, 0, 2]]])[1] == 2


def test_orthogonal_iteration_errors():
    with pytest.raises(ValueError, match="`Q0` must have shape"):
        xm.orthogonal_iteration(np.eye(4), np.ones((3, 2)))
    with pytest.raises(ValueError, match="`align_to` must have shape"):
        xm.orthogonal_iteration(np.eye(4), np.ones((4, 2)), align_to=np.ones((4, 3)))
    with pytest.raises(ValueError, match="iters"):
        xm.orthogonal_iteration(np.eye(4), np.ones((4, 2)), iters=0)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different libraries"):
        xm.orthogonal_iteration(np.eye(4), torch.ones(4, 2, dtype=torch.float64))


# ----------------------------------------------------------------------------- power_iter1


def test_power_iter1_identities(backend, xp, dtype):
    m, n, r = 30, 20, 4
    B, *_ = matrix_with_spectrum(m, n, 0.8 ** np.arange(n), seed=31, batch=(2,))
    Qh = np.random.default_rng(0).standard_normal((2, n, r))
    Bb = backend.asarray(B, dtype)
    P, R, Qn = xm.power_iter1(Bb, backend.asarray(Qh, dtype))
    assert_array(P, backend, shape=(2, m, r), dtype=dtype)
    assert_array(R, backend, shape=(2, n, r), dtype=dtype)
    assert_array(Qn, backend, shape=(2, n, r), dtype=dtype)
    tol = TOL[dtype] * 10
    Pn, Rn, Qnn = (_np(backend, x) for x in (P, R, Qn))
    assert np.allclose(np.swapaxes(Pn, -1, -2) @ Pn, np.eye(r), atol=tol)
    Bn = _np(backend, Bb)
    PRt = Pn @ np.swapaxes(Rn, -1, -2)
    assert np.allclose(PRt, Pn @ np.swapaxes(Pn, -1, -2) @ Bn, atol=tol)
    assert np.allclose(np.linalg.norm(Qnn, axis=-2), 1, atol=tol)
    # span(P) = span(B Q) (reference QR in float64)
    ref = np.linalg.qr(B @ Qh)[0]
    assert sin_theta(Pn, ref) < tol
    # Q_new = R with unit columns (Dion's P Q_newᵀ)
    assert np.allclose(Qnn * np.linalg.norm(Rn, axis=-2, keepdims=True), Rn, atol=tol)


def test_power_iter1_warm_start_converges_to_rank_r(backend, xp):
    m, n, r = 40, 30, 3
    s = np.concatenate([[5.0, 4.0, 3.0], 0.5 * 0.9 ** np.arange(n - r)])
    B, U, s, Vt = matrix_with_spectrum(m, n, s, seed=37)
    Bb, Q = backend.asarray(B), backend.asarray(np.random.default_rng(1).standard_normal((n, r)))
    for _ in range(40):
        P, R, Q = xm.power_iter1(Bb, Q)
    approx = _np(backend, P) @ _np(backend, R).T
    best = (U[:, :r] * s[:r]) @ Vt[:r]
    assert np.linalg.norm(approx - best) < 1e-10 * np.linalg.norm(best)


def test_power_iter1_zero_and_errors(backend, xp):
    P, R, Qn = xm.power_iter1(backend.asarray(np.zeros((6, 5))), backend.asarray(np.ones((5, 2))))
    for x in (P, R, Qn):
        assert np.all(np.isfinite(_np(backend, x)))
    assert_close(R, np.zeros((5, 2)), backend, rtol=0)
    assert_close(Qn, np.zeros((5, 2)), backend, rtol=0)
    # one zero column of R stays zero while the other is unit
    B = np.zeros((4, 3))
    B[0, 0] = 2.0
    Q = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    P, R, Qn = xm.power_iter1(backend.asarray(B), backend.asarray(Q))
    assert np.all(np.isfinite(_np(backend, Qn)))
    assert_close(xp.linalg.vector_norm(Qn, axis=-2), [1.0, 0.0], backend, rtol=0, atol=1e-12)


def test_power_iter1_bad_shapes():
    with pytest.raises(ValueError, match="`Q` must have shape"):
        xm.power_iter1(np.ones((4, 3)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="`Q` must have shape"):
        xm.power_iter1(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="`B` must be a matrix"):
        xm.power_iter1(np.ones(3), np.ones((3, 1)))


def test_power_iter1_many_reduce_and_rcqr(backend, xp):
    """Matrices of mixed shapes in one call equal one call each; ``reduce`` is called twice
    (``B Q``, then ``Bᵀ P``) for all of them, and a mean over two "ranks" equals PowerIter1 of
    the mean matrix; ``method="rcqr"`` with a sketch spans what Householder spans."""
    rng = np.random.default_rng(38)
    shapes = [(20, 12, 3), (9, 15, 2)]
    Bs = [rng.standard_normal((m, n)) for m, n, _ in shapes]
    Qs = [rng.standard_normal((n, r)) for _, n, r in shapes]
    Bb, Qb = [backend.asarray(B) for B in Bs], [backend.asarray(Q) for Q in Qs]
    many = xm.power_iter1(Bb, Qb)
    for k in range(2):
        one = xm.power_iter1(Bb[k], Qb[k])
        for x, y in zip((many[0][k], many[1][k], many[2][k]), one, strict=True):
            assert_close(x, _np(backend, y), backend, rtol=0, atol=1e-13)
    calls, half = [], [backend.asarray(B / 2) for B in Bs]

    def mean_of_two(arrays):  # each "rank" holds B / 2 (as M + G of a data-parallel step)
        calls.append([tuple(a.shape) for a in arrays])
        return [2 * a for a in arrays]

    P, R, Qn = xm.power_iter1(half, Qb, reduce=mean_of_two)
    assert calls == [[(20, 3), (9, 2)], [(12, 3), (15, 2)]]
    for k in range(2):
        assert_close(R[k], _np(backend, many[1][k]), backend, rtol=0, atol=1e-12)
        assert_close(Qn[k], _np(backend, many[2][k]), backend, rtol=0, atol=1e-12)
    sk = [backend.asarray(rng.standard_normal((r + 1, m)) / np.sqrt(r + 1)) for m, _, r in shapes]
    P, R, _ = xm.power_iter1(Bb, Qb, method="rcqr", sketch=sk)
    for k, (B, Q) in enumerate(zip(Bs, Qs, strict=True)):
        Pn = _np(backend, P[k])
        assert np.allclose(Pn.T @ Pn, np.eye(Q.shape[1]), atol=1e-12)
        assert sin_theta(Pn, np.linalg.qr(B @ Q)[0]) < 1e-12
        assert np.allclose(_np(backend, R[k]), B.T @ Pn, atol=1e-12)
    assert xm.power_iter1([], []) == ([], [], [])
    with pytest.raises(ValueError, match="as many"):
        xm.power_iter1(Bb, Qb[:1])
    with pytest.raises(ValueError, match=r"`Q\[1\]` must have shape"):
        xm.power_iter1(Bb, [Qb[0], Qb[0]])


# ----------------------------------------------------------------------------- randomized_svd


def _rank_r_plus_noise(m, n, r, seed, noise=0.5, batch=()):
    s = np.concatenate([np.linspace(3.0, 1.5, r), noise * (1 - np.arange(min(m, n) - r) / min(m, n))])
    A, _U, s, _Vt = matrix_with_spectrum(m, n, s, seed=seed, batch=batch)
    return A, s


def test_randomized_svd_near_optimal(backend, xp, dtype):
    m, n, r = 120, 90, 8
    A, s = _rank_r_plus_noise(m, n, r, seed=41)
    U, S, Vh = xm.randomized_svd(backend.asarray(A, dtype), r, seed=0)
    assert_array(U, backend, shape=(m, r), dtype=dtype)
    assert_array(S, backend, shape=(r,), dtype=dtype)
    assert_array(Vh, backend, shape=(r, n), dtype=dtype)
    Un, Sn, Vhn = (_np(backend, x) for x in (U, S, Vh))
    E = A - (Un * Sn) @ Vhn
    assert np.linalg.norm(E) <= 1.1 * np.sqrt(np.sum(s[r:] ** 2))
    assert np.linalg.norm(E, 2) <= 1.1 * s[r]
    # singular values: relative error ~ (s_{r+1}/s_r)^(2·(2q+1)) = 3^-10 ≈ 2e-5 for q = 2 power iterations
    tol = max(TOL[dtype] * 10, 1e-4)
    assert_close(S, s[:r], backend, rtol=tol)
    assert np.allclose(Un.T @ Un, np.eye(r), atol=TOL[dtype] * 10)
    assert np.allclose(Vhn @ Vhn.T, np.eye(r), atol=TOL[dtype] * 10)
    assert np.all(Un[np.argmax(np.abs(Un), axis=0), np.arange(r)] > 0)


def test_randomized_svd_vs_sklearn_and_torch():
    m, n, r = 150, 120, 10
    A, _s = _rank_r_plus_noise(m, n, r, seed=43, noise=1.0)
    U, S, Vh = xm.randomized_svd(A, r, seed=0)
    ours = np.linalg.norm(A - (U * S) @ Vh, 2)
    tried = 0
    try:
        from sklearn.utils.extmath import randomized_svd as sk_rsvd
    except ImportError:
        pass
    else:
        u, sv, vt = sk_rsvd(A, r, n_oversamples=10, n_iter=2, random_state=0)
        assert ours <= 1.02 * np.linalg.norm(A - (u * sv) @ vt, 2)
        tried += 1
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.manual_seed(0)
        u, sv, v = torch.svd_lowrank(torch.tensor(A), q=r + 10, niter=2)
        theirs = A - ((u[:, :r] * sv[:r]) @ v[:, :r].T).numpy()
        assert ours <= 1.02 * np.linalg.norm(theirs, 2)
        tried += 1
    if not tried:
        pytest.skip("neither scikit-learn nor torch installed")


def test_randomized_svd_low_rank_batched_wide_zero(backend, xp):
    m, n, r = 30, 50, 4  # wide
    s = np.concatenate([[4.0, 3.0, 2.0, 1.0], np.zeros(m - r)])
    A, _Ut, _, _Vt = matrix_with_spectrum(m, n, s, seed=47, batch=(3,))
    U, S, Vh = xm.randomized_svd(backend.asarray(A), r, seed=1, oversample=2)
    assert_array(U, backend, shape=(3, m, r), dtype="float64")
    assert_array(Vh, backend, shape=(3, r, n), dtype="float64")
    rec = (_np(backend, U) * _np(backend, S)[..., None, :]) @ _np(backend, Vh)
    assert np.allclose(rec, A, atol=1e-12)
    assert_close(S, np.broadcast_to(s[:r], (3, r)), backend, rtol=1e-12)
    U, S, Vh = xm.randomized_svd(backend.asarray(np.zeros((6, 5))), 2)
    assert_close(S, np.zeros(2), backend, rtol=0)
    assert np.all(np.isfinite(_np(backend, U))) and np.all(np.isfinite(_np(backend, Vh)))


def test_randomized_svd_tiny_gap_at_rank(backend, xp):
    # s_r / s_{r+1} = 1 + 1e-6: the subspace is not determined, the approximation error still is
    m, n, r = 80, 60, 5
    s = np.concatenate([np.linspace(2.0, 1.0, r), [1.0 - 1e-6], 0.9 * 0.9 ** np.arange(n - r - 1)])
    A, *_ = matrix_with_spectrum(m, n, s, seed=53)
    U, S, Vh = xm.randomized_svd(backend.asarray(A), r, seed=2, power_iters=4)
    E = A - (_np(backend, U) * _np(backend, S)) @ _np(backend, Vh)
    assert np.linalg.norm(E) <= 1.1 * np.sqrt(np.sum(s[r:] ** 2))


def test_randomized_svd_errors():
    with pytest.raises(ValueError, match="`rank`"):
        xm.randomized_svd(np.ones((4, 3)), 4)
    with pytest.raises(ValueError, match="`rank`"):
        xm.randomized_svd(np.ones((4, 3)), 0)
    with pytest.raises(ValueError, match="`oversample`"):
        xm.randomized_svd(np.ones((4, 3)), 1, oversample=-1)
    with pytest.raises(ValueError, match="`A` must be a matrix"):
        xm.randomized_svd(np.ones(3), 1)


# ----------------------------------------------------------------------------- randomized_eigh / nystrom


@pytest.mark.parametrize("func", ["randomized_eigh", "nystrom_eigh"])
def test_randomized_eigh_psd_geometric(backend, xp, dtype, func):
    n, r = 100, 6
    w = 0.6 ** np.arange(n)
    A, _V = sym_with_spectrum(n, w, seed=59)
    kw = {"power_iters": 2} if func == "nystrom_eigh" else {}
    L, Q = getattr(xm, func)(backend.asarray(A, dtype), r, seed=0, **kw)
    assert_array(L, backend, shape=(r,), dtype=dtype)
    assert_array(Q, backend, shape=(n, r), dtype=dtype)
    Ln, Qn = _np(backend, L), _np(backend, Q)
    assert np.all(np.diff(Ln) <= 0) and np.all(Ln >= -TOL[dtype])
    opt = np.sqrt(np.sum(w[r:] ** 2))
    assert np.linalg.norm(A - (Qn * Ln) @ Qn.T) <= 1.1 * opt
    assert np.allclose(Qn.T @ Qn, np.eye(r), atol=TOL[dtype] * 10)
    assert_close(L, w[:r], backend, rtol=max(1e-4, TOL[dtype] * 10))


@pytest.mark.parametrize("func", ["randomized_eigh", "nystrom_eigh"])
def test_randomized_eigh_exact_low_rank_batched_callable(backend, xp, func):
    n, k = 40, 5
    w = np.concatenate([[5.0, 4.0, 3.0, 2.0, 1.0], np.zeros(n - k)])
    mats = [sym_with_spectrum(n, w, seed=s) for s in (61, 62)]
    A = backend.asarray(np.stack([m[0] for m in mats]))
    f = getattr(xm, func)
    L, Q = f(A, k, seed=3, oversample=3)
    assert_array(Q, backend, shape=(2, n, k), dtype="float64")
    assert_close(L, np.broadcast_to(w[:k], (2, k)), backend, rtol=1e-10)
    for i in range(2):
        assert sin_theta(_np(backend, Q)[i], mats[i][1][:, :k]) < 1e-8
    Lc, Qc = f(lambda X: A @ X, k, seed=3, oversample=3, shape=(2, n, n), like=A)
    assert_array(Qc, backend, shape=(2, n, k), dtype="float64")
    assert_close(Lc, _np(backend, L), backend, rtol=1e-12)
    assert_close(Qc, _np(backend, Q), backend, rtol=0, atol=1e-10)


@pytest.mark.parametrize("func", ["randomized_eigh", "nystrom_eigh"])
def test_randomized_eigh_zero(backend, xp, func):
    L, Q = getattr(xm, func)(backend.asarray(np.zeros((2, 12, 12)), "float32"), 3, seed=0)
    assert_array(L, backend, shape=(2, 3), dtype="float32")
    assert_close(L, np.zeros((2, 3)), backend, rtol=0)
    assert np.all(np.isfinite(_np(backend, Q)))


def test_randomized_eigh_indefinite_largest_magnitude(backend, xp):
    n = 30
    w = np.concatenate([[5.0, -4.0, 3.0], 0.1 * np.linspace(-1, 1, n - 3)])
    A, _V = sym_with_spectrum(n, w, seed=67)
    L, _Q = xm.randomized_eigh(backend.asarray(A), 2, seed=0)
    assert_close(L, [5.0, -4.0], backend, rtol=1e-8)
    negative = backend.asarray(-np.eye(n))
    if backend.lib == "dask":  # lazy: no host read, the failed member comes back NaN (documented)
        assert np.isnan(backend.to_numpy(xm.nystrom_eigh(negative, 2, seed=0)[0])).all()
        return
    with pytest.raises(ValueError, match="positive semi-definite"):
        xm.nystrom_eigh(negative, 2, seed=0)


def test_nystrom_raises_when_cholesky_returns_nan(monkeypatch):
    """CuPy's (and JAX's) Cholesky returns NaN where NumPy raises (found on an H200: CuPy went
    on silently): with a NumPy Cholesky made to behave so, and declared so, ``nystrom_eigh``
    still raises."""
    import array_api_compat.numpy as cnp

    from xpmat import _array

    def nan_on_failure(a, *args, **kwargs):
        try:
            return np.linalg.cholesky(a)
        except np.linalg.LinAlgError:
            return np.full_like(a, np.nan)

    monkeypatch.setattr(cnp.linalg, "cholesky", nan_on_failure)
    monkeypatch.setattr(_array, "cholesky_signals_by_nan", lambda xp: True)
    with pytest.raises(ValueError, match="returned NaN.*positive semi-definite"):
        xm.nystrom_eigh(-np.eye(30), 2, seed=0)


def test_nystrom_shift_and_errors():
    n = 20
    w = np.concatenate([[3.0, 2.0], np.zeros(n - 2)])
    A, _ = sym_with_spectrum(n, w, seed=71)
    L, _Q = xm.nystrom_eigh(A, 2, seed=0, shift=1e-8)
    assert np.allclose(L, [3.0, 2.0], atol=1e-7)
    with pytest.raises(ValueError, match="shift"):
        xm.nystrom_eigh(A, 2, shift=-1.0)
    with pytest.raises(TypeError, match="callable"):
        xm.randomized_eigh(lambda X: X, 2, shape=5)
    with pytest.raises(TypeError, match="shape="):
        xm.randomized_eigh(lambda X: X, 2, like=np.ones(1))
    with pytest.raises(ValueError, match="`A` must be a square"):
        xm.randomized_eigh(np.ones((4, 5)), 2)
    with pytest.raises(ValueError, match="`rank`"):
        xm.nystrom_eigh(np.eye(4), 5)


def test_integer_input_promoted(backend, xp):
    if backend.lib == "array_api_strict" or backend.readonly:
        b = get_backend("numpy")
    else:
        b = backend
    A = b.xp.asarray(np.diag([3, 2, 1, 0]), device=b.device)
    L, _Q = xm.randomized_eigh(A, 2, seed=0)
    assert b.xp.isdtype(L.dtype, "real floating")  # the namespace's default float dtype
    assert_close(L, [3.0, 2.0], b, rtol=TOL["float64" if L.dtype == b.xp.float64 else "float32"])


def test_nan_input_gives_nan_not_exceptions(backend, xp):
    """Documented: NaN/Inf in a batch member make that member's results NaN; others unaffected."""
    n = 8
    good, _ = sym_with_spectrum(n, np.linspace(3.0, 0.5, n), seed=73)
    bad = good.copy()
    bad[0, 1] = bad[1, 0] = np.nan
    A = backend.asarray(np.stack([good, bad]))
    Q0 = backend.asarray(haar(n, 2, 8))
    outs = {
        "orthogonal_iteration": xm.orthogonal_iteration(A, Q0, iters=30),
        "randomized_svd": xm.randomized_svd(A, 2, seed=0),
        "randomized_eigh": xm.randomized_eigh(A, 2, seed=0),
        "nystrom_eigh": xm.nystrom_eigh(A, 2, seed=0),
        "power_iter1": xm.power_iter1(A, Q0),
    }
    for name, out in outs.items():
        for o in out:
            on = _np(backend, o)
            assert np.all(np.isnan(on[1])), name
        lam = _np(backend, out[1] if name == "orthogonal_iteration" else out[0])
        if name in ("randomized_eigh", "nystrom_eigh", "orthogonal_iteration"):
            assert np.all(np.isfinite(lam[0])), name  # the finite member is unaffected
