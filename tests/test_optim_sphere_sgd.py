"""SGD on the sphere (§8.1): pin, classical and trust-region steps against NumPy, the ℓ∞ trust
region against a linear program (eq. 73), Lemma 8.1 through torch's ``weight_norm``."""

from __future__ import annotations

import numpy as np
import pytest
from optim_helpers import gaussian_seq, run_to_host

from xpmat.optim import sphere_sgd

torch = pytest.importorskip("torch")


def sphere_reference(w, g, r, lr, method):
    """Eq. 70 (pin), 72 (classical, its closed-form factor), 73 with ℓ2 (v⊥ / ‖v⊥‖)."""
    w = r * w / np.linalg.norm(w)
    if method == "pin":
        x = w - lr * g
        return r * x / np.linalg.norm(x)
    gp = g - w * (w @ g) / r ** 2
    if method == "classical":
        return r / np.sqrt(r ** 2 + lr ** 2 * gp @ gp) * (w - lr * gp)
    x = w - lr * gp / np.linalg.norm(gp)
    return r * x / np.linalg.norm(x)


@pytest.mark.parametrize("method", ["pin", "classical", "trust_region"])
def test_sphere_sgd_matches_reference(backend, method):
    rng = np.random.default_rng(10)
    shapes, r, lr = [(3, 4), (5,), (2, 1, 2)], 1.5, 0.3
    params, seq = [rng.standard_normal(s) for s in shapes], gaussian_seq(shapes, 3, seed=11)
    got = run_to_host(sphere_sgd, backend, params, seq, lr=lr, method=method, radius=r)
    for i, (p0, p) in enumerate(zip(params, got, strict=True)):
        w = p0.reshape(p0.shape[0], -1) if p0.ndim > 1 else p0[None, :]
        for grads in seq:
            g = grads[i].reshape(w.shape)
            w = np.stack([sphere_reference(w[k], g[k], r, lr, method) for k in range(len(w))])
        np.testing.assert_allclose(p.reshape(w.shape), w, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(w, axis=-1), r, rtol=1e-13)


def test_sphere_trust_region_linf_solves_eq73(backend):
    """ℓ∞ trust region (Lemma S.21): the step's objective equals the LP optimum of eq. 73
    (scipy's linprog on max Δᵀg, |Δ_i| ≤ η, Δᵀw = 0), it is feasible, and the parameter
    lands back on the sphere."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(12)
    W, G, eta = rng.standard_normal((4, 7)), rng.standard_normal((4, 7)), 0.2
    Z = backend.to_numpy(sphere_sgd.linf_tangent_direction(backend.asarray(G), backend.asarray(W)))
    for w, g, z in zip(W, G, Z, strict=True):
        lp = linprog(-g, A_eq=w[None, :], b_eq=[0.0], bounds=[(-1, 1)] * 7)
        assert np.abs(z).max() <= 1 + 1e-12 and abs(z @ w) < 1e-12 * np.abs(w).sum()
        assert z @ g == pytest.approx(-lp.fun, rel=1e-9)
    p = [backend.asarray(W)]
    u, _ = sphere_sgd.update([backend.asarray(G)], sphere_sgd.init(p), p, lr=eta, method="trust_region",
                             norm="linf", radius=2.0)
    np.testing.assert_allclose(np.linalg.norm(W + backend.to_numpy(u[0]), axis=1), 2.0, rtol=1e-13)
    with pytest.raises(ValueError, match="needs method='trust_region'"):
        sphere_sgd.init(p, norm="linf")


def test_weight_norm_frozen_scale_is_classical_sphere_step():
    """Lemma 8.1 (eq. 76): weight normalization with the scale frozen at r, one SGD step of
    size η on the direction v, gives w_{t+1} = the classical step (eq. 72) with
    α_t = η r² / ‖v_t‖² (per row)."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    r, eta = 1.7, 0.3
    lin = weight_norm(torch.nn.Linear(5, 3, bias=False).double(), dim=0)
    g_param, v_param = lin.parametrizations.weight.original0, lin.parametrizations.weight.original1
    with torch.no_grad():
        g_param.fill_(r)
        v_param.mul_(torch.tensor([[0.5], [2.0], [1.3]], dtype=torch.float64))  # unequal ‖v‖
    g_param.requires_grad_(False)
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    w_t = lin.weight.detach().clone()
    wa = w_t.clone().requires_grad_()  # the ambient gradient g_w at w_t
    torch.nn.functional.mse_loss(x @ wa.T, y).backward()
    v_norm = v_param.detach().norm(dim=1)
    opt = torch.optim.SGD([v_param], lr=eta)
    torch.nn.functional.mse_loss(lin(x), y).backward()
    opt.step()
    w_next = lin.weight.detach()
    for k in range(3):
        p = [w_t[k]]
        u, _ = sphere_sgd.update([wa.grad[k]], sphere_sgd.init(p), p, method="classical", radius=r,
                                 lr=float(eta * r ** 2 / v_norm[k] ** 2))
        torch.testing.assert_close(p[0] + u[0], w_next[k], rtol=1e-12, atol=1e-14)
