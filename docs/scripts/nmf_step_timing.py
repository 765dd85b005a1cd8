"""KL-NMF EM iterations on a CPU: torch's fused loop against the Array API form, and NumPy.

Run: ``python docs/scripts/nmf_step_timing.py [iters]`` (2000 × 1000, r = 20, float32 and
float64, one torch thread, best of 3; about a minute).  Prints ms per iteration and the ATen
ops per iteration (counted at the dispatcher over 10 iterations).  "before" is the Array API
step (``xpmat.nmf._em_step_generic``), which ran on torch until the fused loop.
"""

from __future__ import annotations

import functools
import sys
import time
from collections import Counter

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import xpmat as xm

nmf_mod = sys.modules["xpmat.nmf"]


class Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def per_iter_ops(C, A, B):
    counts = []
    for it in (10, 20):
        with Ops() as mode:
            xm.nmf(C, A.shape[-1], iters=it, init=(A, B))
        counts.append(sum(mode.ops.values()))
    return (counts[1] - counts[0]) / 10


def best_ms(f, n=3):
    f()
    out = np.inf
    for _ in range(n):
        s = time.perf_counter()
        f()
        out = min(out, time.perf_counter() - s)
    return out * 1e3


def main(iters=20):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    m, n, r = 2000, 1000, 20
    C = rng.poisson(rng.random((m, r)) @ rng.random((r, n)) * 3.0).astype(np.float64)
    A0, B0 = rng.random((m, r)) + 0.1, rng.random((r, n)) + 0.1
    fused = nmf_mod._fused_torch
    for dt in (np.float32, np.float64):
        Cn, An, Bn = (x.astype(dt) for x in (C, A0, B0))
        Ct, At, Bt = (torch.from_numpy(x) for x in (Cn, An, Bn))
        t_np = best_ms(functools.partial(xm.nmf, Cn, r, iters=iters, init=(An, Bn))) / iters
        torch_run = functools.partial(xm.nmf, Ct, r, iters=iters, init=(At, Bt))
        t_after = best_ms(torch_run) / iters
        ops_after = per_iter_ops(Ct, At, Bt)
        nmf_mod._fused_torch = lambda *a: False
        try:
            t_before = best_ms(torch_run) / iters
            ops_before = per_iter_ops(Ct, At, Bt)
        finally:
            nmf_mod._fused_torch = fused
        print(f"{np.dtype(dt).name}: numpy {t_np:.1f} ms/it | torch before {t_before:.1f} ms/it "
              f"({ops_before:.0f} ops/it) | torch after {t_after:.1f} ms/it ({ops_after:.0f} ops/it)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
