"""Steepest descent under a norm (§7 eq. 69): every norm and scaling against NumPy, Muon as the
spectral trust-region member plus momentum, the Frobenius MM member with momentum as SGD."""

from __future__ import annotations

import numpy as np
import pytest
from optim_helpers import gaussian_seq, numpy_backend, run_to_host

import xpmat.optim as xo
from xpmat.optim import muon, sgd, steepest_descent


def _eq69(G, norm, scaling, lr):
    """Eq. 69 from the SVD and the elementwise norms."""
    if norm == "fro":
        return -lr * (G if scaling == "mm" else G / np.linalg.norm(G))
    if norm == "linf":
        return -lr * (np.abs(G).sum() if scaling == "mm" else 1.0) * np.sign(G)
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    return -lr * (s.sum() if scaling == "mm" else 1.0) * (U @ Vt)


def _dual(G, norm):
    return {"fro": np.linalg.norm(G), "linf": np.abs(G).sum(),
            "spectral": np.linalg.svd(G, compute_uv=False).sum()}[norm]


def _primal(D, norm):
    return {"fro": np.linalg.norm(D), "linf": np.abs(D).max(), "spectral": np.linalg.norm(D, 2)}[norm]


@pytest.mark.parametrize("scaling", ["tr", "mm"])
@pytest.mark.parametrize("norm", ["fro", "linf", "spectral"])
def test_steepest_descent_eq69(backend, norm, scaling):
    """Each update is eq. 69 (SVD reference), and solves eq. 67 / 68: TR has ‖Δ‖ = η and
    ⟨G, Δ⟩ = −η‖G‖_*; MM has ⟨G, Δ⟩ + ‖Δ‖²/(2η) = −η‖G‖_*²/2 (its minimum)."""
    from conftest import matrix_with_spectrum

    G = matrix_with_spectrum(7, 4, np.array([1.0, 0.9, 0.7, 0.5]), seed=1)[0]
    g1 = np.array([3.0, -4.0])  # a vector: a column under the spectral norm
    lr = 0.3
    p = [backend.asarray(np.zeros((7, 4))), backend.asarray(np.zeros(2))]
    h = {"lr": lr, "norm": norm, "scaling": scaling, "ns_steps": 12}
    u, _ = steepest_descent.update([backend.asarray(G), backend.asarray(g1)], steepest_descent.init(p, **h),
                                   p, **h)
    D = backend.to_numpy(u[0])
    tol = 1e-12 if norm != "spectral" else 1e-6
    np.testing.assert_allclose(D, _eq69(G, norm, scaling, lr), rtol=tol, atol=tol)
    vec = {"fro": "fro", "linf": "linf", "spectral": "fro"}[norm]  # a column: spectral = ℓ2
    np.testing.assert_allclose(backend.to_numpy(u[1]), _eq69(g1[:, None], vec, scaling, lr)[:, 0], rtol=1e-12)
    star = _dual(G, norm)
    if scaling == "tr":
        assert _primal(D, norm) == pytest.approx(lr, rel=tol)
        assert np.sum(G * D) == pytest.approx(-lr * star, rel=tol)
    else:
        assert np.sum(G * D) + _primal(D, norm) ** 2 / (2 * lr) == pytest.approx(-lr * star ** 2 / 2, rel=tol)
    z, _ = steepest_descent.update([backend.asarray(np.zeros((7, 4))), backend.asarray(np.zeros(2))],
                                   steepest_descent.init(p, **h), p, **h)
    assert not np.any(backend.to_numpy(z[0])) and not np.any(backend.to_numpy(z[1]))


def test_muon_is_spectral_trust_region_steepest_descent_plus_momentum(backend):
    """On matrices, Muon (adjust_lr_fn="none") is steepest descent under the spectral norm
    with trust-region scaling and Muon's momentum: the composed chains share their blocks
    (bitwise), the fused Muon agrees to rounding."""
    rng = np.random.default_rng(7)
    shapes = [(8, 5), (8, 5), (5, 8), (3, 2, 2, 2)]
    params = [backend.asarray(rng.standard_normal(s)) for s in shapes]
    h = {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}
    sd, composed, fused = (steepest_descent.transform(**h), muon.composed(adjust_lr_fn="none", **h),
                           muon.transform(adjust_lr_fn="none", **h))
    states = [t.init(params) for t in (sd, composed, fused)]
    for _ in range(3):
        grads = [backend.asarray(rng.standard_normal(s)) for s in shapes]
        outs = []
        for k, t in enumerate((sd, composed, fused)):
            u, states[k] = t.update(grads, states[k], params)
            outs.append([backend.to_numpy(x) for x in u])
        for a, b, c in zip(*outs, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-14)
        params = xo.apply_updates(params, u)


def test_steepest_descent_fro_mm_with_momentum_is_sgd():
    """The Frobenius / MM member with (EMA) momentum μ is SGD with the step (1 − μ) η."""
    rng = np.random.default_rng(8)
    params, seq = [rng.standard_normal((4, 3))], gaussian_seq([(4, 3)], 5, seed=9)
    for nest in (False, True):
        h = {"lr": 0.2, "momentum": 0.8, "nesterov": nest}
        a = run_to_host(steepest_descent, numpy_backend(), params, seq, norm="fro", scaling="mm", **h)
        b = run_to_host(sgd, numpy_backend(), params, seq, **{**h, "lr": 0.2 * (1 - 0.8)})
        np.testing.assert_allclose(a[0], b[0], rtol=1e-13)
