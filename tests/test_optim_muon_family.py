"""The Muon family's options (issue 26): Gram Newton–Schulz, cautious weight decay, ``flatten``
(expert stacks as batches of matrices), each against a reference written from its definition,
on every backend; the fused path and the chain of transforms agree; the torch class plumbs them
per param group."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DASK_OPTIMIZER_LOOP, TOL, assert_array, assert_close

import xpmat.optim as xo
from xpmat import msign
from xpmat.optim import muon, transforms


def _polar(G: np.ndarray) -> np.ndarray:
    """The float64 polar factor U Vᵀ of each matrix of a stack."""
    U, _, Vt = np.linalg.svd(G, full_matrices=False)
    return U @ Vt


def _step(backend, params, grads, dtype="float64", **hyper):
    ps = [backend.asarray(p, dtype) for p in params]
    gs = [backend.asarray(g, dtype) for g in grads]
    ups, st = muon.update(gs, muon.init(ps, **hyper), ps, **hyper)
    return ups, st


# --------------------------------------------------------------------------------------------
# fused == composed, for every option
@pytest.mark.parametrize("opts", [
    {"flatten": False, "cautious_weight_decay": True, "use_gram_newton_schulz": True},
    {"flatten": True, "cautious_weight_decay": True},
    {"flatten": False},
])
def test_muon_options_fused_equals_composition(backend, opts):
    rng = np.random.default_rng(31)
    shapes = [(12, 4), (12, 4), (3, 6, 4), (2, 3, 2, 5)]
    params = [backend.asarray(rng.standard_normal(s)) for s in shapes]
    h = {"lr": 0.1, "weight_decay": 0.3, "momentum": 0.9, **opts}
    fused, chained = muon.transform(**h), muon.composed(**h)
    a, b = fused.init(params), chained.init(params)
    for _ in range(2):
        grads = [backend.asarray(rng.standard_normal(s)) for s in shapes]
        ua, a = fused.update(grads, a, params)
        ub, b = chained.update(grads, b, params)
        for x, y, s in zip(ua, ub, shapes, strict=True):
            assert_array(x, backend, shape=s, dtype="float64")
            assert_close(x, backend.to_numpy(y), backend, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# flatten
@pytest.mark.skip_xp_backends("dask", reason=DASK_OPTIMIZER_LOOP)
def test_muon_flatten_false_orthogonalizes_each_expert(backend, dtype):
    """``flatten=False``: a stack ``(E, m, n)`` is E matrices, each stepped by
    −η √max(1, m/n) msign(G_e) (momentum 0) with its own shape factor; ``flatten=True`` (the
    default) is the conv view ``(E, m·n)``, one msign of the whole."""
    rng = np.random.default_rng(32)
    G = rng.standard_normal((3, 12, 4))
    P = rng.standard_normal((3, 12, 4))
    hyper = {"lr": 0.5, "momentum": 0.0, "ns_steps": 12}
    (u,), (st,) = _step(backend, [P], [G], dtype, flatten=False, **hyper)
    assert_array(u, backend, shape=(3, 12, 4), dtype=dtype)
    assert tuple(st.momentum_buffer.shape) == (3, 12, 4)
    tol = 1e-6 if dtype == "float64" else 1e-4
    assert_close(u, -0.5 * np.sqrt(12 / 4) * _polar(G), backend, rtol=0, atol=tol)
    (uf,), (sf,) = _step(backend, [P], [G], dtype, **hyper)  # the conv view: a 3 × 48 matrix
    assert tuple(sf.momentum_buffer.shape) == (3, 48)
    want = -0.5 * 1.0 * _polar(G.reshape(3, 48)).reshape(3, 12, 4)  # a(3, 48) = 1
    assert_close(uf, want, backend, rtol=0, atol=tol)
    # each expert alone (a plain matrix parameter) gives the same update
    ups, _ = _step(backend, list(P), list(G), dtype, **hyper)
    assert_close(u, np.stack([backend.to_numpy(x) for x in ups]), backend, rtol=0,
                 atol=10 * TOL[dtype])


def test_muon_flatten_4d_and_bad_value(backend):
    """A 4-D ``(E, k, m, n)`` with ``flatten=False`` is E·k matrices m × n."""
    rng = np.random.default_rng(33)
    G = rng.standard_normal((2, 2, 5, 3))
    (u,), _ = _step(backend, [np.zeros(G.shape)], [G], flatten=False, lr=1.0, momentum=0.0,
                    ns_steps=12)
    assert_close(u, -np.sqrt(5 / 3) * _polar(G), backend, rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="flatten"):
        muon.init([backend.asarray(G)], flatten="no")


# --------------------------------------------------------------------------------------------
# cautious weight decay
def test_muon_cautious_weight_decay_rule(backend, dtype):
    """W ← W − η λ W ⊙ 1[O ⊙ W ≥ 0] − η a O with O = msign(U): written out from the definition
    (Chen et al. 2025; dion's ``cautious_wd``), and different from decay everywhere."""
    rng = np.random.default_rng(34)
    W = rng.standard_normal((10, 6))
    G = rng.standard_normal((10, 6))
    lr, wd, a = 0.1, 0.5, np.sqrt(10 / 6)
    (u,), _ = _step(backend, [W], [G], dtype, lr=lr, weight_decay=wd, momentum=0.0,
                    cautious_weight_decay=True)
    O = np.asarray(msign(G))  # the same 5-step polynomial, float64
    mask = O * W >= 0
    assert 0.2 < mask.mean() < 0.8  # both kinds of entries occur
    want = -lr * wd * W * mask - lr * a * O
    assert_close(u, want, backend, rtol=0, atol=30 * TOL[dtype])
    (plain,), _ = _step(backend, [W], [G], dtype, lr=lr, weight_decay=wd, momentum=0.0)
    assert_close(plain, -lr * wd * W - lr * a * O, backend, rtol=0, atol=30 * TOL[dtype])
    assert np.abs(backend.to_numpy(plain) - want).max() > 1e-2
    with pytest.raises(TypeError, match="cautious_weight_decay"):
        muon.init([backend.asarray(W)], cautious_weight_decay=1)


# --------------------------------------------------------------------------------------------
# Gram Newton–Schulz
def test_muon_gram_newton_schulz(backend, dtype, monkeypatch):
    """``use_gram_newton_schulz``: the same updates to rounding; Gram NS runs on the shapes
    where it takes fewer products (tall / wide), the plain loop on square ones."""
    rng = np.random.default_rng(35)
    shapes = [(48, 8), (8, 48), (12, 12)]
    params = [rng.standard_normal(s) for s in shapes]
    grads = [rng.standard_normal(s) for s in shapes]
    hyper = {"lr": 0.1, "weight_decay": 0.1}
    plain, _ = _step(backend, params, grads, dtype, **hyper)
    seen = []
    real = transforms.newton_schulz

    def spy(U, *a, **k):
        seen.append((tuple(U.shape[-2:]), k["gram"]))
        return real(U, *a, **k)

    monkeypatch.setattr(transforms, "newton_schulz", spy)
    gram, _ = _step(backend, params, grads, dtype, use_gram_newton_schulz=True, **hyper)
    assert sorted(seen) == [((8, 48), True), ((12, 12), False), ((48, 8), True)]
    for x, y in zip(gram, plain, strict=True):
        assert_close(x, backend.to_numpy(y), backend, rtol=0, atol=TOL[dtype])
    assert transforms.gram_saves(4096, 256, 5) and not transforms.gram_saves(256, 256, 5)
    assert not transforms.gram_saves(300, 200, 5) and transforms.gram_saves(310, 200, 5)


# --------------------------------------------------------------------------------------------
# the torch class
def test_torch_muon_options_per_group():
    """The three options are constructor arguments and per-group settings; a step equals the
    functional core's with the group's settings (bitwise)."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(36)
    experts = torch.randn(4, 16, 8, generator=gen)
    dense = torch.randn(24, 8, generator=gen)
    ge, gd = torch.randn(experts.shape, generator=gen), torch.randn(dense.shape, generator=gen)
    a, b = experts.clone().requires_grad_(), dense.clone().requires_grad_()
    a.grad, b.grad = ge.clone(), gd.clone()
    opt = xo.Muon([{"params": [a], "flatten": False, "use_gram_newton_schulz": True},
                   {"params": [b]}], lr=0.05, weight_decay=0.2, cautious_weight_decay=True)
    assert opt.param_groups[0]["flatten"] is False and opt.param_groups[1]["flatten"] is True
    assert opt.param_groups[1]["cautious_weight_decay"] is True
    opt.step()
    assert tuple(opt.state[a]["momentum_buffer"].shape) == (4, 16, 8)
    h = {"lr": 0.05, "weight_decay": 0.2, "cautious_weight_decay": True}
    ua, _ = muon.update([ge], muon.init([experts], flatten=False, **h), [experts], flatten=False,
                        use_gram_newton_schulz=True, **h)
    ub, _ = muon.update([gd], muon.init([dense], **h), [dense], **h)
    assert torch.equal(a.detach(), experts + ua[0]) and torch.equal(b.detach(), dense + ub[0])
    with pytest.raises(TypeError, match="use_gram_newton_schulz"):
        xo.Muon([torch.zeros(3, 3, requires_grad=True)], use_gram_newton_schulz="yes")


# --------------------------------------------------------------------------------------------
# QK-clip (MuonClip)
def _clip_reference(w_q, w_k, s_max, tau):
    """Kimi K2 §2.1, written out per head (MHA, heads as row blocks): γ = min(1, τ / S_h);
    the head's query and key rows times √γ where S_h > τ."""
    w_q, w_k = w_q.copy(), w_k.copy()
    d = w_q.shape[0] // len(s_max)
    for h, s in enumerate(s_max):
        if s > tau:
            gamma = tau / s
            w_q[h * d:(h + 1) * d] *= np.sqrt(gamma)
            w_k[h * d:(h + 1) * d] *= np.sqrt(gamma)
    return w_q, w_k


def _max_logits(X, w_q, w_k, H, H_kv=None, rope=0, k_rope=None):
    """Each query head's largest logit q·k / √d on the batch X (rows are tokens); MLA: the last
    ``rope`` rows of a query head meet the shared rotary key ``k_rope``."""
    H_kv = H if H_kv is None else H_kv
    dq = w_q.shape[0] // H
    dk = w_k.shape[0] // H_kv
    out = []
    for h in range(H):
        q = X @ w_q[h * dq:(h + 1) * dq].T
        g = h // (H // H_kv)
        k = X @ w_k[g * dk:(g + 1) * dk].T
        if rope:
            k = np.concatenate([k, X @ k_rope.T], axis=1)
        out.append((q @ k.T).max() / np.sqrt(dq))
    return np.array(out)


def test_qk_clip_rule(backend, dtype):
    rng = np.random.default_rng(40)
    w_q, w_k = rng.standard_normal((12, 5)), rng.standard_normal((12, 5))   # 4 heads of 3 rows
    s_max = np.array([50.0, 400.0, 100.0, 250.0])   # head 2 sits at τ: not clipped
    q, k = xo.qk_clip(backend.asarray(w_q, dtype), backend.asarray(w_k, dtype),
                      backend.asarray(s_max, dtype), tau=100.0)
    assert_array(q, backend, shape=(12, 5), dtype=dtype)
    assert_array(k, backend, shape=(12, 5), dtype=dtype)
    rq, rk = _clip_reference(w_q, w_k, s_max, 100.0)
    assert_close(q, rq, backend, rtol=TOL[dtype])
    assert_close(k, rk, backend, rtol=TOL[dtype])
    keep = np.r_[0:3, 6:9]  # heads 0 and 2 keep their values exactly
    w_in = backend.to_numpy(backend.asarray(w_q, dtype))
    np.testing.assert_array_equal(backend.to_numpy(q)[keep], w_in[keep])
    # host floats for max_logits, and the x @ W layout (heads along the last axis)
    qt, kt = xo.qk_clip(backend.asarray(w_q.T, dtype), backend.asarray(w_k.T, dtype), list(s_max),
                        tau=100.0, axis=-1)
    assert_close(qt, rq.T, backend, rtol=TOL[dtype])
    assert_close(kt, rk.T, backend, rtol=TOL[dtype])


@pytest.mark.parametrize("layout", ["mha", "gqa", "mla", "alpha"])
def test_qk_clip_caps_each_heads_logits_at_tau(backend, layout):
    """On the batch the maxima were measured on, every clipped head's largest logit becomes τ
    and the others stay as they were: MHA, grouped keys (GQA), MLA (rotary query rows scaled by
    γ, the shared rotary key untouched) and an uneven split α = 0.3."""
    rng = np.random.default_rng(41)
    X = rng.standard_normal((16, 6))
    H, H_kv, rope, alpha = 4, (2 if layout == "gqa" else 4), (2 if layout == "mla" else 0), 0.5
    alpha = 0.3 if layout == "alpha" else 0.5
    d_nope = 3
    w_q = 2 * rng.standard_normal((H * (d_nope + rope), 6))
    w_k = 2 * rng.standard_normal((H_kv * d_nope, 6))
    k_rope = rng.standard_normal((rope, 6)) if rope else None
    before = _max_logits(X, w_q, w_k, H, H_kv, rope, k_rope)
    tau = float(np.sort(before)[1]) * 0.999  # clips three heads of four
    q, k = xo.qk_clip(backend.asarray(w_q), backend.asarray(w_k), backend.asarray(before), tau=tau,
                      alpha=alpha, q_rope_dim=rope,
                      num_kv_heads=H_kv if layout == "gqa" else None)
    after = _max_logits(X, backend.to_numpy(q), backend.to_numpy(k), H, H_kv, rope, k_rope)
    np.testing.assert_allclose(after, np.minimum(before, tau), rtol=1e-10)
    assert (before > tau).sum() == 3


def test_qk_clip_nonfinite_and_low_precision(backend):
    w = np.ones((6, 2))
    q, _ = xo.qk_clip(backend.asarray(w), backend.asarray(w), [np.nan, np.inf, 400.0], tau=100.0)
    np.testing.assert_array_equal(backend.to_numpy(q)[:, 0], [1, 1, 1, 1, 0.5, 0.5])
    if backend.has_bfloat16:
        qb, _ = xo.qk_clip(backend.asarray(w, "bfloat16"), backend.asarray(w, "bfloat16"),
                           [1.0, 1.0, 400.0], tau=100.0)
        assert qb.dtype == backend.xp.bfloat16
        np.testing.assert_array_equal(backend.to_numpy(qb)[:, 0], [1, 1, 1, 1, 0.5, 0.5])


def test_qk_clip_bad_input(backend):
    w = backend.asarray(np.ones((12, 5)))
    s = backend.asarray(np.ones(4))
    cases = [
        ({"w_q": backend.asarray(np.ones((10, 5)))}, ValueError, "w_q"),
        ({"w_k": backend.asarray(np.ones((10, 5)))}, ValueError, "w_k"),
        ({"num_kv_heads": 3}, ValueError, "num_kv_heads"),
        ({"tau": 0.0}, ValueError, "tau"),
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"q_rope_dim": 3}, ValueError, "q_rope_dim"),
        ({"axis": 2}, ValueError, "axis"),
        ({"max_logits": backend.asarray(np.ones((2, 2)))}, ValueError, "max_logits"),
        ({"max_logits": "big"}, TypeError, "max_logits"),
    ]
    for kw, err, name in cases:
        args = {"w_q": w, "w_k": w, "max_logits": s, **kw}
        with pytest.raises(err, match=name):
            xo.qk_clip(args.pop("w_q"), args.pop("w_k"), args.pop("max_logits"), **args)


def test_qk_clip_in_place_for_torch_parameters():
    """``qk_clip_``: the training loop's call after ``step`` — the parameters (and views of
    them) change in place, under no_grad, as the functional ``qk_clip``; γ comes back."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(42)
    q_proj = torch.nn.Linear(8, 4 * 2, bias=False)
    kv_proj = torch.nn.Linear(8, 4 * (2 + 3), bias=False)   # MLA-style: per head [k rows, v rows]
    w_q0, w_kv0 = q_proj.weight.detach().clone(), kv_proj.weight.detach().clone()
    s = torch.tensor([10.0, 300.0, 150.0, 90.0])
    k_view = kv_proj.weight.view(4, 5, 8)[:, :2]              # each head's key rows (a view)
    ptr = q_proj.weight.data_ptr()
    gamma = xo.qk_clip_(q_proj.weight, k_view, s, tau=100.0, num_kv_heads=4)
    assert q_proj.weight.data_ptr() == ptr and q_proj.weight.requires_grad
    torch.testing.assert_close(gamma, torch.tensor([1.0, 1 / 3, 2 / 3, 1.0]))
    want_q, want_k = xo.qk_clip(w_q0, w_kv0.view(4, 5, 8)[:, :2], s, tau=100.0, num_kv_heads=4)
    torch.testing.assert_close(q_proj.weight.detach(), want_q)
    torch.testing.assert_close(kv_proj.weight.detach().view(4, 5, 8)[:, :2], want_k)
    assert torch.equal(kv_proj.weight.detach().view(4, 5, 8)[:, 2:], w_kv0.view(4, 5, 8)[:, 2:])
    with pytest.raises(TypeError, match="qk_clip"):
        xo.qk_clip_(np.ones((4, 2)), np.ones((4, 2)), [1.0, 2.0])


# --------------------------------------------------------------------------------------------
# NorMuon
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
    hyper = {"lr": 0.05, "momentum": 0.9, "beta2": 0.9, "weight_decay": 0.1}
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


# --------------------------------------------------------------------------------------------
# per-head Newton–Schulz
def test_muon_num_heads_orthogonalizes_each_head(backend, dtype):
    """``num_heads`` H: a ``(H·d, n)`` weight is H matrices ``d × n``, each stepped by
    −η √max(1, d/n) msign(G_h) (momentum 0), as if each head were its own parameter; the
    fused path and the chain agree; NorMuon takes the option too."""
    rng = np.random.default_rng(60)
    G, P = rng.standard_normal((4 * 6, 3)), rng.standard_normal((4 * 6, 3))
    hyper = {"lr": 0.5, "momentum": 0.0, "ns_steps": 12, "weight_decay": 0.1}
    (u,), (st,) = _step(backend, [P], [G], dtype, num_heads=4, **hyper)
    assert_array(u, backend, shape=(24, 3), dtype=dtype)
    assert tuple(st.momentum_buffer.shape) == (4, 6, 3)
    heads = G.reshape(4, 6, 3)
    want = (-0.5 * np.sqrt(6 / 3) * _polar(heads) - 0.5 * 0.1 * P.reshape(4, 6, 3)).reshape(24, 3)
    tol = 1e-6 if dtype == "float64" else 1e-4
    assert_close(u, want, backend, rtol=0, atol=tol)
    ups, _ = _step(backend, list(P.reshape(4, 6, 3)), list(heads), dtype, **hyper)
    assert_close(u, np.concatenate([backend.to_numpy(x) for x in ups]), backend, rtol=0,
                 atol=10 * TOL[dtype])
    h = {**hyper, "num_heads": 4, "cautious_weight_decay": True}
    params = [backend.asarray(P, dtype)]
    a, b = muon.transform(**h), muon.composed(**h)
    ua, _ = a.update([backend.asarray(G, dtype)], a.init(params), params)
    ub, _ = b.update([backend.asarray(G, dtype)], b.init(params), params)
    assert_close(ua[0], backend.to_numpy(ub[0]), backend, rtol=0, atol=10 * TOL[dtype])
    from xpmat.optim import normuon
    _, sn = normuon.update([backend.asarray(G, dtype)], normuon.init(params, num_heads=4), params,
                           num_heads=4)
    assert tuple(sn[0].variance_neuron.shape) == (4, 6, 1)


def test_muon_num_heads_bad_input(backend):
    p = [backend.asarray(np.ones((10, 3)))]
    with pytest.raises(ValueError, match="num_heads"):
        muon.init(p, num_heads=4)                      # 10 rows do not split into 4 heads
    with pytest.raises(ValueError, match="num_heads"):
        muon.init([backend.asarray(np.ones((2, 4, 3)))], num_heads=2)   # 2-D parameters only
    with pytest.raises(ValueError, match="num_heads"):
        muon.init(p, num_heads=0)
    s = muon.init(p, num_heads=1)                      # 1: off
    assert tuple(s[0].momentum_buffer.shape) == (10, 3)


def test_torch_muon_num_heads_group():
    torch = pytest.importorskip("torch")
    torch.manual_seed(61)
    q = torch.nn.Linear(8, 4 * 4, bias=False)
    mlp = torch.nn.Linear(8, 32, bias=False)
    opt = xo.Muon([{"params": [q.weight], "num_heads": 4}, {"params": [mlp.weight]}], lr=0.05)
    q0 = q.weight.detach().clone()
    g = torch.randn(q.weight.shape)
    q.weight.grad, mlp.weight.grad = g.clone(), torch.randn(mlp.weight.shape)
    opt.step()
    assert tuple(opt.state[q.weight]["momentum_buffer"].shape) == (4, 4, 8)
    assert tuple(opt.state[mlp.weight]["momentum_buffer"].shape) == (32, 8)
    u, _ = muon.update([g], muon.init([q0], num_heads=4), [q0], lr=0.05, num_heads=4)
    assert torch.equal(q.weight.detach(), q0 + u[0])


# --------------------------------------------------------------------------------------------
# Dion2
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
                             weight_decay=0.1)
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


# --------------------------------------------------------------------------------------------
# split_sizes (fused QKV)
def test_muon_split_sizes_orthogonalizes_each_block(backend, dtype):
    """``split_sizes`` (q, k, v): a fused ``(q + k + v, n)`` weight steps as three separate
    parameters — each block −η √max(1, s/n) msign(G_block) − η λ W_block (momentum 0); the
    fused path and the chain agree; NorMuon takes the option too."""
    rng = np.random.default_rng(80)
    sizes = (8, 4, 4)            # GQA: 8 query rows, 4 key rows, 4 value rows
    G, P = rng.standard_normal((16, 6)), rng.standard_normal((16, 6))
    hyper = {"lr": 0.5, "momentum": 0.0, "ns_steps": 12, "weight_decay": 0.1}
    (u,), (st,) = _step(backend, [P], [G], dtype, split_sizes=sizes, **hyper)
    assert tuple(st.momentum_buffer.shape) == (16, 6)
    blocks = np.split(np.arange(16), np.cumsum(sizes)[:-1])
    want = np.concatenate([-0.5 * np.sqrt(max(1, len(b) / 6)) * _polar(G[b]) - 0.05 * P[b] for b in blocks])
    tol = 1e-6 if dtype == "float64" else 1e-4
    assert_close(u, want, backend, rtol=0, atol=tol)
    ups, _ = _step(backend, [P[b] for b in blocks], [G[b] for b in blocks], dtype, **hyper)
    assert_close(u, np.concatenate([backend.to_numpy(x) for x in ups]), backend, rtol=0,
                 atol=10 * TOL[dtype])
    h = {**hyper, "split_sizes": list(sizes), "cautious_weight_decay": True}
    params = [backend.asarray(P, dtype)] * 2
    grads = [backend.asarray(G, dtype), backend.asarray(P, dtype)]
    a, b = muon.transform(**h), muon.composed(**h)
    ua, _ = a.update(grads, a.init(params), params)
    ub, _ = b.update(grads, b.init(params), params)
    for x, y in zip(ua, ub, strict=True):
        assert_close(x, backend.to_numpy(y), backend, rtol=0, atol=10 * TOL[dtype])
    from xpmat.optim import normuon
    un, _ = normuon.update([backend.asarray(G, dtype)], normuon.init(params[:1]), params[:1],
                           split_sizes=sizes)
    assert_array(un[0], backend, shape=(16, 6), dtype=dtype)


def test_muon_split_sizes_bad_input(backend):
    p = [backend.asarray(np.ones((10, 3)))]
    with pytest.raises(ValueError, match="split_sizes"):
        muon.init(p, split_sizes=(4, 4))               # adds up to 8, not 10
    with pytest.raises(ValueError, match="split_sizes"):
        muon.init(p, split_sizes=(5, 0, 5))
    with pytest.raises(ValueError, match="split_sizes"):
        muon.init(p, split_sizes=(5, 5), num_heads=2)
    with pytest.raises(ValueError, match="split_sizes"):
        muon.update([p[0]], muon.init(p), p, split_sizes=(6, 6))
    with pytest.raises(ValueError, match="split_sizes"):
        muon.composed(split_sizes=(6, 6)).update([p[0]], muon.composed().init(p), p)


def test_torch_muon_split_sizes_group():
    torch = pytest.importorskip("torch")
    torch.manual_seed(81)
    qkv = torch.nn.Linear(8, 16 + 8 + 8, bias=False)
    opt = xo.Muon([{"params": [qkv.weight], "split_sizes": [16, 8, 8]}], lr=0.05)
    w0 = qkv.weight.detach().clone()
    g = torch.randn(qkv.weight.shape)
    qkv.weight.grad = g.clone()
    opt.step()
    u, _ = muon.update([g], muon.init([w0]), [w0], lr=0.05, split_sizes=(16, 8, 8))
    assert torch.equal(qkv.weight.detach(), w0 + u[0])
