"""PowerSGD+ DDP hook (``xpmat/distributed/``) vs torch's ``powerSGD_hook`` on spawned gloo ranks
(CPU), via ``run_ranks``.

One GPT-2-small block's parameters (``d = 768``: c_attn ``(3d, d)``, attn c_proj ``(d, d)``, c_fc
``(4d, d)``, mlp c_proj ``(d, 4d)`` as ``nn.Linear`` weights, their biases, two LayerNorms; the fast
profile uses ``d = 256``) form one gradient bucket.  Each rank holds its own seeded gradient; a
timed call is one hook call on that bucket until its future resolves (the communication and
the compression, without forward / backward), after a barrier; the median over repeats on rank
0 is reported.  Both hooks run at the same rank ``r`` with warm start and error feedback;
ours with ``restart_every=None`` (pure SSP-Comp, like torch's) and, separately, the cost of
one SVD-Comp restart step (``restart_svd="full"`` and ``"randomized"``).
``track_bytes_per_step`` is the all-reduce payload per rank of a compressed step (our
stats), ``track_compression_ratio`` is ``Σ m n / Σ (m + n) r`` over the compressed matrices.

A duck-typed bucket (``buffer``, ``gradients``, ``parameters``, ``index``, ``is_last``) stands in
for ``torch.distributed.GradBucket``, which Python cannot build.  All measurements of a class
run in ``setup_cache`` (spawning ranks is slow); the ``track_*`` methods read them.
``python docs/scripts/distributed_timing.py`` prints the same figures as a table.
"""

from __future__ import annotations

import time

from .common import FAST, require_gloo

WORLDS = [2, 4]
PSETS = ["tiny"] if FAST else ["layer"]
RANKS = [4]
_D = {"tiny": 256, "layer": 768}


def gpt2_block_shapes(d):
    """Parameter shapes of one GPT-2 block (weights as ``nn.Linear`` stores them)."""
    return [(3 * d, d), (3 * d,), (d, d), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,),
            (d,), (d,), (d,), (d,)]


class _Bucket:
    """What both hooks call on a ``GradBucket``: one bucket holding every parameter."""

    def __init__(self, shapes, dtype):
        import torch

        self.shapes = shapes
        self._buf = torch.zeros(sum(int(torch.Size(s).numel()) for s in shapes), dtype=dtype)
        self._params = [torch.nn.Parameter(torch.zeros(s, dtype=dtype)) for s in shapes]
        self._grads, off = [], 0
        for s in shapes:
            n = int(torch.Size(s).numel())
            self._grads.append(self._buf[off:off + n].view(s))
            off += n

    def buffer(self):
        return self._buf

    def gradients(self):
        return self._grads

    def parameters(self):
        return self._params

    def index(self):
        return 0

    def is_last(self):
        return True


def _time_hooks(hooks, bucket, grad, reps, warmup):
    """Median seconds per call of each ``(hook, state)``; calls interleaved (rotating order) so
    that every hook sees the same machine load."""
    import torch.distributed as dist

    names = list(hooks)
    times = {k: [] for k in names}
    for i in range(warmup + reps):
        for k in names[i % len(names):] + names[:i % len(names)]:
            hook, state = hooks[k]
            bucket.buffer().copy_(grad)
            dist.barrier()
            t0 = time.perf_counter()
            hook(state, bucket).wait()
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def measure(rank, world, d, r, reps=9, restart_reps=2):
    """Run on every rank (``run_ranks``): step times of both hooks, bytes, compression."""
    import torch
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks as dh
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as ph

    from xpmat.distributed import PowerSGDPlusState, powersgd_plus_hook

    shapes = gpt2_block_shapes(d)
    bucket = _Bucket(shapes, torch.float32)
    grad = torch.randn(bucket.buffer().shape, generator=torch.Generator().manual_seed(rank))
    kw = {"matrix_approximation_rank": r, "start_powerSGD_iter": 2}
    ours = PowerSGDPlusState(None, restart_every=None, **kw)
    # warm-up (3 calls) covers the two plain all-reduce steps and the first compressed step
    t = _time_hooks({"ours": (powersgd_plus_hook, ours),
                     "torch": (ph.powerSGD_hook, ph.PowerSGDState(None, **kw)),
                     "plain": (dh.allreduce_hook, None)}, bucket, grad, reps, 3)
    every = PowerSGDPlusState(None, restart_every=1, **kw)  # every compressed step restarts
    every_r = PowerSGDPlusState(None, restart_every=1, restart_svd="randomized", **kw)
    t.update(_time_hooks({"restart": (powersgd_plus_hook, every),
                          "restart_randomized": (powersgd_plus_hook, every_r)},
                         bucket, grad, restart_reps, 3))
    mats = [s for s in shapes if len(s) == 2]
    return {**t, "bytes": ours.stats()["bytes_last_step"],
            "plain_bytes": ours.stats()["plain_bytes_last_step"],
            "compression_ratio": sum(m * n for m, n in mats) / sum((m + n) * r for m, n in mats)}


def run_all(worlds=WORLDS, psets=PSETS, ranks=RANKS):
    import sys
    from pathlib import Path

    from xpmat.distributed import run_ranks

    # the spawned ranks unpickle ``measure`` by module name: make ``benchmarks`` importable there
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.append(root)
    out = {}
    for world in worlds:
        for pset in psets:
            for r in ranks:
                res = run_ranks(measure, world, (_D[pset], r), timeout=600)
                out[(world, pset, r)] = res[0]
    return out


class PowerSGDHook:
    params = [WORLDS, PSETS, RANKS]
    param_names = ["world", "params", "rank"]
    timeout = 1200

    def setup_cache(self):
        require_gloo()
        return run_all()

    def track_step_ours(self, cache, world, pset, r):
        return cache[(world, pset, r)]["ours"]

    def track_step_torch_powersgd_anchor(self, cache, world, pset, r):
        return cache[(world, pset, r)]["torch"]

    def track_step_ratio_ours_over_torch(self, cache, world, pset, r):
        c = cache[(world, pset, r)]
        return c["ours"] / c["torch"]

    def track_step_plain_allreduce_anchor(self, cache, world, pset, r):
        return cache[(world, pset, r)]["plain"]

    def track_restart_step(self, cache, world, pset, r):
        return cache[(world, pset, r)]["restart"]

    def track_restart_step_randomized(self, cache, world, pset, r):
        return cache[(world, pset, r)]["restart_randomized"]

    def track_bytes_per_step(self, cache, world, pset, r):
        return cache[(world, pset, r)]["bytes"]

    def track_plain_bytes_per_step_anchor(self, cache, world, pset, r):
        return cache[(world, pset, r)]["plain_bytes"]

    def track_compression_ratio(self, cache, world, pset, r):
        return cache[(world, pset, r)]["compression_ratio"]


for _name, _unit in (("track_step_ours", "seconds"), ("track_step_torch_powersgd_anchor", "seconds"),
                     ("track_step_plain_allreduce_anchor", "seconds"),
                     ("track_restart_step", "seconds"),
                     ("track_restart_step_randomized", "seconds"), ("track_bytes_per_step", "bytes"),
                     ("track_plain_bytes_per_step_anchor", "bytes"),
                     ("track_step_ratio_ours_over_torch", "ratio"),
                     ("track_compression_ratio", "ratio")):
    getattr(PowerSGDHook, _name).unit = _unit
