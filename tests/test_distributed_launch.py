"""xpmat.distributed.run_ranks: spawned gloo ranks, and a failing rank surfaces instead of hanging."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("torch")
import torch.distributed as dist

from xpmat.distributed import RankError, run_ranks

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _sum_ranks(rank, world_size, offset):
    import torch

    t = torch.tensor([float(rank + offset)], dtype=torch.float64)
    dist.all_reduce(t)
    return rank, world_size, t.item()


def _rank1_raises(rank, world_size):
    import torch

    if rank == 1:
        raise ValueError("deliberate failure on rank 1")
    t = torch.ones(1)
    dist.all_reduce(t)  # rank 0 blocks here: rank 1 never joins
    return t.item()


def test_run_ranks_collects_results_in_rank_order():
    out = run_ranks(_sum_ranks, 3, (10,), timeout=120)
    assert out == [(r, 3, 33.0) for r in range(3)]  # 10 + 11 + 12


def test_failing_rank_raises_rank_error_not_a_hang():
    t0 = time.monotonic()
    with pytest.raises(RankError, match=r"rank 1 of 2 raised:(.|\n)*deliberate failure on rank 1"):
        run_ranks(_rank1_raises, 2, timeout=120)
    assert time.monotonic() - t0 < 60  # reported as soon as rank 1 fails, long before the timeout


@pytest.mark.parametrize(("kw", "match"), [({"world_size": 0}, "world_size"),
                                           ({"world_size": 2, "timeout": 0}, "timeout")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        run_ranks(_sum_ranks, args=(0,), **kw)
