"""The memory-lean range finder of ``randomized_svd`` on Dask (``xpmat._dask_range``).

By default it runs only where a ``dask.distributed`` cluster's workers are short of memory, so
the Dask tests of ``test_dask.py`` run the generic graph; here it is forced (``LEAN = True``)
through the same checks: NumPy's values on every chunking, no row chunk gathered, deterministic
keys and an ``assert_eq``-clean graph, the input's chunk type kept; and what is its own: no task
returns a tall intermediate, the gated Householder fallback, and the choice by memory.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_backend

import xpmat as xm
from xpmat import _dask_range

require_backend("dask")
import dask  # noqa: E402  (after require_backend: skipped cleanly where Dask is absent)
from dask.array.utils import assert_eq  # noqa: E402
from dask.callbacks import Callback  # noqa: E402
from test_dask import (  # noqa: E402
    _LAYOUTS,
    _SMALL,
    CHUNK,
    Computes,
    M,
    N,
    Tagged,
    _arrays,
    _block_types,
    _rows,
    _tagged,
    _tall,
    _TsqrStage1,
)


@pytest.fixture
def lean(monkeypatch):
    monkeypatch.setattr(_dask_range, "LEAN", True)


def _svd(X):
    return xm.randomized_svd(X, 4, seed=0)


@pytest.mark.parametrize("layout", [k for k in _LAYOUTS if k != "unknown columns"])
def test_every_chunking(lean, layout):
    """The chunkings of ``test_dask.py`` (unknown columns raise there, a draw needs its shape):
    NumPy's values; deterministic keys, ``assert_eq``-clean; ``Tagged`` chunks stay ``Tagged``."""
    X, host = _LAYOUTS[layout](_SMALL)
    first, second = _arrays(_svd(X)), _arrays(_svd(X))
    assert [x.name for x in first] == [x.name for x in second]
    for x, r in zip(first, _svd(host), strict=True):
        assert_eq(x, r, rtol=1e-9, atol=1e-10)
    if layout == "one chunk":
        for x in _arrays(_svd(_tagged(_SMALL, (60, 12)))):
            assert _block_types(x) == {Tagged}, x.name


def test_rows_are_never_gathered(lean):
    """No task holds more than one row chunk (300 × 24) of the 2400 × 24 input; ``U`` keeps its
    row chunks; NumPy's values."""
    A = _tall(1)
    U, S, Vh = _svd(_rows(A))
    assert U.chunks[0] == (CHUNK,) * (M // CHUNK) and U.name.startswith("xpmat-signed")
    with Computes() as c:
        got = dask.compute(U, S, Vh)
    assert c.count == 1 and c.largest <= CHUNK * N
    for g, r in zip(got, _svd(A), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-9 * max(1.0, float(np.abs(r).max())))


class _RowChunkResults(Callback):
    """The names of the tasks whose result is (or holds) a row chunk of the 2400-row input."""

    def __init__(self) -> None:
        super().__init__()
        self.names = set()

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        parts = result if isinstance(result, (tuple, list)) else (result,)
        if any(tuple(getattr(p, "shape", ()))[:1] == (CHUNK,) for p in parts):
            self.names.add(key[0] if isinstance(key, tuple) else key)


def test_no_tall_intermediate(monkeypatch):
    """No task of the lean graph returns a row chunk but those of ``U`` itself (each task makes
    the chunks of ``A Z`` and ``Q`` it needs from ``A``'s chunk), so none is held between
    passes; the generic graph (``LEAN = False``) returns its sketches and ``Q`` factors, so the
    check can fail.  Both give NumPy's values."""
    A = _tall(8)
    X = _rows(A).persist()
    ref = _svd(A)
    for lean in (True, False):
        monkeypatch.setattr(_dask_range, "LEAN", lean)
        U, S, Vh = _svd(X)
        with _RowChunkResults() as seen:
            got = dask.compute(U, S, Vh)
        assert (seen.names == {U.name}) == lean, seen.names
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)


def test_fallback_zero_and_nan(lean):
    """A rank-3 matrix (its sketch is rank-deficient: CholeskyQR2 fails, the gated TSQR runs,
    each chunk made inside its task) gives NumPy's rank-3 SVD; a zero matrix ``S = 0`` with
    finite factors; a NaN entry NaN everywhere."""
    rng = np.random.default_rng(9)
    A = rng.standard_normal((M, 3)) @ rng.standard_normal((3, N))
    with _TsqrStage1() as seen:
        got = dask.compute(*xm.randomized_svd(_rows(A), 3, seed=0))
    assert seen.results and all(isinstance(r, tuple) for r in seen.results[:M // CHUNK])
    for g, r in zip(got, xm.randomized_svd(A, 3, seed=0), strict=True):
        np.testing.assert_allclose(g, r, atol=1e-10)
    U, S, Vh = dask.compute(*xm.randomized_svd(_rows(np.zeros((M, N))), 3, seed=0))
    assert not S.any() and np.isfinite(U).all() and np.isfinite(Vh).all()
    A[5, 7] = np.nan
    assert all(np.isnan(x).all() for x in dask.compute(*xm.randomized_svd(_rows(A), 3, seed=0)))


def test_only_where_it_applies(lean):
    """Forced, it still leaves to the generic graph what it does not handle: float16, a matrix
    in several column chunks, a batch, and sketches that ``orthonormalize`` factors by
    Householder (``method="householder"``, or fewer than 4 rows per sketch column)."""
    import dask.array as da

    A = _tall(11)

    def lean_graph(X, **kw):
        return xm.randomized_svd(X, 4, seed=0, **kw)[0].name.startswith("xpmat-signed")

    assert lean_graph(_rows(A)) and lean_graph(_rows(A), method="cholesky_qr2")
    assert not lean_graph(_rows(A), method="householder")
    assert not lean_graph(da.from_array(A.astype(np.float16), chunks=(CHUNK, N)))
    assert not lean_graph(da.from_array(A, chunks=(CHUNK, N // 2)))
    assert not lean_graph(da.from_array(A.reshape(2, M // 2, N), chunks=(1, CHUNK, N)))
    assert not lean_graph(da.from_array(A[:40], chunks=(20, N)))  # 40 < 4 l = 56


def test_chosen_by_the_workers_memory():
    """By default the lean range finder runs only where a ``dask.distributed`` client's workers
    would be crowded (``memory_tight``): never without a client; with one, when ``A``'s share
    per worker and two sketches exceed ``TIGHT_FRACTION`` (0.4) of the smallest memory limit."""
    distributed = pytest.importorskip("distributed")
    X = _rows(_tall(10))  # 2400 × 24 float64: 461 KB; with two 2400 × 14 sketches, 998 KB

    def lean():
        return _svd(X)[0].name.startswith("xpmat-signed")

    assert _dask_range.LEAN is None
    assert not _dask_range.memory_tight(X, 14) and not lean()
    for limit, tight in (("2MiB", True), ("3MiB", False)):  # 0.4 × limit: 839 KB, 1258 KB
        with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                                memory_limit=limit, dashboard_address=None):
            assert _dask_range.memory_tight(X, 14) == tight == lean()
