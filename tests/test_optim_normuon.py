"""NorMuon (Li et al. 2025, Algorithm 1): the core against the algorithm written out in NumPy,
rows of the step balanced (Muon's are not), zero gradients with every option, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DASK_OPTIMIZER_LOOP, assert_close

from xpmat import msign


def _normuon_reference(W0, grad_seq, *, lr, mu, beta2, wd, steps=5):
    """Li et al. 2025, Algorithm 1 with Muon's EMA momentum (Nesterov) and a = √max(1, m/n),
    written out with NumPy float64 and the same msign polynomial."""
    W, B = W0.copy(), np.zeros_like(W0)
    v = np.zeros((W0.shape[0], 1))
    m, n = W0.shape
    for G in grad_seq:
        B = B + (1 - mu) * (G - B)
        U = G + mu * (B - G)
        O = np.asarray(msign(U, steps=steps))
        v = beta2 * v + (1 - beta2) * (O * O).mean(axis=1, keepdims=True)
        N = O / (np.sqrt(v) + 1e-8)
        N = N * np.linalg.norm(O) / max(np.linalg.norm(N), 1e-8)
        W = W - lr * wd * W - lr * np.sqrt(max(1, m / n)) * N
    return W, v


@pytest.mark.skip_xp_backends("dask", reason=DASK_OPTIMIZER_LOOP)
def test_normuon_matches_the_reference(backend, dtype):
    from xpmat.optim import normuon

    rng = np.random.default_rng(50)
    W0 = rng.standard_normal((12, 5)) * np.linspace(0.2, 3, 12)[:, None]  # unequal rows
    seq = [rng.standard_normal((12, 5)) * np.linspace(3, 0.2, 12)[:, None] for _ in range(3)]
    # float32 Newton–Schulz for the float32 tolerance (the default "auto" is bf16 on some CPUs)
    hyper = {"lr": 0.05, "momentum": 0.9, "beta2": 0.9, "weight_decay": 0.1, "compute_dtype": None}
    want_W, want_v = _normuon_reference(W0, seq, lr=0.05, mu=0.9, beta2=0.9, wd=0.1)
    W = [backend.asarray(W0, dtype)]
    st = normuon.init(W)
    assert tuple(st[0].variance_neuron.shape) == (12, 1)
    for G in seq:
        u, st = normuon.update([backend.asarray(G, dtype)], st, W, **hyper)
        W = [W[0] + u[0]]
    tol = 1e-9 if dtype == "float64" else 2e-3
    assert_close(W[0], want_W, backend, rtol=0, atol=tol * np.abs(want_W).max())
    assert_close(st[0].variance_neuron, want_v, backend, rtol=tol)
    # the rows of the step are balanced (Muon's are not): the row norms of the last step's
    # direction lie closer together than msign's
    from xpmat.optim import muon
    um, _ = muon.update([backend.asarray(seq[0], dtype)], muon.init(W), W, lr=1.0, momentum=0.0)
    un, _ = normuon.update([backend.asarray(seq[0], dtype)], normuon.init(W), W, lr=1.0, momentum=0.0,
                           beta2=0.0)
    spread = [np.ptp(np.linalg.norm(backend.to_numpy(x[0]), axis=1)) for x in (um, un)]
    assert spread[1] < 0.1 * spread[0]


def test_normuon_zero_gradient_options_and_bad_input(backend):
    from xpmat.optim import normuon

    p = [backend.asarray(np.ones((6, 4))), backend.asarray(np.ones((2, 6, 4)))]
    z = [backend.asarray(np.zeros((6, 4))), backend.asarray(np.zeros((2, 6, 4)))]
    u, st = normuon.update(z, normuon.init(p, flatten=False), p, flatten=False,
                           cautious_weight_decay=True, use_gram_newton_schulz=True)
    assert np.all(backend.to_numpy(u[0]) == 0) and np.all(backend.to_numpy(u[1]) == 0)
    assert tuple(st[1].variance_neuron.shape) == (2, 6, 1)
    with pytest.raises(ValueError, match="beta2"):
        normuon.init(p, beta2=1.0)
    with pytest.raises(TypeError, match="muon_beta2"):
        normuon.init(p, muon_beta2=0.9)
