"""Adafactor (§4.7, eq. 52, §4.7.1): the core against eq. (52) written out in NumPy, update
clipping, zero gradients, conv kernels and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, assert_array, assert_close

import xpmat.optim as xo
from xpmat.optim import adafactor


def _rms(x):
    return np.sqrt(np.mean(x * x))


def adafactor_reference(W0, gs, *, lr, beta1=None, beta2=0.999, c=None, eps1=1e-30, eps2=1e-3, d=1.0,
                        scale=True):
    """§4.7 eq. (52) + §4.7.1 written out in NumPy float64 (explicit row / column EMAs)."""
    W = np.array(W0, dtype=np.float64)
    fact = W.ndim == 2
    a, s, v, w, M = np.zeros(W.shape[0]), np.zeros(W.shape[-1]), np.zeros_like(W), 0.0, np.zeros_like(W)
    for t, G in enumerate(gs, start=1):
        b2 = beta2 if c is None else 1.0 - t ** (-c)
        V = G * G + eps1
        w = b2 * w + (1 - b2)
        if fact:
            a = b2 * a + (1 - b2) * V.sum(axis=1)
            s = b2 * s + (1 - b2) * V.sum(axis=0)
            Vhat = np.outer(a / w, s / w) / (a.sum() / w)        # ā s̄ᵀ / 1ᵀā
        else:
            v = b2 * v + (1 - b2) * V
            Vhat = v / w
        O = G / np.sqrt(Vhat)
        O = O / max(1.0, _rms(O) / d)
        if beta1 is not None:
            M = beta1 * M + (1 - beta1) * O
            O = M
        W = W - lr * (max(eps2, _rms(W)) if scale else 1.0) * O
    return W, a, s


@pytest.mark.parametrize("flags", [{}, {"beta2_decay": None, "betas": (0.0, 0.9)}, {"betas": (0.8, 0.999)},
                                   {"scale_parameter": False, "d": 0.5}],
                         ids=["default", "fixed_beta2", "beta1", "noscale_clip"])
def test_adafactor_matches_eq52_reference(backend, dtype, flags):
    rng = np.random.default_rng(0)
    shapes = [(6, 4), (5,)]
    W0 = [rng.standard_normal(s) for s in shapes]
    seq = [[rng.standard_normal(s) * (1 + 3 * (k % 2)) for s in shapes] for k in range(8)]
    hyper = {"lr": 0.05, **flags}
    params = [backend.asarray(p, dtype) for p in W0]
    st = adafactor.init(params, **hyper)
    for gs in seq:
        ups, st = adafactor.update([backend.asarray(g, dtype) for g in gs], st, params, **hyper)
        params = xo.apply_updates(params, ups)
    b1, b2 = flags.get("betas", (0.0, 0.999))
    kw = {"lr": 0.05, "beta1": b1 or None, "beta2": b2,
          "c": None if "beta2_decay" in flags else 0.8, "d": flags.get("d", 1.0),
          "scale": flags.get("scale_parameter", True)}
    for i, s in enumerate(shapes):
        W, a, c = adafactor_reference(W0[i], [g[i] for g in seq], **kw)
        assert_array(params[i], backend, shape=s, dtype=dtype)
        assert_close(params[i], W, backend, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
        if i == 0:  # the factored state is exactly the row / column EMA of G² (eq. 52)
            assert_close(st[0].exp_avg_sq_row, a, backend, rtol=TOL[dtype] * 10, atol=TOL[dtype])
            assert_close(st[0].exp_avg_sq_col, c, backend, rtol=TOL[dtype] * 10, atol=TOL[dtype])
    assert st[1].exp_avg_sq_row is None and tuple(st[1].exp_avg_sq.shape) == (5,)


def test_adafactor_clipping_zero_grad_conv_and_errors(backend):
    rng = np.random.default_rng(1)
    p = [backend.asarray(rng.standard_normal((4, 2, 3, 3)))]
    st = adafactor.init(p)
    assert tuple(st[0].exp_avg_sq_row.shape) == (4,) and tuple(st[0].exp_avg_sq_col.shape) == (18,)
    for _ in range(5):  # clipped update: RMS(u) ≤ η · RMS(W) (d = 1, no momentum)
        u, st = adafactor.update([backend.asarray(rng.standard_normal((4, 2, 3, 3)) ** 3)], st, p, lr=0.1)
        ratio = _rms(backend.to_numpy(u[0])) / (0.1 * _rms(backend.to_numpy(p[0])))
        assert ratio <= 1 + 1e-12, ratio
    assert_array(u[0], backend, shape=(4, 2, 3, 3), dtype="float64")
    z, _ = adafactor.update([backend.asarray(np.zeros((4, 2, 3, 3)))], adafactor.init(p), p)
    assert_close(z[0], np.zeros((4, 2, 3, 3)), backend, rtol=0, atol=0)
    z, _ = adafactor.update([backend.asarray(np.zeros((4, 2, 3, 3)))], adafactor.init(p, eps=(0.0, 1e-3)),
                            p, eps=(0.0, 1e-3))
    assert_close(z[0], np.zeros((4, 2, 3, 3)), backend, rtol=0, atol=0)   # no NaN
    with pytest.raises(ValueError, match="beta2_decay"):
        adafactor.init(p, beta2_decay=0.8)
    with pytest.raises(ValueError, match=r"betas\[0\]"):
        adafactor.init(p, betas=(1.0, 0.999))
    with pytest.raises(TypeError, match="unknown argument"):
        adafactor.init(p, beta3=0.5)
    with pytest.raises(TypeError, match="`decay_rate` was renamed: beta2_decay"):
        adafactor.init(p, decay_rate=-0.8)
