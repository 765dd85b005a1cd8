"""Sharded optimizer steps: bytes each rank sends against the floor, whole-matrix steps, time.

The measurement is the asv benchmark's (``asv_benchmarks/benchmarks/bench_optim_torch_sharded.py``,
whose docstring defines every column): a GPT-like stack FSDP2-sharded over 2 and 4 gloo ranks on
the CPU, each xpmat optimizer against itself on the unsharded parameters.

Run: ``python docs/scripts/sharded_step.py [--d 128] [--layers 4] [--worlds 2 4] [--steps 7]``
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "asv_benchmarks"))

from benchmarks.bench_optim_torch_sharded import OPTIMIZERS, run_sharded

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--steps", type=int, default=7)
    a = ap.parse_args()
    print(f"{a.layers} blocks, d = {a.d}, FSDP2 Shard(0), gloo on CPU, one thread per rank; "
          f"median of {a.steps} steps")
    print("| optimizer | ranks | bytes sent / rank | ÷ floor | ÷ naive all-gather | whole-matrix steps "
          "(matrices) | sharded step ms | unsharded step ms |")
    print("|---|---|---|---|---|---|---|---|")
    res = run_sharded(a.worlds, a.d, a.layers, a.steps)
    for w in a.worlds:
        for name in OPTIMIZERS:
            c = res[(w, name)]
            print(f"| {name} | {w} | {c['bytes'] / 1e3:,.1f} kB | {c['bytes'] / c['floor']:.2f} | "
                  f"{c['bytes'] / c['naive']:.2f} | {c['whole_steps']} ({c['matrices']}) | "
                  f"{1e3 * c['sharded']:.1f} | {1e3 * c['unsharded']:.1f} |")
