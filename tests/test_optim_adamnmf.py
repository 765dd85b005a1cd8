"""AdamNMF (appendix L.2): one warm-started EM step of the rank-r NMF second moment against
NumPy, rank 1 as Adafactor's optimum, full rank fits, zero gradients and bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import DASK_OPTIMIZER_LOOP, TOL, assert_array, assert_close

import xpmat.optim as xo
from xpmat.optim import adafactor, adamnmf


def _em_step(C, A, B):
    """Blockwise EM (eq. 124, footnote 22, ERRATA): A first, then B with the new A."""
    A = A * ((C / (A @ B)) @ B.T) / B.sum(axis=1)
    B = B * (A.T @ (C / (A @ B))) / A.sum(axis=0)[:, None]
    return A, B


def _idiv(C, V):
    return float(np.sum(np.where(C > 0, C * np.log(np.where(C > 0, C, 1) / V), 0) - C + V))


def test_adamnmf_matches_em_reference(backend, dtype):
    rng = np.random.default_rng(2)
    W0 = rng.standard_normal((7, 5))
    gs = [rng.standard_normal((7, 5)) for _ in range(6)]
    hyper = {"lr": 0.01, "rank": 2, "betas": (0.5, None)}
    p = [backend.asarray(W0, dtype)]
    st = adamnmf.init(p, **hyper)
    A, B = (backend.to_numpy(x) for x in (st[0].A, st[0].B))
    assert A.min() > 0 and A.max() < 1e-3 and B.shape == (2, 5)
    W, M = W0.copy(), np.zeros_like(W0)
    for t, G in enumerate(gs, start=1):
        u, st = adamnmf.update([backend.asarray(G, dtype)], st, p, **hyper)
        p = xo.apply_updates(p, u)
        A, B = _em_step(G * G, A, B)
        M = 0.5 * M + 0.5 * G
        W = W - 0.01 * (M / (1 - 0.5 ** t)) / (np.sqrt(A @ B) + 1e-8)
    assert_array(p[0], backend, shape=(7, 5), dtype=dtype)
    assert_close(st[0].A @ st[0].B, A @ B, backend, rtol=TOL[dtype] * 100, atol=TOL[dtype])
    assert_close(p[0], W, backend, rtol=TOL[dtype] * 100, atol=TOL[dtype] * 100)


@pytest.mark.skip_xp_backends("dask", reason=DASK_OPTIMIZER_LOOP)
def test_adamnmf_rank1_is_adafactor_optimum_and_full_rank_fits(backend):
    """Rank 1: one EM step gives the rank-1 I-divergence optimum G²11ᵀG²/(1ᵀG²1) of §4.7, which is
    also Adafactor's one-step V̂ (eq. 52).  Full rank on a repeated gradient: the I-divergence
    to G² never increases and falls by orders of magnitude; factors stay nonnegative."""
    rng = np.random.default_rng(3)
    G = rng.standard_normal((6, 4))
    V = G * G
    p = [backend.asarray(np.zeros((6, 4)))]
    st = adamnmf.init(p, rank=1)
    _, st = adamnmf.update([backend.asarray(G)], st, p, rank=1)
    want = V.sum(1, keepdims=True) * V.sum(0) / V.sum()
    assert_close(st[0].A @ st[0].B, want, backend, rtol=1e-10, atol=1e-14)
    fst = adafactor.init(p, eps=(0.0, 1e-3))
    fst = adafactor.update([backend.asarray(G)], fst, p, eps=(0.0, 1e-3))[1][0]
    from xpmat import adafactor_second_moment
    from xpmat.nmf import AdafactorFactors

    Vf = adafactor_second_moment(AdafactorFactors(fst.exp_avg_sq_row, fst.exp_avg_sq_col, fst.weight))
    assert_close(Vf, want, backend, rtol=1e-10, atol=1e-14)
    st = adamnmf.init(p, rank=1.0)
    assert tuple(st[0].A.shape) == (6, 4)
    div = []
    for _ in range(200):
        _, st = adamnmf.update([backend.asarray(G)], st, p, rank=1.0, factor_floor=0.0)
        A, B = backend.to_numpy(st[0].A), backend.to_numpy(st[0].B)
        assert A.min() >= 0 and B.min() >= 0
        div.append(_idiv(V, A @ B))
    assert all(b <= a * (1 + 1e-9) + 1e-15 for a, b in itertools.pairwise(div)), div[:5]
    assert div[-1] < 1e-2 * div[0], (div[0], div[-1])


def test_adamnmf_zero_gradient_floor_and_errors(backend):
    rng = np.random.default_rng(4)
    p = [backend.asarray(rng.standard_normal((5, 3)))]
    st = adamnmf.init(p, rank=2)
    _, st = adamnmf.update([backend.asarray(rng.standard_normal((5, 3)))], st, p, rank=2)
    u, st = adamnmf.update([backend.asarray(np.zeros((5, 3)))], st, p, rank=2)
    assert_close(u[0], np.zeros((5, 3)), backend, rtol=0, atol=0)
    assert backend.to_numpy(st[0].A).min() >= 1e-12 and backend.to_numpy(st[0].B).min() >= 1e-12
    G = rng.standard_normal((5, 3))   # the factors recover after the zero step (floor > 0)
    u, st = adamnmf.update([backend.asarray(G)], st, p, rank=2, lr=1.0)
    un = backend.to_numpy(u[0])
    assert np.all(np.isfinite(un)) and np.abs(un).max() < 1e3
    with pytest.raises(ValueError, match="not a matrix"):
        adamnmf.init([backend.asarray(np.ones(3))])
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        adamnmf.init(p, betas=(1.5, None))
    r = xo.route(adamnmf.transform(lr=0.1), xo.core("adamw").transform(lr=0.0))
    q = [p[0], backend.asarray(np.ones(3))]
    ups, _ = r.update([backend.asarray(np.ones((5, 3))), backend.asarray(np.ones(3))], r.init(q), q)
    assert_close(ups[1], np.zeros(3), backend, rtol=0, atol=0)
