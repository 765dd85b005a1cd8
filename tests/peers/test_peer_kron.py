"""Kronecker products beside ``numpy.kron``: its documented examples and their printed results.

``numpy.kron``'s Examples print ``kron([1, 10, 100], [5, 6, 7])`` and
``kron(eye(2), ones((2, 2)))``; xpmat's row-major convention (``vec(A X Bᵀ) = (A ⊗ B) vec(X)``,
``vec`` = ``reshape``) must reproduce them: ``kron_matmul`` applies ``A ⊗ B`` without forming
it, ``nearest_kron`` recovers an exact Kronecker product and ``kron_rearrange`` turns it into
a rank-one matrix.
"""

import numpy as np
import pytest

import xpmat as xm

# numpy.kron, Examples (printed results)
KRON_1D = ([1, 10, 100], [5, 6, 7], [5, 6, 7, 50, 60, 70, 500, 600, 700])
KRON_EYE_ONES = (np.eye(2), np.ones((2, 2)),
                 [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])


def _cases():
    a, b, printed = KRON_1D
    yield "1d_as_rows", np.array([a], float), np.array([b], float), np.array([printed], float)
    a, b, printed = KRON_EYE_ONES
    yield "eye_ones", a, b, np.array(printed)


CASES = {name: (a, b, k) for name, a, b, k in _cases()}


@pytest.mark.parametrize("case", list(CASES))
def test_kron_matmul_applies_the_printed_product(case):
    """``kron_matmul(A, B, X)`` reshaped is the printed ``A ⊗ B`` times ``vec(X)``, for every
    basis ``X`` (so it applies exactly the printed matrix)."""
    A, B, K = CASES[case]
    n = A.shape[-1] * B.shape[-1]
    cols = [xm.kron_matmul(A, B, e.reshape(A.shape[-1], B.shape[-1])).reshape(-1) for e in np.eye(n)]
    np.testing.assert_array_equal(np.stack(cols, axis=-1), K)


@pytest.mark.parametrize("case", list(CASES))
def test_nearest_kron_recovers_the_printed_product(case):
    """The printed ``A ⊗ B`` is its own nearest Kronecker product; rearranged it has rank one."""
    A, B, K = CASES[case]
    A2, B2 = xm.nearest_kron(K, A.shape, B.shape)
    np.testing.assert_allclose(np.kron(A2, B2), K, rtol=0, atol=1e-12 * np.abs(K).max())
    s = np.linalg.svd(xm.kron_rearrange(K, A.shape, B.shape), compute_uv=False)
    assert s[1:].max(initial=0.0) <= 1e-12 * s[0]
