"""LRE's options beyond covariance / direct / Adam: per-sample curvatures (fisher, gauss_newton),
bases (nystrom, hebbian, random, full), the chainable inner optimizers, against float64 NumPy
references; validation; state_dict resume and the digits MLP for every option of the docs table
(``docs/scripts/lre_options.py``).
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import SLOW_OPTIMIZER_MODULE, assert_array, assert_close

import xpmat.optim as xo
from xpmat.optim import lre

ROOT = Path(__file__).resolve().parents[1]
EPS64 = float(np.finfo(np.float64).eps)


def _load_options():
    spec = importlib.util.spec_from_file_location("lre_options", ROOT / "docs" / "scripts" / "lre_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OPTIONS


OPTIONS = _load_options()

pytestmark = SLOW_OPTIMIZER_MODULE  # skipped on eager JAX and on Dask (conftest)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one thread is several times faster than two on a loaded 2-core machine."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _principal_angle(A, B):
    """sin of the largest principal angle between span(A) and span(B)."""
    qa, _ = np.linalg.qr(A)
    qb, _ = np.linalg.qr(B)
    return float(np.linalg.norm(qb - qa @ (qa.T @ qb), 2))


def _np(backend, a):
    return backend.to_numpy(a)


# --------------------------------------------------------------------------------------------
# per-sample curvatures: the functional core takes the (n, k) correction block
@pytest.mark.parametrize("curvature, root", [("fisher", 2), ("gauss_newton", 1)])
def test_per_sample_curvature_equals_explicit(backend, curvature, root):
    """rank = n: Q diag(L) Qᵀ is the EMA of C Cᵀ; "precondition" is V (λ̂ + ε)^(−1/p) Vᵀ g with
    p = 2 (fisher, a covariance) or 1 (gauss_newton, a Hessian approximation)."""
    n, k, beta, lr, eps = 5, 3, 0.8, 0.5, 1e-3
    rng = np.random.default_rng(4)
    Cs = [rng.standard_normal((n, k)) for _ in range(6)]
    hyper = {"rank": n, "curvature": curvature, "beta": beta, "inner": "precondition", "lr": lr,
             "eps": eps, "eig_rtol": 1e-12}
    params = [backend.asarray(np.zeros(n))]
    st = lre.init(params, **hyper)
    M = np.zeros((n, n))
    for C in Cs:
        g = C.sum(axis=1)
        u, st = lre.update([backend.asarray(g)], st, params, corrections=[backend.asarray(C)], **hyper)
        M = beta * M + (1 - beta) * C @ C.T
    L, Q = _np(backend, st[0].L)[0], _np(backend, st[0].Q)[0]
    np.testing.assert_allclose((Q * L) @ Q.T, M, rtol=0, atol=1e-12 * np.abs(M).max())
    w, V = np.linalg.eigh(M / (1 - beta ** len(Cs)))
    assert_close(u[0], -lr * V @ ((V.T @ g) / (w + eps) ** (1.0 / root)), backend, rtol=1e-9, atol=1e-12)


def test_per_sample_corrections_are_checked():
    p = [np.zeros((2, 3))]
    st = lre.init(p, curvature="fisher")
    with pytest.raises(ValueError, match=r"corrections\[0\] must be \(n, k\) with n = 6"):
        lre.update([np.ones((2, 3))], st, p, corrections=[np.ones((2, 3))], curvature="fisher")
    with pytest.raises(ValueError, match="needs its correction vectors"):
        lre.update([np.ones((2, 3))], st, p, curvature="fisher")
    with pytest.raises(ValueError, match="corrections has 2 arrays for 1 parameters"):
        lre.update([np.ones((2, 3))], st, p, corrections=[np.ones((6, 2))] * 2, curvature="fisher")


def test_nonfinite_correction_skips_the_step():
    p = [np.zeros(4), np.zeros(3)]
    h = {"curvature": "gauss_newton", "rank": 2}
    st = lre.init(p, **h)
    C0 = np.ones((4, 2))
    C0[1, 0] = np.nan
    u, st2 = lre.update([np.ones(4), np.ones(3)], st, p, corrections=[C0, np.ones((3, 2))], **h)
    assert np.all(u[0] == 0) and np.abs(u[1]).max() > 0
    np.testing.assert_array_equal(st2[0].L, st[0].L)
    assert float(st2[0].nonfinite_count) == 1 and float(st2[1].nonfinite_count) == 0


def _tiny_net(seed=0):
    """A 3-4-2 tanh network in float64 and a batch of 5 samples."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(seed)
    W1 = (0.5 * torch.randn(4, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    W2 = (0.5 * torch.randn(2, 4, generator=gen, dtype=torch.float64)).requires_grad_()
    X = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    Y = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    return [W1, W2], X, Y


def _per_sample_values(params, X, Y, kind):
    """fisher: per-sample squared errors ℓ_j; gauss_newton: the residuals r (5·2 of them)."""
    W1, W2 = params
    out = X @ W1.T
    out = out.tanh() @ W2.T - Y
    return (out ** 2).sum(1) if kind == "fisher" else out.reshape(-1)


@pytest.mark.parametrize("kind", ["fisher", "gauss_newton"])
def test_torch_per_sample_closure_equals_core(kind):
    """LRE(curvature=fisher / gauss_newton).step(closure returning per-sample values) equals the
    core fed per-sample gradients computed one sample at a time (rows of G / J), with the
    gradient Σ_j ∇ℓ_j / Jᵀ r; step returns Σ ℓ_j / ½ Σ r²."""
    torch = pytest.importorskip("torch")
    params, X, Y = _tiny_net()
    hyper = {"curvature": kind, "rank": 3, "lr": 0.1, "beta": 0.9}
    opt = xo.LRE(params, **hyper)
    ref = [p.detach().clone() for p in params]
    st = lre.init(ref, **hyper)
    for _ in range(4):
        ps = [p.clone().requires_grad_() for p in ref]
        vals = _per_sample_values(ps, X, Y, kind)
        rows = [torch.autograd.grad(v, ps, retain_graph=True) for v in vals]
        Js = [torch.stack([row[i].reshape(-1) for row in rows]) for i in range(2)]  # (k, n)
        r = vals.detach()
        grads = [(J.sum(0) if kind == "fisher" else r @ J).reshape(p.shape)
                 for J, p in zip(Js, ref, strict=True)]
        u, st = lre.update(grads, st, ref, corrections=[J.T for J in Js], **hyper)
        ref = xo.apply_updates(ref, u)
        loss = opt.step(lambda: _per_sample_values(params, X, Y, kind))
        want = r.sum() if kind == "fisher" else 0.5 * (r * r).sum()
        torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
    for a, b in zip(params, ref, strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=1e-10, atol=1e-12)


def test_torch_per_sample_errors():
    torch = pytest.importorskip("torch")
    params, X, Y = _tiny_net()
    opt = xo.LRE(params, curvature="fisher")
    with pytest.raises(ValueError, match="needs step\\(closure\\)"):
        opt.step()
    with pytest.raises(ValueError, match="tensor of per-sample losses"):
        opt.step(lambda: 3.0)
    mixed = xo.LRE([{"params": [params[0]], "curvature": "fisher"},
                    {"params": [params[1]], "curvature": "sr1"}])
    with pytest.raises(ValueError, match="one closure serves every group"):
        mixed.step(lambda: _per_sample_values(params, X, Y, "fisher"))
    assert torch.is_tensor(params[0])


# --------------------------------------------------------------------------------------------
# bases
def _gap_problem(n=20, seed=0):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return U, np.r_[[3.0, 2.0, 1.5], np.full(n - 3, 0.05)], rng


def test_nystrom_spans_top_r_and_agrees_with_direct(backend):
    """basis="nystrom" (xpmat.nystrom_eigh of β Q L Qᵀ + (1 − β) g gᵀ): after 40 steps with a gap
    it spans the top-3 eigenvectors of the explicit EMA and agrees with "direct"."""
    n, r, beta, steps = 20, 3, 0.9, 40
    U, s, rng = _gap_problem(n, 7)
    gs = [U @ (s * rng.standard_normal(n)) for _ in range(steps)]
    M = np.zeros((n, n))
    for g in gs:
        M = beta * M + (1 - beta) * np.outer(g, g)
    w, V = np.linalg.eigh(M)
    out = {}
    for basis in ("nystrom", "direct"):
        params = [backend.asarray(np.zeros(n))]
        st = lre.init(params, rank=r, beta=beta, basis=basis)
        for g in gs:
            _, st = lre.update([backend.asarray(g)], st, params, rank=r, beta=beta, basis=basis)
        out[basis] = _np(backend, st[0].Q)[0], _np(backend, st[0].L)[0]
    Q, L = out["nystrom"]
    assert _principal_angle(Q, V[:, -r:]) < 1e-3  # measured 1.3e-4
    np.testing.assert_allclose(L, w[::-1][:r], rtol=1e-4)
    np.testing.assert_allclose(L, out["direct"][1], rtol=1e-5)


def test_full_basis_is_the_explicit_eigendecomposition(backend):
    """basis="full": r = n whatever ``rank`` says; (L, Q) is eigh of the explicit EMA."""
    n, beta = 6, 0.7
    rng = np.random.default_rng(2)
    gs = [rng.standard_normal(n) * np.arange(1, n + 1) for _ in range(9)]
    params = [backend.asarray(np.zeros(n))]
    st = lre.init(params, basis="full", rank=2, beta=beta)
    assert_array(st[0].curvature_matrix, backend, shape=(1, n, n), dtype="float64")
    M = np.zeros((n, n))
    for g in gs:
        _, st = lre.update([backend.asarray(g)], st, params, basis="full", rank=2, beta=beta)
        M = beta * M + (1 - beta) * np.outer(g, g)
    L, Q = _np(backend, st[0].L)[0], _np(backend, st[0].Q)[0]
    assert L.shape == (n,)
    np.testing.assert_allclose(L, np.linalg.eigvalsh(M)[::-1], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose((Q * L) @ Q.T, M, rtol=0, atol=1e-12 * np.abs(M).max())
    assert_close(st[0].curvature_matrix, M[None], backend, rtol=1e-14, atol=0)


def test_hebbian_converges_to_ordered_eigenvectors(backend):
    """basis="hebbian" with the exact curvature every step (a fixed correction block C = U S, so
    M = U S² Uᵀ): Sanger's rule on the Stiefel manifold finds the top-3 eigenvectors in order
    and the Rayleigh quotients L their eigenvalues (measured sin 8e-6 after 240 steps)."""
    n, r = 20, 3
    U, _, _ = _gap_problem(n, 0)
    C = U * np.r_[[3.0, 2.0, 1.5], np.full(n - 3, 0.3)]
    h = {"rank": r, "basis": "hebbian", "hebbian_lr": 0.1, "beta": 0.9, "curvature": "fisher"}
    params = [backend.asarray(np.zeros(n))]
    st = lre.init(params, **h)
    for _ in range(240):
        _, st = lre.update([backend.asarray(C.sum(1))], st, params, corrections=[backend.asarray(C)], **h)
    Q, L = _np(backend, st[0].Q)[0], _np(backend, st[0].L)[0]
    np.testing.assert_allclose(Q.T @ Q, np.eye(r), atol=1e-12)
    for k in (1, 2, 3):
        assert _principal_angle(Q[:, :k], U[:, :k]) < 1e-3, k
    np.testing.assert_allclose(L, [9.0, 4.0, 2.25], rtol=1e-3)


def test_hebbian_step_formula():
    """One hebbian step equals the documented formula in NumPy (Sanger, tangent projection,
    AdamG moments, QR retraction, transported momentum)."""
    n, r, lr, (b1, b2) = 7, 2, 0.3, (0.8, 0.9)
    rng = np.random.default_rng(3)
    h = {"rank": r, "basis": "hebbian", "hebbian_lr": lr, "hebbian_betas": (b1, b2), "beta": 0.5}
    params = [np.zeros(n)]
    st = lre.init(params, **h)
    g1, g2 = rng.standard_normal(n), rng.standard_normal(n)
    _, st1 = lre.update([g1], st, params, **h)
    _, st2 = lre.update([g2], st1, params, **h)

    def sym(A):
        return 0.5 * (A + A.T)

    Q, m, v = st1[0].Q[0], st1[0].hebbian_momentum[0], st1[0].hebbian_sq[0]
    p = Q.T @ g2
    D = np.outer(g2, p) - Q @ np.triu(np.outer(p, p))
    D = D - Q @ sym(Q.T @ D)
    m = b1 * m + (1 - b1) * D
    v = b2 * v + (1 - b2) * np.sum(D * D)
    X = Q + lr * (m / (1 - b1 ** 2)) / np.sqrt(v / (1 - b2 ** 2))
    Qn, R = np.linalg.qr(X)
    Qn = Qn * np.sign(np.diag(R))
    np.testing.assert_allclose(st2[0].Q[0], Qn, atol=1e-13)
    np.testing.assert_allclose(st2[0].hebbian_momentum[0], m - Qn @ sym(Qn.T @ m), atol=1e-13)
    np.testing.assert_allclose(st2[0].hebbian_sq[0], v, rtol=1e-13)
    L1 = st1[0].L[0]
    Rm = Qn.T @ Q
    np.testing.assert_allclose(st2[0].L[0], 0.5 * (Rm * Rm) @ L1 + 0.5 * (Qn.T @ g2) ** 2, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# inner optimizers, on the fixed random basis, against NumPy
def _ref_adam(x, st, t, c):
    b1, b2 = c["betas"]
    st["m"] = b1 * st.get("m", 0 * x) + (1 - b1) * x
    st["v"] = b2 * st.get("v", 0 * x) + (1 - b2) * x * x
    return (st["m"] / (1 - b1 ** t)) / (np.sqrt(st["v"] / (1 - b2 ** t)) + c["eps"])


def _ref_sym_apply(V, m, f, rtol):
    w, E = np.linalg.eigh(V)
    ok = np.abs(w) > rtol * np.abs(w).max() if np.abs(w).max() > 0 else np.zeros_like(w, bool)
    return E @ (np.where(ok, f(np.where(ok, w, 1.0)), 0.0) * (E.T @ m))


def _ref_full_adam(x, st, t, c):
    b1, b2 = c["betas"]
    st["m"] = b1 * st.get("m", 0 * x) + (1 - b1) * x
    st["V"] = b2 * st.get("V", np.zeros((x.size, x.size))) + (1 - b2) * np.outer(x, x)
    return _ref_sym_apply(st["V"] / (1 - b2 ** t), st["m"] / (1 - b1 ** t),
                          lambda w: 1 / (np.sqrt(np.abs(w)) + c["eps"]), c["rtol"])


def _ref_hutchinson_adam(x, st, t, c):
    b1, b2 = c["betas"]
    d = c["s"] * c["y"]
    st["m"] = b1 * st.get("m", 0 * x) + (1 - b1) * x
    st["v"] = b2 * st.get("v", 0 * x) + (1 - b2) * d * d
    return (st["m"] / (1 - b1 ** t)) / (np.sqrt(st["v"] / (1 - b2 ** t)) + c["eps"])


def _ref_full_bfgs_adam(x, st, t, c):
    b1, b2 = c["betas"]
    s, y, r = c["s"], c["y"], x.size
    B, sigma = st.get("B", np.zeros((r, r))), st.get("sigma", 0.0)
    qtol = max(1e-8, np.sqrt(EPS64))
    ys, tol = y @ s, qtol * np.linalg.norm(y) * np.linalg.norm(s)
    if ys > tol:
        if sigma == 0:
            sigma = (y @ y) * (1 / ys)
            B = sigma * np.eye(r)
        Bs = B @ s
        T = B + np.outer(y, y) / ys
        if s @ Bs > qtol * np.linalg.norm(Bs) * np.linalg.norm(s):
            T = T - np.outer(Bs, Bs) / (s @ Bs)
        B = B + (1 - b2) * (T - B)
    st["B"], st["sigma"] = B, sigma
    st["m"] = b1 * st.get("m", 0 * x) + (1 - b1) * x
    mh = st["m"] / (1 - b1 ** t)
    return mh if sigma == 0 else _ref_sym_apply(B, mh, lambda w: 1 / (np.abs(w) + c["eps"]), c["rtol"])


def _ref_lion(x, st, t, c):
    b1, b2 = c["betas"]
    m = st.get("lion", 0 * x)
    st["lion"] = m + (1 - b2) * (x - m)
    return np.sign(m + (1 - b1) * (x - m))


def _ref_ema(x, st, t, c):
    st["B"] = c["ema_beta"] * st.get("B", 0 * x) + (1 - c["ema_beta"]) * x
    return st["B"]


def _ref_normalize(x, st, t, c):
    b = c["norm_beta"]
    st["a"] = b * st.get("a", 0 * x) + (1 - b) * x
    return x * np.linalg.norm(st["a"] / (1 - b ** t)) / np.linalg.norm(x)


_REF = {
    "adam": _ref_adam, "full_adam": _ref_full_adam, "hutchinson_adam": _ref_hutchinson_adam,
    "full_bfgs_adam": _ref_full_bfgs_adam, "lion": _ref_lion, "ema": _ref_ema,
    "normalize_by_ema": _ref_normalize,
    "cautious": lambda x, st, t, c: x * (x * c["g"] > 0),
    "clip_norm": lambda x, st, t, c: x * min(1.0, c["clip_norm"] / np.linalg.norm(x)),
    "clip_value": lambda x, st, t, c: np.clip(x, -c["clip_value"], c["clip_value"]),
    "precondition": lambda x, st, t, c: x / np.sqrt(c["Lh"] + c["eps"]),
    "inverse": lambda x, st, t, c: x / (c["Lh"] + c["eps"]),
}

CHAINS = [["adam"], ["lion"], ["full_adam"], ["precondition", "ema"], ["adam", "normalize_by_ema"],
          ["adam", "cautious", "clip_norm"], ["ema", "inverse", "clip_value"], ["hutchinson_adam"],
          ["full_bfgs_adam", "cautious"]]


@pytest.mark.parametrize("chain", CHAINS, ids=["+".join(c) for c in CHAINS])
def test_inner_chain_matches_numpy(backend, chain):
    """On the fixed random basis (``Q`` never moves) every inner step, chained, equals a NumPy
    transcription over 6 steps; ``L`` is the EMA of the Rayleigh quotients."""
    n, r, beta, lr = 6, 3, 0.8, 0.1
    hess = any(c in ("hutchinson_adam", "full_bfgs_adam") for c in chain)
    H = np.diag(np.linspace(1.0, 3.0, n)) + 0.1
    cfg = {"betas": (0.8, 0.9), "eps": 1e-3, "ema_beta": 0.7, "norm_beta": 0.6, "clip_norm": 0.5,
           "clip_value": 0.3, "rtol": max(1e-7, r * EPS64)}
    hyper = {"rank": r, "basis": "random", "beta": beta, "lr": lr, "inner": chain,
             "curvature": "hutchinson" if hess else "covariance",
             **{k: v for k, v in cfg.items() if k != "rtol" and (not k.startswith("clip") or k in chain)}}
    params = [backend.asarray(np.zeros(n))]
    st = lre.init(params, **hyper)
    Q = _np(backend, st[0].Q)[0]
    probes = []

    def hvp(vs):
        probes.append(_np(backend, vs[0]))
        return [backend.asarray(H @ probes[-1])]

    rng = np.random.default_rng(9)
    L, states = np.zeros(r), [{} for _ in chain]
    for t in range(1, 7):
        g = rng.standard_normal(n)
        u, st = lre.update([backend.asarray(g)], st, params, hvp=hvp if hess else None, **hyper)
        if hess:
            z = probes[-1]
            rq = (Q.T @ (H @ z)) * (Q.T @ z)
        else:
            rq = (Q.T @ g) ** 2
        L = beta * L + (1 - beta) * rq
        Lh = L / (1 - beta ** t)
        keep = Lh > cfg["rtol"] * np.abs(Lh).max()
        x = keep * (Q.T @ g)
        c = dict(cfg, g=x, Lh=Lh)
        if hess:
            c.update(s=keep * (Q.T @ z), y=keep * (Q.T @ (H @ z)))
        for name, s in zip(chain, states, strict=True):
            x = _REF[name](x, s, t, c)
        assert_close(u[0], -lr * Q @ (keep * x), backend, rtol=1e-9, atol=1e-13)


def test_full_adam_moments_rotate_with_the_basis():
    """basis="direct", update_freq=2: on the step that moves the basis, full_adam's outer
    second moment becomes β₂ R V Rᵀ + (1 − β₂) x xᵀ (R = Q₃ᵀ Q₂)."""
    n, r, b2 = 9, 3, 0.9
    h = {"rank": r, "inner": "full_adam", "betas": (0.8, b2), "update_freq": 2, "beta": 0.8}
    rng = np.random.default_rng(3)
    params = [np.zeros(n)]
    st = lre.init(params, **h)
    snaps = []
    for _ in range(3):
        g = rng.standard_normal(n)
        _, st = lre.update([g], st, params, **h)
        snaps.append(st[0])
    R = snaps[2].Q[0].T @ snaps[1].Q[0]
    L = snaps[2].L[0]
    keep = L > max(1e-7, r * EPS64) * np.abs(L).max()
    x = keep * (snaps[2].Q[0].T @ g)
    want = b2 * R @ snaps[1].exp_avg_outer[0] @ R.T + (1 - b2) * np.outer(x, x)
    np.testing.assert_allclose(snaps[2].exp_avg_outer[0], want, rtol=1e-12, atol=1e-14)


def test_chain_spellings_agree():
    """A single name is a chain of one; ``clip_norm=c`` appends "clip_norm" to the chain."""
    rng = np.random.default_rng(0)
    gs = [rng.standard_normal(7) for _ in range(4)]

    def run(**h):
        p = [np.zeros(7)]
        st = lre.init(p, rank=3, **h)
        for g in gs:
            u, st = lre.update([g], st, p, rank=3, **h)
        return u[0]

    np.testing.assert_array_equal(run(inner="lion"), run(inner=["lion"]))
    np.testing.assert_array_equal(run(inner="adam", clip_norm=0.1),
                                  run(inner=["adam", "clip_norm"], clip_norm=0.1))
    assert lre.inner_chain({"inner": "adam", "clip_norm": None, "clip_value": 0.2}) == ("adam", "clip_value")


# --------------------------------------------------------------------------------------------
# validation
def test_option_names_and_combinations_are_validated():
    torch = pytest.importorskip("torch")
    p = [np.zeros(4)]
    cases = [({"curvature": "fishr"}, "curvature must be one of"),
             ({"basis": "hebb"}, "basis must be one of"),
             ({"inner": "sgd"}, "inner must be one of"),
             ({"inner": ["adam", "nope"]}, "inner must be one of"),
             ({"inner": []}, "inner must be one of"),
             ({"inner": ["adam", "adam"]}, "appears twice"),
             ({"inner": ["adam", "lion"]}, "at most one of"),
             ({"inner": ["precondition", "inverse"]}, "at most one of"),
             ({"inner": "hutchinson_adam"}, "reuses the Hessian-vector products"),
             ({"basis": "nystrom", "curvature": "hutchinson"}, "positive semi-definite"),
             ({"basis": "hebbian", "curvature": "bfgs"}, "needs a basis that holds it"),
             ({"basis": "ggt", "curvature": "fisher"}, "needs curvature='covariance'"),
             ({"clip_norm": 0.0}, "clip_norm"), ({"clip_value": -1.0}, "clip_value"),
             ({"ema_beta": 1.0}, "ema_beta"), ({"norm_beta": -0.1}, "norm_beta"),
             ({"hebbian_lr": -1.0}, "hebbian_lr"), ({"hebbian_betas": (0.9, 1.0)}, "hebbian_betas")]
    for hyper, msg in cases:
        with pytest.raises(ValueError, match=msg):
            lre.init(p, **hyper)
        with pytest.raises(ValueError, match=msg):
            xo.LRE([torch.zeros(4, requires_grad=True)], **hyper)
    st = lre.init(p)  # a state made for other settings
    with pytest.raises(ValueError, match=r"lacks \['exp_avg_outer'\]"):
        lre.update([np.ones(4)], st, p, inner="full_adam")
    with pytest.raises(ValueError, match=r"lacks \['curvature_matrix'\]"):
        lre.update([np.ones(4)], st, p, basis="full")


# --------------------------------------------------------------------------------------------
# every option of the docs table: state_dict resume, digits MLP
def _closure_for(model, X, Y, loss):
    import torch

    def closure(backward=True):
        ce = torch.nn.functional.cross_entropy(model(X), Y, reduction="none")
        if loss == "per_sample":
            return ce
        if loss == "residuals":
            return torch.sqrt(2.0 * ce)
        out = ce.mean()
        if backward:
            closure.opt.zero_grad()
            out.backward()
        return out

    return closure


@pytest.mark.parametrize("label, hyper, loss", OPTIONS, ids=[o[0] for o in OPTIONS])
def test_state_dict_resume_is_bitwise(label, hyper, loss):
    """5 steps, state_dict, a fresh optimizer, 5 more == 10 straight steps (bitwise)."""
    torch = pytest.importorskip("torch")
    hyper = {"lr": 0.03, "rank": 4, **hyper, "max_dim": 16}
    X = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    Y = torch.tensor([0, 1, 2, 0, 1, 2])

    def model_and_opt():
        torch.manual_seed(1)
        m = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
        return m, xo.LRE(m.parameters(), **hyper)

    def run(m, opt, k):
        c = _closure_for(m, X, Y, loss)
        c.opt = opt
        for _ in range(k):
            opt.step(c)

    m1, o1 = model_and_opt()
    run(m1, o1, 10)
    m2, o2 = model_and_opt()
    run(m2, o2, 5)
    saved = copy.deepcopy(o2.state_dict())
    m3, o3 = model_and_opt()
    m3.load_state_dict(m2.state_dict())
    o3.load_state_dict(saved)
    run(m3, o3, 5)
    for a, b in zip(m1.parameters(), m3.parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("label, hyper, loss", OPTIONS, ids=[o[0] for o in OPTIONS])
def test_option_trains_digits_mlp(label, hyper, loss):
    """Every option of the docs table trains a small digits MLP (64-32-32-10, 60 steps of batch
    32): the loss falls by 5 % or more and the test accuracy is at least 3× chance.  The table
    itself (300 steps, the demo's MLP) is ``python docs/scripts/lre_options.py``."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from xpmat.demo import train_digits

    r = train_digits("lre", steps=60, hidden=32, batch=32, hyper=hyper, loss=loss)
    tail = sum(r["losses"][-5:]) / 5
    assert np.isfinite(tail) and tail < 0.95 * r["losses"][0], (tail, r["losses"][0])
    assert r["test_accuracy"] >= 0.3, r["test_accuracy"]


# --------------------------------------------------------------------------------------------
# the definitions behind the probe setting of the docs (issue 28 item 6)
def test_fisher_of_one_sample_per_step_is_the_covariance(backend):
    """With one sample a step the empirical Fisher's correction ``C = Gᵀ`` is the gradient itself:
    the states and updates equal those of ``curvature="covariance"`` (no batch-size factor, no
    sign or normalization of its own)."""
    n, steps = 7, 6
    rng = np.random.default_rng(11)
    gs = [rng.standard_normal(n) for _ in range(steps)]
    params = [backend.asarray(np.zeros(n))]
    h = {"rank": 3, "lr": 0.1}
    st_c, st_f = lre.init(params, **h), lre.init(params, curvature="fisher", **h)
    for g in gs:
        uc, st_c = lre.update([backend.asarray(g)], st_c, params, **h)
        uf, st_f = lre.update([backend.asarray(g)], st_f, params, corrections=[backend.asarray(g[:, None])],
                              curvature="fisher", **h)
        assert_close(uf[0], _np(backend, uc[0]), backend, rtol=1e-10, atol=1e-14)
    assert_close(st_f[0].L, _np(backend, st_c[0].L), backend, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("inner", ["adam", "lion", ["adam", "cautious"]])
def test_fisher_batch_scale_does_not_change_adam_or_lion(backend, inner):
    """The objective is a sum of per-sample losses: ``g`` and ``C`` are ``k`` times those of the
    mean loss.  Adam / Lion in the basis do not see the factor (the basis is the same, ``ĝ``
    scales, Adam's ratio and Lion's sign do not), so the batch size is no learning-rate factor."""
    n, k, steps = 9, 5, 5
    rng = np.random.default_rng(12)
    Cs = [rng.standard_normal((n, k)) for _ in range(steps)]
    params = [backend.asarray(np.zeros(n))]
    h = {"rank": 4, "curvature": "fisher", "inner": inner, "eps": 1e-30, "lr": 0.1}
    st_sum, st_mean = lre.init(params, **h), lre.init(params, **h)
    for C in Cs:
        us, st_sum = lre.update([backend.asarray(C.sum(1))], st_sum, params,
                                corrections=[backend.asarray(C)], **h)
        um, st_mean = lre.update([backend.asarray(C.mean(1))], st_mean, params,
                                 corrections=[backend.asarray(C / k)], **h)
        assert_close(um[0], _np(backend, us[0]), backend, rtol=1e-9, atol=1e-13)


def test_lion_step_is_one_sign_per_kept_slot(backend):
    """Lion in the basis outputs ±1 on every kept slot: each step moves a block by exactly
    ``lr·√r`` (r kept slots), whatever the gradient's scale — ``√(n / r)`` times shorter than
    elementwise sign steps, so LRE's Lion wants a larger ``lr`` than elementwise Lion."""
    n, r, lr = 12, 4, 0.05
    rng = np.random.default_rng(13)
    params = [backend.asarray(np.zeros(n))]
    h = {"rank": r, "inner": "lion", "betas": (0.9, 0.99), "lr": lr}
    st_a, st_b = lre.init(params, **h), lre.init(params, **h)
    for _ in range(6):
        g = rng.standard_normal(n)
        ua, st_a = lre.update([backend.asarray(g)], st_a, params, **h)
        ub, st_b = lre.update([backend.asarray(1e-3 * g)], st_b, params, **h)
        L = _np(backend, st_a[0].L)
        kept = int(np.sum(L > 1e-9 * L.max()))  # the others are rounding-level: masked
        x = _np(backend, st_a[0].Q)[0].T @ _np(backend, ua[0]) / -lr
        np.testing.assert_allclose(np.sort(np.abs(x))[::-1][:kept], 1.0, rtol=1e-12)
        assert abs(np.linalg.norm(_np(backend, ua[0])) - lr * np.sqrt(kept)) < 1e-12
        assert_close(ub[0], _np(backend, ua[0]), backend, rtol=1e-9, atol=1e-14)
    assert kept == r


def test_fisher_basis_misses_a_mean_gradient_drowned_in_per_sample_noise(backend):
    """Why the Fisher basis trails the covariance at low rank: its eigenvectors follow the
    per-sample gradients' energy.  Per-sample gradients ``μ + ν_j``, the ``ν_j`` in ± pairs (zero
    sum) spanning 6 directions ⟂ μ, each with more energy than ``k‖μ‖²``: at rank 4 the Fisher
    basis is all noise and the step has no component along the mean gradient ``μ``; at rank 7
    it holds ``μ``; the covariance basis (of the batch gradient ``kμ``) holds it at any rank."""
    n, k = 16, 12
    mu = np.zeros(n)
    mu[0] = 1.0
    noise = np.zeros((n, k // 2))
    for j in range(k // 2):
        noise[1 + j, j] = 3.0 + 0.1 * j  # per-direction energy 2·(3 + 0.1 j)² > k = 12
    nu = np.concatenate([noise, -noise], axis=1)
    C = mu[:, None] + nu
    g = C.sum(1)  # = k μ
    params = [backend.asarray(np.zeros(n))]

    def along_mu(curvature, rank):
        h = {"rank": rank, "curvature": curvature, "lr": 1.0}
        st = lre.init(params, **h)
        extra = {"corrections": [backend.asarray(C)]} if curvature == "fisher" else {}
        u, st = lre.update([backend.asarray(g)], st, params, **extra, **h)
        Q = _np(backend, st[0].Q)[0]
        return float(np.linalg.norm(Q.T @ mu)), float(-_np(backend, u[0]) @ mu)

    cap, step = along_mu("fisher", 4)
    assert cap < 1e-6 and abs(step) < 1e-6
    cap, step = along_mu("fisher", 7)
    assert cap > 1 - 1e-9 and step > 0.99
    for rank in (1, 4):
        cap, step = along_mu("covariance", rank)
        assert cap > 1 - 1e-9 and step > 0.99


def test_probe_setting_script_trains():
    """The probe setting of ``docs/scripts/lre_options.py --setting probe`` runs (two epochs here)
    and learns: test accuracy well above chance (0.1)."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("lre_options", ROOT / "docs" / "scripts" / "lre_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.train_probe({}, "mean", 0.1, epochs=2) > 0.5
