"""Helpers shared by the optimizer test modules (``tests/test_optim_*.py``).

Random gradient sequences and runs of a functional core over them, written once here rather
than in each module.  Not a test module (no ``test_`` prefix); imported as ``from optim_helpers
import ...``, as the modules import ``conftest``.
"""

from __future__ import annotations

import numpy as np
from conftest import assert_array, get_backend

import xpmat.optim as xo


def gaussian_seq(shapes, steps, seed=0, scale=1.0):
    """``steps`` lists of float64 gradients, one per shape: ``scale`` times standard normals."""
    rng = np.random.default_rng(seed)
    return [[scale * rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def run_core(core, backend, params_np, grad_seq, dtype="float64", **hyper):
    """``core`` (a functional core module) over ``grad_seq`` from ``params_np`` on ``backend``;
    returns the final parameters and state (backend arrays)."""
    params = [backend.asarray(p, dtype) for p in params_np]
    state = core.init(params, **hyper)
    for grads in grad_seq:
        g = [backend.asarray(x, dtype) for x in grads]
        ups, state = core.update(g, state, params, **hyper)
        params = xo.apply_updates(params, ups)
    return params, state


def run_to_host(core, backend, params, grad_seq, dtype="float64", **hyper):
    """``core`` over a fixed gradient sequence; checks each result's namespace, device, shape
    and dtype, and returns the parameters (host, float64)."""
    ps = [backend.asarray(p, dtype) for p in params]
    st = core.init(ps, **hyper)
    for grads in grad_seq:
        ups, st = core.update([backend.asarray(g, dtype) for g in grads], st, ps, **hyper)
        ps = xo.apply_updates(ps, ups)
    for p, p0 in zip(ps, params, strict=True):
        assert_array(p, backend, shape=np.shape(p0), dtype=dtype)
    return [backend.to_numpy(p) for p in ps]


def numpy_backend():
    """The NumPy backend, for tests that compare two cores on one library."""
    return get_backend("numpy")


def beside_torch(ours_cls, torch_cls, ps, kw, gen, steps=5):
    """``(ours, theirs, ours_params, their_params)``: ``ours_cls`` and ``torch_cls`` built with
    ``kw`` on clones of the tensors ``ps`` and stepped ``steps`` times on the same random
    gradients (drawn from ``gen`` in the parameters' dtype)."""
    import torch

    ours_p = [p.clone().requires_grad_() for p in ps]
    ref_p = [p.clone().requires_grad_() for p in ps]
    a, b = ours_cls(ours_p, **kw), torch_cls(ref_p, **kw)
    for _ in range(steps):
        for p, q in zip(ours_p, ref_p, strict=True):
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    return a, b, ours_p, ref_p
