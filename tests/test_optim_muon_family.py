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
