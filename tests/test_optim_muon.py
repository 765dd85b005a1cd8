"""Muon: batched msign equals one matrix at a time, the direction and scale, ``reuse_state``,
Newton–Schulz stacks chunked on a CPU (core and torch class), torch.optim.Muon, and the
default Newton–Schulz precision ``compute_dtype="auto"`` of the Muon family."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from conftest import TOL, assert_array, assert_close

import xpmat.optim as xo
from xpmat import orthogonalize

torch = pytest.importorskip("torch")


def test_muon_batched_equals_per_parameter(backend, dtype):
    """Same-shaped matrices go through one batched msign: equal to calling one at a time."""
    from xpmat.optim import muon

    rng = np.random.default_rng(7)
    shapes = [(8, 5), (8, 5), (5, 8), (8, 5), (3, 2, 2, 2)]
    params = [backend.asarray(rng.standard_normal(s), dtype) for s in shapes]
    grads = [backend.asarray(rng.standard_normal(s), dtype) for s in shapes]
    hyper = {"lr": 0.1, "weight_decay": 0.01, "adjust_lr_fn": "match_rms_adamw"}
    ups, st = muon.update(grads, muon.init(params, **hyper), params, **hyper)
    for i, s in enumerate(shapes):
        u1, _ = muon.update([grads[i]], muon.init([params[i]], **hyper), [params[i]], **hyper)
        assert_array(ups[i], backend, shape=s, dtype=dtype)
        assert_close(ups[i], backend.to_numpy(u1[0]), backend, rtol=TOL[dtype] * 10,
                     atol=TOL[dtype] * 10)
    assert tuple(st[4].momentum_buffer.shape) == (3, 8)


def test_muon_direction_and_scale(backend):
    """Update = −η a(m, n) msign(U) with U the Nesterov momentum; zero gradient → zero step."""
    from xpmat import msign
    from xpmat.optim import muon

    rng = np.random.default_rng(8)
    G = rng.standard_normal((12, 4))
    p = [backend.asarray(np.zeros((12, 4)))]
    u, _ = muon.update([backend.asarray(G)], muon.init(p), p, lr=0.5, momentum=0.9)
    U = G + 0.9 * ((1 - 0.9) * G - G)  # buffer after one step is (1 − μ) G
    want = -0.5 * np.sqrt(12 / 4) * np.asarray(msign(U))
    assert_close(u[0], want, backend, rtol=1e-10, atol=1e-12)
    z, _ = muon.update([backend.asarray(np.zeros((12, 4)))], muon.init(p), p)
    assert_close(z[0], np.zeros((12, 4)), backend, rtol=0, atol=0)
    assert muon.adjust_lr("match_rms_adamw", 768, 3072) == pytest.approx(0.2 * np.sqrt(3072))
    assert muon.adjust_lr(None, 3072, 768) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="not a matrix"):
        muon.init([backend.asarray(np.ones(3))])


def test_muon_reuse_state(backend):
    """``reuse_state`` (momentum written into the old buffers, torch only) changes memory
    traffic, not results; without it the caller's state is left untouched."""
    from xpmat.optim import muon

    rng = np.random.default_rng(9)
    shapes = [(8, 5), (8, 5), (5, 8), (8, 5)]
    params = [backend.asarray(rng.standard_normal(s)) for s in shapes]
    grads = [backend.asarray(rng.standard_normal(s)) for s in shapes]
    hyper = {"lr": 0.1, "weight_decay": 0.01}
    st0 = muon.update(grads, muon.init(params), params, **hyper)[1]  # non-zero momentum
    before = [backend.to_numpy(s.momentum_buffer) for s in st0]
    ref_u, ref_s = muon.update(grads, st0, params, **hyper)
    for s, b in zip(st0, before, strict=True):
        assert_close(s.momentum_buffer, b, backend, rtol=0)  # untouched
    u, s = muon.transform(reuse_state=True, **hyper).update(grads, st0, params)
    for i in range(len(shapes)):
        assert_close(u[i], backend.to_numpy(ref_u[i]), backend, rtol=1e-12, atol=1e-14)
        assert_close(s[i].momentum_buffer, backend.to_numpy(ref_s[i].momentum_buffer), backend,
                     rtol=1e-14)
        if backend.lib == "torch":
            assert s[i].momentum_buffer is st0[i].momentum_buffer
    with pytest.raises(ValueError, match="ns_normalize"):
        muon.update(grads, st0, params, ns_normalize="max")


def test_muon_cpu_stacks_are_chunked(backend, monkeypatch):
    """On a CPU a shape's stack is split into Newton–Schulz calls of at most MSIGN_CPU_STACK_BYTES
    (on a GPU it is one call); the updates do not depend on the split."""
    from xpmat.optim import muon

    rng = np.random.default_rng(10)
    params = [backend.asarray(rng.standard_normal((8, 5))) for _ in range(5)]
    grads = [backend.asarray(rng.standard_normal((8, 5))) for _ in range(5)]
    whole, _ = muon.update(grads, muon.init(params), params, weight_decay=0.1)
    calls = []
    real = orthogonalize.newton_schulz

    def counted(U, *a, **k):
        calls.append(U.shape[0])
        return real(U, *a, **k)

    monkeypatch.setattr(orthogonalize, "newton_schulz", counted)
    monkeypatch.setattr(orthogonalize, "MSIGN_CPU_STACK_BYTES", 2 * 8 * 5 * 8)  # two float64 8 × 5 matrices
    split, _ = muon.update(grads, muon.init(params), params, weight_decay=0.1)
    assert calls == ([5] if backend.name in ("torch:cuda", "cupy") else [2, 2, 1])
    for a, b in zip(split, whole, strict=True):
        assert_close(a, backend.to_numpy(b), backend, rtol=1e-13, atol=1e-15)


def test_torch_muon_steps_chunk_by_chunk(monkeypatch):
    """The torch class calls the core once per group of Newton–Schulz chunks that fits the CPU
    budget (small chunks merge; 1-D parameters join the first call), and the result is
    bitwise the core's single call."""
    from xpmat.optim import adamw, muon

    monkeypatch.setattr(orthogonalize, "MSIGN_CPU_STACK_BYTES", 2 * 8 * 5 * 4)  # two float32 8 × 5 matrices
    gen = torch.Generator().manual_seed(4)
    shapes = [(8, 5)] * 5 + [(5, 8), (5,)]
    ps = [torch.randn(s, generator=gen) for s in shapes]
    gs = [torch.randn(p.shape, generator=gen) for p in ps]
    leaves = [p.clone().requires_grad_() for p in ps]
    for x, g in zip(leaves, gs, strict=True):
        x.grad = g.clone()
    # float32 Newton–Schulz (not "auto", which is bf16 on some CPUs): the budget counts 4-byte entries
    opt = xo.Muon(leaves, lr=0.05, weight_decay=0.1, adamw_lr_ratio=0.2, compute_dtype=None)
    assert muon.chunks(ps[:6]) == [[0, 1], [2, 3], [4], [5]]
    assert opt._calls(leaves, opt.param_groups[0]) == [[0, 1, 6], [2, 3], [4, 5]]
    opt.step()
    t = xo.route(muon.transform(lr=0.05, weight_decay=0.1, compute_dtype=None),
                 adamw.transform(lr=0.05 * 0.2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0))
    want = xo.apply_updates(ps, t.update(gs, t.init(ps), ps)[0])
    for x, w in zip(leaves, want, strict=True):
        assert torch.equal(x.detach(), w)


BF16_STEP_RTOL = 0.08  # measured up to 0.057 with the real msign (5 steps, 3 shapes)


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_equals_torch_muon(nesterov):
    """torch.optim.Muon: Jordan's (a, b, c), Frobenius normalization with eps 1e-7, bf16 NS,
    decoupled decay lr·λ, "original" shape factor.  Ours with those settings agrees to bf16
    precision: the NS runs in bf16 in both but with a different op order (torch fuses with
    addmm), and bf16 rounding (2⁻⁸) is amplified by up to a ≈ 3.4 per NS step on small singular
    values, so steps agree to a few percent (BF16_STEP_RTOL) and in direction (cosine) to 5e-3."""
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=gen) for s in [(16, 8), (16, 8), (8, 24)]]
    a = [p.clone().requires_grad_() for p in ps]
    b = [p.clone().requires_grad_() for p in ps]
    kw = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.95, "nesterov": nesterov}
    ref = torch.optim.Muon(a, **kw)
    ours = xo.Muon(b, ns_schedule="jordan", compute_dtype="bfloat16", eps=1e-7, ns_steps=5,
                   adjust_lr_fn="original", **kw)
    for _ in range(5):
        gs = [torch.randn(p.shape, generator=gen) for p in ps]
        d = []
        for x, y, g in zip(a, b, gs, strict=True):
            x.grad, y.grad = g.clone(), g.clone()
            d.append(x.detach().clone())
        ref.step()
        ours.step()
        for x, y, x0 in zip(a, b, d, strict=True):  # compare the steps, relative to their size
            sx, sy = x.detach() - x0, y.detach() - x0
            assert float((sx - sy).norm() / sx.norm()) < BF16_STEP_RTOL
            assert float((sx * sy).sum() / (sx.norm() * sy.norm())) > 1 - 5e-3
        for y, x in zip(b, a, strict=True):
            y.data.copy_(x.data)  # re-synchronize so bf16 rounding does not accumulate


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
@pytest.mark.parametrize("adjust", [None, "match_rms_adamw"])
def test_muon_algorithm_equals_torch_muon_float32(monkeypatch, adjust):
    """With torch's bf16 Newton–Schulz swapped for our float32 msign on its (a, b, c), the rest
    of torch.optim.Muon (momentum lerp, Nesterov, decoupled decay, lr adjustment) and ours agree
    to float32 precision, so the bf16 test above only measures the NS rounding."""
    import torch.optim._muon as tm

    from xpmat import msign

    def ns(grad, coeffs, steps, eps):
        return msign(grad, steps=steps, schedule=[coeffs], eps=eps)

    monkeypatch.setattr(tm, "_zeropower_via_newtonschulz", ns)
    gen = torch.Generator().manual_seed(1)
    ps = [torch.randn(s, generator=gen) for s in [(16, 8), (16, 8), (8, 24)]]
    a = [p.clone().requires_grad_() for p in ps]
    b = [p.clone().requires_grad_() for p in ps]
    kw = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.9, "nesterov": True}
    ref = torch.optim.Muon(a, adjust_lr_fn=adjust, **kw)
    ours = xo.Muon(b, ns_schedule="jordan", eps=1e-7, ns_steps=5, adjust_lr_fn=adjust, compute_dtype=None,
                   **kw)
    for _ in range(6):
        gs = [torch.randn(p.shape, generator=gen) for p in ps]
        for x, y, g in zip(a, b, gs, strict=True):
            x.grad, y.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(y.detach(), x.detach(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# the default Newton–Schulz precision: compute_dtype="auto"
def _native_bf16_cpu() -> bool:
    """docs/optim.md's CPU rule, written again from torch's own checks: AMX or AVX512-BF16."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def test_muon_family_defaults_to_auto():
    from xpmat.optim import dion2, muon, normuon, steepest_descent

    for module in (muon, dion2, normuon, steepest_descent):
        assert module.DEFAULTS["compute_dtype"] == "auto", module.__name__
    for cls in (xo.Muon, xo.Dion2, xo.NorMuon, xo.SteepestDescent):
        assert inspect.signature(cls).parameters["compute_dtype"].default == "auto"
    with pytest.raises(ValueError, match="compute_dtype"):
        xo.Muon([torch.zeros(3, 3, requires_grad=True)], compute_dtype="fastest")
    with pytest.raises(ValueError, match="state_dtype"):  # "auto" is a compute dtype only
        xo.Muon([torch.zeros(3, 3, requires_grad=True)], state_dtype="auto")


@pytest.mark.parametrize(("name", "dtype", "extra", "n"), [
    ("Muon", torch.float32, {}, 128),                                # the foreach kernel
    ("Muon", torch.float32, {"cautious_weight_decay": True}, 128),   # the functional core
    ("Muon", torch.float64, {}, 128),
    ("Muon", torch.float32, {}, 16),          # a call under BF16_CPU_MIN_FLOPS: float32 on a CPU
    ("Dion2", torch.float32, {"fraction": 1.0}, 128), ("NorMuon", torch.float32, {}, 128),
    ("SteepestDescent", torch.float32, {}, 128),
])
def test_default_precision_follows_the_device(name, dtype, extra, n):
    """The default step is the bf16 one for float32 parameters on a CPU with native bf16
    matmuls, where the Newton–Schulz call is big enough to gain (two 128 × 128 matrices: 1.3e8
    FLOPs), and the input dtype's elsewhere — a float64 parameter always keeps float64
    Newton–Schulz; an explicit ``compute_dtype`` wins over the default."""
    big = 2 * orthogonalize.ns_flops(n, n, 5) >= orthogonalize.BF16_CPU_MIN_FLOPS
    want = "bfloat16" if dtype == torch.float32 and big and _native_bf16_cpu() else None

    def run(**kw):
        gen = torch.Generator().manual_seed(9)
        ps = [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in [(n, n), (n, n), (8,)]]
        opt = getattr(xo, name)(ps, lr=0.02, weight_decay=0.1, **extra, **kw)
        for _ in range(2):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
            opt.step()
        return [p.detach() for p in ps[:2]]

    default = run()
    assert all(p.dtype == dtype for p in default)
    assert all(torch.equal(a, b) for a, b in zip(default, run(compute_dtype=want), strict=True))
    other = run(compute_dtype=None if want else "bfloat16")
    assert not any(torch.equal(a, b) for a, b in zip(default, other, strict=True))
