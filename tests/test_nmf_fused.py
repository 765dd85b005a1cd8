"""The fused torch loop of :func:`xpmat.nmf` (``xpmat._nmf_fused``): its CUDA-graph replay.

The loop itself (13 ATen ops per step, no host read, equal to the Array API step) is tested in
``tests/test_nmf.py`` through :func:`xpmat.nmf`; here, :data:`xpmat._nmf_fused.CUDA_GRAPHS`:
off the GPU it changes nothing, on a GPU the replayed steps equal the launched ones.
"""

from __future__ import annotations

import pytest

import xpmat as xm
from xpmat import _nmf_fused

torch = pytest.importorskip("torch")


def _problem(device):
    gen = torch.Generator().manual_seed(5)
    C = torch.rand(40, 8, generator=gen) @ torch.rand(8, 30, generator=gen) + 0.01
    A0, B0 = torch.rand(40, 4, generator=gen), torch.rand(4, 30, generator=gen)
    return [x.to(device) for x in (C, A0, B0)]


def _runs(device, monkeypatch):
    C, A0, B0 = _problem(device)
    out = []
    for graphs in (False, True):
        monkeypatch.setattr(_nmf_fused, "CUDA_GRAPHS", graphs)
        out.append(xm.nmf(C, 4, iters=25, init=(A0, B0), tol=1e-12, check_every=5, history=True))
    return out


def test_cuda_graphs_flag_is_inert_on_the_cpu(monkeypatch):
    """CPU tensors never capture: the same factors and divergences with the flag on."""
    plain, flagged = _runs("cpu", monkeypatch)
    for a, b in zip(plain[:2], flagged[:2], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(plain.divergence, flagged.divergence) and plain.n_iter == flagged.n_iter


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replay_equals_launched_steps(monkeypatch):
    """On a GPU: 25 steps (the first one run on a side stream as the capture's warm-up, then
    captured; every later one replayed; divergences read every step between them)
    equal the launched loop's bitwise."""
    plain, graphed = _runs("cuda", monkeypatch)
    for a, b in zip(plain[:2], graphed[:2], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(plain.divergence, graphed.divergence) and plain.n_iter == graphed.n_iter
