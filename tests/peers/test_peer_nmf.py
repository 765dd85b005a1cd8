"""NMF beside scikit-learn: its documented inputs, its ``solver="mu"`` KL updates run here.

What ``docs/nmf.md`` claims and these tests hold: from the same start factors, ``xpmat.nmf`` and
``sklearn.decomposition.NMF(beta_loss="kullback-leibler", solver="mu")`` take the same steps
(the same divergence after a fixed number of steps), stop at the same step under ``tol`` (its
rule: the decrease of √(2·D) between checks every 10 steps, relative to the start), and refuse
start factors of another dtype with a ``TypeError``.
"""

import warnings

import numpy as np
import pytest

import xpmat as xm

sklearn_nmf = pytest.importorskip("sklearn.decomposition").NMF

# scikit-learn's documented inputs: the NMF class docstring's X; the 6×4 matrix of its
# ``test_nmf_inverse_transform`` (abs(RandomState(0).randn(6, 4)), factorized at rank 4)
DOC_X = np.array([[1, 1], [2, 1], [3, 1.2], [4, 1], [5, 0.8], [6, 1]])
SQUARE_6x4 = np.abs(np.random.RandomState(0).randn(6, 4))


def _start(C, rank, seed=0):
    """scikit-learn's ``init="random"`` scale, drawn here once, handed to both."""
    rng = np.random.default_rng(seed)
    s = np.sqrt(C.mean() / rank)
    return (np.abs(rng.standard_normal((C.shape[0], rank))) * s,
            np.abs(rng.standard_normal((rank, C.shape[1]))) * s)


def _sklearn(C, rank, W0, H0, *, tol, max_iter):
    model = sklearn_nmf(n_components=rank, solver="mu", beta_loss="kullback-leibler", init="custom",
                        tol=tol, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning when max_iter is reached with tol=0
        W = model.fit_transform(C, W=W0.copy(), H=H0.copy())
    return W, model.components_, model.n_iter_


@pytest.mark.parametrize("C", [DOC_X, SQUARE_6x4], ids=["doc_X", "6x4"])
def test_same_steps_as_sklearn_kl_mu(C):
    """A fixed number of steps (tol=0 in scikit-learn, none here): the same factors."""
    rank = min(C.shape)
    W0, H0 = _start(C, rank)
    W, H, n = _sklearn(C, rank, W0, H0, tol=0.0, max_iter=200)
    res = xm.nmf(C, rank, iters=200, init=(W0, H0))
    assert n == res.n_iter == 200
    np.testing.assert_allclose(res.A @ res.B, W @ H, rtol=1e-9, atol=1e-12)
    d_sk = float(xm.i_divergence(C, W @ H))
    np.testing.assert_allclose(float(res.divergence[-1]), d_sk, rtol=1e-6, atol=1e-12)


def test_tol_stops_where_sklearn_stops():
    """Issue 28's example: the exactly factorizable 6×4 matrix at rank 4, ``tol=1e-4``.  Under
    scikit-learn's rule both stop at the same step with the same divergence (160 steps,
    D ≈ 6.2e-7, from this start), and the reconstruction passes scikit-learn's own check
    (2 decimals).  The former rule (tol on D itself) stopped at 80 steps with D ≈ 8e-4."""
    W0, H0 = _start(SQUARE_6x4, 4)
    W, H, n = _sklearn(SQUARE_6x4, 4, W0, H0, tol=1e-4, max_iter=1000)
    res = xm.nmf(SQUARE_6x4, 4, iters=1000, tol=1e-4, init=(W0, H0))
    assert res.n_iter == n and n % 10 == 0 and n < 1000
    d_sk = float(xm.i_divergence(SQUARE_6x4, W @ H))
    np.testing.assert_allclose(float(res.divergence[-1]), d_sk, rtol=1e-4)
    assert d_sk < 1e-5
    np.testing.assert_array_almost_equal(res.A @ res.B, SQUARE_6x4, decimal=2)


def test_start_factors_of_another_dtype_raise_as_in_sklearn():
    """float32 start factors for float64 data: both refuse with a TypeError."""
    W0, H0 = _start(DOC_X, 2)
    with pytest.raises(TypeError):
        _sklearn(DOC_X, 2, W0.astype(np.float32), H0, tol=1e-4, max_iter=10)
    with pytest.raises(TypeError, match=r"`init\[0\]`.*float64.*float32"):
        xm.nmf(DOC_X, 2, init=(W0.astype(np.float32), H0))
