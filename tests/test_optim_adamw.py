"""AdamW (§4): the functional core against an independent NumPy float64 reference (every flag),
torch.optim.AdamW, AMSGrad's max after bias correction, the stationary update RMS."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DASK_OPTIMIZER_LOOP, TOL, assert_array, assert_close
from optim_helpers import gaussian_seq, run_core

import xpmat.optim as xo
from xpmat.optim import adamw

torch = pytest.importorskip("torch")


# independent NumPy float64 references
def adamw_reference(params, grad_seq, *, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, wd=1e-2,
                    mode="lr", s=1.0, amsgrad=False, nesterov=False, atan2=False):
    """Fig. 1 of §4 written out plainly (max after bias correction)."""
    b1, b2 = betas
    p = [np.array(x, dtype=np.float64) for x in params]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    vmax = [np.zeros_like(x) for x in p]
    for t, grads in enumerate(grad_seq, start=1):
        for i, g in enumerate(grads):
            g = np.asarray(g, dtype=np.float64)
            if mode == "l2":
                g = g + wd * p[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            mb = (b1 * m[i] / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1 ** t)) if nesterov \
                else m[i] / (1 - b1 ** t)
            vb = v[i] / (1 - b2 ** t)
            if amsgrad:
                vmax[i] = np.maximum(vmax[i], vb)
                vb = vmax[i]
            o = np.arctan2(mb, np.sqrt(vb)) if atan2 else mb / (np.sqrt(vb) + eps)
            decay = {"lr": s * lr * wd, "decoupled": s * wd, "l2": 0.0}[mode]
            p[i] = p[i] - s * lr * o - decay * p[i]
    return p


@pytest.mark.parametrize("flags", [
    {},
    {"amsgrad": True},
    {"nesterov": True},
    {"atan2": True},
    {"weight_decay_mode": "decoupled", "weight_decay": 1e-3, "schedule": 0.5},
    {"weight_decay_mode": "l2", "weight_decay": 0.1},
], ids=["default", "amsgrad", "nesterov", "atan2", "decoupled", "l2"])
def test_adamw_core_matches_reference(backend, dtype, flags):
    shapes = [(5, 4), (4,)]
    seq = gaussian_seq(shapes, 12, seed=1)
    params0 = [np.random.default_rng(2).standard_normal(s) for s in shapes]
    hyper = {"lr": 1e-2, **flags}
    params, state = run_core(adamw, backend, params0, seq, dtype, **hyper)
    ref = adamw_reference(params0, seq, lr=1e-2, wd=flags.get("weight_decay", 1e-2),
                          mode=flags.get("weight_decay_mode", "lr"), s=flags.get("schedule", 1.0),
                          amsgrad=flags.get("amsgrad", False), nesterov=flags.get("nesterov", False),
                          atan2=flags.get("atan2", False))
    for p, r, s in zip(params, ref, shapes, strict=True):
        assert_array(p, backend, shape=s, dtype=dtype)
        assert_close(p, r, backend, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    assert_array(state[0].exp_avg, backend, shape=(5, 4), dtype=dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adamw_default_equals_torch_adamw(dtype):
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(6, 5, generator=gen, dtype=dt), torch.randn(5, generator=gen, dtype=dt)]
    a = [p.clone().requires_grad_() for p in ps]
    b = [p.clone().requires_grad_() for p in ps]
    ref, ours = torch.optim.AdamW(a, lr=3e-3), xo.AdamW(b, lr=3e-3)
    for _ in range(30):
        gs = [torch.randn(p.shape, generator=gen, dtype=dt) for p in ps]
        for x, y, g in zip(a, b, gs, strict=True):
            x.grad, y.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(y, x, rtol=TOL[dtype] / 10 if dtype == "float32" else 1e-12,
                                   atol=1e-6 if dtype == "float32" else 1e-13)


def test_amsgrad_max_after_bias_correction():
    """g₁ = 1 then zeros: the max of the *corrected* v̄ keeps the denominator fixed, while
    torch (max before correction) lets √(v_max / (1 − β₂ᵗ)) shrink, so its step grows."""
    b2 = 0.99
    seq = [[np.ones(3)]] + [[np.full(3, 1e-3)]] * 30
    _, st = run_core_np(seq, amsgrad=True, betas=(0.0, b2))
    # ours: v̄_max stays at its first value (1) forever
    np.testing.assert_allclose(st[0].max_exp_avg_sq, 1.0, rtol=1e-12)
    # the per-step update size |η m̄ / (√v̄_max + ε)| is non-increasing for constant g
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    t_opt = torch.optim.Adam([x], lr=1.0, betas=(0.0, b2), eps=0.0, amsgrad=True)
    torch_steps, ours_steps = [], []
    params = [np.zeros(3)]
    state = adamw.init(params, amsgrad=True)
    for (g,) in seq:
        x.grad = torch.tensor(g)
        before = x.detach().clone()
        t_opt.step()
        torch_steps.append(float((x.detach() - before).abs()[0]))
        ups, state = adamw.update([g], state, params, lr=1.0, betas=(0.0, b2), eps=0.0,
                                  weight_decay=0.0, amsgrad=True)
        ours_steps.append(float(np.abs(ups[0][0])))
    # constant g = 1e-3 after step 1: ours is exactly 1e-3 / 1 each step (denominator held)
    np.testing.assert_allclose(ours_steps[1:], 1e-3, rtol=1e-12)
    # torch's (max before correction) grows by √((1 − β₂²)/(1 − β₂³¹)) ≈ 2.2× over the run
    assert torch_steps[-1] / torch_steps[1] > 2.0
    assert torch_steps[1] == pytest.approx(ours_steps[1] * np.sqrt((1 - b2 ** 2) / (1 - b2)),
                                           rel=1e-9)


def run_core_np(seq, **hyper):
    params = [np.zeros(np.shape(seq[0][0]))]
    state = adamw.init(params, **hyper)
    for grads in seq:
        ups, state = adamw.update(grads, state, params, weight_decay=0.0, **hyper)
        params = xo.apply_updates(params, ups)
    return params, state


@pytest.mark.skip_xp_backends("dask", reason=DASK_OPTIMIZER_LOOP)
@pytest.mark.parametrize("beta1", [0.0, 0.9])
def test_adamw_stationary_update_rms(backend, beta1):
    """§4.5 eq. (50)-(51): on iid N(0, σ²) gradients the update RMS → √((1−β₁)/(1+β₁))."""
    d, steps, sigma2 = 2048, 1200, 42.0
    rng = np.random.default_rng(3)
    params = [backend.asarray(np.zeros(d))]
    hyper = {"lr": 1.0, "betas": (beta1, 0.999), "eps": 0.0, "weight_decay": 0.0}
    state = adamw.init(params, **hyper)
    sq = []
    for t in range(steps):
        g = backend.asarray(np.sqrt(sigma2) * rng.standard_normal(d))
        ups, state = adamw.update([g], state, params, **hyper)
        if t >= steps - 400:
            sq.append(float(np.mean(backend.to_numpy(ups[0]) ** 2)))
    rms = np.sqrt(np.mean(sq))
    want = np.sqrt((1 - beta1) / (1 + beta1))
    assert rms == pytest.approx(want, rel=0.05), (rms, want)
