"""``torch.distributed`` support: PowerSGD+ DDP communication hook and data-parallel Dion.

Nothing here imports torch until used.  :func:`run_ranks` starts local processes with a process
group (gloo on CPU), for tests, benchmarks and trying things out.
"""

from __future__ import annotations

from xpmat.distributed.launch import RankError, run_ranks

__all__ = ["RankError", "run_ranks"]
