"""AdaGrad (§3): diagonal and full-matrix (per block, rank-r eigenbasis) against NumPy float64
references on every backend, the exact full step as ``xpmat.inv_root``, torch.optim.Adagrad."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from optim_helpers import beside_torch, gaussian_seq, run_to_host

import xpmat.optim as xo
from xpmat import inv_root
from xpmat.optim import adagrad

torch = pytest.importorskip("torch")


def _pinv_sqrt_apply(O, g, eps, v=0.0):
    """``(v I + O)^{+1/2} g`` with 1 / (√λ + ε) on the resolved eigenvalues (NumPy eigh)."""
    lam, V = np.linalg.eigh(O + v * np.eye(len(O)))
    keep = lam > len(lam) * np.finfo(np.float64).eps / 2 * lam.max()
    f = np.where(keep, 1.0 / (np.sqrt(np.where(keep, lam, 1.0)) + eps), 0.0)
    return V @ (f * (V.T @ g))


def adagrad_reference(params, grad_seq, *, lr, eps, kind, max_dim=None, rank=None, v0=0.0,
                      lr_decay=0.0, wd=0.0):
    """Eq. 44 (diagonal), §3.2.1 (full, blocks; rank r: the best rank-r approximation of the
    running sum after each step), eq. 33 (norm)."""
    w = [np.array(p, dtype=np.float64) for p in params]
    acc = [None] * len(w)
    for t, grads in enumerate(grad_seq):
        for i, g in enumerate(grads):
            d = (g + wd * w[i]).ravel()
            if kind == "diagonal":
                acc[i] = (np.full(d.shape, v0) if acc[i] is None else acc[i]) + d * d
                u = d / (np.sqrt(acc[i]) + eps)
            elif kind == "norm":
                acc[i] = (v0 if acc[i] is None else acc[i]) + d @ d
                u = d / (np.sqrt(acc[i]) + eps)
            else:
                nb = -(-d.size // max_dim)
                bs = -(-d.size // nb)
                D = np.concatenate([d, np.zeros(nb * bs - d.size)]).reshape(nb, bs)
                if acc[i] is None:
                    acc[i] = np.zeros((nb, bs, bs))
                acc[i] = acc[i] + D[:, :, None] * D[:, None, :]
                U = []
                for k in range(nb):
                    O = acc[i][k]
                    if rank is not None and rank < bs:  # keep the top-r eigenpairs
                        lam, V = np.linalg.eigh(O)
                        V, lam = V[:, -rank:], lam[-rank:]
                        acc[i][k] = O = (V * lam) @ V.T
                        Uk = V @ ((V.T @ D[k]) / (np.sqrt(np.maximum(lam, 0) + v0) + eps)
                                  * (lam + v0 > bs * 1.2e-16 * (lam.max() + v0)))
                        if v0:
                            Uk = Uk + (D[k] - V @ (V.T @ D[k])) / (np.sqrt(v0) + eps)
                        U.append(Uk)
                    else:
                        U.append(_pinv_sqrt_apply(O, D[k], eps, v0))
                u = np.concatenate(U)[:d.size]
            w[i] = w[i] - lr / (1 + t * lr_decay) * u.reshape(w[i].shape)
    return w


@pytest.mark.parametrize(("kind", "extra"), [
    ("diagonal", {"lr_decay": 0.1, "initial_accumulator_value": 0.1, "weight_decay": 0.01}),
    ("norm", {"initial_accumulator_value": 0.5}),
])
def test_adagrad_matches_reference(backend, kind, extra):
    _check_adagrad(backend, kind, extra)


@pytest.mark.parametrize("extra", [
    {"max_dim": 5},
    {"max_dim": 5, "initial_accumulator_value": 0.3},
    {"max_dim": 8, "rank": 2},
    {"max_dim": 8, "rank": 2, "initial_accumulator_value": 0.3},
])
def test_adagrad_full_matches_reference(backend, extra):
    _check_adagrad(backend, "full", extra)


def _check_adagrad(backend, kind, extra):
    shapes = [(4, 3), (3,), (1, 1)]
    params, seq = [np.ones(s) for s in shapes], gaussian_seq(shapes, 5, seed=2)
    h = {"lr": 0.1, "eps": 1e-8, "preconditioner": kind, **extra}
    got = run_to_host(adagrad, backend, params, seq, **h)
    want = adagrad_reference(params, seq, lr=0.1, eps=1e-8, kind=kind, max_dim=extra.get("max_dim"),
                             rank=extra.get("rank"), v0=extra.get("initial_accumulator_value", 0.0),
                             lr_decay=extra.get("lr_decay", 0.0), wd=extra.get("weight_decay", 0.0))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_adagrad_full_is_inv_root_and_low_rank_is_exact_early(backend):
    """The exact full step with ε = 0 is ``xpmat.inv_root(O, 2) @ g`` (a pseudo-inverse root);
    while the number of steps is at most the rank, the rank-r form equals the exact one."""
    rng = np.random.default_rng(3)
    gs = [rng.standard_normal(6) for _ in range(3)]
    p = [backend.asarray(np.zeros(6))]
    exact, low = adagrad.transform(preconditioner="full", eps=0.0, lr=1.0), \
        adagrad.transform(preconditioner="full", eps=0.0, lr=1.0, rank=3)
    se, sl = exact.init(p), low.init(p)
    O = np.zeros((6, 6))
    for g in gs:
        O += np.outer(g, g)
        ue, se = exact.update([backend.asarray(g)], se, p)
        ul, sl = low.update([backend.asarray(g)], sl, p)
        want = -np.asarray(inv_root(O, 2)) @ g
        assert_close(ue[0], want, backend, rtol=1e-8, atol=1e-10)
        assert_close(ul[0], want, backend, rtol=1e-8, atol=1e-10)
    assert tuple(sl[0].eigvecs.shape) == (1, 6, 3) and sl[0].sum is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_adagrad_equals_torch_adagrad(dtype):
    """Diagonal AdaGrad with a zero initial accumulator is torch.optim.Adagrad (and with the
    other torch arguments too)."""
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=gen, dtype=dtype) for s in ((6, 5), (5,))]
    for kw in ({"lr": 0.1}, {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.01,
                             "initial_accumulator_value": 0.2, "eps": 1e-6}):
        a, b, ours, ref = beside_torch(xo.AdaGrad, torch.optim.Adagrad, ps, kw, gen)
        for p, q in zip(ours, ref, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-13 if dtype == torch.float64 else 1e-6, atol=0)
            torch.testing.assert_close(a.state[p]["sum"], b.state[q]["sum"])
