"""The torch classes beside ``torch.optim``: the agreements ``docs/optim.md`` claims, on tiny
inputs taken from the peers' documentation, with the peer run here.

- ``AdamW`` with its defaults "equals ``torch.optim.AdamW`` to float precision"; and the first
  step of torch's documented algorithm (bias-corrected ``m̂ = g``, ``v̂ = g²``) is
  ``w ← w (1 − η λ) − η g / (|g| + ε)``, which both must take.
- ``Muon(params, ns_schedule="jordan", compute_dtype="bfloat16", weight_decay=0.1, lr=1e-3)``
  "is ``torch.optim.Muon``'s default update": the same hyper-parameters as torch's defaults, and
  steps that agree to bf16 precision (8%, the bound the docs give).
- Muon's first step is ``−η · U`` with ``U`` the polar factor of the gradient: on SciPy's
  ``polar`` example gradient, SciPy's printed ``U``.
"""

import inspect

import numpy as np
import pytest

import xpmat.optim as xo

torch = pytest.importorskip("torch")

# scipy.linalg.polar, Examples: a = [[1, -1], [2, 4]] and its printed polar factor U
POLAR_A = [[1.0, -1.0], [2.0, 4.0]]
POLAR_U = [[0.85749293, -0.51449576], [0.51449576, 0.85749293]]
# scipy.linalg.svdvals, Examples: a 5×2 matrix (a gradient of a tall parameter)
SVDVALS_M = [[1.0, 0.0], [2.0, 3.0], [1.0, 1.0], [0.0, 2.0], [1.0, 0.0]]

BF16_STEP_RTOL = 0.08  # docs/optim.md: "both in bf16, the steps agree to 8%"


def _steps(opt, param, grads):
    out = []
    for g in grads:
        before = param.detach().clone()
        param.grad = g.clone()
        opt.step()
        out.append(param.detach() - before)
    return out


def _grads(shape, n, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=dtype) for _ in range(n)]


def test_adamw_defaults_equal_torch_adamw():
    """Defaults side by side, then five float64 steps on a 3-vector: equal to rounding; the
    first step is the closed form of torch's algorithm box."""
    ours_sig, ref_sig = inspect.signature(xo.AdamW.__init__), inspect.signature(torch.optim.AdamW)
    for k in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"):
        assert ours_sig.parameters[k].default == ref_sig.parameters[k].default, k
    w0 = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    grads = [torch.tensor([0.5, -1e-9, 2.0], dtype=torch.float64),
             *_grads((3,), 4, torch.float64)]
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    ref = _steps(torch.optim.AdamW([a]), a, grads)
    ours = _steps(xo.AdamW([b]), b, grads)
    lr, wd, eps = 1e-3, 1e-2, 1e-8
    g = grads[0]
    first = -lr * wd * w0 - lr * g / (g.abs() + eps)
    torch.testing.assert_close(ref[0], first, rtol=1e-12, atol=1e-15)
    for s_ours, s_ref in zip(ours, ref, strict=True):
        torch.testing.assert_close(s_ours, s_ref, rtol=1e-12, atol=1e-15)


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
def test_muon_documented_call_is_torch_muon_default():
    """torch's defaults are the documented call's (coefficients included), and the steps from
    torch's defaults and from that call agree to bf16 precision on SciPy's two example
    matrices as parameters."""
    from xpmat import ns_schedule

    ref_sig = inspect.signature(torch.optim.Muon).parameters
    documented = {"lr": 1e-3, "weight_decay": 0.1}
    ours_defaults = {k: v.default for k, v in inspect.signature(xo.Muon.__init__).parameters.items()}
    for k, v in {"momentum": ours_defaults["momentum"], "nesterov": ours_defaults["nesterov"],
                 "eps": ours_defaults["eps"], "ns_steps": ours_defaults["ns_steps"], **documented}.items():
        assert ref_sig[k].default == v, k
    assert ref_sig["adjust_lr_fn"].default in (None, "original")
    assert tuple(ref_sig["ns_coefficients"].default) == tuple(ns_schedule("jordan", 1)[0])
    for w0 in (torch.tensor(POLAR_A), torch.tensor(SVDVALS_M)):
        grads = _grads(tuple(w0.shape), 4, torch.float32, seed=1)
        a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
        ref = _steps(torch.optim.Muon([a]), a, grads)
        ours = _steps(xo.Muon([b], ns_schedule="jordan", compute_dtype="bfloat16", **documented), b, grads)
        for s_ours, s_ref in zip(ours, ref, strict=True):
            assert float((s_ours - s_ref).norm() / s_ref.norm()) < BF16_STEP_RTOL


def test_muon_first_step_is_the_scipy_polar_factor():
    """With the gradient of SciPy's ``polar`` example, Muon's first step (no decay, a square
    matrix so no shape factor, enough float64 Newton–Schulz steps) is ``−η U`` with SciPy's
    printed ``U``, whatever the momentum: the first Nesterov direction is a multiple of G."""
    lr = 0.02
    for momentum, nesterov in ((0.95, True), (0.9, False), (0.0, False)):
        w = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
        opt = xo.Muon([w], lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=10)
        (step,) = _steps(opt, w, [torch.tensor(POLAR_A, dtype=torch.float64)])
        np.testing.assert_allclose(step.numpy(), -lr * np.array(POLAR_U), rtol=0, atol=lr * 1e-8)
