"""How long TSQR's stacking of the ``R`` factors takes on Dask, against the whole call.

    python docs/scripts/dask_tsqr_stack.py                      # 400 000 × 64 in 400 and 2,000 chunks
    python docs/scripts/dask_tsqr_stack.py --rows 100000 --chunks 50 500

``orthonormalize(X, method="householder")`` on a persisted row-chunked float64 array, threaded
scheduler, one BLAS thread per task (``threadpoolctl``, as docs/dask.md recommends), beside
``dask.array.linalg.tsqr``; the minimum of ``--reps`` calls each.  A ``dask.callbacks.Callback``
sums the task time of the stacking tasks (keys ending in ``-stack`` and, with two levels,
``-group`` and ``-join``) and of the first-stage QRs (``-qr``).
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


def measure(rows: int, cols: int, nchunks: int, reps: int) -> str:
    A = np.random.default_rng(0).standard_normal((rows, cols))
    X = da.from_array(A, chunks=(rows // nchunks, cols)).persist()
    ours, theirs, stages = [], [], None
    with threadpool_limits(1, "blas"):
        for _ in range(reps):
            with StageTimes() as st:
                t0 = time.perf_counter()
                dask.persist(xm.orthonormalize(X, method="householder"))
                ours.append(time.perf_counter() - t0)
            if stages is None or ours[-1] == min(ours):
                stages = st.total
            t0 = time.perf_counter()
            dask.persist(*da.linalg.tsqr(X))
            theirs.append(time.perf_counter() - t0)
    return (f"{rows} × {cols}, {nchunks} chunks: xpmat {min(ours):.2f} s (task time: stacking "
            f"{stages.get('stack', 0.0):.3f} s, first-stage QRs {stages.get('qr', 0.0):.2f} s); "
            f"da.linalg.tsqr {min(theirs):.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--cols", type=int, default=64)
    ap.add_argument("--chunks", type=int, nargs="*", default=[400, 2000])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    for n in args.chunks:
        print(measure(args.rows, args.cols, n, args.reps))


if __name__ == "__main__":
    main()
