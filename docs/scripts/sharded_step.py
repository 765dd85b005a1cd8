"""Sharded optimizer steps: bytes each rank sends against the floor, whole-matrix steps, time.

A GPT-like set of parameters (``--layers`` blocks of qkv (3d×d), proj (d×d), fc (4d×d),
fc2 (d×4d) and two LayerNorm vectors; d = ``--d``), FSDP2-sharded (``Shard(0)``) over 2 and 4
gloo ranks on the CPU, each xpmat optimizer stepping them, against the same optimizer on the
unsharded parameters in the same process.  Per optimizer and world size:

- bytes: what one rank sends per step (mean over ranks, ``opt.sharded_stats``), against the
  floor (each matrix's gradient once to its owner and its update once back, float32: per rank
  ``2 · Σ (W−1)/W · 4mn / W``) and against a naive ``full_tensor()`` of every gradient on every
  rank (an all-gather: per rank ``Σ (W−1)/W · 4mn``, and every rank then steps every matrix);
- whole-matrix steps: across the world (the number of matrices when none is redundant);
- time: median step time (the slowest rank) over ``--steps`` steps after a warm-up, and the
  unsharded step on rank 0.

Run: ``python docs/scripts/sharded_step.py [--d 128] [--layers 4] [--worlds 2 4]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from xpmat.distributed import run_ranks

OPTIMIZERS = {"AdamW": {}, "Muon": {}, "Dion": {"rank": 0.25}, "Shampoo": {}, "Adafactor": {}}


def shapes(d: int, layers: int) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = []
    for _ in range(layers):
        out += [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d), (d,), (d,)]
    return out


def _measure(rank: int, ws: int, d: int, layers: int, steps: int) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    import xpmat.optim as xo

    mesh = init_device_mesh("cpu", (ws,))
    g = torch.Generator().manual_seed(0)
    full = [torch.randn(s, generator=g) * 0.02 for s in shapes(d, layers)]
    grads = [torch.randn(s, generator=g) for s in shapes(d, layers)]
    out = {}
    for name, kw in OPTIMIZERS.items():
        row = {}
        for sharded in (False, True):
            if sharded:
                ps = [torch.nn.Parameter(distribute_tensor(w.clone(), mesh, [Shard(0)])) for w in full]
                gs = [distribute_tensor(x, mesh, [Shard(0)]) for x in grads]
            else:
                ps, gs = [torch.nn.Parameter(w.clone()) for w in full], grads
            opt = getattr(xo, name)(ps, **kw)
            times, stats = [], None
            for _ in range(steps + 2):
                for p, x in zip(ps, gs, strict=True):
                    p.grad = x
                torch.distributed.barrier()
                t0 = time.perf_counter()
                opt.step()
                times.append(time.perf_counter() - t0)
                stats = opt.sharded_stats
            row["sharded" if sharded else "unsharded"] = statistics.median(times[2:])
            if sharded:
                row.update(stats)
        out[name] = row
    return out


def floors(d: int, layers: int, ws: int) -> tuple[float, float, int]:
    mats = [s for s in shapes(d, layers) if len(s) == 2]
    b = sum(4 * s[0] * s[1] for s in mats)
    return 2 * (ws - 1) / ws * b / ws, (ws - 1) / ws * b, len(mats)


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
    for ws in a.worlds:
        res = run_ranks(_measure, ws, (a.d, a.layers, a.steps), timeout=900)
        floor, naive, n_mats = floors(a.d, a.layers, ws)
        for name in OPTIMIZERS:
            rows = [r[name] for r in res]
            sent = statistics.mean(r["bytes_sent"] for r in rows)
            steps = sum(r["whole_matrix_steps"] for r in rows)
            print(f"| {name} | {ws} | {sent / 1e3:,.1f} kB | {sent / floor:.2f} | {sent / naive:.2f} | "
                  f"{steps} ({n_mats}) | {1e3 * max(r['sharded'] for r in rows):.1f} | "
                  f"{1e3 * rows[0]['unsharded']:.1f} |")
