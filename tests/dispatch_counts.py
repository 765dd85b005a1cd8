"""Counting at the PyTorch dispatcher: ATen ops (kernel launches) and host reads of a call."""

from __future__ import annotations

from typing import Any

import pytest


def torch_counts(fn: Any) -> tuple[Any, int, int]:
    """``(fn(), ATen ops, host reads)``; a host read is ``aten._local_scalar_dense`` (``.item()``,
    ``bool()`` / ``float()`` of a tensor).  Ops inside an op (its decomposition) are not counted."""
    torch = pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode

    read = torch.ops.aten._local_scalar_dense.default

    class Count(TorchDispatchMode):
        ops = reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.ops += 1
            Count.reads += func is read
            return func(*args, **(kwargs or {}))

    with Count():
        out = fn()
    return out, Count.ops, Count.reads
