"""Tests for xpmat.orthogonalize: orthonormalize, ns_schedule, msign, polar."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, assert_array, matrix_with_spectrum, rel_err
from dispatch_counts import torch_counts

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
    if backend.has_bfloat16:
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



def _sketch(m: int, r: int, seed: int = 30) -> np.ndarray:
    k = max(r, int(np.ceil(1.25 * r)))
    return np.random.default_rng(seed).standard_normal((k, m)) / np.sqrt(k)


@pytest.mark.parametrize("kappa", [1.0, 1e8])
def test_orthonormalize_rcqr_span_and_orthonormality(backend, kappa):
    """Randomized Cholesky QR: orthonormal to float64 precision and the span of numpy's QR
    (the projector ``Q Qᵀ`` equal), also ill-conditioned (κ = 1e8, where plain CholeskyQR fails)."""
    X, *_ = matrix_with_spectrum(200, 8, np.geomspace(1, 1 / kappa, 8), seed=31)
    Q = orth.orthonormalize(backend.asarray(X), method="rcqr", sketch=backend.asarray(_sketch(200, 8)))
    assert_array(Q, backend, shape=(200, 8), dtype="float64")
    Qn = backend.to_numpy(Q)
    assert _orth_err(Qn) <= 1e-12
    ref = _ref_q(X)
    assert np.abs(Qn @ Qn.T - ref @ ref.T).max() <= 1e-12 * max(1.0, kappa * 1e-4)


def test_orthonormalize_rcqr_rank_deficient_empty_batched(backend):
    """Rank-deficient and zero ``X``: finite, the span holds ``X``'s, columns orthonormal or,
    for an exactly zero direction, zero (documented); empty input; a batch with one sketch;
    a missing or wrong sketch is refused."""
    X, *_ = matrix_with_spectrum(60, 6, np.array([1, 1, 0.5, 0, 0, 0.0]), seed=32)
    S = backend.asarray(_sketch(60, 6))
    for A, ones in ((X, 6), (np.zeros((60, 6)), 0), (np.concatenate([X[:, :3], np.zeros((60, 3))], 1), 3)):
        Qn = backend.to_numpy(orth.orthonormalize(backend.asarray(A), method="rcqr", sketch=S))
        assert np.all(np.isfinite(Qn))
        assert np.linalg.norm(A - Qn @ (Qn.T @ A)) <= 1e-10 * max(1.0, np.linalg.norm(A))
        G = Qn.T @ Qn
        assert np.abs(G - np.diag(np.diag(G))).max() <= 1e-10
        assert np.sort(np.round(np.diag(G), 10)).tolist() == [0.0] * (6 - ones) + [1.0] * ones
    E = orth.orthonormalize(backend.asarray(np.ones((60, 0))), method="rcqr", sketch=S)
    assert_array(E, backend, shape=(60, 0), dtype="float64")
    Xb = np.random.default_rng(33).standard_normal((2, 60, 6))
    Qb = backend.to_numpy(orth.orthonormalize(backend.asarray(Xb), method="rcqr", sketch=S))
    for j in range(2):
        assert _orth_err(Qb[j]) <= 1e-12
        assert np.abs(Qb[j] @ Qb[j].T - _ref_q(Xb[j]) @ _ref_q(Xb[j]).T).max() <= 1e-12
    with pytest.raises(ValueError, match="sketch"):
        orth.orthonormalize(backend.asarray(X), method="rcqr")
    with pytest.raises(ValueError, match="sketch"):
        orth.orthonormalize(backend.asarray(X), method="rcqr", sketch=backend.asarray(np.ones((4, 60))))
    with pytest.raises(ValueError, match="sketch"):
        orth.orthonormalize(backend.asarray(X), method="householder", sketch=S)


# ----------------------------------------------------------------------------- ns_schedule


def test_ns_schedule_fixed_and_user():
    assert orth.ns_schedule("cubic", 2) == [(1.5, -0.5, 0.0)] * 2
    assert orth.ns_schedule("quintic", 1) == [(15 / 8, -5 / 4, 3 / 8)]
    assert orth.ns_schedule("jordan", 3) == [(3.4445, -4.7750, 2.0315)] * 3
    assert orth.ns_schedule([(1, 2, 3), (4, 5, 6)], 3) == [(1, 2, 3), (4, 5, 6), (4, 5, 6)]
    assert orth.ns_schedule("jordan", 0) == []
    for bad in ("nope", [(1, 2)], []):
        with pytest.raises(ValueError):
            orth.ns_schedule(bad, 2)
    with pytest.raises(ValueError, match="steps"):
        orth.ns_schedule("cubic", -1)


def test_ns_schedule_polar_express_design():
    """Each designed step maps [l, u] into the next interval; the tail is (15/8, -5/4, 3/8)."""
    import json
    from importlib.resources import files

    doc = json.loads(files("xpmat").joinpath("data/polar_express.json").read_text())
    sched = orth.ns_schedule("polar_express", 20)
    assert len(sched) == 20 and sched[-1] == (15 / 8, -5 / 4, 3 / 8)
    x = np.geomspace(1e-3, 1, 20001)
    for a, b, c in sched:
        x = a * x + b * x**3 + c * x**5
        assert np.all(x > 0)  # odd polynomial keeps the sign: never maps a σ to 0 or below
    assert np.abs(x - 1).max() < 1e-12
    # published first Polar Express tuple (Amsel et al. 2025) is close to ours (same design)
    a, b, c = sched[0]
    assert abs(a - 8.28721) / 8.28721 < 0.05 and abs(b + 23.59589) / 23.59589 < 0.05
    assert doc["l0"] == 1e-3 and doc["safety"] == 1.01


# ----------------------------------------------------------------------------- msign


def _uvt(A: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(A, full_matrices=False)
    return U @ Vt


@pytest.mark.parametrize("shape", [(64, 64), (48, 96), (96, 48)])
def test_msign_accuracy_10_steps(backend, dtype, shape):
    m, n = shape
    A, U, _s, Vt = matrix_with_spectrum(m, n, np.geomspace(1, 1e-3, min(m, n)) * 3.0, seed=7)
    O = orth.msign(backend.asarray(A, dtype), steps=10)
    assert_array(O, backend, shape=shape, dtype=dtype)
    tol = 1e-6 if dtype == "float64" else 1e-4
    assert rel_err(O, U @ Vt, backend) <= tol


def test_msign_accuracy_n256(backend):
    A, U, _s, Vt = matrix_with_spectrum(256, 256, np.geomspace(1, 1e-3, 256), seed=8)
    Ab = backend.asarray(A)
    assert rel_err(orth.msign(Ab, steps=10), U @ Vt, backend) <= 1e-6
    assert rel_err(orth.msign(Ab, steps=8, normalize="spectral_estimate"), U @ Vt, backend) <= 1e-4


@pytest.mark.parametrize("shape", [(64, 64), (40, 80)])
def test_msign_spectral_estimate(backend, dtype, shape):
    m, n = shape
    A, U, _s, Vt = matrix_with_spectrum(m, n, np.geomspace(1, 1e-3, min(m, n)), seed=9)
    O = orth.msign(backend.asarray(A, dtype), steps=8, normalize="spectral_estimate")
    assert_array(O, backend, shape=shape, dtype=dtype)
    assert rel_err(O, U @ Vt, backend) <= (1e-4 if dtype == "float64" else 2e-4)


def test_msign_beats_jordan_at_5_steps(backend):
    G = np.random.default_rng(10).standard_normal((4, 128, 128))
    ref = _uvt(G)
    Gb = backend.asarray(G)
    ours = rel_err(orth.msign(Gb), ref, backend)
    jordan = rel_err(orth.msign(Gb, schedule="jordan"), ref, backend)
    assert ours < jordan


def test_msign_aol(backend):
    """AOL: σ_max(D X) <= 1 and the result is msign(D G) with D from the small side."""
    A, *_ = matrix_with_spectrum(40, 72, np.geomspace(1, 1e-2, 40), seed=11)
    O = orth.msign(backend.asarray(A), steps=10, normalize="aol")
    assert_array(O, backend, shape=(40, 72), dtype="float64")
    X = A / np.linalg.norm(A)
    d = 1 / np.sqrt(np.abs(X @ X.T).sum(-1))
    assert np.linalg.norm(d[:, None] * X, 2) <= 1 + 1e-12
    assert rel_err(O, _uvt(d[:, None] * A), backend) <= 1e-6


def test_msign_rank_deficient_zero_batched(backend, dtype):
    A, U, _s, Vt = matrix_with_spectrum(30, 50, np.r_[np.geomspace(1, 1e-2, 20), np.zeros(10)],
                                       seed=12, batch=(2, 3))
    O = orth.msign(backend.asarray(A, dtype), steps=12)
    assert_array(O, backend, shape=(2, 3, 30, 50), dtype=dtype)
    ref = U[..., :20] @ Vt[..., :20, :]
    # float32: the null space holds rounding-level singular values (~1e-7) that the schedule
    # amplifies by prod(a_t); measured 6.3e-4, so 2e-3 (float64: ~1e-15, far below 1e-6)
    assert rel_err(O, ref, backend) <= (1e-6 if dtype == "float64" else 2e-3)
    Z = orth.msign(backend.asarray(np.zeros((2, 5, 7)), dtype))
    assert_array(Z, backend, shape=(2, 5, 7), dtype=dtype)
    assert np.all(backend.to_numpy(Z) == 0)


def test_msign_nan_and_bad_input(backend):
    G = np.ones((4, 6))
    G[1, 2] = np.nan
    assert np.all(np.isnan(backend.to_numpy(orth.msign(backend.asarray(G)))))
    with pytest.raises(ValueError, match="G"):
        orth.msign(backend.asarray(np.ones(4)))
    with pytest.raises(ValueError, match="normalize"):
        orth.msign(backend.asarray(np.ones((3, 3))), normalize="max")
    with pytest.raises(ValueError, match="schedule"):
        orth.msign(backend.asarray(np.ones((3, 3))), schedule="nope")


@pytest.mark.parametrize("shape", [(1, 40, 24), (24, 40), (1, 1, 24, 40)])
def test_newton_schulz_scale_and_batch_of_one(backend, dtype, shape):
    """The loop behind msign: ``scale`` (folded into the last step) gives scale · msign, and a
    batch of one matrix (run as a 2-D product) equals the plain matrix."""
    A, U, _s, Vt = matrix_with_spectrum(*shape[-2:], np.geomspace(1, 1e-2, 24), seed=21)
    A = A.reshape(shape)
    X = backend.asarray(A, dtype)
    coeffs = orth.ns_schedule("polar_express", 10)
    got = orth._newton_schulz(X, coeffs, normalize="fro", eps=1e-7, xp=backend.xp, scale=-0.03)
    assert_array(got, backend, shape=shape, dtype=dtype)
    assert rel_err(got, -0.03 * (U @ Vt).reshape(shape), backend) <= 30 * TOL[dtype]
    plain = orth.msign(backend.asarray(A.reshape(shape[-2:]), dtype), steps=10)
    assert rel_err(got, -0.03 * backend.to_numpy(plain).reshape(shape), backend) <= 10 * TOL[dtype]


@pytest.mark.skip_xp_backends("numpy", "array_api_strict", "cupy", "jax", "dask",
                              reason="memory layout (strides) checked on PyTorch")
def test_msign_tall_result_has_the_input_layout(backend):
    """A tall input is iterated transposed, but the result comes back laid out as the input
    (contiguous), not as a transposed view that makes every later pass over it strided."""
    A = np.random.default_rng(22).standard_normal((96, 32))
    O = orth.msign(backend.asarray(A, "float32"), steps=3)
    assert O.is_contiguous() and tuple(O.stride()) == (32, 1)
    B = orth.msign(backend.asarray(np.stack([A, A]), "float32"), steps=3)
    assert B.is_contiguous()


@pytest.mark.skip_xp_backends("numpy", "array_api_strict", "cupy", "dask",
                              reason="bfloat16 exists on PyTorch and JAX only")
def test_msign_bf16_compute(backend):
    A, U, _s, Vt = matrix_with_spectrum(64, 96, np.geomspace(1, 1e-2, 64), seed=13)
    O = orth.msign(backend.asarray(A, "float32"), steps=8, compute_dtype="bfloat16")
    assert_array(O, backend, shape=(64, 96), dtype="float32")
    # bf16 arithmetic: singular values land within a few bf16 ulp-scale of 1
    assert rel_err(O, U @ Vt, backend) <= 5e-2
    sv = np.linalg.svd(backend.to_numpy(O), compute_uv=False)
    assert np.abs(sv - 1).max() <= 0.3


def test_msign_bf16_refused_elsewhere(backend):
    if backend.has_bfloat16:
        pytest.skip("torch and jax have bfloat16 (tested above)")
    with pytest.raises(ValueError, match="bfloat16"):
        orth.msign(backend.asarray(np.ones((3, 3))), compute_dtype="bfloat16")


# ----------------------------------------------------------------------------- msign, gram=True

_GRAM_CASES = {  # shape, spectrum, steps, batch
    "well": ((96, 24), np.geomspace(1, 1e-1, 24), 10, ()),
    "ill": ((96, 24), np.geomspace(1, 1e-3, 24), 12, ()),
    "wide": ((24, 96), np.geomspace(1, 1e-2, 24), 10, ()),
    "low_rank": ((80, 20), np.r_[np.geomspace(1, 1e-2, 12), np.zeros(8)], 12, ()),
    "batched": ((40, 10), np.geomspace(1, 1e-2, 10), 10, (2, 3)),
}


@pytest.mark.parametrize("case", list(_GRAM_CASES))
def test_msign_gram_equals_plain_and_svd(backend, dtype, case):
    """Gram Newton–Schulz is the plain loop's polynomial: equal to it to rounding, and both are
    the float64 SVD polar factor U_r V_rᵀ (on the range for a low-rank matrix)."""
    shape, s, steps, batch = _GRAM_CASES[case]
    A, U, _s, Vt = matrix_with_spectrum(*shape, s, seed=23, batch=batch)
    r = int((s > 0).sum())
    ref = U[..., :r] @ Vt[..., :r, :]
    X = backend.asarray(A, dtype)
    G = orth.msign(X, steps=steps, gram=True)
    assert_array(G, backend, shape=A.shape, dtype=dtype)
    plain = backend.to_numpy(orth.msign(X, steps=steps))
    # measured (NumPy): float64 ≤ 2e-12 from plain; float32 ≤ 1.2e-5 (the low-rank case 1.1e-3:
    # both loops amplify the rounding-level null space, each its own way; see the test above)
    low_rank_f32 = case == "low_rank" and dtype == "float32"
    assert rel_err(G, plain, backend) <= (2e-3 if low_rank_f32 else TOL[dtype])
    assert rel_err(G, ref, backend) <= (2e-3 if low_rank_f32 else 1e-6 if dtype == "float64" else 1e-4)


def test_msign_gram_zero_nan_and_normalizations(backend):
    Z = orth.msign(backend.asarray(np.zeros((2, 12, 5))), gram=True)
    assert_array(Z, backend, shape=(2, 12, 5), dtype="float64")
    assert np.all(backend.to_numpy(Z) == 0)
    G = np.random.default_rng(24).standard_normal((30, 8))
    G[3, 2] = np.nan
    assert np.all(np.isnan(backend.to_numpy(orth.msign(backend.asarray(G), gram=True))))
    A, *_ = matrix_with_spectrum(48, 12, np.geomspace(1, 1e-2, 12), seed=25)
    for normalize in orth.NORMALIZATIONS:  # spectral_estimate hands its Gram matrix to the loop
        kw = {"steps": 8, "normalize": normalize}
        assert rel_err(orth.msign(backend.asarray(A), gram=True, **kw),
                       backend.to_numpy(orth.msign(backend.asarray(A), **kw)), backend) <= 1e-10


def test_msign_gram_scale_invariant(backend):
    """As the plain loop (input policy): msign(t G) = msign(G) from 1e-30 to 1e30."""
    A, *_ = matrix_with_spectrum(30, 6, np.geomspace(1, 1e-2, 6), seed=27)
    ref = backend.to_numpy(orth.msign(backend.asarray(A), gram=True))
    for t in (1e-30, 1e30):
        assert rel_err(orth.msign(backend.asarray(t * A), gram=True), ref, backend) <= 1e-12


def test_msign_gram_bad_input(backend):
    G = backend.asarray(np.ones((6, 3)))
    with pytest.raises(TypeError, match="gram"):
        orth.msign(G, gram="yes")
    for bad in ((0,), (5,), (2, 2), ("2",), 2):
        with pytest.raises(ValueError, match="gram_restarts"):
            orth.msign(G, steps=5, gram=True, gram_restarts=bad)


@pytest.mark.skip_xp_backends("numpy", "array_api_strict", "cupy", "dask",
                              reason="bfloat16 exists on PyTorch and JAX only")
def test_msign_gram_bf16_restarts_keep_it_stable(backend):
    """In bfloat16 the Gram matrix R drifts (small negative eigenvalues that the iteration blows
    up); the default restarts keep the result as close to the polar factor as the plain loop's."""
    A, U, _s, Vt = matrix_with_spectrum(512, 64, np.geomspace(1, 1e-4, 64), seed=26)
    ref = U @ Vt
    X = backend.asarray(A, "float32")
    kw = {"steps": 8, "compute_dtype": "bfloat16"}
    plain = rel_err(orth.msign(X, **kw), ref, backend)
    gram = rel_err(orth.msign(X, gram=True, **kw), ref, backend)
    assert np.isfinite(gram) and gram <= plain + 0.1, (gram, plain)


def test_ns_flops_counts_the_products():
    """The FLOP formula of ``ns_flops`` (stated in ``msign``'s Notes) is what the loops run:
    counted by torch's FlopCounterMode on meta tensors (no data, no time); Gram NS at
    4096 × 256 with the default 5 steps costs at most 0.6× the plain loop (0.47×)."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    for shape in ((4096, 256), (256, 4096), (3, 200, 48), (64, 64)):
        for steps, restarts in ((5, None), (10, None), (5, (1, 3)), (1, None), (0, None)):
            for gram in (False, True):
                with FlopCounterMode(display=False) as fc:
                    orth.msign(torch.empty(shape, device="meta"), steps=steps, gram=gram,
                               gram_restarts=restarts)
                batch = shape[0] if len(shape) == 3 else 1
                want = batch * orth.ns_flops(*shape[-2:], steps, gram=gram, restarts=restarts)
                assert fc.get_total_flops() == want, (shape, steps, restarts, gram)
    k, l_ = 256, 4096
    assert orth.ns_flops(l_, k, 5) == 5 * (4 * k * k * l_ + 2 * k**3)
    assert orth.ns_flops(l_, k, 5, gram=True) == 8 * k * k * l_ + 28 * k**3
    assert orth.ns_flops(l_, k, 5, gram=True) <= 0.6 * orth.ns_flops(l_, k, 5)
    assert orth.ns_flops(k, k, 5, gram=True) > orth.ns_flops(k, k, 5)  # square: no saving


# ----------------------------------------------------------------------------- msign_many


def test_msign_many_mixed_shapes_equal_msign_and_svd(backend):
    """Mixed shapes (tall, a wide batch, a repeated shape): each result is ``scale · msign`` of
    its matrix (float64 SVD reference) in its own shape, equal to :func:`msign` of it; a
    callable scale gets each shape, a number scales all."""
    shapes = [(24, 10), (2, 8, 12), (24, 10)]
    As = [matrix_with_spectrum(*s[-2:], np.geomspace(1, 1e-2, min(s[-2:])), seed=40 + k,
                               batch=s[:-2])[0] for k, s in enumerate(shapes)]
    Gs = [backend.asarray(A) for A in As]
    Os = orth.msign_many(Gs, steps=10, scale=lambda m, n: -0.5 * m / n)
    for A, G, O in zip(As, Gs, Os, strict=True):
        assert_array(O, backend, shape=A.shape, dtype="float64")
        m, n = A.shape[-2:]
        assert rel_err(O, -0.5 * m / n * _uvt(A), backend) <= 1e-6
        assert rel_err(O, -0.5 * m / n * backend.to_numpy(orth.msign(G, steps=10)), backend) <= 1e-12
    (two,) = orth.msign_many(Gs[1:2], steps=10, scale=2.0)
    assert rel_err(two, 2.0 * _uvt(As[1]), backend) <= 1e-6


def test_msign_many_empty_zero_and_int(backend):
    assert orth.msign_many([]) == []
    Os = orth.msign_many([backend.asarray(np.zeros((0, 4))), backend.asarray(np.zeros((3, 5)))])
    assert_array(Os[0], backend, shape=(0, 4), dtype="float64")
    assert_array(Os[1], backend, shape=(3, 5), dtype="float64")
    assert np.all(backend.to_numpy(Os[1]) == 0)
    if not backend.readonly:
        A = np.array([[2, 1, 0], [1, 3, 1], [0, 1, 4], [1, 0, 1]])
        (Oi,) = orth.msign_many([backend.xp.asarray(A, device=backend.device)], steps=10)
        assert rel_err(Oi, _uvt(A.astype(float)), backend) <= 1e-5


def test_msign_many_split_gram_and_stacks(backend, monkeypatch):
    """``split_sizes``: each row block its own msign; ``gram="auto"`` runs Gram NS on the
    rectangular shapes only, with the same results to rounding; ``stack_bytes`` cuts a CPU stack
    into calls of that size, and the results do not depend on the cut."""
    rng = np.random.default_rng(41)
    As = [rng.standard_normal((12, 6)) for _ in range(3)] + [rng.standard_normal((6, 6))]
    Gs = [backend.asarray(A) for A in As]
    split = orth.msign_many(Gs[:3], steps=10, split_sizes=(4, 8))
    for A, O in zip(As[:3], split, strict=True):
        ref = np.concatenate([_uvt(A[:4]), _uvt(A[4:])], axis=0)
        assert rel_err(O, ref, backend) <= 1e-6
    seen = []
    real = orth.newton_schulz

    def spy(U, *a, **k):
        seen.append((tuple(U.shape), k["gram"]))
        return real(U, *a, **k)

    monkeypatch.setattr(orth, "newton_schulz", spy)
    whole = orth.msign_many(Gs, steps=10)
    gram = orth.msign_many(Gs, steps=10, gram="auto", stack_bytes=2 * 12 * 6 * 8)
    cpu = backend.name not in ("torch:cuda", "cupy")
    assert seen[:2] == [((3, 12, 6), False), ((1, 6, 6), False)]
    assert seen[2:] == ([((2, 12, 6), True), ((1, 12, 6), True), ((1, 6, 6), False)] if cpu
                        else [((3, 12, 6), True), ((1, 6, 6), False)])
    for x, y in zip(gram, whole, strict=True):
        assert rel_err(x, backend.to_numpy(y), backend) <= 1e-10


def test_msign_many_bad_input(backend):
    G = backend.asarray(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"mats\[1\]"):
        orth.msign_many([G, backend.asarray(np.ones(3))])
    with pytest.raises(ValueError, match="split_sizes"):
        orth.msign_many([G], split_sizes=(1, 2))
    with pytest.raises(ValueError, match="split_sizes"):
        orth.msign_many([G], split_sizes=(0, 4))
    with pytest.raises(TypeError, match="gram"):
        orth.msign_many([G], gram="yes")
    with pytest.raises(ValueError, match="normalize"):
        orth.msign_many([G], normalize="max")
    with pytest.raises(TypeError):
        orth.msign_many([G, np.ones((4, 3)) if not backend.name.startswith("numpy") else _strict_ones()])


def _strict_ones():
    strict = pytest.importorskip("array_api_strict")
    return strict.ones((4, 3))


# ----------------------------------------------------------------------------- polar


@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (32, 32)])
def test_polar_vs_scipy(backend, dtype, shape):
    import scipy.linalg

    A, *_ = matrix_with_spectrum(*shape, np.geomspace(2, 2e-3, min(shape)), seed=14)
    Ur, Hr = scipy.linalg.polar(A, side="right")
    for method, tol in (("svd", TOL[dtype]), ("newton_schulz", 1e-6 if dtype == "float64" else 2e-4)):
        U, H = orth.polar(backend.asarray(A, dtype), method=method)
        assert_array(U, backend, shape=shape, dtype=dtype)
        assert_array(H, backend, shape=(shape[1], shape[1]), dtype=dtype)
        Hn = backend.to_numpy(H)
        assert np.array_equal(Hn, Hn.T)
        assert rel_err(U, Ur, backend) <= 100 * tol
        assert rel_err(H, Hr, backend) <= 100 * tol
        np.testing.assert_allclose(backend.to_numpy(U) @ Hn, A, atol=100 * tol * np.abs(A).max())


def test_polar_batched_zero_bad(backend):
    A = np.random.default_rng(15).standard_normal((3, 10, 6))
    U, H = orth.polar(backend.asarray(A))
    assert_array(H, backend, shape=(3, 6, 6), dtype="float64")
    np.testing.assert_allclose(backend.to_numpy(U) @ backend.to_numpy(H), A, atol=1e-12)
    assert np.linalg.eigvalsh(backend.to_numpy(H)).min() >= -1e-12
    U0, H0 = orth.polar(backend.asarray(np.zeros((4, 3))), method="newton_schulz")
    assert np.all(backend.to_numpy(H0) == 0) and np.all(np.isfinite(backend.to_numpy(U0)))
    with pytest.raises(ValueError, match="method"):
        orth.polar(backend.asarray(A), method="qr")


# ----------------------------------------------------------------------------- CholeskyQR2 host reads


def _span_err(Q: np.ndarray, X: np.ndarray) -> float:
    """``‖Q Qᵀ − P‖_max`` against numpy's float64 QR projector ``P`` of the span of ``X``."""
    q = np.linalg.qr(X)[0]
    return float(np.abs(Q @ np.swapaxes(Q, -1, -2) - q @ np.swapaxes(q, -1, -2)).max())


@pytest.mark.parametrize("kappa", [1e2, 1e10])
def test_cholesky_qr2_one_host_read_torch(kappa):
    """Eager torch: ``cholesky_ex`` (no error-check read) and exactly one acceptance read per
    call, whether CholeskyQR2 is accepted (κ = 1e2) or falls back to Householder (κ = 1e10)."""
    torch = pytest.importorskip("torch")
    X, *_ = matrix_with_spectrum(64, 6, np.geomspace(1, 1 / kappa, 6), seed=3, batch=(2,))
    Q, _, reads = torch_counts(lambda: orth.orthonormalize(torch.tensor(X), method="cholesky_qr2"))
    assert reads == 1
    Qn = Q.numpy()
    assert _orth_err(Qn) <= 1e-13
    assert _span_err(Qn, X) <= (1e-12 if kappa < 1e4 else 1e-5)  # κ = 1e10: Householder's own κ u
    if kappa < 1e4:
        np.testing.assert_allclose(Qn, _ref_q(X), atol=1e-12)


@pytest.mark.slow
def test_cholesky_qr2_under_torch_compile_no_graph_break():
    """``torch.compile(fullgraph=True)``: one graph, no host read (``torch.cond`` picks the
    fallback on the device); accepted and fallback inputs give the eager results."""
    torch = pytest.importorskip("torch")
    torch._dynamo.reset()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    f = torch.compile(lambda X: orth.orthonormalize(X, method="cholesky_qr2"), fullgraph=True,
                      backend="aot_eager")
    for kappa in (1e2, 1e10):
        X, *_ = matrix_with_spectrum(48, 5, np.geomspace(1, 1 / kappa, 5), seed=5)
        Xt = torch.tensor(X)
        Q = f(Xt).numpy()
        np.testing.assert_allclose(Q, orth.orthonormalize(Xt, method="cholesky_qr2").numpy(), atol=1e-12)
        assert _orth_err(Q) <= 1e-13
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 1



def test_ns_compute_dtype_auto_per_call():
    """``compute_dtype="auto"`` per Newton–Schulz call: an explicit dtype passes; bf16 only for
    a call of at least ``BF16_CPU_MIN_FLOPS`` on a CPU with native bf16 (torch's own checks:
    AMX or AVX512-BF16), the input's dtype for smaller calls, for float64 and for NumPy."""
    torch = pytest.importorskip("torch")
    import array_api_compat

    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    G, xp = torch.randn(128, 128), array_api_compat.array_namespace(torch.zeros(1))
    one = orth.ns_flops(128, 128, 5)
    assert 2 * one >= orth.BF16_CPU_MIN_FLOPS > one
    assert orth.ns_compute_dtype("float32", G, 1, 5, xp) == "float32"
    assert orth.ns_compute_dtype(None, G, 9, 5, xp) is None
    assert orth.ns_compute_dtype("auto", G, 1, 5, xp) is None
    assert orth.ns_compute_dtype("auto", G, 2, 5, xp) == (torch.bfloat16 if native else None)
    assert orth.ns_compute_dtype("auto", G.double(), 2, 5, xp) is None
    A = np.ones((512, 512), dtype=np.float32)
    assert orth.ns_compute_dtype("auto", A, 4, 5, array_api_compat.array_namespace(A)) is None
    big = [torch.randn(128, 128) for _ in range(2)]
    auto = xpmat.msign_many(big, compute_dtype="auto")
    want = xpmat.msign_many(big, compute_dtype="bfloat16" if native else None)
    assert all(torch.equal(a, b) and a.dtype == torch.float32 for a, b in zip(auto, want, strict=True))
