"""How long TSQR's stacking of the ``R`` factors takes on Dask, against the whole call.

    python docs/scripts/dask_tsqr_stack.py                      # 400 000 × 64 in 400 and 2,000 chunks
    python docs/scripts/dask_tsqr_stack.py --rows 100000 --chunks 50 500
    python docs/scripts/dask_tsqr_stack.py --one-level-too   # and with one level (interleaved)

``orthonormalize(X, method="householder")`` on a persisted row-chunked float64 array, threaded
scheduler, one BLAS thread per task (``threadpoolctl``, as docs/dask.md recommends), beside
``dask.array.linalg.tsqr``; the minimum of ``--reps`` calls each.  A ``dask.callbacks.Callback``
sums the task time of the stacking tasks (keys ending in ``-stack`` and, with two levels,
``-group`` and ``-join``) and of the first-stage QRs (``-qr``).  ``--one-level-too`` times the
one-level form beside it in the same rounds (``xpmat._dask._TSQR_ONE_LEVEL`` raised past the
chunk count).
"""

from __future__ import annotations

import argparse
import time

import dask
import dask.array as da
import numpy as np
from dask.callbacks import Callback
from threadpoolctl import threadpool_limits

import xpmat as xm


class StageTimes(Callback):
    """Task time per TSQR stage: ``stack`` (all stacking tasks), ``qr`` (first stage), ``other``."""

    def __init__(self) -> None:
        super().__init__()
        self.start, self.total = {}, {}

    def _pretask(self, key, dsk, state) -> None:
        self.start[key] = time.perf_counter()

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        name = str(key[0] if isinstance(key, tuple) else key)
        stage = "stack" if name.endswith(("-stack", "-group", "-join")) else (
            "qr" if name.endswith("-qr") else "other")
        self.total[stage] = self.total.get(stage, 0.0) + time.perf_counter() - self.start[key]


def _timed(X, one_level: bool) -> tuple[float, dict]:
    from xpmat import _dask

    saved = _dask._TSQR_ONE_LEVEL
    _dask._TSQR_ONE_LEVEL = 10**9 if one_level else saved
    try:
        with StageTimes() as st:
            t0 = time.perf_counter()
            dask.persist(xm.orthonormalize(X, method="householder"))
            return time.perf_counter() - t0, st.total
    finally:
        _dask._TSQR_ONE_LEVEL = saved


def measure(rows: int, cols: int, nchunks: int, reps: int, one_level_too: bool) -> list[str]:
    A = np.random.default_rng(0).standard_normal((rows, cols))
    X = da.from_array(A, chunks=(rows // nchunks, cols)).persist()
    runs = {"xpmat": [], "xpmat, one level": [], "da.linalg.tsqr": []}
    with threadpool_limits(1, "blas"):
        for _ in range(reps):
            runs["xpmat"].append(_timed(X, False))
            if one_level_too:
                runs["xpmat, one level"].append(_timed(X, True))
            t0 = time.perf_counter()
            dask.persist(*da.linalg.tsqr(X))
            runs["da.linalg.tsqr"].append((time.perf_counter() - t0, {}))
    out = []
    for label, got in runs.items():
        if got:
            t, stages = min(got, key=lambda r: r[0])
            extra = (f" (task time: stacking {stages.get('stack', 0.0):.3f} s, first-stage QRs "
                     f"{stages.get('qr', 0.0):.2f} s)") if stages else ""
            out.append(f"{rows} × {cols}, {nchunks} chunks, {label}: {t:.2f} s{extra}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--cols", type=int, default=64)
    ap.add_argument("--chunks", type=int, nargs="*", default=[400, 2000])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--one-level-too", action="store_true")
    args = ap.parse_args()
    for n in args.chunks:
        print("\n".join(measure(args.rows, args.cols, n, args.reps, args.one_level_too)))


if __name__ == "__main__":
    main()
