"""Shampoo (adaptive-learning-methods §5, §5.1, §6.2): float64 NumPy references on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SLOW_OPTIMIZER_MODULE, TOL, assert_array, assert_close, matrix_with_spectrum

import xpmat.optim as xo
from xpmat.optim import adamw, shampoo

pytestmark = SLOW_OPTIMIZER_MODULE  # skipped on eager JAX and on Dask (conftest)


# --------------------------------------------------------------------------------------------
# an independent NumPy float64 reference: §5.1 written out with np.linalg.eigh
def np_inv_root(A, p, eps):
    w, V = np.linalg.eigh((A + A.T) / 2 + eps * np.eye(len(A)))
    keep = w > len(w) * np.finfo(float).eps / 2 * w.max()
    f = np.where(keep, np.where(keep, w, 1.0) ** (-1.0 / p), 0.0)
    return (V * f) @ V.T


def shampoo_reference(W0, grads, *, lr, beta1, beta2, eps, root, k, start, wd=0.0, s=1.0):
    """Updates of one unblocked matrix without grafting (roots refreshed at start + j k)."""
    m, n = W0.shape
    W, M, L, R = W0.copy(), np.zeros((m, n)), np.zeros((m, m)), np.zeros((n, n))
    PL, PR = np.eye(m), np.eye(n)
    ups = []
    for t, G in enumerate(grads, start=1):
        M = beta1 * M + (1 - beta1) * G
        Mbar = M / (1 - beta1 ** t)
        L = beta2 * L + (1 - beta2) * G @ G.T
        R = beta2 * R + (1 - beta2) * G.T @ G
        if t >= start and (t - start) % k == 0:
            bc = 1 - beta2 ** t
            PL, PR = np_inv_root(L / bc, root, eps), np_inv_root(R / bc, root, eps)
        D = PL @ Mbar @ PR if t >= start else Mbar
        u = -s * lr * D - s * lr * wd * W
        W = W + u
        ups.append(u)
    return ups


def run(backend, params_np, grad_seq, dtype="float64", **hyper):
    params = [backend.asarray(p, dtype) for p in params_np]
    state = shampoo.init(params, **hyper)
    ups_seq, states = [], []
    for grads in grad_seq:
        ups, state = shampoo.update([backend.asarray(g, dtype) for g in grads], state, params, **hyper)
        params = xo.apply_updates(params, ups)
        ups_seq.append(ups)
        states.append(state)
    return params, ups_seq, states


def _grads(shape, steps, seed=0, base=None, noise=1.0):
    rng = np.random.default_rng(seed)
    b = np.zeros(shape) if base is None else base
    return [b + noise * rng.standard_normal(shape) for _ in range(steps)]


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("root", [4, 2], ids=["quarter", "half"])
def test_update_matches_eigh_reference(backend, dtype, root):
    """u = −s η L̂^(−1/p) M̄ R̂^(−1/p) − s η λ W against NumPy eigh (eq. 53 / eq. 63, §5.1)."""
    W0 = np.random.default_rng(1).standard_normal((9, 6))
    gs = _grads((9, 6), 6, seed=2)
    hyper = {"lr": 0.1, "betas": (0.9, 0.95), "eps": 1e-2, "root": root, "grafting": None,
             "precondition_every": 2, "start_preconditioning_step": 1, "weight_decay": 0.1,
             "schedule": 0.5}
    _, ups, states = run(backend, [W0], [[g] for g in gs], dtype, **hyper)
    ref = shampoo_reference(W0, gs, lr=0.1, beta1=0.9, beta2=0.95, eps=1e-2, root=root, k=2,
                            start=1, wd=0.1, s=0.5)
    for u, r in zip(ups, ref, strict=True):
        assert_array(u[0], backend, shape=(9, 6), dtype=dtype)
        assert_close(u[0], r, backend, rtol=TOL[dtype] * 50, atol=TOL[dtype] * 50 * np.abs(r).max())
    assert_array(states[-1][0].L, backend, shape=(1, 9, 9), dtype=dtype)
    assert_array(states[-1][0].R_root, backend, shape=(1, 6, 6), dtype=dtype)


@pytest.mark.parametrize("rank", [4, 2])
def test_single_gradient_gives_polar_direction(backend, rank):
    """One gradient G = U Σ Vᵀ, β₁ = 0, ε = 0, no grafting: L̂ = G Gᵀ, R̂ = Gᵀ G, so
    L̂^(−1/4) G R̂^(−1/4) = U Vᵀ (the msign / polar direction of §7) and the squared
    preconditioner of §6.2 gives U Σ⁻¹ Vᵀ (pseudo-inverse roots for a rank-deficient G)."""
    s = np.array([3.0, 1.0, 0.5, 0.1])
    s[rank:] = 0.0
    G, U, s, Vt = matrix_with_spectrum(7, 4, s, seed=5)
    U, s, Vt = U[:, :rank], s[:rank], Vt[:rank]
    p = [backend.asarray(np.zeros((7, 4)))]
    for root, want in ((4, U @ Vt), (2, (U / s) @ Vt)):
        h = {"lr": 1.0, "betas": (0.0, 0.9), "eps": 0.0, "root": root, "grafting": None,
             "precondition_every": 1}
        u, _ = shampoo.update([backend.asarray(G)], shampoo.init(p, **h), p, **h)
        assert_close(u[0], -want, backend, rtol=0, atol=1e-9 * np.abs(want).max())


def test_half_root_is_idealized_newton_step_lemma_6_1(backend):
    """§6.2.1, Lemma 6.1: if E[G ⊗ G] is rank one then I_emp = L ⊗ R / tr(L), so the squared
    preconditioner's direction L^(−1/2) G R^(−1/2) equals I_emp^(−1/2) g / √tr(L) (the
    IdealizedShampooIteration without its scalar).  Gradients G_k = P E_k Qᵀ, running mean."""
    rng = np.random.default_rng(0)
    P, Q = rng.standard_normal((3, 3)), rng.standard_normal((2, 2))
    gs = [P @ np.eye(6)[k].reshape(3, 2) @ Q.T for k in range(6)]
    h = {"lr": 1.0, "betas": (0.0, None), "eps": 0.0, "root": 2, "grafting": None,
         "precondition_every": 1, "start_preconditioning_step": 6}
    p = [backend.asarray(np.zeros((3, 2)))]
    st = shampoo.init(p, **h)
    for G in gs:
        u, st = shampoo.update([backend.asarray(G)], st, p, **h)
    F = sum(np.outer(G.ravel(), G.ravel()) for G in gs) / 6          # I_emp, row-major vec
    w, V = np.linalg.eigh(F)
    trL = np.trace(sum(G @ G.T for G in gs) / 6)
    want = ((V / np.sqrt(w)) @ V.T @ gs[-1].ravel()).reshape(3, 2) / np.sqrt(trL)
    assert_close(u[0], -want, backend, rtol=1e-9, atol=1e-12)


def test_root_methods_agree(backend):
    """inv_root routes on the same run: coupled Newton = eigh to 1e-9 (float64); the warm-started
    orthogonal-iteration eigenbasis is exact at its first refresh (an eigh, Q.2.1) and tracks a
    slowly drifting factor to 1e-2 with one step per refresh (measured: ≈ 1e-3 here)."""
    G0, _, _, _ = matrix_with_spectrum(10, 6, np.array([6.0, 4.0, 2.5, 1.5, 1.0, 0.6]), seed=3)
    gs = [[g] for g in _grads((10, 6), 10, seed=1, base=G0, noise=0.01)]
    base = {"lr": 1.0, "betas": (0.0, 0.9), "eps": 1e-3, "grafting": None,
            "precondition_every": 1}
    out = {}
    for method in ("eigh", "newton", "orthogonal_iteration"):
        _, ups, states = run(backend, [np.zeros((10, 6))], gs, root_method=method, **base)
        out[method] = [backend.to_numpy(u[0]) for u in ups]
        if method == "orthogonal_iteration":
            Q = backend.to_numpy(states[-1][0].L_basis[0, ...])
            np.testing.assert_allclose(Q.T @ Q, np.eye(10), atol=1e-12)

    def err(a, b):
        return max(np.linalg.norm(x - y) / np.linalg.norm(y) for x, y in zip(a, b, strict=True))

    assert err(out["newton"], out["eigh"]) < 1e-9
    assert err(out["orthogonal_iteration"][:1], out["eigh"][:1]) < 1e-12
    assert err(out["orthogonal_iteration"], out["eigh"]) < 1e-2


def test_newton_keeps_previous_root_when_it_fails(backend):
    """A singular factor with ε = 0 makes the coupled Newton iteration fail (reported by
    inv_root); that block keeps its previous root (the identity before the first refresh)."""
    G = np.zeros((5, 4))
    G[:2] = np.random.default_rng(0).standard_normal((2, 4))          # L has rank 2
    h = {"betas": (0.0, 0.999), "eps": 0.0, "grafting": None, "precondition_every": 1,
         "root_method": "newton", "newton_iters": 30}
    p = [backend.asarray(np.zeros((5, 4)))]
    _, st = shampoo.update([backend.asarray(G)], shampoo.init(p, **h), p, **h)
    assert_close(st[0].L_root[0, ...], np.eye(5), backend, rtol=0, atol=0)
    R = G.T @ G                                                       # rank 2 of 4: also singular
    assert_close(st[0].R_root[0, ...], np.eye(4), backend, rtol=0, atol=0)
    assert np.linalg.matrix_rank(R) == 2


@pytest.mark.parametrize("method", ["eigh", "newton"])
def test_blocking_equals_shampoo_on_each_block(backend, method):
    """A 10×7 matrix with max_preconditioner_dim=4 (blocks 4,4,2 × 4,3) equals Shampoo run on
    the six sub-matrices as separate parameters (factors, roots and grafting are per block)."""
    W0 = np.random.default_rng(3).standard_normal((10, 7))
    gs = _grads((10, 7), 5, seed=4)
    h = {"lr": 0.1, "betas": (0.9, 0.9), "eps": 1e-3, "precondition_every": 2, "weight_decay": 0.01,
         "root_method": method}
    _, ups, states = run(backend, [W0], [[g] for g in gs], max_preconditioner_dim=4, **h)
    assert tuple(states[0][0].L.shape) == (6, 4, 4) and tuple(states[0][0].R.shape) == (6, 4, 4)
    rows, cols = [(0, 4), (4, 8), (8, 10)], [(0, 4), (4, 7)]
    tiles = [(r, c) for r in rows for c in cols]
    sub = [W0[r0:r1, c0:c1] for (r0, r1), (c0, c1) in tiles]
    sub_g = [[g[r0:r1, c0:c1] for (r0, r1), (c0, c1) in tiles] for g in gs]
    _, ups_sep, _ = run(backend, sub, sub_g, max_preconditioner_dim=100, **h)
    for u, us in zip(ups, ups_sep, strict=True):
        whole = np.zeros((10, 7))
        for ((r0, r1), (c0, c1)), x in zip(tiles, us, strict=True):
            whole[r0:r1, c0:c1] = backend.to_numpy(x)
        assert_close(u[0], whole, backend, rtol=1e-9, atol=1e-12)


def test_precondition_every_keeps_roots_stale(backend):
    """k = 3, s = 2: roots change exactly at steps 2, 5, 8 and are bitwise unchanged between;
    in between, the update uses the stale roots with the current momentum; before step s the
    update is AdamW's (grafting direction)."""
    gs = _grads((6, 5), 9, seed=7)
    h = {"lr": 0.1, "betas": (0.5, 0.9), "eps": 1e-3, "precondition_every": 3,
         "start_preconditioning_step": 2}
    _, ups, states = run(backend, [np.zeros((6, 5))], [[g] for g in gs], **h)
    roots = [backend.to_numpy(st[0].L_root[0, ...]) for st in states]
    changed = [t for t in range(2, 10) if not np.array_equal(roots[t - 1], roots[t - 2])]
    assert changed == [2, 5, 8]
    # step 1 (before s): the AdamW update with the same betas and ε
    pa = [backend.asarray(np.zeros((6, 5)))]
    ua, _ = adamw.update([backend.asarray(gs[0])], adamw.init(pa), pa, lr=0.1, betas=(0.5, 0.999),
                         eps=1e-8, weight_decay=0.0)
    assert_close(ups[0][0], backend.to_numpy(ua[0]), backend, rtol=1e-12, atol=1e-15)
    # step 4 (stale): u = −η graft(L_root M̄ R_root) with the roots of step 2
    st = states[3][0]
    Mbar = st.exp_avg / (1 - 0.5 ** 4)
    D = st.L_root[0, ...] @ Mbar @ st.R_root[0, ...]
    assert_close(st.L_root[0, ...], roots[1], backend, rtol=0, atol=0)
    d = backend.to_numpy(D)
    u = backend.to_numpy(ups[3][0])
    np.testing.assert_allclose(u / np.linalg.norm(u), -d / np.linalg.norm(d), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("max_dim", [100, 3])
def test_grafting_norm_equals_adamw(backend, max_dim):
    """Grafting: each block of the update has the Frobenius norm of AdamW's update on that block
    (same β₁, β₂ = graft_beta2, ε = graft_eps), at every step, with or without fresh roots."""
    gs = _grads((7, 5), 6, seed=8)
    h = {"lr": 0.05, "betas": (0.9, 0.999), "graft_beta2": 0.99, "graft_eps": 1e-8, "precondition_every": 2,
         "start_preconditioning_step": 1, "max_preconditioner_dim": max_dim}
    _, ups, _ = run(backend, [np.zeros((7, 5))], [[g] for g in gs], **h)
    pa = [backend.asarray(np.zeros((7, 5)))]
    sa = adamw.init(pa)
    bm, bn = min(7, max_dim), min(5, max_dim)  # Shampoo's blocks: max_dim × max_dim, a grid
    gm, gn = -(-7 // bm), -(-5 // bn)
    for g, u in zip(gs, ups, strict=True):
        ua, sa = adamw.update([backend.asarray(g)], sa, pa, lr=0.05, betas=(0.9, 0.99), eps=1e-8,
                              weight_decay=0.0)
        un, an = backend.to_numpy(u[0]), backend.to_numpy(ua[0])
        for i in range(gm):
            for j in range(gn):
                blk = np.s_[i * bm:(i + 1) * bm, j * bn:(j + 1) * bn]
                assert np.linalg.norm(un[blk]) == pytest.approx(np.linalg.norm(an[blk]), rel=1e-10)
        assert not np.allclose(un, an)              # same norms, different direction


def test_zero_gradient_conv_and_beta2_none(backend):
    p = [backend.asarray(np.ones((4, 2, 3, 3)))]
    for h in ({"precondition_every": 1}, {"precondition_every": 1, "betas": (0.9, None), "grafting": None},
              {"precondition_every": 1, "root_method": "newton"},
              {"precondition_every": 1, "root_method": "orthogonal_iteration", "eps_mode": "relative"}):
        st = shampoo.init(p, **h)
        for _ in range(2):
            u, st = shampoo.update([backend.asarray(np.zeros((4, 2, 3, 3)))], st, p, **h)
        assert_array(u[0], backend, shape=(4, 2, 3, 3), dtype="float64")
        assert_close(u[0], np.zeros((4, 2, 3, 3)), backend, rtol=0, atol=0)
        assert tuple(st[0].R.shape) == (1, 18, 18)


def test_bad_hyper_parameters_and_inputs():
    p = [np.zeros((4, 3))]
    bad = [({"betas": (1.0, 0.9)}, r"betas\[0\]"), ({"betas": (0.9, -0.1)}, r"betas\[1\]"),
           ({"eps": -1.0}, "eps"),
           ({"root": 0}, "root"), ({"root": 2.5}, "root"), ({"root_method": "svd"}, "root_method"),
           ({"precondition_every": 0}, "precondition_every"),
           ({"start_preconditioning_step": 0}, "start_preconditioning_step"),
           ({"max_preconditioner_dim": 0}, "max_preconditioner_dim"),
           ({"grafting": "sgd"}, "grafting"), ({"eps_mode": "rel"}, "eps_mode"),
           ({"newton_tol": 0.0}, "newton_tol"), ({"graft_beta2": 1.0}, "graft_beta2"),
           ({"basis_iters": 0}, "basis_iters"), ({"lr": -1.0}, "lr")]
    for hyper, name in bad:
        with pytest.raises(ValueError, match=name):
            shampoo.init(p, **hyper)
        with pytest.raises(ValueError, match=name):
            shampoo.transform(**hyper)
    with pytest.raises(TypeError, match="unknown argument"):
        shampoo.init(p, precondition_frequency=3)
    with pytest.raises(TypeError, match="`beta1` was renamed: betas"):
        shampoo.init(p, beta1=0.9)
    with pytest.raises(ValueError, match="not a matrix"):
        shampoo.init([np.zeros(3)])
    st = shampoo.init(p)
    with pytest.raises(ValueError, match="max_preconditioner_dim"):
        shampoo.update([np.zeros((4, 3))], st, p, max_preconditioner_dim=2)


def test_torch_class_routes_vectors_and_trains():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(8, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    X, Y = torch.randn(64, 5, generator=gen, dtype=torch.float64), torch.randn(64, 8, generator=gen,
                                                                              dtype=torch.float64)
    opt = xo.Shampoo([W, b], lr=0.05, precondition_every=2, adamw_lr_ratio=1.0)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = ((X @ W.T + b - Y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    assert set(opt.state[W]) >= {"step", "L", "R", "L_root", "R_root", "exp_avg", "exp_avg_sq"}
    assert set(opt.state[b]) == {"step", "exp_avg", "exp_avg_sq", "nonfinite_count"}  # AdamW fallback


@pytest.mark.parametrize("method", ["orthogonal_iteration", "newton"])
def test_torch_state_dict_round_trip_with_blocks(method):
    """Blocked factors, stale roots and eigenbases survive state_dict → load_state_dict: 7 steps,
    save, load into a fresh optimizer, 7 more == 14 straight steps (bitwise)."""
    import copy

    torch = pytest.importorskip("torch")
    hyper = {"lr": 0.01, "precondition_every": 3, "max_preconditioner_dim": 4, "root_method": method,
             "eps": 1e-4, "eps_mode": "relative"}

    def params():
        gen = torch.Generator().manual_seed(0)
        return [torch.randn(s, generator=gen).requires_grad_() for s in ((9, 6), (6,))]

    def run(ps, opt, k0, k1):
        for k in range(k0, k1):
            gen = torch.Generator().manual_seed(k)
            for p in ps:
                p.grad = p.detach() * 0.3 + torch.randn(p.shape, generator=gen)
            opt.step()

    straight = params()
    run(straight, xo.Shampoo(straight, **hyper), 0, 14)
    first = params()
    opt1 = xo.Shampoo(first, **hyper)
    run(first, opt1, 0, 7)
    saved = copy.deepcopy(opt1.state_dict())
    second = [p.detach().clone().requires_grad_() for p in first]
    opt2 = xo.Shampoo(second, **hyper)
    opt2.load_state_dict(saved)
    assert tuple(opt2.state[second[0]]["L"].shape) == (6, 4, 4)
    if method == "orthogonal_iteration":
        assert tuple(opt2.state[second[0]]["R_basis"].shape) == (6, 4, 4)
    run(second, opt2, 7, 14)
    for a, b in zip(straight, second, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)
