"""Timings behind the table in docs/iteration.md (standalone; best of 5 interleaved rounds).

Run: OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python docs/scripts/iteration_timing.py 4096 1
(arguments: n, torch threads).  Same inputs as asv_benchmarks/benchmarks/bench_iteration.py.
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "asv_benchmarks"))
from benchmarks.common import known_spectrum
from sklearn.utils.extmath import randomized_svd as skr

import xpmat as xm
from xpmat import orthonormalize

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
n, r, rounds = int(sys.argv[1]), 32, 5
s = np.concatenate([10 * 0.9 ** np.arange(r), 0.1 * (1 - np.arange(n - r) / n)])
A, _ = known_spectrum(n, s, symmetric=False, seed=3)
opt = np.sqrt((s[r:] ** 2).sum())
A32 = A.astype(np.float32)
At = torch.from_numpy(A32)
w = np.concatenate([np.linspace(10.0, 1.0, 64), 0.5 * 0.999 ** np.arange(n - 64)])
As, _ = known_spectrum(n, w, symmetric=True, seed=1)
Q = np.linalg.qr(np.random.default_rng(2).standard_normal((n, 64)))[0]
An, Qn = As.astype(np.float32), Q.astype(np.float32)
Atn, Qt = torch.from_numpy(An), torch.from_numpy(Qn)
fs = {
 "np ours rsvd": lambda: xm.randomized_svd(A32, r, seed=0),
 "np sklearn rsvd": lambda: skr(A32, r, n_iter=2, n_oversamples=10, random_state=0),
 "torch ours rsvd": lambda: xm.randomized_svd(At, r, seed=0),
 "torch svd_lowrank": lambda: torch.svd_lowrank(At, q=r + 10, niter=2),
 "np step ritz": lambda: xm.orthogonal_iteration(An, Qn),
 "np step plain": lambda: xm.orthogonal_iteration(An, Qn, ritz=False),
 "np matmul": lambda: An @ Qn,
 "np matmul+cholqr2": lambda: orthonormalize(An @ Qn, method="cholesky_qr2"),
 "np matmul+householder": lambda: orthonormalize(An @ Qn, method="householder"),
 "torch step ritz": lambda: xm.orthogonal_iteration(Atn, Qt),
 "torch step plain": lambda: xm.orthogonal_iteration(Atn, Qt, ritz=False),
 "torch matmul": lambda: Atn @ Qt,
 "torch matmul+cholqr2": lambda: orthonormalize(Atn @ Qt, method="cholesky_qr2"),
 "torch matmul+householder": lambda: orthonormalize(Atn @ Qt, method="householder"),
}
best = {k: np.inf for k in fs}
for _ in range(rounds):
    for k, f in fs.items():
        t = time.perf_counter()
        f()
        best[k] = min(best[k], time.perf_counter() - t)
for k in fs:
    print(f"n={n} {k:26s} {best[k]*1e3:8.1f} ms")


def err(U, S, Vh):
    return np.linalg.norm(A - (np.asarray(U, float) * np.asarray(S, float)) @ np.asarray(Vh, float)) / opt - 1


print("err ours", err(*fs["np ours rsvd"]()), "sklearn", err(*fs["np sklearn rsvd"]()))
U, S, V = (x.numpy() for x in fs["torch svd_lowrank"]())
print("err svd_lowrank", err(U[:, :r], S[:r], V[:, :r].T))
