"""``xpmat.optim._base`` (the internal helpers of the optimizer modules): hyper-parameter and
list checks, as every core reports them, ``resolve_rank`` / the rank-fit check of the
low-rank methods, and Shampoo's grid of blocks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_array, assert_close

import xpmat.optim as xo
from xpmat.optim import adamw
from xpmat.optim._base import block_grid, from_block_grid, to_block_grid

torch = pytest.importorskip("torch")


def test_unknown_hyper_and_bad_lists():
    p = [np.zeros((2, 2))]
    with pytest.raises(TypeError, match="unknown argument"):
        adamw.init(p, learning_rate=1.0)
    st = adamw.init(p)
    with pytest.raises(ValueError, match="grads has 2 entries"):
        adamw.update([np.zeros((2, 2))] * 2, st, p)
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(3,\)"):
        adamw.update([np.zeros(3)], st, p)
    with pytest.raises(TypeError, match="list or tuple"):
        adamw.init({"w": np.zeros(2)})
    with pytest.raises(ValueError, match="betas"):
        adamw.update([np.zeros((2, 2))], st, p, betas=(1.0, 0.9))
    with pytest.raises(TypeError, match="unknown argument"):
        xo.AdamW([torch.zeros(2, requires_grad=True)], learning_rate=1.0)


def test_resolve_rank():
    from xpmat.optim._base import resolve_rank

    assert resolve_rank(3, 1, 10, 8) == 3
    assert resolve_rank(0.25, 1, 10, 8) == 2
    assert resolve_rank(0.3, 4, 64, 32) == 12
    assert resolve_rank(50, 1, 10, 8) == 8
    with pytest.raises(ValueError, match=r"rank must lie in \(0, 1\]"):
        resolve_rank(1.5, 1, 4, 4)
    with pytest.raises(ValueError, match="rank_multiple_of"):
        resolve_rank(2, 0, 4, 4)
    from xpmat.optim import dion, powersgd

    for core in (dion, powersgd):  # an int rank that fits no matrix is refused, one that fits some is capped
        with pytest.raises(ValueError, match="rank=100 exceeds"):
            core.init([np.zeros((6, 4))], rank=100)
        assert core.init([np.zeros((6, 4)), np.zeros((9, 8))], rank=5)[0].Q.shape == (4, 4)


def test_check_real_does_not_read_a_tensor_on_a_device():
    """The per-step range check skips a tensor hyper-parameter on a device (meta: any read would
    raise); on the host it is checked when the group is added (tests/test_optim_tensor_hyper.py)."""
    from xpmat.optim._base import check_real

    check_real("lr", torch.tensor(-1.0, device="meta"))


# --------------------------------------------------------------------------------------------
# Shampoo's grid of blocks (moved from test_optim_shampoo.py with the helpers)
def test_block_layout_covers_the_matrix_exactly(backend):
    """Blocks tile the matrix: every entry in exactly one block, round trip is the identity."""
    xp = backend.xp
    for m, n, d in ((10, 7, 4), (8, 8, 4), (5, 3, 8), (9, 1, 2)):
        lay = block_grid(m, n, d)
        bm, bn, gm, gn = lay
        assert (gm - 1) * bm < m <= gm * bm and (gn - 1) * bn < n <= gn * bn and max(bm, bn) <= d
        X = np.arange(m * n, dtype=float).reshape(m, n) + 1.0
        B = to_block_grid(backend.asarray(X), lay, xp)
        assert_array(B, backend, shape=(gm * gn, bm, bn), dtype="float64")
        Bn = backend.to_numpy(B)
        vals = Bn[Bn != 0]
        assert sorted(vals.tolist()) == sorted(X.ravel().tolist())       # each entry exactly once
        for i in range(gm):
            for j in range(gn):
                tile = X[i * bm:(i + 1) * bm, j * bn:(j + 1) * bn]
                np.testing.assert_array_equal(Bn[i * gn + j][:tile.shape[0], :tile.shape[1]], tile)
        assert_close(from_block_grid(B, lay, m, n, xp), X, backend, rtol=0, atol=0)
