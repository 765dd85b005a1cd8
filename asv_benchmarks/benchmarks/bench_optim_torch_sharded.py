"""Sharded optimizer steps (``xpmat/optim/torch_sharded.py``): DTensor parameters on spawned
gloo ranks (CPU), via ``run_ranks``.

A GPT-like stack (``LAYERS`` blocks of qkv (3d×d), proj (d×d), fc (4d×d), fc2 (d×4d) and two
LayerNorm vectors; ``d = 128``, the fast profile 64), FSDP2-sharded (``Shard(0)``) over 2 and 4
ranks, stepped by each optimizer; beside it the same optimizer on the unsharded parameters in
the same process (the anchor).  Per (world, optimizer):

- ``track_bytes_per_rank``: what one rank sends per step (mean over ranks, ``sharded_stats``);
- ``track_bytes_over_floor``: that over the floor — each matrix's float32 gradient once to its
  owner and its update once back, per rank ``2 · Σ (W−1)/W · 4mn / W`` (Muon: 1.0);
- ``track_whole_matrix_steps``: whole-matrix steps across the world (the number of matrices when
  none is redundant; 0 for AdamW and for Dion's row-sharded algorithm);
- ``track_step_sharded`` / ``track_step_unsharded_anchor``: median step time (the slowest rank /
  rank 0), seconds.

All measurements run in ``setup_cache`` (spawning ranks is slow); ``python
docs/scripts/sharded_step.py`` prints the same figures as the table of docs/distributed.md.
"""

from __future__ import annotations

import statistics
import time

from .common import FAST, require_gloo

WORLDS = [2, 4]
OPTIMIZERS = {"AdamW": {}, "Muon": {}, "Dion": {"rank": 0.25}, "Shampoo": {}, "Adafactor": {}}
D, LAYERS, STEPS = (64, 1, 3) if FAST else (128, 4, 7)


def gpt_shapes(d, layers):
    """Parameter shapes of ``layers`` GPT blocks without biases (weights as ``nn.Linear`` holds them)."""
    out = []
    for _ in range(layers):
        out += [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d), (d,), (d,)]
    return out


def floors(d, layers, world):
    """``(floor, naive, matrices)``: bytes per rank of the floor and of an all-gather of every
    gradient, and the number of matrices."""
    mats = [s for s in gpt_shapes(d, layers) if len(s) == 2]
    b = sum(4 * s[0] * s[1] for s in mats)
    return 2 * (world - 1) / world * b / world, (world - 1) / world * b, len(mats)


def _steps(opt, params, grads, steps):
    import torch

    times = []
    for _ in range(steps + 2):
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        torch.distributed.barrier()
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:]), opt.sharded_stats


def measure_sharded(rank, world, d=D, layers=LAYERS, steps=STEPS):
    """Run on every rank (``run_ranks``): per optimizer the sharded and unsharded step times and
    the sharded step's traffic."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    import xpmat.optim as xo

    mesh = init_device_mesh("cpu", (world,))
    g = torch.Generator().manual_seed(0)
    full = [torch.randn(s, generator=g) * 0.02 for s in gpt_shapes(d, layers)]
    grads = [torch.randn(s, generator=g) for s in gpt_shapes(d, layers)]
    out = {}
    for name, kw in OPTIMIZERS.items():
        plain = [torch.nn.Parameter(w.clone()) for w in full]
        t_plain, _ = _steps(getattr(xo, name)(plain, **kw), plain, grads, steps)
        sharded = [torch.nn.Parameter(distribute_tensor(w.clone(), mesh, [Shard(0)])) for w in full]
        dgrads = [distribute_tensor(x, mesh, [Shard(0)]) for x in grads]
        t_sh, stats = _steps(getattr(xo, name)(sharded, **kw), sharded, dgrads, steps)
        out[name] = {"unsharded": t_plain, "sharded": t_sh, **stats}
    return out


def run_sharded(worlds=WORLDS, d=D, layers=LAYERS, steps=STEPS):
    """``{(world, optimizer): figures}`` over spawned gloo ranks."""
    import sys
    from pathlib import Path

    from xpmat.distributed import run_ranks

    root = str(Path(__file__).resolve().parents[1])  # the ranks unpickle ``measure_sharded`` by name
    if root not in sys.path:
        sys.path.append(root)
    out = {}
    for world in worlds:
        res = run_ranks(measure_sharded, world, (d, layers, steps), timeout=900)
        floor, naive, n_mats = floors(d, layers, world)
        for name in OPTIMIZERS:
            rows = [r[name] for r in res]
            sent = statistics.mean(r["bytes_sent"] for r in rows)
            out[(world, name)] = {"bytes": sent, "floor": floor, "naive": naive, "matrices": n_mats,
                                  "whole_steps": sum(r["whole_matrix_steps"] for r in rows),
                                  "sharded": max(r["sharded"] for r in rows),
                                  "unsharded": rows[0]["unsharded"]}
    return out


class ShardedStep:
    params = [WORLDS, list(OPTIMIZERS)]
    param_names = ["world", "optimizer"]
    timeout = 1800

    def setup_cache(self):
        require_gloo()
        return run_sharded()

    def track_bytes_per_rank(self, cache, world, name):
        return cache[(world, name)]["bytes"]

    def track_bytes_over_floor(self, cache, world, name):
        c = cache[(world, name)]
        return c["bytes"] / c["floor"]

    def track_whole_matrix_steps(self, cache, world, name):
        return cache[(world, name)]["whole_steps"]

    def track_step_sharded(self, cache, world, name):
        return cache[(world, name)]["sharded"]

    def track_step_unsharded_anchor(self, cache, world, name):
        return cache[(world, name)]["unsharded"]


for _name, _unit in (("track_bytes_per_rank", "bytes"), ("track_bytes_over_floor", "ratio"),
                     ("track_whole_matrix_steps", "count"), ("track_step_sharded", "seconds"),
                     ("track_step_unsharded_anchor", "seconds")):
    getattr(ShardedStep, _name).unit = _unit
