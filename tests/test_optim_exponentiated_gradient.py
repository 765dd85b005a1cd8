"""Exponentiated gradient (§1.1, App. D): every mirror against a NumPy reference, mirror descent
on the simplex, and the refusal of points off it (core and torch class)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from optim_helpers import gaussian_seq, run_to_host

import xpmat.optim as xo
from xpmat.optim import exponentiated_gradient as eg

torch = pytest.importorskip("torch")


def _simplex_rows(rng, shape):
    x = rng.random(shape) + 0.05
    return x / x.sum(axis=-1, keepdims=True)


def _project_by_bisection(v):
    """Euclidean projection of a vector onto the simplex: τ with Σ max(v − τ, 0) = 1 by bisection."""
    lo, hi = v.min() - 1, v.max()
    for _ in range(200):
        tau = (lo + hi) / 2
        lo, hi = (tau, hi) if np.maximum(v - tau, 0).sum() > 1 else (lo, tau)
    return np.maximum(v - (lo + hi) / 2, 0)


@pytest.mark.parametrize("mirror", ["entropy", "euclidean", "hypentropy"])
def test_exponentiated_gradient_matches_reference(backend, mirror):
    rng = np.random.default_rng(4)
    shapes = [(3, 5), (4,)]
    params = [_simplex_rows(rng, s) for s in shapes]
    params[1][0] = 0.0  # a zero entry (the entropy mirror never grows the support)
    params[1] /= params[1].sum()
    seq = gaussian_seq(shapes, 3, seed=5)
    lr, beta = 0.7, 0.3
    got = run_to_host(eg, backend, params, seq, lr=lr, mirror=mirror, scale=beta)
    w = [p.copy() for p in params]
    for grads in seq:
        for i, g in enumerate(grads):
            if mirror == "entropy":  # eq. 91
                e = w[i] * np.exp(-lr * g)
                w[i] = e / e.sum(axis=-1, keepdims=True)
            elif mirror == "euclidean":  # eq. 2–3 with ψ = ½‖w‖²: gradient step, projection
                w[i] = np.apply_along_axis(_project_by_bisection, -1, w[i] - lr * g)
            else:
                w[i] = beta * np.sinh(np.arcsinh(w[i] / beta) - lr * g)
    for a, b in zip(got, w, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    if mirror != "hypentropy":
        np.testing.assert_allclose(got[0].sum(axis=-1), 1.0, rtol=1e-13)
        assert (got[0] >= 0).all() and (got[1][0] == 0.0 or mirror == "euclidean")


def test_exponentiated_gradient_is_mirror_descent_and_refuses_off_simplex(backend):
    """Eq. 90's optimality condition: ``log w_new − log w + η g`` is the same for every entry
    of a row (the multiplier of Σ w = 1); inputs off the simplex raise at init."""
    rng = np.random.default_rng(6)
    W, g = _simplex_rows(rng, (2, 6)), rng.standard_normal((2, 6))
    p = [backend.asarray(W)]
    u, _ = eg.update([backend.asarray(g)], eg.init(p), p, lr=0.5)
    new = W + backend.to_numpy(u[0])
    c = np.log(new) - np.log(W) + 0.5 * g
    np.testing.assert_allclose(c - c[:, :1], 0.0, atol=1e-12)
    for bad, why in ((np.array([0.5, 0.6]), "row sums"), (np.array([1.5, -0.5]), "min entry")):
        with pytest.raises(ValueError, match=f"not on the probability simplex.*{why}"):
            eg.init([backend.asarray(bad)])
    eg.init([backend.asarray(np.array([-3.0, 2.0]))], mirror="hypentropy")  # any sign
    z, _ = eg.update([backend.asarray(g)], eg.init(p), p, lr=0.0)
    assert_close(z[0], np.zeros((2, 6)), backend, rtol=0, atol=0)
    assert_close(eg.project_simplex(backend.asarray(np.array([[2.0, 0.0], [0.2, 0.2]]))),
                 np.array([[1.0, 0.0], [0.5, 0.5]]), backend, rtol=1e-15)


def test_exponentiated_gradient_torch_class_checks_simplex():
    w = torch.full((2, 4), 0.25, dtype=torch.float64, requires_grad=True)
    opt = xo.ExponentiatedGradient([w], lr=1.0)
    w.grad = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 2.0]], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(w.detach().sum(1), torch.ones(2, dtype=torch.float64))
    assert w[0, 0] < 0.25 < w[0, 1]
    bad = torch.ones(3, requires_grad=True)
    bad.grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"params\[0\] of shape \(3,\) is not on the probability simplex"):
        xo.ExponentiatedGradient([bad]).step()
