"""SGD, AdaGrad, exponentiated gradient, steepest descent and SGD on the sphere.

Float64 NumPy references written from the equations of Stratos 2026 (§2.2–2.3.1, §3, §1.1 and
App. D, §7 eq. 69, §8.1), run against the functional cores on every backend; the equalities
with torch (SGD with Nesterov, Adagrad), Muon as steepest descent plus momentum, and
Lemma 8.1 (weight normalization) through ``torch.nn.utils.parametrizations.weight_norm``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_array, assert_close

import xpmat.optim as xo
from xpmat import inv_root
from xpmat.optim import adagrad, muon, sgd, sphere_sgd, steepest_descent
from xpmat.optim import exponentiated_gradient as eg

torch = pytest.importorskip("torch")


def _run(core, backend, params, grad_seq, dtype="float64", **hyper):
    """``core`` over a fixed gradient sequence; returns the parameters (host, float64)."""
    ps = [backend.asarray(p, dtype) for p in params]
    st = core.init(ps, **hyper)
    for grads in grad_seq:
        ups, st = core.update([backend.asarray(g, dtype) for g in grads], st, ps, **hyper)
        ps = xo.apply_updates(ps, ups)
    for p, p0 in zip(ps, params, strict=True):
        assert_array(p, backend, shape=np.shape(p0), dtype=dtype)
    return [backend.to_numpy(p) for p in ps]


def _seq(shapes, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]


# --------------------------------------------------------------------------------------------
# SGD (§2.2–2.3.1)
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
    params, seq = [np.ones(s) for s in shapes], _seq(shapes, 4)
    h = {"lr": 0.1, "momentum": 0.9, "nesterov": nesterov, "weight_decay": 0.01}
    got = _run(sgd, backend, params, seq, **h)
    want = sgd_reference(params, seq, lr=0.1, mu=0.9, nesterov=nesterov, wd=0.01)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_equals_torch_sgd(nesterov, dtype):
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=gen, dtype=dtype) for s in ((6, 5), (5,))]
    ours = [p.clone().requires_grad_() for p in ps]
    ref = [p.clone().requires_grad_() for p in ps]
    kw = {"lr": 0.05, "momentum": 0.9, "nesterov": nesterov, "weight_decay": 1e-2}
    a, b = xo.SGD(ours, **kw), torch.optim.SGD(ref, **kw)
    for _ in range(5):
        for p, q in zip(ours, ref, strict=True):
            p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
            q.grad = p.grad.clone()
        a.step()
        b.step()
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


# --------------------------------------------------------------------------------------------
# AdaGrad (§3)
def _pinv_sqrt_apply(O, g, eps, v=0.0):
    """``(v I + O)^{+1/2} g`` with 1 / (√λ + ε) on the resolved eigenvalues (NumPy eigh)."""
    lam, V = np.linalg.eigh(O + v * np.eye(len(O)))
    keep = lam > len(lam) * np.finfo(np.float64).eps / 2 * lam.max()
    f = np.where(keep, 1.0 / (np.sqrt(np.where(keep, lam, 1.0)) + eps), 0.0)
    return V @ (f * (V.T @ g))


def adagrad_reference(params, grad_seq, *, lr, eps, kind, max_dim=None, rank=None, v0=0.0,
                      lr_decay=0.0, wd=0.0):
    """Eq. 44 (diagonal), §3.2.1 (full, blocks; rank r: the best rank-r approximation of the
    running sum after each step), eq. 33 (norm)."""
    w = [np.array(p, dtype=np.float64) for p in params]
    acc = [None] * len(w)
    for t, grads in enumerate(grad_seq):
        for i, g in enumerate(grads):
            d = (g + wd * w[i]).ravel()
            if kind == "diagonal":
                acc[i] = (np.full(d.shape, v0) if acc[i] is None else acc[i]) + d * d
                u = d / (np.sqrt(acc[i]) + eps)
            elif kind == "norm":
                acc[i] = (v0 if acc[i] is None else acc[i]) + d @ d
                u = d / (np.sqrt(acc[i]) + eps)
            else:
                nb = -(-d.size // max_dim)
                bs = -(-d.size // nb)
                D = np.concatenate([d, np.zeros(nb * bs - d.size)]).reshape(nb, bs)
                if acc[i] is None:
                    acc[i] = np.zeros((nb, bs, bs))
                acc[i] = acc[i] + D[:, :, None] * D[:, None, :]
                U = []
                for k in range(nb):
                    O = acc[i][k]
                    if rank is not None and rank < bs:  # keep the top-r eigenpairs
                        lam, V = np.linalg.eigh(O)
                        V, lam = V[:, -rank:], lam[-rank:]
                        acc[i][k] = O = (V * lam) @ V.T
                        Uk = V @ ((V.T @ D[k]) / (np.sqrt(np.maximum(lam, 0) + v0) + eps)
                                  * (lam + v0 > bs * 1.2e-16 * (lam.max() + v0)))
                        if v0:
                            Uk = Uk + (D[k] - V @ (V.T @ D[k])) / (np.sqrt(v0) + eps)
                        U.append(Uk)
                    else:
                        U.append(_pinv_sqrt_apply(O, D[k], eps, v0))
                u = np.concatenate(U)[:d.size]
            w[i] = w[i] - lr / (1 + t * lr_decay) * u.reshape(w[i].shape)
    return w


@pytest.mark.parametrize(("kind", "extra"), [
    ("diagonal", {"lr_decay": 0.1, "initial_accumulator_value": 0.1, "weight_decay": 0.01}),
    ("norm", {"initial_accumulator_value": 0.5}),
])
def test_adagrad_matches_reference(backend, kind, extra):
    _check_adagrad(backend, kind, extra)


@pytest.mark.parametrize("extra", [
    {"max_dim": 5},
    {"max_dim": 5, "initial_accumulator_value": 0.3},
    {"max_dim": 8, "rank": 2},
    {"max_dim": 8, "rank": 2, "initial_accumulator_value": 0.3},
])
def test_adagrad_full_matches_reference(backend, extra):
    _check_adagrad(backend, "full", extra)


def _check_adagrad(backend, kind, extra):
    shapes = [(4, 3), (3,), (1, 1)]
    params, seq = [np.ones(s) for s in shapes], _seq(shapes, 5, seed=2)
    h = {"lr": 0.1, "eps": 1e-8, "preconditioner": kind, **extra}
    got = _run(adagrad, backend, params, seq, **h)
    want = adagrad_reference(params, seq, lr=0.1, eps=1e-8, kind=kind, max_dim=extra.get("max_dim"),
                             rank=extra.get("rank"), v0=extra.get("initial_accumulator_value", 0.0),
                             lr_decay=extra.get("lr_decay", 0.0), wd=extra.get("weight_decay", 0.0))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_adagrad_full_is_inv_root_and_low_rank_is_exact_early(backend):
    """The exact full step with ε = 0 is ``xpmat.inv_root(O, 2) @ g`` (a pseudo-inverse root);
    while the number of steps is at most the rank, the rank-r form equals the exact one."""
    rng = np.random.default_rng(3)
    gs = [rng.standard_normal(6) for _ in range(3)]
    p = [backend.asarray(np.zeros(6))]
    exact, low = adagrad.transform(preconditioner="full", eps=0.0, lr=1.0), \
        adagrad.transform(preconditioner="full", eps=0.0, lr=1.0, rank=3)
    se, sl = exact.init(p), low.init(p)
    O = np.zeros((6, 6))
    for g in gs:
        O += np.outer(g, g)
        ue, se = exact.update([backend.asarray(g)], se, p)
        ul, sl = low.update([backend.asarray(g)], sl, p)
        want = -np.asarray(inv_root(O, 2)) @ g
        assert_close(ue[0], want, backend, rtol=1e-8, atol=1e-10)
        assert_close(ul[0], want, backend, rtol=1e-8, atol=1e-10)
    assert tuple(sl[0].eigvecs.shape) == (1, 6, 3) and sl[0].sum is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_adagrad_equals_torch_adagrad(dtype):
    """Diagonal AdaGrad with a zero initial accumulator is torch.optim.Adagrad (and with the
    other torch arguments too)."""
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=gen, dtype=dtype) for s in ((6, 5), (5,))]
    for kw in ({"lr": 0.1}, {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.01,
                             "initial_accumulator_value": 0.2, "eps": 1e-6}):
        ours = [p.clone().requires_grad_() for p in ps]
        ref = [p.clone().requires_grad_() for p in ps]
        a, b = xo.AdaGrad(ours, **kw), torch.optim.Adagrad(ref, **kw)
        for _ in range(5):
            for p, q in zip(ours, ref, strict=True):
                p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
                q.grad = p.grad.clone()
            a.step()
            b.step()
        for p, q in zip(ours, ref, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-13 if dtype == torch.float64 else 1e-6, atol=0)
            torch.testing.assert_close(a.state[p]["sum"], b.state[q]["sum"])


# --------------------------------------------------------------------------------------------
# exponentiated gradient (§1.1, App. D)
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
    seq = _seq(shapes, 3, seed=5)
    lr, beta = 0.7, 0.3
    got = _run(eg, backend, params, seq, lr=lr, mirror=mirror, scale=beta)
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


# --------------------------------------------------------------------------------------------
# steepest descent (§7 eq. 69)
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
    params, seq = [rng.standard_normal((4, 3))], _seq([(4, 3)], 5, seed=9)
    for nest in (False, True):
        h = {"lr": 0.2, "momentum": 0.8, "nesterov": nest}
        a = _run(steepest_descent, _numpy(), params, seq, norm="fro", scaling="mm", **h)
        b = _run(sgd, _numpy(), params, seq, **{**h, "lr": 0.2 * (1 - 0.8)})
        np.testing.assert_allclose(a[0], b[0], rtol=1e-13)


def _numpy():
    from conftest import get_backend

    return get_backend("numpy")


# --------------------------------------------------------------------------------------------
# SGD on the sphere (§8.1)
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
    params, seq = [rng.standard_normal(s) for s in shapes], _seq(shapes, 3, seed=11)
    got = _run(sphere_sgd, backend, params, seq, lr=lr, method=method, radius=r)
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
