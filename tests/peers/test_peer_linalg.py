"""Orthogonalization, SVD / eigen iterations and inverse roots on the inputs SciPy and
scikit-learn document, held to the results those pages print (or, where a page prints only
shapes, to the peer run here).

Sources (each test names its own): the Examples sections of ``scipy.linalg.polar``,
``scipy.linalg.svdvals`` and ``scipy.linalg.eigh`` (SciPy 1.17), and of
``sklearn.utils.extmath.randomized_svd``.  The printed values carry 8 decimals, so they are
compared to ``atol=1e-8``.
"""

import numpy as np
import pytest

import xpmat as xm

PRINTED = {"rtol": 0, "atol": 1e-8}  # values printed to 8 decimals in the peers' docs

# scipy.linalg.polar, Examples: a square and a wide matrix (and its transpose), with U and P
POLAR_CASES = {
    "square": (np.array([[1, -1], [2, 4]]),
               [[0.85749293, -0.51449576], [0.51449576, 0.85749293]],
               [[1.88648444, 1.2004901], [1.2004901, 3.94446746]]),
    "wide": (np.array([[0.5, 1, 2], [1.5, 3, 4]]),
             [[-0.21196618, -0.42393237, 0.88054056], [0.39378971, 0.78757942, 0.4739708]],
             [[0.48470147, 0.96940295, 1.15122648], [0.96940295, 1.9388059, 2.30245295],
              [1.15122648, 2.30245295, 3.65696431]]),
    "tall": (np.array([[0.5, 1, 2], [1.5, 3, 4]]).T,
             [[-0.21196618, 0.39378971], [-0.42393237, 0.78757942], [0.88054056, 0.4739708]],
             [[1.23116567, 1.93241587], [1.93241587, 4.84930602]]),
}

# scipy.linalg.svdvals, Examples: a 5×2 matrix and a rank-one projector
SVDVALS_M = np.array([[1.0, 0.0], [2.0, 3.0], [1.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
SVDVALS_M_PRINTED = [4.28091555, 1.63516424]
SVDVALS_V = np.array([0.1, 0.3, 0.9, 0.3])

# scipy.linalg.eigh, Examples: a 5×5 PSD matrix whose eigenvalues below 10 are printed
EIGH_A = np.array([[34, -4, -10, -7, 2], [-4, 7, 2, 12, 0], [-10, 2, 44, 2, -19],
                   [-7, 12, 2, 79, -34], [2, 0, -19, -34, 29]], dtype=float)
EIGH_A_BELOW_10 = [6.69199443e-07, 9.11938152e+00]


@pytest.mark.parametrize("method", ["svd", "newton_schulz"])
@pytest.mark.parametrize("case", list(POLAR_CASES))
def test_polar_scipy_docstring(case, method):
    """``xm.polar`` is documented as ``scipy.linalg.polar(G, side="right")``: the same U and P
    as SciPy's page prints, exactly (SVD) and by Newton–Schulz (default 10 steps)."""
    a, u_printed, p_printed = POLAR_CASES[case]
    U, H = xm.polar(a, method=method)
    assert U.dtype == np.float64  # integer input promoted
    np.testing.assert_allclose(U, u_printed, **PRINTED)
    np.testing.assert_allclose(H, p_printed, **PRINTED)
    np.testing.assert_allclose(U @ H, a, rtol=0, atol=1e-12)


def test_msign_is_the_polar_factor_of_the_scipy_example():
    """``msign(G) = U`` of ``G = U P``: enough Newton–Schulz steps reach SciPy's printed U."""
    a, u_printed, _ = POLAR_CASES["square"]
    np.testing.assert_allclose(xm.msign(a.astype(float), steps=10), u_printed, **PRINTED)


def test_singular_values_scipy_svdvals_docstring():
    """The printed singular values of SciPy's 5×2 example, by a randomized SVD (rank 2, so
    exact) and by power iteration on ``MᵀM``; the rank-one projector ``v vᵀ`` (|v| = 1) has
    the single nonzero singular value 1 with ``v`` as its vector."""
    _, S, _ = xm.randomized_svd(SVDVALS_M, 2, seed=0)
    np.testing.assert_allclose(S, SVDVALS_M_PRINTED, **PRINTED)
    lam, _ = xm.power_iteration(SVDVALS_M.T @ SVDVALS_M, seed=0, tol=1e-13, iters=2000)
    np.testing.assert_allclose(np.sqrt(lam), SVDVALS_M_PRINTED[0], **PRINTED)
    U, S, Vh = xm.randomized_svd(np.outer(SVDVALS_V, SVDVALS_V), 1, seed=0)
    np.testing.assert_allclose(S, [1.0], rtol=1e-12)
    np.testing.assert_allclose(np.abs(U[:, 0]), SVDVALS_V, rtol=1e-12)
    np.testing.assert_allclose(np.abs(Vh[0]), SVDVALS_V, rtol=1e-12)


def test_randomized_svd_sklearn_docstring():
    """scikit-learn's ``randomized_svd`` example (3×4 integers, 2 components): the same shapes
    it prints, and the same singular values and subspaces as scikit-learn run here."""
    extmath = pytest.importorskip("sklearn.utils.extmath")
    a = np.array([[1, 2, 3, 5], [3, 4, 5, 6], [7, 8, 9, 10]])
    U, S, Vh = xm.randomized_svd(a, 2, seed=0)
    assert (U.shape, S.shape, Vh.shape) == ((3, 2), (2,), (2, 4))
    U_sk, S_sk, Vh_sk = extmath.randomized_svd(a, n_components=2, random_state=0)
    np.testing.assert_allclose(S, S_sk, rtol=1e-10)
    np.testing.assert_allclose(U @ U.T, U_sk @ U_sk.T, atol=1e-10)  # signs are free: projectors
    np.testing.assert_allclose(Vh.T @ Vh, Vh_sk.T @ Vh_sk, atol=1e-10)


def test_eigenvalues_scipy_eigh_docstring():
    """SciPy's 5×5 example: the two eigenvalues below 10 it prints (8 significant digits), as
    the bottom of ``randomized_eigh`` at full rank (descending).  The smallest, 6.7e-7, is
    held to its backward error (``n u ‖A‖`` ≈ 1e-13), not to 8 digits: NumPy's own ``eigh``
    gives 6.69199436e-07 there."""
    L, Q = xm.randomized_eigh(EIGH_A, 5, seed=0)
    assert np.all(np.diff(L) <= 0)
    np.testing.assert_allclose(L[-2:][::-1], EIGH_A_BELOW_10, rtol=1e-8, atol=1e-13)
    np.testing.assert_allclose(Q.T @ EIGH_A @ Q, np.diag(L), atol=1e-10)


@pytest.mark.parametrize("p", [2, 4])
@pytest.mark.parametrize("method", ["eigh", "newton"])
def test_inv_root_scipy_fractional_matrix_power(p, method):
    """``inv_root(A, p) = A^(-1/p)`` on SciPy's PSD eigh example (condition 1.5e8), beside
    ``scipy.linalg.fractional_matrix_power(A, -1/p)`` run here."""
    linalg = pytest.importorskip("scipy.linalg")
    ref = np.real(linalg.fractional_matrix_power(EIGH_A, -1.0 / p))
    got = xm.inv_root(EIGH_A, p, method=method, iters=200)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7 * np.abs(ref).max())
