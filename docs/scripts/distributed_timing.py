"""Step time of the PowerSGD+ DDP hook vs torch's powerSGD_hook, bytes per step, compression.

The measurement is the asv benchmark's (``asv_benchmarks/benchmarks/bench_distributed.py``):
one GPT-2-small block (d = 768; ``--d 256`` for a quick run) as one gradient bucket, 2 and 4
spawned gloo ranks on the CPU, rank r = 4 (``--rank``), median of repeated hook calls on rank 0.

Run: ``python docs/scripts/distributed_timing.py [--d 768] [--rank 4] [--worlds 2 4]``
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "asv_benchmarks"))

from benchmarks.bench_distributed import measure

from xpmat.distributed import run_ranks

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--reps", type=int, default=9)
    a = ap.parse_args()
    print(f"GPT-2 block d={a.d}, rank r={a.rank}, gloo on CPU, median of {a.reps} hook calls")
    print(f"{'ranks':>5} {'ours ms':>8} {'torch ms':>8} {'ours/torch':>10} {'all-reduce ms':>13} "
          f"{'restart ms':>10} {'rand. restart ms':>16} {'bytes/step':>10} {'plain bytes':>11} "
          f"{'(mn)/((m+n)r)':>13}")
    for w in a.worlds:
        c = run_ranks(measure, w, (a.d, a.rank, a.reps), timeout=600)[0]
        print(f"{w:>5} {1e3 * c['ours']:>8.2f} {1e3 * c['torch']:>8.2f} "
              f"{c['ours'] / c['torch']:>10.3f} {1e3 * c['plain']:>13.2f} "
              f"{1e3 * c['restart']:>10.1f} {1e3 * c['restart_randomized']:>16.1f} "
              f"{c['bytes']:>10} {c['plain_bytes']:>11} "
              f"{c['compression_ratio']:>13.1f}")
