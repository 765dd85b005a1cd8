"""Dask: correct, lazy, and never gathered.

The ``dask`` column of the ``xp`` matrix (``conftest.py``) checks values against NumPy float64
references with 2 row chunks.  Here:

- every public primitive (``primitive_calls.CALLS``) runs on Dask arrays without a single
  computation (a ``dask.callbacks.Callback`` counts them: 0, as the docstrings say for lazy
  arrays), returns Dask arrays, and computes to what the same call returns on NumPy;
- a tall-skinny matrix chunked by rows goes through the primitives of the "Beyond one machine"
  page without any task ever holding more rows than one chunk (a ``posttask`` callback looks at
  the shape of every task's result);
- ``xpmat._array.cholesky`` returns the lower factor, which array-api-compat's Dask wrapper does not
  (``backends/dask.md``), and CholeskyQR2 is accurate to rounding on Dask.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_backend
from primitive_calls import CALLS

import xpmat as xm
from xpmat import _dask, orthogonalize

backend = require_backend("dask")
xp = backend.xp
import dask  # noqa: E402  (after require_backend: skipped cleanly where Dask is absent)
import dask.array as da  # noqa: E402
from dask.array.utils import assert_eq  # noqa: E402
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
        # Dask's own check of the graph: no key defined twice with different tasks, chunks and
        # meta as declared (dask.array.utils.assert_eq, as dask.array.linalg's tests use it);
        # skipped for the long lazy loops (power_iteration: 2,500+ keys; Newton inv_root runs
        # in one task here, a few dozen keys), whose check takes seconds to tens of seconds
        if len(lz.__dask_graph__()) <= 2000:
            assert_eq(lz, e, rtol=rtol, atol=rtol * max(1.0, float(np.abs(e).max(initial=0.0))),
                      equal_nan=True)


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
    """A column-chunked input is merged to whole rows (its row chunks stay): TSQR needs one
    column chunk."""
    A = _tall(2)
    Ad = da.from_array(A, chunks=(CHUNK, N // 3))
    Q = xm.orthonormalize(Ad, method="householder")
    assert Q.chunks == ((CHUNK,) * (M // CHUNK), (N,))
    np.testing.assert_allclose(Q.compute(), xm.orthonormalize(A, method="householder"), atol=1e-12)


# ----------------------------------------------------------------------------- graph hygiene

_SMALL = np.random.default_rng(11).random((240, 12))  # nonnegative: nmf takes it too
_HYGIENE_CALLS = {
    "orthonormalize": lambda X: xm.orthonormalize(X),
    "orthonormalize[householder]": lambda X: xm.orthonormalize(X, method="householder"),
    "randomized_svd": lambda X: xm.randomized_svd(X, 4, seed=0),
    "msign": lambda X: xm.msign(X, steps=3),
    "nmf": lambda X: xm.nmf(X, 3, iters=3, seed=0),
    "polar[svd]": lambda X: xm.polar(X),
}


def _arrays(out):
    return [x for x in _leaves(out) if isinstance(x, da.Array)]


@pytest.mark.parametrize("case", list(_HYGIENE_CALLS))
def test_identical_calls_give_identical_keys_and_valid_graphs(case):
    """Dask's conventions (``dask.array.linalg`` follows them): names are ``tokenize`` hashes of
    the inputs, so two identical calls build the same keys; every result passes
    ``dask.array.utils.assert_eq`` against NumPy, whose graph check refuses a key defined twice
    with different tasks (the single-chunk SVD through ``dask.delayed`` failed both)."""
    fn = _HYGIENE_CALLS[case]
    X = da.from_array(_SMALL, chunks=(60, 12))
    first, second = _arrays(fn(X)), _arrays(fn(X))
    assert [x.name for x in first] == [x.name for x in second]
    ref = [x for x in _leaves(fn(_SMALL)) if not isinstance(x, int)]
    for x, r in zip(first, ref, strict=True):
        assert_eq(x, r, atol=1e-10, rtol=1e-9)


def test_no_dask_delayed_in_the_graphs():
    """The small SVD runs on one chunk by ``map_blocks``-style tasks, not ``dask.delayed``
    (whose ``finalize`` layers copy the graph of their input)."""
    X = da.from_array(_SMALL, chunks=(60, 12))
    for fn in _HYGIENE_CALLS.values():
        for x in _arrays(fn(X)):
            assert not [name for name in x.dask.layers if "finalize" in name or "delayed" in name]


# ----------------------------------------------------------------------------- every chunking

_ROW_MASK = np.random.default_rng(12).random(240) > 0.25
_COL_MASK = np.arange(12) % 5 != 3


def _unknown_rows(a):
    return da.from_array(a, chunks=(60, 12))[da.from_array(_ROW_MASK, chunks=60)], a[_ROW_MASK]


def _unknown_cols(a):
    return da.from_array(a, chunks=(60, 4))[:, da.from_array(_COL_MASK, chunks=4)], a[:, _COL_MASK]


def _empty_chunk(a):
    keep = _ROW_MASK & (np.arange(240) >= 60)  # the first row chunk loses all its rows
    return da.from_array(a, chunks=(60, 12))[da.from_array(keep, chunks=60)], a[keep]


_LAYOUTS = {  # name: (host matrix) -> (Dask array, the host matrix it holds)
    "unknown rows": _unknown_rows,
    "unknown rows, an empty chunk": _empty_chunk,
    "unknown columns": _unknown_cols,
    "one chunk": lambda a: (da.from_array(a, chunks=a.shape), a),
    "uneven chunks": lambda a: (da.from_array(a, chunks=((7, 100, 33, 100), (5, 7))), a),
    "square, row chunks only": lambda a: (da.from_array(a[:12], chunks=(5, 12)), a[:12]),
    "square, column chunks only": lambda a: (da.from_array(a[:12], chunks=(12, 5)), a[:12]),
}
_CHUNKING_CALLS = {k: _HYGIENE_CALLS[k] for k in ("orthonormalize", "orthonormalize[householder]",
                                                  "randomized_svd", "msign", "nmf")}
# A random draw needs its shape on the client: the sketch of randomized_svd is n × l, nmf's
# start factors m × r and r × n.
_NEEDS_SIZES = {("unknown columns", "randomized_svd"), ("unknown columns", "nmf"),
                ("unknown rows", "nmf"), ("unknown rows, an empty chunk", "nmf")}


@pytest.mark.parametrize("call", list(_CHUNKING_CALLS))
@pytest.mark.parametrize("layout", list(_LAYOUTS))
def test_every_chunking(layout, call):
    """Unknown row or column chunk sizes (boolean masks), one chunk, uneven chunks, a square
    matrix chunked by rows only or by columns only: the same values as NumPy.  A call that must
    draw a random matrix of a size Dask does not know raises a ValueError saying so."""
    X, host = _LAYOUTS[layout](_SMALL)
    fn = _CHUNKING_CALLS[call]
    if (layout, call) in _NEEDS_SIZES:
        with pytest.raises(ValueError, match="compute_chunk_sizes"):
            fn(X)
        return
    got = dask.compute(*_arrays(fn(X)))
    ref = [x for x in _leaves(fn(host)) if not isinstance(x, int)]
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-10)


def _lowrank_update(X):
    """lowrank_eigh_update with ``Q`` and ``C`` taken from ``X``'s columns (so that they share
    its row chunks, known or not): ``Q = orth(X[:, :3])``, ``C = X[:, 3:5]``."""
    L = da.from_array(_L3) if isinstance(X, da.Array) else _L3
    return xm.lowrank_eigh_update(L, xm.orthonormalize(X[:, :3], method="householder"), X[:, 3:5],
                                  decay=0.9)


_TALL_EIGH_CALLS = {  # tall inputs, every layout of test_every_chunking
    "lowrank_eigh_update": _lowrank_update,
    "lowrank_eigh_truncate": lambda X: xm.lowrank_eigh_truncate(
        da.from_array(_L3) if isinstance(X, da.Array) else _L3, X[:, :3], rank=2, rtol=0.1),
    "ggt_eigh": lambda X: xm.ggt_eigh(X[:, :5], rank=3),
}


@pytest.mark.parametrize("call", list(_TALL_EIGH_CALLS))
@pytest.mark.parametrize("layout", [k for k in _LAYOUTS if k != "unknown columns"])
def test_every_chunking_of_the_lowrank_updates(layout, call):
    """The low-rank eigendecompositions on tall inputs of every layout above but unknown column
    sizes (their column count is the rank of the result: it must be known): NumPy's values."""
    X, host = _LAYOUTS[layout](_SMALL)
    fn = _TALL_EIGH_CALLS[call]
    got = dask.compute(*_arrays(fn(X)))
    for g, r in zip(got, _leaves(fn(host)), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-10)


_SQUARE_LAYOUTS = {  # chunks of a 12 x 12 matrix (sizes must be known: the calls check squareness)
    "one chunk": (12, 12),
    "uneven chunks": ((5, 7), (3, 4, 5)),
    "row chunks only": (5, 12),
    "column chunks only": (12, 5),
    "both ways": (6, 6),
}
_SQUARE_CALLS = {
    "randomized_eigh": lambda A: xm.randomized_eigh(A, 3, seed=0),
    "nystrom_eigh": lambda A: xm.nystrom_eigh(A, 3, seed=0),
    "inv_root[eigh]": lambda A: xm.inv_root(A, 4),
    "nearest_kron[svd]": lambda A: xm.nearest_kron(A, (3, 4), (4, 3)),
}


@pytest.mark.parametrize("call", list(_SQUARE_CALLS))
@pytest.mark.parametrize("layout", list(_SQUARE_LAYOUTS))
def test_every_chunking_of_a_square_matrix(layout, call):
    """Randomized and Nyström eigh, the eigh inverse root and the SVD nearest Kronecker product
    of a 12 × 12 (SPD) matrix in one chunk, uneven chunks, rows only, columns only, both ways."""
    fn = _SQUARE_CALLS[call]
    got = dask.compute(*_arrays(fn(da.from_array(_SPD, chunks=_SQUARE_LAYOUTS[layout]))))
    for g, r in zip(got, _leaves(fn(_SPD)), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-10)


def test_newton_schulz_on_a_block_grid_is_one_task_per_block_and_product():
    """msign of a square matrix on a 3 × 3 grid of chunks: each Newton–Schulz step is three
    products (``X Xᵀ``, ``b A + c A²``, ``a X + B X``), each one task per output block with the
    scaling fused in (Dask's own matmul: a task per block product, a sum tree and a task per
    elementwise operation, 3111 tasks for 12 steps before); values as NumPy's."""
    G = np.random.default_rng(13).standard_normal((36, 36))
    X = da.from_array(G, chunks=12)
    for steps in (2, 4):
        out = xm.msign(X, steps=steps)
        keys = list(dict(out.__dask_graph__()))
        products = [k for k in keys if str(k[0]).startswith("xpmat-matmul")]
        assert len(products) == 3 * steps * 9
        if steps == 2:
            rest = len(keys) - len(products)  # the input and its normalization
        assert len(keys) - len(products) == rest  # a step adds its 27 product tasks, nothing else
    np.testing.assert_allclose(out.compute(), xm.msign(G, steps=steps), rtol=1e-10, atol=1e-12)


def test_nmf_with_start_factors_on_unknown_rows():
    """nmf cannot draw its start factors where Dask does not know the rows, but given them (made
    from the same mask) it runs as on NumPy: the mean of the model for its floor is counted
    lazily, and the divergence is a chunk-wise sum instead of a dot of reshaped arrays."""
    rows = da.from_array(_ROW_MASK, chunks=60)
    C = da.from_array(_SMALL, chunks=(60, 12))[rows]
    A0 = np.random.default_rng(14).random((240, 3))
    B0 = np.random.default_rng(15).random((3, 12))
    got = dask.compute(*_arrays(xm.nmf(C, 3, iters=3, init=(da.from_array(A0, chunks=(60, 3))[rows],
                                                              da.from_array(B0)))))
    ref = xm.nmf(_SMALL[_ROW_MASK], 3, iters=3, init=(A0[_ROW_MASK], B0))
    for g, r in zip(got, [ref.A, ref.B, ref.divergence], strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- the fallback


class _TsqrStage1(Callback):
    """The results of the first TSQR stage (one per row chunk) of every computation."""

    def __init__(self) -> None:
        super().__init__()
        self.results = []

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if isinstance(key, tuple) and str(key[0]).startswith("xpmat-tsqr") and key[0].endswith("-qr"):
            self.results.append(result)


def test_cholesky_qr2_fallback_runs_only_when_needed():
    """The Householder fallback of CholeskyQR2 is gated inside its tasks: an accepted matrix
    runs no QR at all (each first-stage task returns None); a rank-deficient one runs TSQR on
    every row chunk and still gets an orthonormal Q."""
    A = _tall(6)
    with _TsqrStage1() as seen:
        Q = xm.orthonormalize(_rows(A)).compute()
    assert len(seen.results) == M // CHUNK and all(r is None for r in seen.results)
    np.testing.assert_allclose(Q, xm.orthonormalize(A), atol=1e-12)
    A[:, 3] = A[:, 0]
    with _TsqrStage1() as seen:
        Q = xm.orthonormalize(_rows(A)).compute()
    assert len(seen.results) == M // CHUNK and all(isinstance(r, tuple) for r in seen.results)
    assert np.abs(Q.T @ Q - np.eye(N)).max() < 1e-13


def test_tsqr_has_two_levels_for_many_row_chunks():
    """60 row chunks (more than ``_dask._TSQR_ONE_LEVEL``): the stacked ``R`` factors are
    factored in 8 groups of 8 and once more on top, no task stacks all 60 (measured, 400 000 ×
    64 in 2,000 chunks: the one stacking task took 6.3 s of a 14.6 s call, docs/dask.md).  TSQR
    gives NumPy's Householder ``Q``; the CholeskyQR2 fallback of a rank-deficient matrix an
    orthonormal ``Q`` spanning its columns."""
    A = _tall(7)
    B = A.copy()
    B[:, 3] = B[:, 0]  # rank-deficient: CholeskyQR2 falls back to TSQR
    for method, host in (("householder", A), ("auto", B)):
        Q = xm.orthonormalize(da.from_array(host, chunks=(40, N)), method=method)
        keys = [k[0] for k in dict(Q.__dask_graph__()) if isinstance(k, tuple)]
        assert sum(k.endswith("-group") for k in keys) == 8 and any(k.endswith("-join") for k in keys)
        Q = Q.compute()
        assert np.abs(Q.T @ Q - np.eye(N)).max() < 1e-13
        np.testing.assert_allclose(Q @ (Q.T @ host), host, atol=1e-12)
        if method == "householder":
            np.testing.assert_allclose(Q, xm.orthonormalize(A, method="householder"), atol=1e-12)


# ----------------------------------------------------------------------------- chunk types


class Tagged(np.ndarray):
    """A chunk type that is not NumPy's: an ndarray subclass that, like CuPy, refuses to mix with
    plain NumPy arrays (0-d included) except in an explicit conversion (``np.asarray(a,
    like=...)``), so that any array xpmat creates from NumPy instead of from the input's chunks
    makes the computation fail.  NumPy functions and ufuncs on it return it."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_numpy(inputs)
        out = getattr(ufunc, method)(*_plain(inputs), **_plain(kwargs))
        return _tag(out)

    def __getitem__(self, index):  # a 0-d Tagged, not a NumPy scalar (CuPy: a 0-d cupy array)
        return _tag(super().__getitem__(index))

    def __array_function__(self, func, types, args, kwargs):
        if func not in (np.asarray, np.array):  # an explicit conversion, as cupy.asarray(ndarray)
            _refuse_numpy([*args, *kwargs.values()])
        return _tag(func(*_plain(args), **_plain(kwargs)))


def _refuse_numpy(values):
    flat = [v for x in values for v in (x if isinstance(x, (list, tuple)) else (x,))]
    plain = [v.shape for v in flat if type(v) is np.ndarray]
    if plain and any(isinstance(v, Tagged) for v in flat):
        raise TypeError(f"Tagged refuses to mix with NumPy arrays of shapes {plain}")


def _plain(x):
    if isinstance(x, Tagged):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _tag(x):
    if type(x) is np.ndarray or isinstance(x, np.generic):
        return np.asarray(x).view(Tagged)
    if isinstance(x, tuple) and hasattr(x, "_fields"):  # QRResult, SVDResult, ...
        return type(x)(*(_tag(v) for v in x))
    if isinstance(x, (list, tuple)):
        return type(x)(_tag(v) for v in x)
    return x


def _tagged(a, chunks):
    meta = np.empty((0,) * a.ndim).view(Tagged)
    return da.from_array(a, chunks=chunks).map_blocks(lambda b: b.view(Tagged), meta=meta)


def _block_types(x):
    return {type(b) for b in dask.compute(*x.to_delayed().ravel())}


_SPD = (lambda g: g @ g.T / 12 + np.eye(12))(np.random.default_rng(16).standard_normal((12, 12)))
_L3 = np.array([3.0, 2.0, 1.0])
_Q3 = np.linalg.qr(np.random.default_rng(17).standard_normal((12, 3)))[0]
_C2 = np.random.default_rng(18).standard_normal((12, 2))
_LOWRANK = ((_L3, _Q3, _C2), ((3,), (6, 3), (6, 2)))  # L, Q, C and their chunks
_CHUNK_TYPE_CALLS = {  # case: (fn, host arrays, their chunks)
    **{k: (v, (_SMALL,), ((60, 12),)) for k, v in _CHUNKING_CALLS.items()},
    "orthonormalize[batch]": (lambda X: xm.orthonormalize(X), (_SMALL.reshape(4, 60, 12),),
                              ((2, 30, 12),)),
    "polar[svd]": (lambda X: xm.polar(X), (_SMALL,), ((60, 12),)),
    "power_iter1": (lambda X: xm.power_iter1(X, X[:12, :3]), (_SMALL,), ((60, 12),)),
    "inv_root[newton]": (lambda X: xm.inv_root(X, 4, method="newton", iters=10), (_SPD,), ((6, 6),)),
    "inv_root[eigh]": (lambda X: xm.inv_root(X, 4), (_SPD,), ((6, 6),)),
    "randomized_eigh": (lambda X: xm.randomized_eigh(X, 3, seed=0), (_SPD,), ((6, 6),)),
    "nystrom_eigh": (lambda X: xm.nystrom_eigh(X, 3, seed=0), (_SPD,), ((6, 6),)),
    "lowrank_eigh_update": (lambda L, Q, C: xm.lowrank_eigh_update(L, Q, C, decay=0.9), *_LOWRANK),
    "lowrank_eigh_update[randomized]": (lambda L, Q, C: xm.lowrank_eigh_update(
        L, Q, C, method="randomized", rank=3, seed=0), *_LOWRANK),
    "lowrank_eigh_truncate": (lambda L, Q: xm.lowrank_eigh_truncate(L, Q, rank=2),
                              _LOWRANK[0][:2], _LOWRANK[1][:2]),
    "ggt_eigh": (lambda H: xm.ggt_eigh(H, rank=3), (_SMALL[:12, :5],), ((6, 5),)),
    "nearest_kron[svd]": (lambda H: xm.nearest_kron(H, (2, 3), (4, 3)), (_SMALL[:8, :9],), ((4, 9),)),
    "orthogonal_iteration[align_to]": (lambda A, Q: xm.orthogonal_iteration(A, Q, iters=2, align_to=Q),
                                       (_SPD, _Q3), ((6, 6), (6, 3))),
    "orthogonal_iteration[ritz=False]": (lambda A, Q: xm.orthogonal_iteration(A, Q, iters=2, ritz=False),
                                         (_SPD, _Q3), ((6, 6), (6, 3))),
    "lowrank_inv_root_apply": (lambda L, Q, C: xm.lowrank_inv_root_apply(L, Q, C, eps=0.1), *_LOWRANK),
    "shampoo_kron": (lambda G: xm.shampoo_kron(xm.shampoo_factors(G, beta=0.9)), (_SMALL[:8, :6],),
                     ((4, 3),)),
}


@pytest.mark.parametrize("case", list(_CHUNK_TYPE_CALLS))
def test_results_keep_the_chunk_type(case):
    """Every chunk of every result is the input's chunk type (a CuPy chunk stays CuPy): arrays
    are created from the input's chunks or meta, never from NumPy, or ``Tagged`` refuses to mix.
    (The ``_meta`` of a result is checked where Dask keeps it: Dask gives 0-d reductions of an
    ndarray subclass a NumPy meta, which then spreads to the metas, not the chunks, of
    ``randomized_svd`` and ``nmf``.)"""
    fn, hosts, chunks = _CHUNK_TYPE_CALLS[case]
    out = _arrays(fn(*map(_tagged, hosts, chunks)))
    for x in out:
        assert _block_types(x) == {Tagged}, (case, x.name)
    if case.startswith(("orthonormalize", "msign")):
        assert all(isinstance(x._meta, Tagged) for x in out)


def test_the_chunk_type_check_catches_numpy_creations(monkeypatch):
    """The test above can fail: with the random draw made as a NumPy chunk (``like=`` dropped),
    ``randomized_svd`` on ``Tagged`` chunks fails to compute."""
    asarray = da.asarray  # the host draw's only way onto Dask (xpmat._array.random_normal)
    monkeypatch.setattr(da, "asarray", lambda *a, like=None, **k: asarray(*a, **k))
    U, S, Vh = xm.randomized_svd(_tagged(_SMALL, (60, 12)), 4, seed=0)
    with pytest.raises(TypeError, match="refuses to mix"):
        dask.compute(U, S, Vh)


def test_the_chunk_type_check_catches_numpy_arange_and_eye(monkeypatch):
    """And it fails for the eigendecompositions when their ``arange`` / ``eye`` / ``zeros``
    keep array-api-compat's NumPy chunks (``_dask.as_chunk_type`` made a no-op)."""
    monkeypatch.setattr(_dask, "as_chunk_type", lambda x, like: x)
    for case in ("randomized_eigh", "lowrank_eigh_update", "ggt_eigh"):
        fn, hosts, chunks = _CHUNK_TYPE_CALLS[case]
        with pytest.raises(TypeError, match="refuses to mix"):
            dask.compute(*_arrays(fn(*map(_tagged, hosts, chunks))))


_EIGH_FAMILY = [k for k in _CHUNK_TYPE_CALLS if k.startswith(
    ("inv_root[eigh]", "randomized_eigh", "nystrom_eigh", "lowrank_eigh", "ggt_eigh", "nearest_kron"))]


@pytest.mark.parametrize("case", _EIGH_FAMILY)
def test_eigh_family_graphs_are_deterministic_and_valid(case):
    """As ``test_identical_calls_give_identical_keys_and_valid_graphs`` for the eigendecompositions
    (NumPy chunks): identical calls give identical keys, the results pass ``assert_eq`` (its graph
    check included) against NumPy, and no layer is a ``dask.delayed`` one."""
    fn, hosts, chunks = _CHUNK_TYPE_CALLS[case]
    args = [da.from_array(h, chunks=c) for h, c in zip(hosts, chunks, strict=True)]
    first, second = _arrays(fn(*args)), _arrays(fn(*args))
    assert [x.name for x in first] == [x.name for x in second]
    for x, r in zip(first, _leaves(fn(*hosts)), strict=True):
        assert_eq(x, r, atol=1e-10, rtol=1e-9)
        assert not [name for name in x.dask.layers if "finalize" in name or "delayed" in name]


# ----------------------------------------------------------------------------- Cholesky


def _gram(n: int = 6, seed: int = 3) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((4 * n, n))
    return X.T @ X


def test_array_api_compat_dask_cholesky_is_still_upper():
    """The upstream bug ``xpmat._array.cholesky`` guards (``backends/dask.md``).  If this fails,
    array-api-compat returns the lower factor now: the guard is no longer needed."""
    G = _gram()
    U = np.asarray(xp.linalg.cholesky(da.from_array(G)).compute())
    assert np.allclose(U, np.triu(U)) and not np.allclose(U, np.tril(U))
    np.testing.assert_allclose(U, np.linalg.cholesky(G).T, rtol=1e-12)


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


def test_fused_matmul_skip_flag_skips_the_products(monkeypatch):
    """``fused_matmul(skip=...)``: the product where the flag is false, zero blocks (no GEMM)
    where it is true; Newton ``inv_root`` on its blocked path (forced: ``ONE_TASK_BYTES = 0``)
    gates its steps after convergence with it and gives NumPy's result to the last bit."""
    monkeypatch.setattr(_dask, "ONE_TASK_BYTES", 0)
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((6, 6)), rng.standard_normal((6, 6))
    da_a, da_b = da.from_array(a, chunks=3), da.from_array(b, chunks=3)
    on = _dask.fused_matmul(da_a, da_b, skip=da.asarray(False))
    off = _dask.fused_matmul(da_a, da_b, skip=da.asarray(True))
    np.testing.assert_allclose(on.compute(), a @ b, rtol=1e-14)
    assert np.array_equal(off.compute(), np.zeros((6, 6)))
    assert on.name != off.name
    Q = np.linalg.qr(rng.standard_normal((12, 12)))[0]
    A = (Q * np.logspace(0, 2, 12)) @ Q.T
    lazy = xm.inv_root(da.from_array(A, chunks=4), 4, method="newton")
    assert np.array_equal(lazy.compute(), xm.inv_root(A, 4, method="newton"))


def _spd36() -> np.ndarray:
    Q = np.linalg.qr(np.random.default_rng(6).standard_normal((36, 36)))[0]
    return (Q * np.logspace(0, 2, 36)) @ Q.T


def test_newton_inv_root_runs_in_one_task_below_the_threshold():
    """A matrix under ``ONE_TASK_BYTES`` is iterated whole in one task (NumPy's loop, its early
    exit included): the graph does not grow with ``iters``, holds no block product, and the
    result comes back in the input's chunks, NumPy's to the last bit; batched with
    ``return_info``, the flags and residuals are NumPy's too (``iters`` stays the argument)."""
    A = _spd36()
    Ad = da.from_array(A, chunks=12)
    short, long = (xm.inv_root(Ad, 4, method="newton", iters=k) for k in (10, 100))
    assert len(dict(short.__dask_graph__())) == len(dict(long.__dask_graph__())) < 40
    assert not [k for k in dict(long.__dask_graph__()) if str(k[0]).startswith("xpmat-matmul")]
    assert long.chunks == Ad.chunks and long.name == xm.inv_root(Ad, 4, method="newton").name
    assert_eq(long, xm.inv_root(A, 4, method="newton"), rtol=0, atol=0)
    B = np.stack([A, 2 * A, np.zeros_like(A)])
    X, info = xm.inv_root(da.from_array(B, chunks=(2, 12, 12)), 2, method="newton", return_info=True)
    Xn, ref = xm.inv_root(B, 2, method="newton", return_info=True)
    assert_eq(X, Xn, rtol=0, atol=0)
    assert_eq(info.converged, ref.converged)
    assert_eq(info.error, ref.error, rtol=0, atol=0)
    assert info.iters == 100


def test_newton_inv_root_blocked_path_above_the_threshold(monkeypatch):
    """Above ``ONE_TASK_BYTES`` (forced to 0 here) the iteration is one task per block and
    product: the graph grows with ``iters``, chunk types are kept (``Tagged``), keys are
    deterministic and ``assert_eq`` accepts the graph; values as NumPy's."""
    monkeypatch.setattr(_dask, "ONE_TASK_BYTES", 0)
    A = _spd36()
    Ad = da.from_array(A, chunks=12)
    short, long = (xm.inv_root(Ad, 4, method="newton", iters=k) for k in (3, 4))
    assert len(dict(long.__dask_graph__())) > len(dict(short.__dask_graph__()))
    assert [k for k in dict(long.__dask_graph__()) if str(k[0]).startswith("xpmat-matmul")]
    assert long.name == xm.inv_root(Ad, 4, method="newton", iters=4).name
    ref = xm.inv_root(A, 4, method="newton", iters=4, return_info=True)[0]  # not converged yet
    assert_eq(long, ref, rtol=1e-12, atol=1e-12)
    tagged = xm.inv_root(_tagged(_SPD, (6, 6)), 4, method="newton", iters=10)
    assert _block_types(tagged) == {Tagged}


def test_float16_computes_in_float32_like_numpy():
    """A float16 Dask matrix is worked in float32 as a NumPy one is (Dask's namespace has no
    ``float16`` name, so the low-precision check reads the dtype's name): ``orthonormalize``
    once failed at compute time inside NumPy's linalg ("float16 is unsupported")."""
    X = np.random.default_rng(0).standard_normal((400, 20)).astype(np.float16)
    Q = xm.orthonormalize(da.from_array(X, chunks=(100, 20))).compute()
    assert Q.dtype == np.float16
    np.testing.assert_allclose(Q.astype(np.float64), xm.orthonormalize(X).astype(np.float64), atol=1e-3)
