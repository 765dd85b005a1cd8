"""``torch.distributed`` support: PowerSGD+ DDP communication hook and data-parallel Dion.

Nothing here imports torch until used.  :func:`run_ranks` starts local processes with a process
group (gloo on CPU), for tests, benchmarks and trying things out.
"""

from __future__ import annotations

from typing import Any

from xpmat.distributed.launch import RankError, run_ranks
from xpmat.distributed.powersgd_hook import PowerSGDPlusState, powersgd_plus_hook

__all__ = ["DistributedDion", "PowerSGDPlusState", "RankError", "powersgd_plus_hook", "run_ranks"]

_LAZY = {"DistributedDion": "xpmat.distributed.dion"}  # name -> module (imports torch)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xpmat.distributed' has no attribute {name!r}")
