"""QK-clip (MuonClip, Kimi K2 §2.1): the rule per head against NumPy, each head's logits capped at
τ (MHA, GQA, MLA layouts), non-finite and low-precision input, bad input, and ``qk_clip_`` in
place on torch parameters."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TOL, assert_array, assert_close

import xpmat.optim as xo


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
