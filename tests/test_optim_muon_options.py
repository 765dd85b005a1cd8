"""Muon's options (issue 26): Gram Newton–Schulz, cautious weight decay, ``flatten`` (expert
stacks as batches of matrices), per-head Newton–Schulz (``num_heads``) and ``split_sizes``
(fused QKV), each against a reference written from its definition, on every backend; the fused
path and the chain of transforms agree; the torch class plumbs them per param group.  Muon
itself: ``test_optim_muon.py``."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DASK_OPTIMIZER_LOOP, TOL, assert_array, assert_close

import xpmat.optim as xo
from xpmat import msign, orthogonalize
from xpmat.optim import muon

# Newton–Schulz in the input's dtype: these tests hold float32 runs to float32 tolerances (the
# default "auto" computes in bf16 on devices with native bf16; test_optim_muon.py tests it)
F32_NS = {"compute_dtype": None}


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
    hyper = {"lr": 0.5, "momentum": 0.0, "ns_steps": 12, **F32_NS}
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
    hyper = {"lr": 0.1, "weight_decay": 0.1, **F32_NS}
    plain, _ = _step(backend, params, grads, dtype, **hyper)
    seen = []
    real = orthogonalize.newton_schulz

    def spy(U, *a, **k):
        seen.append((tuple(U.shape[-2:]), k["gram"]))
        return real(U, *a, **k)

    monkeypatch.setattr(orthogonalize, "newton_schulz", spy)
    gram, _ = _step(backend, params, grads, dtype, use_gram_newton_schulz=True, **hyper)
    assert sorted(seen) == [((8, 48), True), ((12, 12), False), ((48, 8), True)]
    for x, y in zip(gram, plain, strict=True):
        assert_close(x, backend.to_numpy(y), backend, rtol=0, atol=TOL[dtype])
    assert orthogonalize.gram_saves(4096, 256, 5) and not orthogonalize.gram_saves(256, 256, 5)
    assert not orthogonalize.gram_saves(300, 200, 5) and orthogonalize.gram_saves(310, 200, 5)


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
# per-head Newton–Schulz
def test_muon_num_heads_orthogonalizes_each_head(backend, dtype):
    """``num_heads`` H: a ``(H·d, n)`` weight is H matrices ``d × n``, each stepped by
    −η √max(1, d/n) msign(G_h) (momentum 0), as if each head were its own parameter; the
    fused path and the chain agree; NorMuon takes the option too."""
    rng = np.random.default_rng(60)
    G, P = rng.standard_normal((4 * 6, 3)), rng.standard_normal((4 * 6, 3))
    hyper = {"lr": 0.5, "momentum": 0.0, "ns_steps": 12, "weight_decay": 0.1, **F32_NS}
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
# split_sizes (fused QKV)
def test_muon_split_sizes_orthogonalizes_each_block(backend, dtype):
    """``split_sizes`` (q, k, v): a fused ``(q + k + v, n)`` weight steps as three separate
    parameters — each block −η √max(1, s/n) msign(G_block) − η λ W_block (momentum 0); the
    fused path and the chain agree; NorMuon takes the option too."""
    rng = np.random.default_rng(80)
    sizes = (8, 4, 4)            # GQA: 8 query rows, 4 key rows, 4 value rows
    G, P = rng.standard_normal((16, 6)), rng.standard_normal((16, 6))
    hyper = {"lr": 0.5, "momentum": 0.0, "ns_steps": 12, "weight_decay": 0.1, **F32_NS}
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
