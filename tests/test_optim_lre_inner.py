"""``xpmat.optim._lre_inner`` (LRE's inner optimizers): the carrying of each kind of inner
state when the basis moves.  The inner steps themselves are tested through LRE in
``tests/test_optim_lre_options.py``."""

from __future__ import annotations

import numpy as np

from xpmat.optim import _lre_inner


def test_rotate_carries_every_kind():
    """When the basis moves, R = Qᵀ Q_old carries m, (R∘R) v, R V Rᵀ and R B Rᵀ + σ (I − R Rᵀ)."""
    rng = np.random.default_rng(1)
    Qo = np.linalg.qr(rng.standard_normal((8, 3)))[0]
    Qn = np.linalg.qr(Qo + 0.3 * rng.standard_normal((8, 3)))[0]
    R = Qn.T @ Qo
    m, v = rng.standard_normal(3), rng.random(3)
    V = np.cov(rng.standard_normal((3, 10)))
    st = {"exp_avg": m[None], "exp_avg_sq": v[None], "exp_avg_outer": V[None], "bfgs_matrix": V[None],
          "bfgs_scale": np.array([2.0])}
    kinds = {"exp_avg": "vec", "exp_avg_sq": "diag", "exp_avg_outer": "mat", "bfgs_matrix": "bfgs",
             "bfgs_scale": "scalar"}
    out = _lre_inner.rotate(st, kinds, R[None], np)
    np.testing.assert_allclose(out["exp_avg"][0], R @ m, rtol=1e-14)
    np.testing.assert_allclose(out["exp_avg_sq"][0], np.diag(R @ np.diag(v) @ R.T), rtol=1e-13)
    np.testing.assert_allclose(out["exp_avg_outer"][0], R @ V @ R.T, rtol=1e-13)
    B = Qn.T @ (Qo @ V @ Qo.T + 2.0 * (np.eye(8) - Qo @ Qo.T)) @ Qn  # σ I + low rank, projected
    np.testing.assert_allclose(out["bfgs_matrix"][0], B, rtol=1e-12)
    assert out["bfgs_scale"] is st["bfgs_scale"]
