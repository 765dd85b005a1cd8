"""Dask: correct, lazy, and never gathered.

The ``dask`` column of the ``xp`` matrix (``conftest.py``) checks values against NumPy float64
references with 2 row chunks.  Here:

- every public primitive (``primitive_calls.CALLS``) runs on Dask arrays without a single
  computation (a ``dask.callbacks.Callback`` counts them: 0, as the docstrings say for lazy
  arrays), returns Dask arrays, and computes to what the same call returns on NumPy;
- a tall-skinny matrix chunked by rows goes through the primitives of the "Beyond one machine"
  page without any task ever holding more rows than one chunk (a ``posttask`` callback looks at
  the shape of every task's result);
- ``_array.cholesky`` returns the lower factor, which array-api-compat's Dask wrapper does not
  (``backends/dask.md``), and CholeskyQR2 is accurate to rounding on Dask.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_backend
from primitive_calls import CALLS

import xpmat as xm
from xpmat import _array, orthogonalize

backend = require_backend("dask")
xp = backend.xp
import dask  # noqa: E402  (after require_backend: skipped cleanly where Dask is absent)
import dask.array as da  # noqa: E402
from dask.callbacks import Callback  # noqa: E402

# Calls that stop early on the host when eager: on Dask they run every step (no host read), so
# they agree to the stopping tolerance, not to rounding (power_iteration's default tol is 1e-6).
_EARLY_EXIT_RTOL = {"power_iteration": 1e-5}


class Computes(Callback):
    """Counts the computations Dask starts (``compute``, ``persist``, ``bool()``, ``float()``)
    and the number of elements of the largest task result (``largest``), except the final
    tasks that assemble what ``compute()`` hands back to the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.largest = 0

    def _start(self, dsk) -> None:
        self.count += 1

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if str(key[0] if isinstance(key, tuple) else key).startswith("finalize"):
            return
        for part in result if isinstance(result, (tuple, list)) else (result,):
            self.largest = max(self.largest, getattr(part, "size", 0))


def _leaves(out):
    if isinstance(out, tuple):  # also NamedTuples (NMFResult, InvRootInfo)
        return [leaf for x in out for leaf in _leaves(x)]
    return [out]


@pytest.mark.parametrize("case", list(CALLS))
def test_every_primitive_is_lazy_and_matches_numpy(case):
    call = CALLS[case]
    with Computes() as c:
        lazy = call.fn(*(backend.asarray(a) for a in call.args))
    assert c.count == 0, f"{case}: {c.count} computation(s) while building the graph"
    lazy_leaves, ref = _leaves(lazy), _leaves(call.fn(*call.args))
    assert len(lazy_leaves) == len(ref)
    arrays = [x for x in lazy_leaves if not isinstance(x, (int, bool))]
    assert all(isinstance(x, da.Array) for x in arrays), [type(x) for x in lazy_leaves]
    got = iter(dask.compute(*arrays))
    rtol = _EARLY_EXIT_RTOL.get(call.name, 1e-9)
    for lz, e in zip(lazy_leaves, ref, strict=True):
        if isinstance(lz, (int, bool)):
            continue  # step counts: on Dask every step runs (documented)
        t, e = np.asarray(next(got)), np.asarray(e)
        assert t.shape == e.shape and t.dtype == e.dtype, (case, t.shape, e.shape, t.dtype, e.dtype)
        if e.dtype == np.bool_:
            assert np.array_equal(t, e)
        else:
            np.testing.assert_allclose(t, e, rtol=rtol, atol=rtol * max(1.0, float(np.abs(e).max())))


# ----------------------------------------------------------------------------- never gathered

M, N, CHUNK = 2400, 24, 300  # a tall-skinny 2400 x 24 matrix in 8 row chunks


def _tall(seed: int = 0, positive: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((M, N)) if positive else rng.standard_normal((M, N))


def _rows(a: np.ndarray) -> da.Array:
    return da.from_array(a, chunks=(CHUNK, a.shape[1]))


def _kron(A, wrap):
    # (K ⊗ S) vec(A) = K A Sᵀ with a 2400 x 2400 K chunked like A's rows (block diagonal here)
    K = np.kron(np.eye(M // 24), np.full((24, 24), 1 / 24))
    S = np.random.default_rng(9).standard_normal((5, N))
    return xm.kron_matmul(wrap(K, (CHUNK, CHUNK)), wrap(S, S.shape), A)


_TALL_CALLS = {  # case: fn(A, wrap), wrap(host array, chunks) makes the other arguments
    "orthonormalize[auto]": lambda A, w: xm.orthonormalize(A),
    "orthonormalize[householder]": lambda A, w: xm.orthonormalize(A, method="householder"),
    "power_iter1": lambda A, w: xm.power_iter1(A, w(np.eye(N)[:, :4], (N, 4))),
    "randomized_svd": lambda A, w: xm.randomized_svd(A, 4, seed=0),
    "nmf": lambda A, w: xm.nmf(A, 3, iters=5, seed=0),
    "kron_matmul": _kron,
    "msign": lambda A, w: xm.msign(A),
    "msign[spectral_estimate]": lambda A, w: xm.msign(A, normalize="spectral_estimate", steps=3),
    "msign[aol]": lambda A, w: xm.msign(A, normalize="aol"),
    "polar[newton_schulz]": lambda A, w: xm.polar(A, method="newton_schulz", steps=4),
}


@pytest.mark.parametrize("case", list(_TALL_CALLS))
def test_tall_skinny_rows_are_never_gathered(case):
    """No task of the graph ever holds more data than one row chunk of the input (300 of the
    2400 rows, 7200 numbers), and the tall results come back chunked as the input; values
    match NumPy.  (nmf's m × r start factor is drawn on the host, as every draw, and enters
    the graph already split into the input's row chunks.)"""
    A = _tall(1, positive=case == "nmf")
    fn = _TALL_CALLS[case]
    out = [x for x in _leaves(fn(_rows(A), da.from_array)) if isinstance(x, da.Array)]
    for x in out:
        if x.ndim >= 2 and x.shape[-2] == M:
            assert x.chunks[-2] == (CHUNK,) * (M // CHUNK), (case, x.chunks)
    with Computes() as c:
        got = dask.compute(*out)
    assert c.count == 1
    assert c.largest <= CHUNK * N, f"{case}: a task held {c.largest} numbers"
    ref = [x for x in _leaves(fn(A, lambda a, chunks: a)) if not isinstance(x, int)]
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-9 * max(1.0, float(np.abs(r).max())))


def test_householder_on_column_chunks():
    """A column-chunked input is rechunked to whole rows (its row chunks stay): Dask's TSQR
    needs one column chunk."""
    A = _tall(2)
    Ad = da.from_array(A, chunks=(CHUNK, N // 3))
    Q = xm.orthonormalize(Ad, method="householder")
    assert Q.chunks == ((CHUNK,) * (M // CHUNK), (N,))
    np.testing.assert_allclose(Q.compute(), xm.orthonormalize(A, method="householder"), atol=1e-12)


# ----------------------------------------------------------------------------- Cholesky


def _gram(n: int = 6, seed: int = 3) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((4 * n, n))
    return X.T @ X


def test_array_api_compat_dask_cholesky_is_still_upper():
    """The upstream bug ``_array.cholesky`` guards (``backends/dask.md``).  If this fails,
    array-api-compat returns the lower factor now: the guard is no longer needed."""
    G = _gram()
    U = np.asarray(xp.linalg.cholesky(da.from_array(G)).compute())
    assert np.allclose(U, np.triu(U)) and not np.allclose(U, np.tril(U))
    np.testing.assert_allclose(U, np.linalg.cholesky(G).T, rtol=1e-12)


@pytest.mark.parametrize("batch", [(), (3,)])
def test_cholesky_is_the_lower_factor(batch):
    G = np.stack([_gram(seed=s) for s in range(3)]) if batch else _gram()
    L = _array.cholesky(backend.asarray(G), xp)
    np.testing.assert_allclose(L.compute(), np.linalg.cholesky(G), rtol=1e-12, atol=1e-12)


def test_cholesky_failure_is_nan():
    bad = backend.asarray(np.diag([1.0, -1.0, 2.0]))
    assert np.isnan(_array.cholesky(bad, xp).compute()).all()


def test_cholesky_qr2_is_accurate_on_dask():
    """Fails without the guard: with the upper factor taken as the lower one, the first pass
    is not an orthogonalization, the acceptance test fails (or, with a general solve in place
    of the triangular one, passes loosely and leaves ‖QᵀQ − I‖ near 1e-8)."""
    s = np.geomspace(1, 1e-3, N)
    U, _ = np.linalg.qr(np.random.default_rng(4).standard_normal((M, N)))
    V, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((N, N)))
    A = (U * s) @ V.T
    Q, ok = orthogonalize._cholesky_qr2(_rows(A), xp)  # CholeskyQR2 alone, no fallback
    Q, ok = dask.compute(Q, ok)
    assert bool(ok), "the acceptance test failed: Householder would have taken over"
    assert np.abs(Q.T @ Q - np.eye(N)).max() < 1e-13
    np.testing.assert_allclose(Q, xm.orthonormalize(A, method="householder"), atol=1e-11)
    np.testing.assert_allclose(xm.orthonormalize(_rows(A)).compute(), Q, atol=1e-14)


def test_cholesky_qr2_falls_back_per_matrix():
    """A batch of a good, a rank-deficient and a zero matrix: each member gets an orthonormal Q
    (the good one CholeskyQR2's, the others Householder's), equal to NumPy's, with no compute
    before the caller's."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3, 40, 4))
    X[1, :, 3] = X[1, :, 0]
    X[2] = 0.0
    with Computes() as c:
        Q = xm.orthonormalize(backend.asarray(X), method="cholesky_qr2")
    assert c.count == 0
    Q = Q.compute()
    np.testing.assert_allclose(np.swapaxes(Q, -1, -2) @ Q, np.broadcast_to(np.eye(4), (3, 4, 4)),
                               atol=1e-13)
    np.testing.assert_allclose(Q, xm.orthonormalize(X, method="cholesky_qr2"), atol=1e-12)


# ----------------------------------------------------------------------------- a cluster


def _cluster_script():
    """``docs/scripts/dask_cluster.py`` as a module, its functions shipped to the workers by value."""
    import importlib.util
    import sys
    from pathlib import Path

    import cloudpickle

    path = Path(__file__).resolve().parents[1] / "docs" / "scripts" / "dask_cluster.py"
    spec = importlib.util.spec_from_file_location("xpmat_docs_dask_cluster", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # cloudpickle ships only modules it can find there
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)
    return module


@pytest.mark.slow
def test_dask_cluster():
    """The page ``docs/dask.md`` in small: orthonormalize, randomized_svd and nmf on a
    ``LocalCluster`` of 2 worker processes (1 GiB each) against NumPy in this process, with the
    accuracy the page reports (measured: about 25 s, most of it starting the processes and
    building nmf's 20-step graph)."""
    distributed = pytest.importorskip("distributed")
    script = _cluster_script()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="1GiB", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        rows = {row["call"]: row for row in script.compare(client, rows=20_000, chunk=2_500)}
    orth, svd, nmf = rows["orthonormalize"], rows["randomized_svd"], rows["nmf"]
    assert orth["max|QᵀQ − I|"] < 1e-13 and orth["‖R − R_numpy‖/‖R‖"] < 1e-12
    assert svd["max|UᵀU − I|"] < 1e-13 and svd["max|S − S_numpy|/S₁"] < 1e-12
    assert nmf["|D − D_numpy|/D_numpy"] < 1e-10
    for row in rows.values():
        assert row["dask_s"] > 0 and len(row["worker_peaks"].split(",")) == 2
