"""Standalone timings for docs/orthogonalize.md (float32, 2 torch threads, best of 3).

Run: ``python docs/scripts/orthogonalize_timing.py`` (minutes on a small CPU).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg
import torch

from xpmat import msign, orthonormalize


def best(f, *args, n=3, **kw):
    f(*args, **kw)
    out = np.inf
    for _ in range(n):
        s = time.perf_counter()
        f(*args, **kw)
        out = min(out, time.perf_counter() - s)
    return out * 1e3


def svd_polar(qr_lib, G):
    u, _, vh = qr_lib.linalg.svd(G, full_matrices=False)
    return u @ vh


def main() -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    print("orthonormalize, float32 (ms)")
    for m, r in [(16384, 128), (65536, 128), (4096, 512), (2048, 512), (1024, 512)]:
        X = rng.standard_normal((m, r)).astype(np.float32)
        Xt = torch.from_numpy(X)
        c = best(orthonormalize, X, method="cholesky_qr2")
        q = best(np.linalg.qr, X)
        tc = best(orthonormalize, Xt, method="cholesky_qr2")
        tq = best(torch.linalg.qr, Xt)
        print(f"{m}x{r}: numpy cqr2 {c:.1f} qr {q:.1f} ({q / c:.1f}x) | "
              f"torch cqr2 {tc:.1f} qr {tq:.1f} ({tq / tc:.1f}x)")
    print("msign (5 steps) vs SVD polar, float32 (ms)")
    for n in [256, 512, 1024]:
        G = rng.standard_normal((n, n)).astype(np.float32)
        Gt = torch.from_numpy(G)
        ms, sv = best(msign, G), best(svd_polar, np, G)
        sp = best(scipy.linalg.polar, G)
        mt, st = best(msign, Gt), best(svd_polar, torch, Gt)
        print(f"n={n}: numpy msign {ms:.1f} svd {sv:.1f} ({sv / ms:.1f}x) scipy.polar {sp:.1f} | "
              f"torch msign {mt:.1f} svd {st:.1f} ({st / mt:.1f}x)")


if __name__ == "__main__":
    main()
