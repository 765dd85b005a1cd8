"""Run a function on ``world_size`` local processes with a ``torch.distributed`` process group.

Used by our tests and benchmarks (gloo on CPU), and handy for users who want to try the hook
without a cluster launcher::

    results = run_ranks(fn, world_size=2, args=(x,))    # fn(rank, world_size, x) on each rank

A rank that raises does not leave the others hanging: the parent sees the error, terminates the
remaining ranks and raises :class:`RankError` with the failing rank's traceback.  Each rank's
process group also has ``timeout`` seconds, so a collective that can never complete fails there
too.  Results come back through a queue, so they must be picklable (move tensors to CPU).
"""

from __future__ import annotations

import datetime
import os
import queue
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["RankError", "run_ranks"]


class RankError(RuntimeError):
    """A rank raised (or died, or the run timed out); the message names the rank and why."""


def _worker(rank: int, world_size: int, init_file: str, backend: str, timeout: float,
            fn: Callable, args: Sequence[Any], results: Any) -> None:
    import torch.distributed as dist

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # N ranks on a few cores: no oversubscription
    try:
        import torch

        torch.set_num_threads(1)
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank,
                                world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout))
        out = fn(rank, world_size, *args)
        results.put((rank, "ok", out))
    except BaseException:  # report everything, KeyboardInterrupt included
        results.put((rank, "error", traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(fn: Callable, world_size: int, args: Sequence[Any] = (), *, backend: str = "gloo",
              timeout: float = 60.0) -> list[Any]:
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` spawned processes; return the results.

    Parameters
    ----------
    fn : callable
        A module-level (picklable) function.  Runs after ``init_process_group``, so it may use
        ``torch.distributed`` collectives directly.
    world_size : int
        Number of ranks (processes), at least 1.
    args : sequence
        Extra positional arguments (picklable), the same on every rank.
    backend : str
        ``"gloo"`` (CPU, default) or ``"nccl"`` (one GPU per rank; ``fn`` picks the device).
    timeout : float
        Seconds for the whole run and for every collective on the ranks.

    Returns
    -------
    list
        ``fn``'s return value per rank, in rank order.

    Raises
    ------
    RankError
        If a rank raised (the message holds its traceback), a rank died without reporting, or the
        run exceeded ``timeout``; the other ranks are terminated first.
    """
    import multiprocessing as mp

    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="xpmat-dist-") as tmp:
        init_file = os.path.join(tmp, "store")
        procs = [ctx.Process(target=_worker, daemon=True,
                             args=(r, world_size, init_file, backend, timeout, fn, args, results))
                 for r in range(world_size)]
        for p in procs:
            p.start()
        out: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(out) < world_size:
                try:
                    rank, status, value = results.get(timeout=0.2)
                except queue.Empty:
                    dead = [r for r, p in enumerate(procs)
                            if r not in out and p.exitcode not in (None, 0)]
                    if dead:
                        raise RankError(f"rank {dead[0]} died with exit code "
                                        f"{procs[dead[0]].exitcode} before reporting") from None
                    if time.monotonic() > deadline:
                        missing = sorted(set(range(world_size)) - set(out))
                        raise RankError(f"timed out after {timeout:g} s waiting for "
                                        f"rank(s) {missing}") from None
                    continue
                if status == "error":
                    raise RankError(f"rank {rank} of {world_size} raised:\n{value}")
                out[rank] = value
        finally:
            for p in procs:
                p.join(timeout=5.0 if len(out) == world_size else 0.5)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5.0)
    return [out[r] for r in range(world_size)]
