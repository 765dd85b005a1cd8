"""Dion2: the core against its definition written out in NumPy, the full fraction as Muon
without momentum, non-finite and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DASK_OPTIMIZER_LOOP, assert_close

from xpmat import msign
from xpmat.optim import muon


def _dion2_reference(W0, grad_seq, *, lr, fraction, ef, wd, steps=5):
    """microsoft/dion's Dion2 update written out with NumPy fancy indexing (top-k by ℓ1 norm of
    the shorter side's slices), a = √max(1, m/n)."""
    W, B = W0.copy(), np.zeros_like(W0)
    m, n = W0.shape
    for G in grad_seq:
        B = B + G
        Bs = B if m <= n else B.T
        k = max(1, int(np.ceil(fraction * Bs.shape[0])))
        idx = np.argsort(-np.abs(Bs).sum(axis=1), kind="stable")[:k]
        O = np.asarray(msign(Bs[idx], steps=steps))
        Bs[idx] *= ef
        step = np.zeros_like(Bs)
        step[idx] = O
        W = W - lr * wd * W - lr * np.sqrt(max(1, m / n)) * (step if m <= n else step.T)
    return W, B


@pytest.mark.skip_xp_backends("dask", reason=DASK_OPTIMIZER_LOOP)
@pytest.mark.parametrize("shape", [(6, 16), (16, 6)])
def test_dion2_matches_the_reference(backend, dtype, shape):
    from xpmat.optim import dion2

    rng = np.random.default_rng(70)
    W0 = rng.standard_normal(shape)
    seq = [rng.standard_normal(shape) * rng.uniform(0.1, 3, (shape[0], 1)) for _ in range(3)]
    want_W, want_B = _dion2_reference(W0, seq, lr=0.05, fraction=0.5, ef=0.9, wd=0.1)
    W = [backend.asarray(W0, dtype)]
    st = dion2.init(W)
    for G in seq:
        u, st = dion2.update([backend.asarray(G, dtype)], st, W, lr=0.05, fraction=0.5, ef_decay=0.9,
                             weight_decay=0.1, compute_dtype=None)  # float32 NS for float32 tolerances
        W = [W[0] + u[0]]
    tol = 1e-9 if dtype == "float64" else 1e-3
    assert_close(W[0], want_W, backend, rtol=0, atol=tol * np.abs(want_W).max())
    assert_close(st[0].momentum_buffer, want_B, backend, rtol=0, atol=tol * np.abs(want_B).max())


def test_dion2_full_fraction_is_muon_without_momentum(backend):
    """f = 1, ef = 0: every slice is orthogonalized and the momentum is emptied each step —
    Muon with momentum 0; batched experts (``flatten=False``) too."""
    from xpmat.optim import dion2

    rng = np.random.default_rng(71)
    shapes = [(6, 10), (10, 6), (2, 4, 6)]
    params = [backend.asarray(rng.standard_normal(s)) for s in shapes]
    grads = [backend.asarray(rng.standard_normal(s)) for s in shapes]
    for flatten in (True, False):
        h = {"lr": 0.1, "weight_decay": 0.05, "flatten": flatten}
        u, st = dion2.update(grads, dion2.init(params, **h), params, fraction=1.0, ef_decay=0.0, **h)
        m, _ = muon.update(grads, muon.init(params, **h), params, momentum=0.0, **h)
        for a, b in zip(u, m, strict=True):
            assert_close(a, backend.to_numpy(b), backend, rtol=0, atol=1e-12)
        assert all(np.all(backend.to_numpy(s.momentum_buffer) == 0) for s in st)


def test_dion2_nonfinite_and_bad_input(backend):
    from xpmat.optim import dion2

    p = [backend.asarray(np.ones((4, 6)))]
    g = np.ones((4, 6))
    g[1, 2] = np.nan
    u, st = dion2.update([backend.asarray(g)], dion2.init(p), p)
    assert np.all(backend.to_numpy(u[0]) == 0) and np.all(backend.to_numpy(st[0].momentum_buffer) == 0)
    assert int(backend.to_numpy(st[0].nonfinite_count)) == 1
    for kw, name in (({"fraction": 0.0}, "fraction"), ({"fraction": 1.5}, "fraction"),
                     ({"ef_decay": -0.1}, "ef_decay")):
        with pytest.raises(ValueError, match=name):
            dion2.init(p, **kw)
    with pytest.raises(ValueError, match="not a matrix"):
        dion2.init([backend.asarray(np.ones(3))])
