"""xpmat on Dask arrays (NumPy chunks, threaded scheduler) beside NumPy and Dask's own linalg.

Tall-skinny: a persisted ``rows × 64`` float64 array in 8 row chunks (400 000 rows; 40 000 in
the fast profile): ``orthonormalize`` beside ``dask.array.linalg.tsqr`` and NumPy,
``randomized_svd(k=8)`` beside ``dask.array.linalg.svd_compressed(k=8, n_power_iter=2)`` and
NumPy (and with its memory-lean range finder forced, ``xpmat._dask_range.LEAN``: the price of
its recomputed chunks where memory is no issue), ``nmf(rank 5, 20 iterations)`` of half its rows
(absolute values, given start factors) beside NumPy. Square: ``msign(steps=12)``, ``polar`` and
Newton ``inv_root(p=4)`` (of an SPD matrix made from it; the default ``iters=100``: under
``xpmat._dask.ONE_TASK_BYTES`` the loop runs in one task and exits early, as NumPy's) of a 1200²
float32 array in 400² chunks (600² in 300² in the fast profile) beside NumPy.
``lowrank_eigh_update(decay=0.9)`` of a ``rows × 32`` basis in 8 × 2 chunks with 8 corrections
beside NumPy. Each Dask call is one ``dask.persist`` of all its results (every chunk computed,
nothing gathered), with BLAS limited to one thread per task, as ``docs/dask.md`` ("Speed")
recommends for the threaded scheduler. ``docs/scripts/dask_speed.py`` prints the same comparison
as a table, with the code of an earlier revision beside it.
"""

from __future__ import annotations

import numpy as np

from .common import FAST, gaussian


class _DaskBase:
    timeout = 300.0
    number = 1
    repeat = 5

    def _dask(self, fn):
        import dask
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            dask.persist(*fn())

    @staticmethod
    def _da():
        """``dask.array``, or asv's skip where Dask is not installed."""
        try:
            import dask.array as da
        except ImportError as exc:
            raise NotImplementedError("dask not installed") from exc
        return da


class DaskTallSkinny(_DaskBase):
    params = [[40_000] if FAST else [400_000]]
    param_names = ["rows"]

    def setup(self, rows):
        da = self._da()
        self.A = gaussian((rows, 64))
        self.X = da.from_array(self.A, chunks=(rows // 8, 64)).persist()
        rng = np.random.default_rng(1)
        self.Cn, self.start_n = np.abs(self.A[: rows // 2]), (rng.random((rows // 2, 5)), rng.random((5, 64)))
        self.C = da.from_array(self.Cn, chunks=(rows // 8, 64)).persist()
        self.start = (da.from_array(self.start_n[0], chunks=(rows // 8, 5)).persist(),
                      da.from_array(self.start_n[1]).persist())

    def time_orthonormalize(self, rows):
        import xpmat as xm

        self._dask(lambda: (xm.orthonormalize(self.X),))

    def time_tsqr_anchor(self, rows):
        import dask.array as da

        self._dask(lambda: da.linalg.tsqr(self.X))

    def time_orthonormalize_numpy_anchor(self, rows):
        import xpmat as xm

        xm.orthonormalize(self.A)

    def time_randomized_svd(self, rows):
        import xpmat as xm

        self._dask(lambda: xm.randomized_svd(self.X, 8, seed=0))

    def time_randomized_svd_lean(self, rows):
        import xpmat as xm
        from xpmat import _dask_range

        _dask_range.LEAN = True  # by default only where a cluster's workers are short of memory
        try:
            self._dask(lambda: xm.randomized_svd(self.X, 8, seed=0))
        finally:
            _dask_range.LEAN = None

    def time_svd_compressed_anchor(self, rows):
        import dask.array as da

        self._dask(lambda: da.linalg.svd_compressed(self.X, 8, n_power_iter=2, seed=0))

    def time_randomized_svd_numpy_anchor(self, rows):
        import xpmat as xm

        xm.randomized_svd(self.A, 8, seed=0)

    def time_nmf(self, rows):
        import xpmat as xm

        self._dask(lambda: xm.nmf(self.C, 5, iters=20, init=self.start)[:3])

    def time_nmf_numpy_anchor(self, rows):
        import xpmat as xm

        xm.nmf(self.Cn, 5, iters=20, init=self.start_n)

    def track_tasks_randomized_svd(self, rows):
        import dask

        import xpmat as xm

        out = dask.optimize(*xm.randomized_svd(self.X, 8, seed=0))
        return len(dict(dask.base.collections_to_expr(out).__dask_graph__()))


class DaskMsign(_DaskBase):
    params = [[600] if FAST else [1200]]
    param_names = ["n"]

    def setup(self, n):
        da = self._da()
        self.G = gaussian((n, n)).astype("float32")
        self.X = da.from_array(self.G, chunks=n // 3).persist()
        self.S = self.G @ self.G.T / n + np.eye(n, dtype="float32")
        self.Sd = da.from_array(self.S, chunks=n // 3).persist()

    def time_msign(self, n):
        import xpmat as xm

        self._dask(lambda: (xm.msign(self.X, steps=12),))

    def time_msign_numpy_anchor(self, n):
        import xpmat as xm

        xm.msign(self.G, steps=12)

    def track_tasks_msign(self, n):
        import dask

        import xpmat as xm

        out = dask.optimize(xm.msign(self.X, steps=12))
        return len(dict(dask.base.collections_to_expr(out).__dask_graph__()))

    def time_polar(self, n):
        import xpmat as xm

        self._dask(lambda: xm.polar(self.X))

    def time_polar_numpy_anchor(self, n):
        import xpmat as xm

        xm.polar(self.G)

    def time_inv_root_newton(self, n):
        import xpmat as xm

        self._dask(lambda: (xm.inv_root(self.Sd, 4, method="newton"),))

    def time_inv_root_newton_numpy_anchor(self, n):
        import xpmat as xm

        xm.inv_root(self.S, 4, method="newton")

    def track_tasks_inv_root_newton(self, n):
        import dask

        import xpmat as xm

        out = dask.optimize(xm.inv_root(self.Sd, 4, method="newton"))
        return len(dict(dask.base.collections_to_expr(out).__dask_graph__()))


class DaskLowrankUpdate(_DaskBase):
    params = [[40_000] if FAST else [400_000]]
    param_names = ["rows"]

    def setup(self, rows):
        da = self._da()
        self.Q = np.linalg.qr(gaussian((rows, 32)))[0]
        self.L, self.C = np.linspace(2.0, 1.0, 32), gaussian((rows, 8), seed=1)
        self.Qd = da.from_array(self.Q, chunks=(rows // 8, 16)).persist()
        self.Cd, self.Ld = da.from_array(self.C, chunks=(rows // 8, 8)).persist(), da.from_array(self.L)

    def time_lowrank_eigh_update(self, rows):
        import xpmat as xm

        self._dask(lambda: xm.lowrank_eigh_update(self.Ld, self.Qd, self.Cd, decay=0.9))

    def time_lowrank_eigh_update_numpy_anchor(self, rows):
        import xpmat as xm

        xm.lowrank_eigh_update(self.L, self.Q, self.C, decay=0.9)
