"""JAX beyond eager: every primitive under ``jax.jit``, ``vmap`` and ``grad`` through ``msign``.

The eager JAX column of the ``xp`` matrix (``conftest.py``) checks values against NumPy
float64 references; here each primitive is traced under ``jax.jit`` (options static, bound in
``primitive_calls.CALLS``) and must return what the same call returns eagerly.  What differs
under ``jit`` by design (no early exit, no host-side check or warning) is documented in each
docstring and in ``docs/backends.md``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import require_backend
from primitive_calls import CALLS, NOT_ARRAY_FUNCTIONS

import xpmat as xm

jnp = require_backend("jax").xp  # float64 enabled
import jax  # noqa: E402  (after require_backend: skipped cleanly where JAX is absent)

# Calls that stop early on the host when eager: under jit they run every step, so they agree
# to the stopping tolerance, not to rounding (``power_iteration``'s default tol is 1e-6).
_EARLY_EXIT_RTOL = {"power_iteration": 1e-5}


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("case", list(CALLS))
def test_jit_matches_eager(case):
    call = CALLS[case]
    args = [jnp.asarray(a) for a in call.args]
    eager = call.fn(*args)
    traced = jax.jit(call.fn)(*args)
    rtol = _EARLY_EXIT_RTOL.get(case, 1e-9)
    e_leaves, t_leaves = _leaves(eager), _leaves(traced)
    assert len(e_leaves) == len(t_leaves)
    for e, t in zip(e_leaves, t_leaves, strict=True):
        assert e.shape == t.shape and e.dtype == t.dtype
        if np.issubdtype(e.dtype, np.integer):
            continue  # step counts: under jit every step runs (documented)
        if e.dtype == np.bool_:
            assert np.array_equal(e, t)
            continue
        np.testing.assert_allclose(t, e, rtol=rtol, atol=rtol * max(1.0, float(np.abs(e).max())))


def test_every_primitive_has_a_jit_case():
    names = {call.name for call in CALLS.values()}
    assert names == set(xm.__all__) - NOT_ARRAY_FUNCTIONS


def _tall_batch():
    """Three 40 x 4 matrices: well conditioned, rank deficient (a repeated column), zero."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3, 40, 4))
    X[1, :, 3] = X[1, :, 0]
    X[2] = 0.0
    return X


def test_jit_orthonormalize_falls_back_per_matrix():
    """Under jit the CholeskyQR2 / Householder choice is made per matrix (a ``where``): the
    good member keeps CholeskyQR2's Q, the rank-deficient and zero ones Householder's, and all
    equal what eager returns (eager: Householder for the whole batch, one host read)."""
    X = jnp.asarray(_tall_batch())
    f = jax.jit(lambda X: xm.orthonormalize(X, method="cholesky_qr2"))
    Q = np.asarray(f(X))
    np.testing.assert_allclose(np.swapaxes(Q, -1, -2) @ Q, np.broadcast_to(np.eye(4), (3, 4, 4)),
                               atol=1e-13)
    np.testing.assert_allclose(Q, np.asarray(xm.orthonormalize(X, method="cholesky_qr2")), atol=1e-12)
    good = np.asarray(xm.orthonormalize(X[:1], method="cholesky_qr2"))  # eager, accepted
    np.testing.assert_allclose(Q[:1], good, atol=1e-14)


def test_vmap_msign_and_orthonormalize():
    G = jnp.asarray(np.random.default_rng(4).standard_normal((5, 12, 8)))
    np.testing.assert_allclose(jax.vmap(xm.msign)(G), xm.msign(G), rtol=1e-12, atol=1e-13)
    X = jnp.asarray(_tall_batch())
    np.testing.assert_allclose(jax.vmap(xm.orthonormalize)(X), xm.orthonormalize(X), atol=1e-12)


def test_grad_through_msign_matches_finite_differences():
    rng = np.random.default_rng(5)
    G, W, D = (jnp.asarray(rng.standard_normal((6, 4))) for _ in range(3))

    def loss(G):
        return jnp.sum(W * xm.msign(G, steps=6))

    g = jax.grad(loss)(G)
    h = 1e-6
    fd = (loss(G + h * D) - loss(G - h * D)) / (2 * h)
    np.testing.assert_allclose(float(jnp.sum(g * D)), float(fd), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(G), g, rtol=1e-12, atol=1e-13)


def test_grad_through_gram_msign_equals_plain():
    """Gram Newton–Schulz is the plain loop's polynomial, so its gradient is the same (to
    rounding), under ``jit`` too."""
    G = jnp.asarray(np.random.default_rng(7).standard_normal((3, 40, 12)))

    def loss(G, gram):
        return jnp.sum(xm.msign(G, steps=6, gram=gram) ** 3)

    plain = jax.grad(loss)(G, False)
    np.testing.assert_allclose(jax.jit(jax.grad(loss), static_argnums=1)(G, True), plain,
                               rtol=1e-10, atol=1e-12)


def test_msign_bfloat16_compute_under_jit():
    G = jnp.asarray(np.random.default_rng(6).standard_normal((16, 24)), dtype=jnp.float32)
    f = jax.jit(lambda G: xm.msign(G, steps=8, compute_dtype="bfloat16"))
    O = f(G)
    assert O.dtype == jnp.float32
    eager = np.asarray(xm.msign(G, steps=8, compute_dtype="bfloat16"))
    # XLA fuses the bf16 steps differently under jit: the two differ by about one bf16 ulp
    np.testing.assert_allclose(np.asarray(O), eager, rtol=0, atol=2 * 2.0**-8 * np.abs(eager).max())
    sv = np.linalg.svd(np.asarray(O, dtype=np.float64), compute_uv=False)
    assert np.abs(sv - 1).max() <= 0.3


def test_jit_inv_root_newton_reports_instead_of_warning():
    A = jnp.asarray(np.diag([4.0, 1.0, 0.0]))  # singular, eps = 0: Newton does not converge
    with pytest.warns(xm.matfun.ConvergenceWarning):
        xm.inv_root(A, 2, method="newton", iters=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = jax.jit(lambda A: xm.inv_root(A, 2, method="newton", iters=20))(A)
        _, info = jax.jit(lambda A: xm.inv_root(A, 2, method="newton", iters=20, return_info=True))(A)
    assert X.shape == (3, 3) and not bool(info.converged) and int(info.iters) == 20


def test_jit_nystrom_non_psd_gives_nan():
    A = -jnp.eye(12)
    with pytest.raises(ValueError, match="positive semi-definite"):
        xm.nystrom_eigh(A, 2, seed=0)
    L, Q = jax.jit(lambda A: xm.nystrom_eigh(A, 2, seed=0))(A)
    assert np.isnan(np.asarray(L)).all() and np.isnan(np.asarray(Q)).all()


def test_jit_nmf_skips_the_input_check():
    C = jnp.asarray(np.random.default_rng(7).random((6, 5))).at[0, 0].set(-1.0)
    with pytest.raises(ValueError, match="nonnegative"):
        xm.nmf(C, 2, iters=3, seed=0)
    res = jax.jit(lambda C: xm.nmf(C, 2, iters=3, seed=0))(C)  # documented: not checked
    assert res.A.shape == (6, 2) and int(res.n_iter) == 3


_X64_OFF_SCRIPT = """
import warnings
warnings.simplefilter("always")
import jax
import jax.numpy as jnp
from xpmat.optim import adamw, muon

assert not jax.config.jax_enable_x64
with warnings.catch_warnings(record=True) as caught:
    params = [jnp.ones((4, 3), dtype=jnp.float32), jnp.ones((3, 2), dtype=jnp.float32)]
    grads = [jnp.full((4, 3), 0.1, dtype=jnp.float32), jnp.full((3, 2), -0.2, dtype=jnp.float32)]
    for mod in (muon, adamw):
        state = mod.init(params)
        for _ in range(2):
            updates, state = mod.update(grads, state, params, lr=1e-2)
        leaves = [x for x in jax.tree.leaves((updates, state)) if hasattr(x, "dtype")]
        assert {str(x.dtype) for x in leaves} == {"float32"}, (mod.__name__, [x.dtype for x in leaves])
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
assert not caught, [str(w.message) for w in caught]
print("ok")
"""


def test_default_mode_x64_off_no_float64_warning():
    """JAX's default mode (x64 off): a float64 request gives float32 *with a warning*, so the
    float64 probe asks ``jax.config`` instead; muon / adamw keep every array (counters
    included) in float32 and warn nothing.  A fresh interpreter: this suite enables x64."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env["PYTHONPATH"] = str(Path(xm.__file__).resolve().parents[1])
    env["JAX_PLATFORMS"] = "cpu"
    res = subprocess.run([sys.executable, "-c", _X64_OFF_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]
