"""SGD (§2.2–2.3.1): a NumPy float64 reference of eq. 25–26 on every backend, torch.optim.SGD
(with Nesterov), and Lemma S.10 (double momentum is Nesterov's look-ahead)."""

from __future__ import annotations

import numpy as np
import pytest
from optim_helpers import beside_torch, gaussian_seq, run_to_host

import xpmat.optim as xo
from xpmat.optim import sgd

torch = pytest.importorskip("torch")


def sgd_reference(params, grad_seq, *, lr, mu, nesterov, wd):
    """Eq. 25–26 (and the double-momentum form of §2.3.1), weight decay added to g."""
    w = [np.array(p, dtype=np.float64) for p in params]
    v = [np.zeros_like(p) for p in w]
    for grads in grad_seq:
        for i, g in enumerate(grads):
            d = g + wd * w[i]
            v[i] = d + mu * v[i]
            w[i] = w[i] - lr * (d + mu * v[i] if nesterov else v[i])
    return w


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_reference(backend, nesterov):
    shapes = [(4, 3), (3,), (2, 1, 2, 2)]
    params, seq = [np.ones(s) for s in shapes], gaussian_seq(shapes, 4)
    h = {"lr": 0.1, "momentum": 0.9, "nesterov": nesterov, "weight_decay": 0.01}
    got = run_to_host(sgd, backend, params, seq, **h)
    want = sgd_reference(params, seq, lr=0.1, mu=0.9, nesterov=nesterov, wd=0.01)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_equals_torch_sgd(nesterov, dtype):
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=gen, dtype=dtype) for s in ((6, 5), (5,))]
    kw = {"lr": 0.05, "momentum": 0.9, "nesterov": nesterov, "weight_decay": 1e-2}
    a, b, ours, ref = beside_torch(xo.SGD, torch.optim.SGD, ps, kw, gen)
    for p, q in zip(ours, ref, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-14 if dtype == torch.float64 else 1e-6, atol=0)
        torch.testing.assert_close(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"])
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        xo.SGD(ours, nesterov=True)


def test_sgd_double_momentum_is_nesterov():
    """Lemma S.10: for constant η and μ, the double-momentum iterate is Nesterov's look-ahead
    point ``x_t = w_t − η μ v_{t−1}`` of eq. 28–31 (on a quadratic, gradients at x_t)."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 5))
    A, b = A @ A.T / 5 + np.eye(5), rng.standard_normal(5)
    lr, mu = 0.1, 0.8
    w, v = np.zeros(5), np.zeros(5)  # eq. 28–31
    x = [np.zeros(5)]
    st = sgd.init(x)
    for _ in range(20):
        g = A @ (w - lr * mu * v) - b
        v = g + mu * v
        w = w - lr * v
        u, st = sgd.update([A @ x[0] - b], st, x, lr=lr, momentum=mu, nesterov=True)
        x = xo.apply_updates(x, u)
        np.testing.assert_allclose(x[0], w - lr * mu * v, rtol=1e-12, atol=1e-14)
