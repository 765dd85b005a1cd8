"""The torch side (``xpmat.optim.torch_adapter`` and the registry): for every registered method
the torch class equals its functional core, ``state_dict`` round trips (bf16 parameters with
float32 state), closures / ``maximize`` / ``zero_grad``, the digits MLP demo trains; the cores
never import torch."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import xpmat.optim as xo
from xpmat.optim import adamw, torch_foreach

torch = pytest.importorskip("torch")


def test_functional_cores_do_not_import_torch():
    """``import xpmat.optim`` and every core module leave torch unloaded (fresh interpreter)."""
    import subprocess
    import sys

    mods = ", ".join(sorted({info.module for info in xo.REGISTRY.values()}))
    code = f"import sys, xpmat.optim, {mods}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------
# every registered method: torch class == functional core, state_dict round trip, digits MLP
def _model_params(seed=0, dtype=torch.float32, conv=True):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(12, 8), (12, 8), (6, 12), (12,)]
    if conv:
        shapes.append((4, 2, 3, 3))
    return [torch.randn(s, generator=gen, dtype=dtype) * 0.5 for s in shapes]


def _grads_for(params, step, seed=0):
    gen = torch.Generator().manual_seed(1000 * seed + step)
    # a loss-like gradient: depends on the parameter (so trajectories differ if state differs)
    return [(p.float() * 0.3 + torch.randn(p.shape, generator=gen)).to(p.dtype) for p in params]


METHODS = sorted(xo.REGISTRY)


def _hyper_for(name):
    return dict(xo.REGISTRY[name].demo)


@pytest.mark.parametrize("path", ["gated", "host"])
@pytest.mark.parametrize("name", METHODS)
def test_torch_class_equals_functional_core(name, path, monkeypatch):
    """Bitwise with the gated foreach kernels (what a compiled step runs); to rounding on the
    CPU path, where AdamW (and the AdamW fallback) and SGD run torch's fused kernels (the
    GPU's per-parameter fused path: tests/test_optim_inplace.py)."""
    monkeypatch.setattr(torch_foreach, "EAGER_PATH", path)
    core = xo.core(name)
    info = xo.REGISTRY[name]
    hyper = _hyper_for(name)
    ps = _model_params(dtype=torch.float64)
    tp = [p.clone().requires_grad_() for p in ps]
    opt = xo.torch_class(name)(tp, **hyper)
    # functional: matrix-only methods route 1-D to AdamW with the class's fallback settings
    t = core.transform(**{k: v for k, v in hyper.items() if k in core.DEFAULTS})
    if info.matrix_only:
        fb = {"lr": opt.defaults["lr"] * opt.defaults["adamw_lr_ratio"], "betas": opt.defaults["adamw_betas"],
              "eps": opt.defaults["adamw_eps"], "weight_decay": opt.defaults["adamw_weight_decay"],
              "schedule": hyper.get("schedule", 1.0)}
        t = xo.route(t, adamw.transform(**fb))
    fp = [p.clone() for p in ps]
    st = t.init(fp)
    for k in range(5):
        gs = _grads_for(fp, k)
        for p, g in zip(tp, _grads_for([q.detach() for q in tp], k), strict=True):
            p.grad = g
        opt.step()
        ups, st = t.update(gs, st, fp)
        fp = xo.apply_updates(fp, ups)
    tol = {"rtol": 1e-13, "atol": 1e-15} if path == "host" else {"rtol": 0, "atol": 0}
    for a, b in zip(tp, fp, strict=True):
        torch.testing.assert_close(a.detach(), b, **tol)


@pytest.mark.parametrize("pdtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", METHODS)
def test_state_dict_round_trip(name, pdtype):
    """10 steps, save, load into a fresh optimizer, 10 more == 20 straight steps (bitwise)."""
    hyper = _hyper_for(name)
    cls = xo.torch_class(name)

    def run(params, opt, k0, k1):
        for k in range(k0, k1):
            for p, g in zip(params, _grads_for([q.detach() for q in params], k), strict=True):
                p.grad = g
            opt.step()

    straight = [p.clone().requires_grad_() for p in _model_params(dtype=pdtype)]
    opt = cls(straight, **hyper)
    run(straight, opt, 0, 20)

    first = [p.clone().requires_grad_() for p in _model_params(dtype=pdtype)]
    opt1 = cls(first, **hyper)
    run(first, opt1, 0, 10)
    saved = copy.deepcopy(opt1.state_dict())
    second = [p.detach().clone().requires_grad_() for p in first]
    opt2 = cls(second, **hyper)
    opt2.load_state_dict(saved)
    if pdtype == torch.bfloat16:  # state kept in float32 across the round trip
        st = opt2.state[second[0]]
        assert any(v.dtype == torch.float32 for v in st.values() if v.ndim > 0)
    run(second, opt2, 10, 20)
    for a, b in zip(straight, second, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=0)


def test_closure_maximize_and_zero_grad():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = xo.AdamW([x], lr=0.1, weight_decay=0.0, maximize=True)

    def closure():
        opt.zero_grad()
        loss = -(x ** 2).sum()  # maximize −‖x‖²: move toward 0
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.detach()) == pytest.approx(-5.0)
    torch.testing.assert_close(x.detach(), torch.tensor([0.9, -1.9]))
    opt.zero_grad()
    assert x.grad is None


DIGITS_ACCURACY = 0.90  # every optimizer, 150 steps of batch 128 (the demo runs 300)


@pytest.mark.parametrize("name", METHODS)
def test_trains_digits_mlp(name):
    from xpmat.demo import train_digits

    r = train_digits(name, steps=150)
    assert np.isfinite(r["final_loss"])
    assert r["losses"][-1] < r["losses"][0]
    assert r["test_accuracy"] >= DIGITS_ACCURACY, r["test_accuracy"]


def test_torch_load_state_dict_copies_state():
    """A state_dict taken from a live optimizer is copied on load: the loaded optimizer's
    in-place momentum updates (Muon) do not reach the optimizer it came from."""
    gen = torch.Generator().manual_seed(3)
    a = [torch.randn(6, 4, generator=gen).requires_grad_()]
    b = [a[0].detach().clone().requires_grad_()]
    oa, ob = xo.Muon(a, lr=0.1), xo.Muon(b, lr=0.1)
    a[0].grad = torch.randn(6, 4, generator=gen)
    b[0].grad = a[0].grad.clone()
    oa.step()
    ob.load_state_dict(oa.state_dict())
    saved = oa.state[a[0]]["momentum_buffer"].clone()
    ob.step()
    assert torch.equal(oa.state[a[0]]["momentum_buffer"], saved)
    assert not torch.equal(ob.state[b[0]]["momentum_buffer"], saved)
