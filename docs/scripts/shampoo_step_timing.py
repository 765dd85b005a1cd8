"""Time one Shampoo step (every root recomputed): coupled Newton vs eigh vs tracked eigenbasis.

``python docs/scripts/shampoo_step_timing.py BACKEND SET REPS`` (BACKEND: ``numpy``,
``torch:cpu``, ``torch:cuda``; SET: ``small``, ``medium``, ``layer``) runs the asv class
``bench_optim_shampoo.ShampooStep`` by hand: its ``setup``, then REPS calls of each ``time_*`` method
timed with ``time.perf_counter``; prints min and median, the Newton/eigh ratio and
``track_newton_vs_eigh``.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "asv_benchmarks"))

from benchmarks.bench_optim_shampoo import ShampooStep


def main(backend="torch:cpu", pset="small", reps=5):
    b = ShampooStep()
    b.setup(backend, pset)
    res = {}
    for name in ("time_eigh_anchor", "time_newton", "time_orthogonal_iteration"):
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            getattr(b, name)(backend, pset)
            ts.append(time.perf_counter() - t)
        res[name] = (min(ts), statistics.median(ts))
    for k, (mn, md) in res.items():
        print(f"{backend} {pset} {k:28s} min {mn * 1e3:8.1f} ms  median {md * 1e3:8.1f} ms")
    ratio = res["time_newton"][0] / res["time_eigh_anchor"][0]
    print(f"newton/eigh (min): {ratio:.2f}  track_newton_vs_eigh: "
          f"{b.track_newton_vs_eigh(backend, pset):.2e}")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0] if a else "torch:cpu", a[1] if len(a) > 1 else "small", int(a[2]) if len(a) > 2 else 5)
