"""xpmat on a dask.distributed cluster: orthonormalize, randomized_svd and nmf on a tall-skinny
array larger than one worker's memory limit, against NumPy in one process (docs/dask.md).

    python docs/scripts/dask_cluster.py                       # LocalCluster: 2 processes, 1 GiB each
    python docs/scripts/dask_cluster.py --rows 200000         # a smaller run
    python docs/scripts/dask_cluster.py --scheduler tcp://10.0.0.5:8786   # a running cluster
    python docs/scripts/dask_cluster.py --orthonormalize-cost # CPU cost of CholeskyQR2 and TSQR on Dask
    python docs/scripts/dask_cluster.py --only randomized_svd # one call only
    python docs/scripts/dask_cluster.py --lean-rounds 3       # randomized_svd: generic / lean range finder
    python docs/scripts/dask_cluster.py --lean-cost           # their CPU cost, one process

The arrays are generated on the workers (``dask.array.random``), never on the client; NumPy
gets the same numbers gathered into one process.  Each cluster timing is one ``dask.compute``
of small summaries of the results (``QᵀQ``, ``QᵀX``, ``S``, ``UᵀU``, the final divergence), so
the tall results are computed in full and never travel to the client.  Peak memory: the
largest resident set size (RSS) of each worker process during the call, sampled every 20 ms
by a thread in the worker; for NumPy, of this process above its RSS before the call.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
import psutil

import xpmat as xm

N, RANK, NMF_RANK, NMF_ITERS = 64, 8, 8, 20


class PeakRSS:
    """A thread that samples the resident set size of this process (every 20 ms)."""

    def __init__(self) -> None:
        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def reset(self) -> int:
        """Start a new window; returns the RSS now."""
        self.peak = rss = self.proc.memory_info().rss
        return rss


def _worker_sampler(dask_worker) -> None:  # runs inside each worker (client.run)
    if not hasattr(dask_worker, "xpmat_peak"):
        dask_worker.xpmat_peak = PeakRSS()
    dask_worker.xpmat_peak.reset()


def _worker_peak(dask_worker) -> int:
    return dask_worker.xpmat_peak.peak


def tall_matrix(rows: int, chunk: int, *, nonnegative: bool = False):
    """A Dask ``rows × 64`` matrix made on the workers: ``Z diag(s) Vᵀ`` (Gaussian ``Z``,
    ``s`` from 1 to 1e-3, so κ = 1e3 and the singular values are known), or for NMF the
    nonnegative ``W H`` plus uniform noise (rank 8, ``W``, ``H`` uniform)."""
    import dask.array as da

    rng = da.random.default_rng(0)
    host = np.random.default_rng(1)
    if nonnegative:
        W = rng.random((rows, NMF_RANK), chunks=(chunk, NMF_RANK))
        H = da.from_array(host.random((NMF_RANK, N)))
        return W @ H + 0.01 * rng.random((rows, N), chunks=(chunk, N))
    V, _ = np.linalg.qr(host.standard_normal((N, N)))
    s = np.geomspace(1.0, 1e-3, N)
    Z = rng.standard_normal((rows, N), chunks=(chunk, N))
    return Z @ da.from_array((V * s).T)


def nmf_start(X):
    """NMF start factors made where ``X`` lives: on the workers for Dask (rather than a host draw
    that would travel inside the graph), the same numbers for NumPy (``start_like``)."""
    import dask.array as da

    rng = da.random.default_rng(2)
    A0 = rng.random((X.shape[0], NMF_RANK), chunks=(X.chunks[0], NMF_RANK))
    return A0, da.from_array(np.random.default_rng(3).random((NMF_RANK, N)))


def summaries(case: str, X, out) -> tuple:
    """Small arrays that need the whole result, in X's library (computed in one go on Dask)."""
    if case == "orthonormalize":
        return (out.T @ out, out.T @ X)
    if case == "randomized_svd":
        U, S, _ = out
        return (S, U.T @ U)
    return (out.divergence[..., -1],)


CALLS = {  # case: fn(X, start); start = nmf's (A0, B0) in X's library
    "orthonormalize": lambda X, start: xm.orthonormalize(X),
    "randomized_svd": lambda X, start: xm.randomized_svd(X, RANK, seed=0),
    "nmf": lambda X, start: xm.nmf(X, NMF_RANK, iters=NMF_ITERS, init=start),
}


def run_cluster(client, case: str, X, start) -> tuple[float, list[int], tuple]:
    """One call on the cluster: (seconds, peak RSS per worker in bytes, computed summaries)."""
    import dask

    client.run(_worker_sampler)
    t = time.perf_counter()
    got = dask.compute(*summaries(case, X, CALLS[case](X, start)))
    seconds = time.perf_counter() - t
    return seconds, sorted(client.run(_worker_peak).values()), got


def run_numpy(case: str, X: np.ndarray, start, sampler: PeakRSS) -> tuple[float, int, tuple]:
    """The same call on NumPy in this process: (seconds, peak RSS above the start, summaries)."""
    base = sampler.reset()
    t = time.perf_counter()
    got = summaries(case, X, CALLS[case](X, start))
    seconds = time.perf_counter() - t
    time.sleep(0.05)
    return seconds, max(sampler.peak - base, 0), got


def accuracy(case: str, got: tuple, ref: tuple) -> dict[str, float]:
    """Errors against float64 truths: orthonormality, R against NumPy's R, singular values
    against the known ones, the final divergence against NumPy's."""
    if case == "orthonormalize":
        G, R = got
        return {"max|QᵀQ − I|": float(np.abs(G - np.eye(N)).max()),
                "‖R − R_numpy‖/‖R‖": float(np.linalg.norm(R - ref[1]) / np.linalg.norm(ref[1]))}
    if case == "randomized_svd":
        S, G = got
        return {"max|UᵀU − I|": float(np.abs(G - np.eye(RANK)).max()),
                "max|S − S_numpy|/S₁": float(np.abs(S - ref[0]).max() / ref[0][0])}
    return {"|D − D_numpy|/D_numpy": float(abs(got[0] - ref[0]) / ref[0])}


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def to_client(X) -> np.ndarray:
    """A row-chunked Dask matrix as one NumPy array in this process, chunk by chunk (a plain
    ``X.compute()`` would first join the chunks on one worker, beyond its memory limit)."""
    import dask

    return np.concatenate(dask.compute(*X.to_delayed().ravel()), axis=0)


def compare(client, rows: int, chunk: int, only: list[str] | None = None) -> list[dict]:
    """Every call (or those named in ``only``) on the cluster and on NumPy; one row of results
    per call."""
    import dask

    sampler, out = PeakRSS(), []
    for case in only or CALLS:
        X = tall_matrix(rows, chunk, nonnegative=case == "nmf")
        start = nmf_start(X) if case == "nmf" else None
        X, start = dask.persist(X, start)  # the data live on the workers, split by rows
        Xn, start_n = to_client(X), dask.compute(start)[0]  # ... and, for NumPy, all here
        t_np, mem_np, ref = run_numpy(case, Xn, start_n, sampler)
        t_dk, mem_dk, got = run_cluster(client, case, X, start)
        row = {"call": case, "data": _mib(Xn.nbytes), "numpy_s": t_np, "numpy_peak": _mib(mem_np),
               "dask_s": t_dk, "worker_peaks": ", ".join(_mib(m) for m in mem_dk)}
        row.update(accuracy(case, got, ref))
        if case == "randomized_svd":  # against the exact singular values σ of the data
            sigma = np.sqrt(np.linalg.eigvalsh(Xn.T @ Xn)[::-1][:RANK])
            row["max|S − σ|/σ₁ (Dask, NumPy)"] = ", ".join(
                f"{np.abs(S - sigma).max() / sigma[0]:.1e}" for S in (got[0], ref[0]))
        out.append(row)
        del X, Xn, start, start_n
    return out


def _spilled(dask_worker) -> int:  # runs inside each worker (client.run)
    return len(dask_worker.data.slow)


def lean_rounds(client, rows: int, chunk: int, rounds: int) -> None:
    """``randomized_svd`` with the generic range finder and with the memory-lean one
    (``xpmat._dask_range.LEAN`` False / True), alternately in the same cluster, ``rounds``
    times: seconds, peak RSS per worker, chunks on disk per worker after the call."""
    import dask
    from dask.distributed import wait

    from xpmat import _dask_range

    X = dask.persist(tall_matrix(rows, chunk))[0]
    wait(X)
    print("chunks on disk per worker after the persist:", sorted(client.run(_spilled).values()))
    for _ in range(rounds):
        for lean in (False, True):
            _dask_range.LEAN = lean
            seconds, peaks, _ = run_cluster(client, "randomized_svd", X, None)
            print(f"{'lean' if lean else 'generic'}: {seconds:.2f} s | peaks "
                  f"{', '.join(_mib(m) for m in peaks)} | chunks on disk "
                  f"{sorted(client.run(_spilled).values())}", flush=True)
    _dask_range.LEAN = None


def _cpu(f) -> float:
    """Min of 3 CPU times of ``f()`` in this process."""
    best = np.inf
    for _ in range(3):
        t = time.process_time()
        f()
        best = min(best, time.process_time() - t)
    return round(best, 2)


def lean_cost() -> None:
    """Single-thread CPU seconds of randomized_svd(k=8) on a 1,000,000 × 64 Dask array in 8 row
    chunks (synchronous scheduler, one BLAS thread), generic and lean range finder."""
    import dask
    import dask.array as da
    from threadpoolctl import threadpool_limits

    from xpmat import _dask_range

    dask.config.set(scheduler="synchronous")
    X = da.random.default_rng(0).standard_normal((1_000_000, N), chunks=(125_000, N)).persist()
    with threadpool_limits(1, "blas"):
        for lean in (False, True):
            _dask_range.LEAN = lean
            U, S, _ = xm.randomized_svd(X, RANK, seed=0)
            print("lean" if lean else "generic", _cpu(lambda: dask.compute(S, U.T @ U)))  # noqa: B023
    _dask_range.LEAN = None


def orthonormalize_cost() -> None:
    """Single-thread CPU seconds of orthonormalize on a 200000 × 64 Dask array (8 chunks): the
    per-chunk CholeskyQR2 (its Householder fallback gated inside the tasks, so not run here), the
    per-chunk TSQR, Dask's own TSQR, and NumPy."""
    import dask
    import dask.array as da

    dask.config.set(scheduler="synchronous")
    X = da.from_array(np.random.default_rng(0).standard_normal((200000, 64)), chunks=(25000, 64))
    X = X.persist()

    print("xpmat TSQR (householder)", _cpu(lambda: dask.persist(xm.orthonormalize(X, method="householder"))))
    print("xpmat CholeskyQR2, fallback gated", _cpu(lambda: dask.persist(xm.orthonormalize(X))))
    print("dask.array.linalg.tsqr", _cpu(lambda: dask.persist(*da.linalg.tsqr(X))))
    Xn = X.compute()
    print("NumPy CholeskyQR2", _cpu(lambda: xm.orthonormalize(Xn)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_500_000)
    p.add_argument("--chunk", type=int, default=125_000)
    p.add_argument("--memory-limit", default="1GiB", help="per worker (LocalCluster)")
    p.add_argument("--scheduler", default=None, help="address of a running cluster")
    p.add_argument("--orthonormalize-cost", action="store_true")
    p.add_argument("--lean-cost", action="store_true")
    p.add_argument("--only", nargs="+", choices=list(CALLS), help="run only these calls")
    p.add_argument("--lean-rounds", type=int, default=0,
                   help="randomized_svd only: this many rounds of the generic and the lean range finder")
    a = p.parse_args()
    if a.orthonormalize_cost:
        return orthonormalize_cost()
    if a.lean_cost:
        return lean_cost()
    from dask.distributed import Client, LocalCluster

    cluster = None if a.scheduler else LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit=a.memory_limit,
        dashboard_address=None)
    with Client(a.scheduler or cluster) as client:
        print(f"{len(client.scheduler_info()['workers'])} workers, limit {a.memory_limit} each; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        if a.lean_rounds:
            lean_rounds(client, a.rows, a.chunk, a.lean_rounds)
        else:
            for row in compare(client, a.rows, a.chunk, a.only):
                print(" | ".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}"
                                 for k, v in row.items()))
    if cluster is not None:
        cluster.close()


if __name__ == "__main__":
    main()
