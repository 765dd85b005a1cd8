"""NMF under the I-divergence: divergence, blockwise EM step, nmf, rank one, online pieces."""

import numpy as np
import pytest
from conftest import (
    DASK_LONG_LOOP,
    DASK_NO_EARLY_STOP,
    DASK_NO_INPUT_CHECK,
    TOL,
    assert_array,
    assert_close,
    get_backend,
)
from dispatch_counts import torch_counts

import xpmat as xm


def _res(backend):
    return get_backend("numpy") if backend.readonly else backend


def _idiv_ref(C, M):
    C, M = np.asarray(C, float), np.asarray(M, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(C > 0, C * np.log(np.where(C > 0, C, 1) / np.where(C > 0, M, 1)), 0.0)
    return (t - C + M).sum(axis=(-2, -1))


def _poisson(m, n, r, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return rng.poisson(rng.random((m, r)) @ rng.random((r, n)) * scale).astype(float)


def _init(m, n, r, seed=1, batch=()):
    rng = np.random.default_rng(seed)
    return rng.random((*batch, m, r)) + 0.1, rng.random((*batch, r, n)) + 0.1


def test_i_divergence_values(backend, xp, dtype):
    rng = np.random.default_rng(0)
    C = rng.random((3, 5, 4))
    C[0, 0, :] = 0.0  # 0 log 0 = 0
    M = rng.random((3, 5, 4)) + 0.1
    got = xm.i_divergence(backend.asarray(C, dtype), backend.asarray(M, dtype))
    assert_array(got, _res(backend), shape=(3,), dtype=dtype)
    assert_close(got, _idiv_ref(C, M), backend, rtol=10 * TOL[dtype])
    same = xm.i_divergence(backend.asarray(C, dtype), backend.asarray(C, dtype))
    assert_close(same, np.zeros(3), backend, rtol=0, atol=0)
    zero = xm.i_divergence(backend.asarray(np.zeros((2, 2))), backend.asarray(np.zeros((2, 2))))
    assert_close(zero, 0.0, backend, rtol=0)


def test_i_divergence_inf_where_model_vanishes(backend):
    C = backend.asarray([[1.0, 0.0]])
    M = backend.asarray([[0.0, 1.0]])
    with np.errstate(divide="ignore"):
        d = backend.to_numpy(xm.i_divergence(C, M))
    assert np.isposinf(d)


@pytest.mark.parametrize("batch", [(), (2,)])
def test_em_step_decreases_and_keeps_sign(backend, xp, dtype, batch):
    C = np.stack([_poisson(30, 20, 4, seed=s) for s in range(2)])[: (2 if batch else 1)]
    C = C.reshape(*batch, 30, 20)
    A, B = _init(30, 20, 4, batch=batch)
    A1, B1 = xm.nmf_em_step(*(backend.asarray(v, dtype) for v in (C, A, B)))
    assert_array(A1, _res(backend), shape=(*batch, 30, 4), dtype=dtype)
    assert_array(B1, _res(backend), shape=(*batch, 4, 20), dtype=dtype)
    An, Bn = backend.to_numpy(A1), backend.to_numpy(B1)
    assert (An >= 0).all() and (Bn >= 0).all()
    d0, d1 = _idiv_ref(C, A @ B), _idiv_ref(C, An @ Bn)
    assert np.all(d1 <= d0 * (1 + 10 * TOL[dtype]))
    # blockwise form (footnote 22), written out on the host
    R = C / (A @ B)
    A_ref = A * (R @ np.swapaxes(B, -1, -2)) / B.sum(-1)[..., None, :]
    R = C / (A_ref @ B)
    B_ref = B * (np.swapaxes(A_ref, -1, -2) @ R) / A_ref.sum(-2)[..., :, None]
    assert_close(A1, A_ref, backend, rtol=10 * TOL[dtype])
    assert_close(B1, B_ref, backend, rtol=10 * TOL[dtype])


def test_em_step_zeros(backend, xp):
    C = _poisson(12, 10, 2)
    C[3, :] = 0.0
    C[:, 5] = 0.0
    A, B = _init(12, 10, 2)
    A1, B1 = xm.nmf_em_step(backend.asarray(C), backend.asarray(A), backend.asarray(B))
    An, Bn = backend.to_numpy(A1), backend.to_numpy(B1)
    assert np.isfinite(An).all() and np.isfinite(Bn).all()
    assert (An[3] == 0).all()
    assert (Bn[:, 5] == 0).all()
    # all-zero C: zero factors, no NaN
    Z = backend.asarray(np.zeros((4, 3)))
    A2, B2 = xm.nmf_em_step(Z, backend.asarray(A[:4]), backend.asarray(B[:, :3]))
    assert_close(A2, np.zeros((4, 2)), backend, rtol=0)
    assert_close(B2, np.zeros((2, 3)), backend, rtol=0)
    # a zero column of A (a dead component) stays finite
    A0 = A.copy()
    A0[:, 1] = 0.0
    A3, B3 = xm.nmf_em_step(backend.asarray(C), backend.asarray(A0), backend.asarray(B))
    assert np.isfinite(backend.to_numpy(A3)).all() and np.isfinite(backend.to_numpy(B3)).all()


def test_em_step_bad_shapes(backend):
    with pytest.raises(ValueError, match="`A`.*`B`"):
        xm.nmf_em_step(*(backend.asarray(np.ones(s)) for s in ((4, 3), (4, 2), (3, 3))))


@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_nmf_matches_sklearn(backend, xp, dtype):
    """Same data, init and iteration count as sklearn's KL multiplicative updates."""
    sk = pytest.importorskip("sklearn.decomposition")
    C = _poisson(60, 40, 5)
    A0, B0 = _init(60, 40, 5)
    model = sk.NMF(5, beta_loss="kullback-leibler", solver="mu", init="custom", max_iter=150, tol=0)
    W = model.fit_transform(C, W=A0.copy(), H=B0.copy())
    d_sk = _idiv_ref(C, W @ model.components_)
    init = (backend.asarray(A0, dtype), backend.asarray(B0, dtype))
    res = xm.nmf(backend.asarray(C, dtype), 5, iters=150, init=init, history=True)
    assert_array(res.A, _res(backend), shape=(60, 5), dtype=dtype)
    assert_array(res.B, _res(backend), shape=(5, 40), dtype=dtype)
    assert_array(res.divergence, _res(backend), shape=(151,), dtype=dtype)
    assert res.n_iter == 150
    d = backend.to_numpy(res.divergence)
    d_ours = _idiv_ref(C, backend.to_numpy(res.A) @ backend.to_numpy(res.B))
    assert d_ours <= d_sk * 1.01
    if dtype == "float64":  # the same algorithm: agree to rounding
        np.testing.assert_allclose(d_ours, d_sk, rtol=1e-9)
    assert np.all(np.diff(d) <= 10 * TOL[dtype] * d[0])  # monotone non-increasing
    np.testing.assert_allclose(d[-1], d_ours, rtol=10 * TOL[dtype])


def test_nmf_monotone_random_init_batched_and_callback(backend, xp):
    C = np.stack([_poisson(25, 18, 3, seed=s) for s in range(3)])
    seen = []
    res = xm.nmf(backend.asarray(C), 3, iters=60, seed=0, history=True,
                 callback=lambda it, A, B, d: seen.append(it))
    assert seen == list(range(1, 61))
    d = backend.to_numpy(res.divergence)
    assert d.shape == (3, 61)
    assert np.all(np.diff(d, axis=-1) <= 1e-9 * d[:, :1])
    assert np.all(d[:, -1] < 0.5 * d[:, 0])
    np.testing.assert_allclose(d[:, -1], _idiv_ref(C, backend.to_numpy(res.A @ res.B)), rtol=1e-10)
    # the same seed gives the same factors on every backend
    ref = xm.nmf(C, 3, iters=60, seed=0)
    assert_close(res.A, ref.A, backend, rtol=1e-9)


def test_nmf_default_keeps_only_final_divergence(backend, xp):
    C = _poisson(20, 15, 2)
    res = xm.nmf(backend.asarray(C), 2, iters=20, seed=3)
    assert_array(res.divergence, _res(backend), shape=(1,), dtype="float64")
    res_h = xm.nmf(backend.asarray(C), 2, iters=20, seed=3, history=True)
    assert_close(res.divergence, backend.to_numpy(res_h.divergence)[-1:], backend, rtol=1e-12)


@pytest.mark.skip_xp_backends("dask", reason=DASK_NO_EARLY_STOP)
def test_nmf_tol_stops_early(backend, xp, capsys):
    C = _poisson(20, 15, 2)
    res = xm.nmf(backend.asarray(C), 2, iters=2000, seed=0, tol=1e-4, progress=True)
    assert 10 <= res.n_iter < 2000 and res.n_iter % 10 == 0
    assert "nmf:" in capsys.readouterr().err


@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_nmf_rank_larger_than_min_dim_and_zero_rows(backend, xp):
    C = _poisson(6, 5, 2)
    C[2, :] = 0.0
    C[:, 0] = 0.0
    res = xm.nmf(backend.asarray(C), 8, iters=100, seed=0, history=True)  # rank 8 > min(6, 5): allowed
    A, B = backend.to_numpy(res.A), backend.to_numpy(res.B)
    assert A.shape == (6, 8) and B.shape == (8, 5)
    assert np.isfinite(A).all() and np.isfinite(B).all() and (A >= 0).all() and (B >= 0).all()
    assert np.allclose(A[2], 0) and np.allclose(B[:, 0], 0)
    d = backend.to_numpy(res.divergence)
    assert np.all(np.diff(d) <= 1e-9 * d[0])
    zero = xm.nmf(backend.asarray(np.zeros((4, 3))), 2, iters=5, seed=0)
    assert_close(zero.A @ zero.B, np.zeros((4, 3)), backend, rtol=0)
    assert_close(zero.divergence, [0.0], backend, rtol=0)


@pytest.mark.skip_xp_backends("dask", reason=DASK_NO_INPUT_CHECK)
def test_nmf_negative_or_nonfinite_input(backend):
    C = np.ones((4, 3))
    C[1, 1] = -1.0
    with pytest.raises(ValueError, match="`C` must be nonnegative"):
        xm.nmf(backend.asarray(C), 2)
    with pytest.raises(ValueError, match="nonnegative"):
        xm.nmf_rank1(backend.asarray(C))
    C[1, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        xm.nmf(backend.asarray(C), 2)
    ok = backend.asarray(np.ones((4, 3)))
    with pytest.raises(ValueError, match="init\\[0\\]"):
        xm.nmf(ok, 1, init=(backend.asarray(-np.ones((4, 1))), backend.asarray(np.ones((1, 3)))))


def test_nmf_bad_input(backend):
    ok = backend.asarray(np.ones((4, 3)))
    with pytest.raises(ValueError, match="rank"):
        xm.nmf(ok, 0)
    with pytest.raises(ValueError, match="init"):
        xm.nmf(ok, 2, init="nndsvd")
    with pytest.raises(ValueError, match="rank"):
        xm.nmf(ok, 2, init=(backend.asarray(np.ones((4, 3))), backend.asarray(np.ones((3, 3)))))


def test_nmf_init_of_another_dtype_is_refused(backend):
    """float32 start factors for float64 data: a TypeError naming the factor and both dtypes
    (scikit-learn's NMF raises too), not a silent cast; integer factors are promoted."""
    C = backend.asarray(_poisson(5, 4, 2))
    A, B = _init(5, 4, 2)
    for bad, name in (((backend.asarray(A, "float32"), backend.asarray(B)), "init\\[0\\]"),
                      ((backend.asarray(A), backend.asarray(B, "float32")), "init\\[1\\]")):
        with pytest.raises(TypeError, match=f"`{name}`.*float64.*float32"):
            xm.nmf(C, 2, iters=1, init=bad)
    with pytest.raises(TypeError, match="`C` is .*float32.*`init\\[0\\]` is .*float64"):
        xm.nmf(backend.asarray(_poisson(5, 4, 2), "float32"), 2, iters=1,
               init=(backend.asarray(A), backend.asarray(B, "float32")))
    ints = tuple(backend.asarray(np.ones(shape), backend.xp.int64) for shape in ((5, 2), (2, 4)))
    res = xm.nmf(C, 2, iters=1, init=ints)
    assert_array(res.A, _res(backend), shape=(5, 2), dtype="float64")


@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_rank1_closed_form_is_em_fixed_point(backend, xp, dtype):
    C = np.stack([_poisson(9, 7, 3, seed=s) for s in range(2)])
    A, B = xm.nmf_rank1(backend.asarray(C, dtype))
    assert_array(A, _res(backend), shape=(2, 9, 1), dtype=dtype)
    assert_array(B, _res(backend), shape=(2, 1, 7), dtype=dtype)
    assert_close(A, C.sum(-1)[..., None], backend, rtol=TOL[dtype])
    assert_close(B, (C.sum(-2) / C.sum((-2, -1))[:, None])[:, None, :], backend, rtol=TOL[dtype])
    # a fixed point of the EM step
    A1, B1 = xm.nmf_em_step(backend.asarray(C, dtype), A, B)
    assert_close(A1, backend.to_numpy(A), backend, rtol=10 * TOL[dtype])
    assert_close(B1, backend.to_numpy(B), backend, rtol=10 * TOL[dtype])
    # and EM from a random start converges to the same product and divergence
    res = xm.nmf(backend.asarray(C, "float64"), 1, iters=200, seed=0)
    M = backend.to_numpy(A) @ backend.to_numpy(B)
    assert_close(res.A @ res.B, M, backend, rtol=max(1e-8, 10 * TOL[dtype]))
    # zero matrix
    Az, Bz = xm.nmf_rank1(backend.asarray(np.zeros((3, 2))))
    assert_close(Az, np.zeros((3, 1)), backend, rtol=0)
    assert_close(Bz, np.zeros((1, 2)), backend, rtol=0)


@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_online_step_is_em_on_squared_gradient(backend, xp, dtype):
    rng = np.random.default_rng(7)
    G = rng.normal(size=(10, 8))
    A, B = xm.nmf_online_init(backend.asarray(G, dtype), 3, seed=0)
    assert_array(A, _res(backend), shape=(10, 3), dtype=dtype)
    An, Bn = backend.to_numpy(A), backend.to_numpy(B)
    assert (An > 0).all() and (An < 1e-3).all() and (Bn > 0).all()
    A1, B1 = xm.nmf_online_step(backend.asarray(G, dtype), A, B)
    A2, B2 = xm.nmf_em_step(backend.asarray(G * G, dtype), A, B)
    assert_close(A1, backend.to_numpy(A2), backend, rtol=TOL[dtype])
    assert_close(B1, backend.to_numpy(B2), backend, rtol=TOL[dtype])
    # EMA target beta A B + (1 - beta) G²
    A3, B3 = xm.nmf_online_step(backend.asarray(G, dtype), A, B, beta=0.9)
    V = 0.9 * An @ Bn + 0.1 * G * G
    A4, B4 = xm.nmf_em_step(V, An, Bn)
    assert_close(A3, A4, backend, rtol=10 * TOL[dtype])
    assert_close(B3, B4, backend, rtol=10 * TOL[dtype])
    # repeated steps on a fixed gradient fit G² (divergence decreases)
    A, B = xm.nmf_online_init(backend.asarray(G), 3, seed=0)
    ds = []
    for _ in range(30):
        A, B = xm.nmf_online_step(backend.asarray(G), A, B)
        ds.append(_idiv_ref(G * G, backend.to_numpy(A @ B)))
    assert np.all(np.diff(ds) <= 1e-9 * ds[0])
    with pytest.raises(ValueError, match="beta"):
        xm.nmf_online_step(backend.asarray(G), A, B, beta=1.0)


def test_adafactor_factors_eq52(backend, xp, dtype):
    rng = np.random.default_rng(8)
    Gs = rng.normal(size=(5, 2, 6, 4))  # a stream of 5 batched gradients
    beta2 = 0.8
    st = None
    for G in Gs:
        st = xm.adafactor_factors(backend.asarray(G, dtype), st, beta2=beta2)
    V = xm.adafactor_second_moment(st)
    assert_array(V, _res(backend), shape=(2, 6, 4), dtype=dtype)
    a = sum((1 - beta2) * beta2 ** (4 - t) * (Gs[t] ** 2).sum(-1) for t in range(5))
    s = sum((1 - beta2) * beta2 ** (4 - t) * (Gs[t] ** 2).sum(-2) for t in range(5))
    V_ref = a[..., :, None] * s[..., None, :] / a.sum(-1)[..., None, None] / (1 - beta2 ** 5)
    assert_close(V, V_ref, backend, rtol=10 * TOL[dtype])
    # one step: the bias-corrected estimate is the rank-1 NMF of G² (appendix L "Rank one")
    st1 = xm.adafactor_factors(backend.asarray(Gs[0], dtype), beta2=beta2)
    A, B = xm.nmf_rank1(backend.asarray(Gs[0] ** 2, dtype))
    assert_close(xm.adafactor_second_moment(st1), backend.to_numpy(A @ B), backend, rtol=10 * TOL[dtype])
    # zero gradients: zeros, no NaN
    z = xm.adafactor_second_moment(xm.adafactor_factors(backend.asarray(np.zeros((3, 2)))))
    assert_close(z, np.zeros((3, 2)), backend, rtol=0)
    with pytest.raises(ValueError, match="beta2"):
        xm.adafactor_factors(backend.asarray(Gs[0]), beta2=1.5)


# ----------------------------------------------------------------------------- torch fused loop


def test_nmf_torch_fused_loop_ops_and_host_reads():
    """The torch loop: 13 ATen ops per EM iteration (was 35), no host read between checks."""
    torch = pytest.importorskip("torch")
    C = torch.tensor(_poisson(30, 20, 3))
    A, B = (torch.tensor(x) for x in _init(30, 20, 3))

    def run(iters, **kw):
        return torch_counts(lambda: xm.nmf(C, 3, iters=iters, init=(A, B), **kw))[1:]

    (o10, r10), (o20, r20) = run(10), run(20)
    assert (o20 - o10) / 10 <= 13
    assert r20 == r10  # no host read per iteration
    # with tol (never met): one read per check, none between (check_every=5: 2 more checks)
    (_, t10), (_, t20) = run(10, tol=-1.0, check_every=5), run(20, tol=-1.0, check_every=5)
    assert t20 - t10 == 2


@pytest.mark.parametrize("case", ["batched", "zero_rows_rank_gt_dims", "float32"])
def test_nmf_torch_fused_equals_array_api_step(case):
    """The fused loop gives the Array API step's factors (float64: to rounding) and leaves the
    caller's arrays alone."""
    torch = pytest.importorskip("torch")
    from xpmat.nmf import _em_step_generic

    dt = torch.float32 if case == "float32" else torch.float64
    if case == "batched":
        C = np.stack([_poisson(25, 18, 3, seed=s) for s in range(2)]).reshape(2, 1, 25, 18)
        A, B = _init(25, 18, 3, batch=(2, 1))
    else:
        C = _poisson(6, 5, 2) if case != "float32" else _poisson(40, 30, 4)
        if case == "zero_rows_rank_gt_dims":
            C[2, :], C[:, 0] = 0.0, 0.0
        A, B = _init(*C.shape, 8 if case == "zero_rows_rank_gt_dims" else 4)
    Ct, At, Bt = (torch.tensor(x, dtype=dt) for x in (C, A, B))
    got = xm.nmf(Ct, A.shape[-1], iters=40, init=(At, Bt))
    Ar, Br, txp = At, Bt, get_backend("torch").xp
    for _ in range(40):
        Ar, Br = _em_step_generic(Ct, Ar, Br, xm.nmf_em_step.__kwdefaults__["eps"], txp)
    rtol = 1e-11 if dt == torch.float64 else 1e-4
    for x, ref in ((got.A, Ar), (got.B, Br)):
        np.testing.assert_allclose(x.numpy(), ref.numpy(), rtol=rtol, atol=rtol * float(ref.abs().max()))
    assert torch.equal(At, torch.tensor(A, dtype=dt)) and torch.equal(Bt, torch.tensor(B, dtype=dt))


def test_nmf_torch_fused_zero_product_and_callback_copies():
    """A start whose product ``A B`` is zero gives zero factors (as the Array API form: its
    floor is 1 there); the callback's factors are its own (not the loop's buffers)."""
    torch = pytest.importorskip("torch")
    A = np.zeros((4, 2))
    A[0, 0] = 1.0
    B = np.zeros((2, 5))
    B[1, :] = 1.0  # A B = 0 everywhere
    res = xm.nmf(torch.ones(4, 5, dtype=torch.float64), 2, iters=5,
                 init=(torch.tensor(A), torch.tensor(B)), tol=-1.0, check_every=2)
    assert torch.equal(res.A, torch.zeros(4, 2, dtype=torch.float64))
    assert torch.equal(res.B, torch.zeros(2, 5, dtype=torch.float64))
    seen = []
    C = torch.tensor(_poisson(12, 10, 2))
    xm.nmf(C, 2, iters=3, seed=0, callback=lambda it, A, B, d: seen.append(A))
    assert not torch.equal(seen[0], seen[-1])
