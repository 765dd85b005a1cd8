"""The four speed goals of docs/performance.md, each against its anchor in ONE process.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python docs/scripts/speed_goals.py   # one thread
    python docs/scripts/speed_goals.py --repeats 3                                 # library default

Every round times each entry once, in a fixed order (ours, anchor, ..., the GEMM reference),
so that a change of machine load hits them alike; the figures are medians over the rounds.
The GEMM reference is one 1024² product in the work's dtype and library, timed in the same
rounds; "GEMM fraction" = the work's flop count at GEMM rate / its time (1 = as fast as the
GEMM rate allows).

- randomized_svd, 4096² float32, rank 32, 2 power iterations, oversample 10, against
  scikit-learn's ``randomized_svd`` with the same settings; error = ‖A − U S Vᵀ‖_F / optimum.
  Flops: 6 products of A with an n × 42 block.
- orthonormalize 65536 × 128 float32 against ``numpy.linalg.qr`` and ``torch.linalg.qr``.
  Flops: CholeskyQR2's 2 Gram products and 2 applications of R⁻¹, 2·m·r² each.
- nmf (I-divergence), 2000 × 1000, rank 20, 200 iterations (``--nmf-iters``), float64, the
  same start factors, against scikit-learn's ``NMF(beta_loss="kullback-leibler",
  solver="mu")``.  Flops: 4 products m·n·r per iteration.
- msign 1024² float32, 5 steps, in units of one 1024² GEMM per step (NumPy and PyTorch).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (docs/performance.md)

import numpy as np
import torch
from sklearn.decomposition import NMF
from sklearn.utils.extmath import randomized_svd as sk_randomized_svd

import xpmat as xm

GEMM_FLOPS = 2 * 1024**3


def rounds(fns: dict, repeats: int) -> dict:
    """Median seconds of each entry of ``fns``, timed once per round in order."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def gemm(dtype: type, lib: str = "numpy"):
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(dtype)
    if lib == "torch":
        at = torch.from_numpy(a)
        return lambda: at @ at
    return lambda: a @ a


def randomized_svd_goal(repeats: int) -> None:
    n, k, l = 4096, 32, 42
    rng = np.random.default_rng(3)
    s = np.concatenate([10 * 0.9 ** np.arange(k), 0.1 * (1 - np.arange(n - k) / n)])
    U0 = np.linalg.qr(rng.standard_normal((n, n)))[0]
    V0 = np.linalg.qr(rng.standard_normal((n, n)))[0]
    A64 = (U0 * s) @ V0.T
    A = A64.astype(np.float32)
    out = {}
    t = rounds({
        "ours": lambda: out.__setitem__("ours", xm.randomized_svd(A, k, oversample=10, power_iters=2,
                                                                  seed=0)),
        "sklearn": lambda: out.__setitem__("sk", sk_randomized_svd(A, k, n_oversamples=10, n_iter=2,
                                                                   random_state=0)),
        "gemm": gemm(np.float32),
    }, repeats)
    opt = np.sqrt(np.sum(s[k:] ** 2))
    err = {name: np.linalg.norm(A64 - (u.astype(np.float64) * v) @ w) / opt
           for name, (u, v, w) in out.items()}
    frac = 6 * 2 * n * n * l / t["ours"] / (GEMM_FLOPS / t["gemm"])
    print(f"randomized_svd 4096² f32: ours {t['ours'] * 1e3:.0f} ms, sklearn {t['sklearn'] * 1e3:.0f} ms, "
          f"ours/sklearn {t['ours'] / t['sklearn']:.2f}; error/optimum ours {err['ours']:.4f}, "
          f"sklearn {err['sk']:.4f}; GEMM {GEMM_FLOPS / t['gemm'] / 1e9:.0f} GF/s, fraction {frac:.2f}")


def orthonormalize_goal(repeats: int) -> None:
    X = np.random.default_rng(0).standard_normal((65536, 128)).astype(np.float32)
    Xt = torch.from_numpy(X.copy())
    t = rounds({"ours_np": lambda: xm.orthonormalize(X), "np_qr": lambda: np.linalg.qr(X),
                "ours_t": lambda: xm.orthonormalize(Xt), "t_qr": lambda: torch.linalg.qr(Xt),
                "gemm_np": gemm(np.float32), "gemm_t": gemm(np.float32, "torch")}, repeats)
    flops = 4 * 2 * 65536 * 128**2
    for lib, ours, anchor, g in (("numpy", "ours_np", "np_qr", "gemm_np"),
                                 ("torch", "ours_t", "t_qr", "gemm_t")):
        frac = flops / t[ours] / (GEMM_FLOPS / t[g])
        print(f"orthonormalize 65536×128 f32 {lib}: ours {t[ours] * 1e3:.0f} ms, QR "
              f"{t[anchor] * 1e3:.0f} ms, QR/ours {t[anchor] / t[ours]:.1f}; GEMM "
              f"{GEMM_FLOPS / t[g] / 1e9:.0f} GF/s, fraction {frac:.2f}")


def nmf_goal(repeats: int, iters: int) -> None:
    m, n, r = 2000, 1000, 20
    rng = np.random.default_rng(1)
    C = rng.poisson(rng.random((m, r)) @ rng.random((r, n))).astype(np.float64)
    A0, B0 = rng.random((m, r)) + 0.1, rng.random((r, n)) + 0.1
    out = {}

    def sklearn():
        model = NMF(r, beta_loss="kullback-leibler", solver="mu", init="custom", max_iter=iters, tol=0)
        W = model.fit_transform(C, W=A0.copy(), H=B0.copy())
        out["sk"] = (W, model.components_)

    t = rounds({"ours": lambda: out.__setitem__("ours", xm.nmf(C, r, iters=iters, init=(A0, B0))[:2]),
                "sklearn": sklearn, "gemm": gemm(np.float64)}, repeats)
    div = {k: float(xm.i_divergence(C, a @ b)) for k, (a, b) in out.items()}
    frac = iters * 4 * 2 * m * n * r / t["ours"] / (GEMM_FLOPS / t["gemm"])
    print(f"nmf I-div 2000×1000 r20 {iters} it f64: ours {t['ours'] * 1e3:.0f} ms, sklearn "
          f"{t['sklearn'] * 1e3:.0f} ms, sklearn/ours {t['sklearn'] / t['ours']:.2f}; divergence "
          f"ours/sklearn {div['ours'] / div['sk']:.6f}; GEMM {GEMM_FLOPS / t['gemm'] / 1e9:.0f} GF/s, "
          f"fraction {frac:.2f}")


def msign_goal(repeats: int) -> None:
    G = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    Gt = torch.from_numpy(G.copy())
    t = rounds({"np": lambda: xm.msign(G), "gemm_np": gemm(np.float32),
                "t": lambda: xm.msign(Gt), "gemm_t": gemm(np.float32, "torch")}, repeats)
    print(f"msign 1024² f32 5 steps: numpy {t['np'] / t['gemm_np'] / 5:.2f}, torch "
          f"{t['t'] / t['gemm_t'] / 5:.2f} GEMMs per step")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--nmf-iters", type=int, default=200)
    args = p.parse_args()
    print(f"threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, "
          f"torch {torch.get_num_threads()}")
    randomized_svd_goal(args.repeats)
    orthonormalize_goal(args.repeats)
    nmf_goal(args.repeats, args.nmf_iters)
    msign_goal(args.repeats)


if __name__ == "__main__":
    main()
