"""LRE (lre-low-rank-eigenbasis): the optimizer against float64 NumPy references.

The generic checks (torch class == core, state_dict round trip with bf16, digits MLP) live in
``test_optim_torch_adapter.py`` and cover ``lre`` through the registry.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SLOW_OPTIMIZER_MODULE, assert_array, assert_close, sym_with_spectrum

import xpmat.optim as xo
from xpmat.optim import lre

pytestmark = SLOW_OPTIMIZER_MODULE  # skipped on eager JAX and on Dask (conftest)


def _principal_angle(A, B):
    """sin of the largest principal angle between span(A) and span(B) (equal dimensions):
    ‖(I − P_A) Q_B‖₂, accurate for tiny angles (arccos of the cosines is not)."""
    qa, _ = np.linalg.qr(A)
    qb, _ = np.linalg.qr(B)
    return float(np.linalg.norm(qb - qa @ (qa.T @ qb), 2))


def _gap_gradients(n, steps, seed=0):
    """Gradients with covariance U diag(s²) Uᵀ: four strong directions, a weak isotropic rest."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.r_[[4.0, 3.0, 2.0, 1.5], np.full(n - 4, 0.05)]
    return [U @ (s * rng.standard_normal(n)) for _ in range(steps)]


def _run(backend, gs, hyper, p0=None, hvp=None):
    n = gs[0].shape
    params = [backend.asarray(np.zeros(n) if p0 is None else p0)]
    st = lre.init(params, **hyper)
    ups = None
    for g in gs:
        ups, st = lre.update([backend.asarray(g)], st, params, hvp=hvp, **hyper)
    return ups, st


def _ema(gs, beta):
    M = np.zeros((gs[0].size, gs[0].size))
    for g in gs:
        M = beta * M + (1 - beta) * np.outer(g, g)
    return M


# --------------------------------------------------------------------------------------------
# the basis tracks the explicit (decayed) gradient covariance
def test_full_rank_direct_equals_explicit_covariance(backend):
    """rank = n: Q diag(L) Qᵀ is the explicit EMA Σ (1−β) β^(t−s) g gᵀ to float64 precision."""
    n, beta = 6, 0.9
    gs = [np.random.default_rng(1).standard_normal(n) * np.arange(1, n + 1) for _ in range(15)]
    _, st = _run(backend, gs, {"rank": n, "beta": beta})
    L, Q = backend.to_numpy(st[0].L)[0], backend.to_numpy(st[0].Q)[0]
    assert_array(st[0].Q, backend, shape=(1, n, n), dtype="float64")
    np.testing.assert_allclose((Q * L) @ Q.T, _ema(gs, beta), rtol=0, atol=1e-10 * np.abs(L).max())


@pytest.mark.parametrize("basis", ["direct", "ggt", "randomized"])
def test_basis_spans_top_r_of_explicit_covariance(backend, basis):
    """After 60 steps the rank-4 basis spans the top-4 eigenvectors of numpy's eigh of the
    explicit EMA (principal angle), and L matches its top eigenvalues."""
    n, r, beta, steps = 30, 4, 0.9, 60
    gs = _gap_gradients(n, steps)
    _, st = _run(backend, gs, {"rank": r, "beta": beta, "basis": basis, "history_size": steps})
    w, V = np.linalg.eigh(_ema(gs, beta))
    w, V = w[::-1], V[:, ::-1]
    Q, L = backend.to_numpy(st[0].Q)[0], backend.to_numpy(st[0].L)[0]
    # truncating to rank 4 every step drops the weak directions' mass: measured sin 1.2e-4,
    # eigenvalues 4.5e-6 relative (NumPy); GGT is exact
    tol = 1e-10 if basis == "ggt" else 1e-3
    assert _principal_angle(Q, V[:, :r]) < tol
    np.testing.assert_allclose(L, w[:r], rtol=3e-5 if basis != "ggt" else 1e-10)


def test_three_bases_agree(backend):
    """direct, ggt and randomized give the same rank-3 eigenpairs on a problem with a gap
    (σ₃ / σ₄ ≈ 30): projectors within 1e-3, eigenvalues within 1e-5 (relative); measured
    3.5e-5 and 2.5e-6 for direct and randomized against the exact GGT."""
    n, r, beta, steps = 20, 3, 0.9, 40
    rng = np.random.default_rng(7)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.r_[[3.0, 2.0, 1.5], np.full(n - 3, 0.05)]
    gs = [U @ (s * rng.standard_normal(n)) for _ in range(steps)]
    out = {}
    for basis in ("direct", "ggt", "randomized"):
        _, st = _run(backend, gs, {"rank": r, "beta": beta, "basis": basis, "history_size": steps})
        Q, L = backend.to_numpy(st[0].Q)[0], backend.to_numpy(st[0].L)[0]
        out[basis] = (Q @ Q.T, L)
    P0, L0 = out["ggt"]
    for basis in ("direct", "randomized"):
        P, L = out[basis]
        assert np.linalg.norm(P - P0, 2) < 1e-3, basis
        np.testing.assert_allclose(L, L0, rtol=1e-5, err_msg=basis)


# --------------------------------------------------------------------------------------------
# reprojection of Adam's moments
def test_reprojection_exact_when_unchanged_rotated_otherwise(backend):
    """update_freq=2: step 2 keeps Q bitwise and updates the moments in the same coordinates;
    step 3 changes the basis and the moments are C m, (C∘C) v with C = Q₃ᵀ Q₂ (explicit)."""
    n, r = 10, 3
    b1, b2 = 0.9, 0.99
    hyper = {"rank": r, "betas": (b1, b2), "update_freq": 2, "beta": 0.8}
    rng = np.random.default_rng(3)
    gs = [rng.standard_normal(n) for _ in range(3)]
    params = [backend.asarray(np.zeros(n))]
    st = lre.init(params, **hyper)
    snaps = []
    for g in gs:
        _, st = lre.update([backend.asarray(g)], st, params, **hyper)
        snaps.append(st[0])
    s1, s2, s3 = snaps
    # step 2: no basis change -> Q, L identical, moments in the same coordinates
    assert_close(s2.Q, backend.to_numpy(s1.Q), backend, rtol=0, atol=0)
    assert_close(s2.L, backend.to_numpy(s1.L), backend, rtol=0, atol=0)
    Q1 = backend.to_numpy(s1.Q)[0]

    def kept(st):  # slots the inner Adam sees: L > eig_rtol · max|L| (empty ones get 0)
        L = backend.to_numpy(st.L)[0]
        return L > 1e-7 * np.abs(L).max()

    gp = kept(s2) * (Q1.T @ gs[1])
    m1, v1 = backend.to_numpy(s1.exp_avg)[0], backend.to_numpy(s1.exp_avg_sq)[0]
    assert_close(s2.exp_avg, (b1 * m1 + (1 - b1) * gp)[None], backend, rtol=1e-13, atol=1e-15)
    assert_close(s2.exp_avg_sq, (b2 * v1 + (1 - b2) * gp ** 2)[None], backend, rtol=1e-13, atol=1e-15)
    # step 3: basis changes -> explicit rotation C = Q3ᵀ Q2
    Q3 = backend.to_numpy(s3.Q)[0]
    assert np.linalg.norm(Q3 @ Q3.T - Q1 @ Q1.T) > 1e-3  # the basis did move
    C = Q3.T @ Q1
    m2, v2 = backend.to_numpy(s2.exp_avg)[0], backend.to_numpy(s2.exp_avg_sq)[0]
    gp3 = kept(s3) * (Q3.T @ gs[2])
    assert_close(s3.exp_avg, (b1 * (C @ m2) + (1 - b1) * gp3)[None], backend, rtol=1e-12, atol=1e-14)
    assert_close(s3.exp_avg_sq, (b2 * ((C * C) @ v2) + (1 - b2) * gp3 ** 2)[None], backend,
                 rtol=1e-12, atol=1e-14)


def test_adam_inner_update_formula(backend):
    """The update is −η Q (m̂ / (√v̂ + ε)) with bias correction (one step, explicit)."""
    n, r, lr, eps = 8, 2, 0.1, 1e-8
    rng = np.random.default_rng(5)
    gs = [rng.standard_normal(n) for _ in range(4)]
    hyper = {"rank": r, "lr": lr, "eps": eps, "betas": (0.9, 0.99)}
    ups, st = _run(backend, gs, hyper)
    Q = backend.to_numpy(st[0].Q)[0]
    m, v = backend.to_numpy(st[0].exp_avg)[0], backend.to_numpy(st[0].exp_avg_sq)[0]
    t = len(gs)
    o = (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.99 ** t)) + eps)
    assert_array(ups[0], backend, shape=(n,), dtype="float64")
    assert_close(ups[0], -lr * Q @ o, backend, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# direct preconditioning
@pytest.mark.parametrize("rank", [6, 3])
def test_precondition_equals_explicit_inverse_root(backend, rank):
    """inner='precondition': u = −η V (λ̂ + ε)^(−1/2) Vᵀ g from numpy's eigh of the explicit
    debiased EMA (rank 6 = n: full; rank 3: gradients in a 3-dim subspace, pseudo-inverse)."""
    n, beta, lr, eps = 6, 0.9, 0.5, 1e-3
    rng = np.random.default_rng(11)
    basis = np.linalg.qr(rng.standard_normal((n, rank)))[0]
    gs = [basis @ rng.standard_normal(rank) for _ in range(12)]
    hyper = {"rank": rank, "beta": beta, "inner": "precondition", "lr": lr, "eps": eps,
             "eig_rtol": 1e-9}
    ups, _ = _run(backend, gs, hyper)
    M = _ema(gs, beta) / (1 - beta ** len(gs))
    w, V = np.linalg.eigh(M)
    keep = w > 1e-9 * w.max()
    w, V = w[keep], V[:, keep]
    want = -lr * V @ ((V.T @ gs[-1]) / np.sqrt(w + eps))
    assert_close(ups[0], want, backend, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Hessian curvatures with an exact quadratic's HVP
def _quadratic(n=8, seed=3):
    H, _ = sym_with_spectrum(n, np.linspace(1.0, 4.0, n), seed=seed)
    return H


def _curvature_error(backend, curvature, steps, rank=8, beta=None):
    n = 8
    H = _quadratic(n)
    hyper = {"rank": rank, "curvature": curvature, "beta": beta, "inner": "precondition"}
    params = [backend.asarray(np.zeros(n))]
    st = lre.init(params, **hyper)
    Hb = backend.asarray(H)

    def hvp(vs):
        return [(Hb @ vs[0][:, None])[:, 0]]

    errs = []
    for t in range(1, steps + 1):
        ups, st = lre.update([backend.asarray(np.ones(n))], st, params, hvp=hvp, **hyper)
        Q, L = backend.to_numpy(st[0].Q)[0], backend.to_numpy(st[0].L)[0]
        B = (Q * L) @ Q.T
        if beta is not None:
            B = B / (1 - beta ** t)
        if st[0].sigma is not None:
            B = B + backend.to_numpy(st[0].sigma)[0] * np.eye(n)
        errs.append(np.linalg.norm(B - H) / np.linalg.norm(H))
    return errs, ups, H


def test_hutchinson_moves_toward_hessian(backend):
    """EMA of sym(Hz zᵀ) (z Rademacher): the debiased estimate approaches H (measured 0.22
    relative error after 300 steps with β = 0.99, from ~2.4 after one)."""
    errs, _, _ = _curvature_error(backend, "hutchinson", 300, beta=0.99)
    assert errs[-1] < 0.35
    assert errs[-1] < 0.2 * errs[0]


def test_sr1_recovers_hessian_and_newton_step(backend):
    """SR1 with HVP pairs (s = z, y = H z) is exact on a quadratic once the probes span Rⁿ;
    the preconditioned step is then the Newton step −η H⁻¹ g."""
    errs, ups, H = _curvature_error(backend, "sr1", 16)
    assert errs[-1] < 1e-9
    assert_close(ups[0], -1e-3 * np.linalg.solve(H, np.ones(8)), backend, rtol=1e-7, atol=1e-12)


def test_bfgs_moves_toward_hessian(backend):
    """BFGS (B = σ I + Q L Qᵀ, σ = yᵀy / yᵀs from the first pair) with random HVP pairs:
    measured relative error 0.34 after one step, 1.7e-5 after 100 (rank n)."""
    errs, _, _ = _curvature_error(backend, "bfgs", 100)
    assert errs[-1] < 1e-3
    assert errs[-1] < 0.01 * errs[0]


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_torch_class_hessian_closure_equals_core():
    """LRE(curvature='sr1') through step(closure(backward)) == the core fed the exact HVP (to
    rounding: autograd's HVP and H @ z differ in the last bits, so the comparison uses the
    precondition mode, which does not depend on the arbitrary basis of the empty slots)."""
    torch = pytest.importorskip("torch")
    n = 6
    H = torch.tensor(_quadratic(n, seed=1), dtype=torch.float64)
    b = torch.arange(1.0, n + 1, dtype=torch.float64)
    hyper = {"rank": n, "curvature": "sr1", "lr": 1.0, "inner": "precondition"}
    x = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = xo.LRE([x], **hyper)

    def closure(backward=True):
        loss = 0.5 * x @ H @ x - b @ x
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    y = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt2 = xo.LRE([y], **hyper)

    def closure2():  # the other convention: backward(create_graph=True) inside the closure
        opt2.zero_grad()
        loss = 0.5 * y @ H @ y - b @ y
        loss.backward(create_graph=True)
        return loss

    p = [torch.zeros(n, dtype=torch.float64)]
    st = lre.init(p, **hyper)
    for _ in range(12):
        opt.step(closure)
        opt2.step(closure2)
        g = H @ p[0] - b
        u, st = lre.update([g], st, p, hvp=lambda vs: [H @ vs[0]], **hyper)
        p = xo.apply_updates(p, u)
    torch.testing.assert_close(x.detach(), p[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y.detach(), p[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.detach(), torch.linalg.solve(H, b), rtol=1e-8, atol=0)  # Newton
    with pytest.raises(ValueError, match="needs"):
        opt.step()


# --------------------------------------------------------------------------------------------
# layout, edge cases, errors
def test_blocks_equal_separate_parameters(backend):
    """A (5, 4) parameter with max_dim=7 is 3 blocks of 7 (the last padded with one zero);
    each block evolves exactly like a separate 7-, 7- and 6-entry parameter."""
    rng = np.random.default_rng(2)
    gs = [rng.standard_normal((5, 4)) for _ in range(6)]
    hyper = {"rank": 2, "max_dim": 7}
    params = [backend.asarray(np.zeros((5, 4)))]
    st = lre.init(params, **hyper)
    assert tuple(st[0].Q.shape) == (3, 7, 2)
    sep = [backend.asarray(np.zeros(k)) for k in (7, 7, 6)]
    st_sep = lre.init(sep, rank=2)
    for g in gs:
        u, st = lre.update([backend.asarray(g)], st, params, **hyper)
        f = g.reshape(-1)
        u_sep, st_sep = lre.update([backend.asarray(f[:7]), backend.asarray(f[7:14]),
                                    backend.asarray(f[14:])], st_sep, sep, rank=2)
    assert_array(u[0], backend, shape=(5, 4), dtype="float64")
    want = np.concatenate([backend.to_numpy(x) for x in u_sep]).reshape(5, 4)
    assert_close(u[0], want, backend, rtol=1e-10, atol=1e-13)


def test_float32_first_step_ignores_rounding_level_eigenvalues(backend):
    """A first step sees a rank-1 covariance per block; the other eigenvalues are rounding noise
    (torch float32 eigh gave 1e-7·top, above the 1e-7 default cut).  They must not get Adam
    steps: the float32 update equals the float64 one to float32 accuracy (it was 26 % off)."""
    rng = np.random.default_rng(0)
    P, G = rng.standard_normal((64, 256)) * 0.02, rng.standard_normal((64, 256))
    want, _ = lre.update([G], lre.init([P], max_dim=1024), [P], max_dim=1024)
    p32 = [backend.asarray(P, "float32")]
    u, _ = lre.update([backend.asarray(G, "float32")], lre.init(p32, max_dim=1024), p32,
                      max_dim=1024)
    assert_close(u[0], want[0], backend, rtol=1e-4, atol=1e-7)


def test_zero_gradient_and_small_parameters(backend):
    """A zero gradient gives a zero update (no NaN); n ≤ rank gets a full n × n basis."""
    params = [backend.asarray(np.ones(3)), backend.asarray(np.ones(()))]
    st = lre.init(params, rank=8)
    assert tuple(st[0].Q.shape) == (1, 3, 3) and tuple(st[1].Q.shape) == (1, 1, 1)
    u, st = lre.update([backend.asarray(np.zeros(3)), backend.asarray(np.zeros(()))], st, params,
                       rank=8)
    assert_close(u[0], np.zeros(3), backend, rtol=0, atol=0)
    assert_array(u[1], backend, shape=(), dtype="float64")
    assert_close(u[1], 0.0, backend, rtol=0, atol=0)


def test_bad_hyper_parameters():
    p = [np.zeros(4)]
    cases = [({"curvature": "fischer"}, "curvature must be one of"),
             ({"basis": "nystroem"}, "basis must be one of"),
             ({"inner": "lions"}, "inner must be one of"),
             ({"basis": "ggt", "curvature": "sr1"}, "needs curvature='covariance'"),
             ({"betas": (1.0, 0.9)}, "betas"),
             ({"beta": 1.0}, "beta"),
             ({"rank": 0}, "rank must be an int >= 1"),
             ({"rank": 2.5}, "rank must be an int"),
             ({"max_dim": 0}, "max_dim"),
             ({"update_freq": 0}, "update_freq"),
             ({"lr": -1.0}, r"lr must lie in \[0, inf\)"),
             ({"eig_rtol": -1.0}, "eig_rtol")]
    for hyper, msg in cases:
        with pytest.raises(ValueError, match=msg):
            lre.init(p, **hyper)
    with pytest.raises(TypeError, match="unknown argument"):
        lre.init(p, eig_tol=1e-3)
    st = lre.init(p, curvature="hutchinson")
    with pytest.raises(ValueError, match="needs Hessian-vector products"):
        lre.update([np.ones(4)], st, p, curvature="hutchinson")
    st = lre.init(p)
    with pytest.raises(TypeError, match="hvp must be a callable"):
        lre.update([np.ones(4)], st, p, hvp=3)
    with pytest.raises(ValueError, match="does not fit"):
        lre.update([np.ones(4)], st, p, max_dim=2)
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="basis must be one of"):
        xo.LRE([torch.zeros(3, requires_grad=True)], basis="hebb")


def test_nonfinite_gradient_is_skipped():
    """A NaN / Inf gradient never reaches the basis update's eigh: that parameter's step is
    skipped (update 0, state unchanged, ``nonfinite_count`` 1) and the others step."""
    p = [np.zeros(5), np.zeros(3)]
    st = lre.init(p, rank=2)
    u, st2 = lre.update([np.array([1.0, np.nan, 0.0, 0.0, 0.0]), np.ones(3)], st, p, rank=2)
    assert np.all(u[0] == 0) and np.abs(u[1]).max() > 0
    np.testing.assert_array_equal(st2[0].Q, st[0].Q)
    assert float(st2[0].nonfinite_count) == 1 and float(st2[1].nonfinite_count) == 0
    assert float(st2[0].step) == 0 and float(st2[1].step) == 1
