"""Shampoo (``xpmat/optim/shampoo.py``): one step with its inverse roots refreshed, coupled Newton
vs eigh (the anchor).

Parameter sets (``[d×4d, 4d×d, d×3d, d×d]``, one GPT-2-shaped layer, float32, blocks of at most
``max_preconditioner_dim``): ``small`` (d = 64, blocks ≤ 256), ``medium`` (d = 256, blocks ≤ 512),
``layer`` (d = 768, blocks ≤ 1024, the GPT-2-small layer; GPU only).  The functional core
(:mod:`xpmat.optim.shampoo`) runs with ``precondition_every=1``, so every timed step recomputes
every root: all factors of one size go through ONE batched ``xpmat.inv_root`` call.  ``eps`` is
relative (``1e-6 · tr(L)/d``) so that float32 Newton converges.  The state is warmed by five
steps of Gaussian gradients first (full-rank factors; on the orthogonal-iteration route, so the
state holds eigenbases for ``time_orthogonal_iteration``'s warm start).  ``track_newton_vs_eigh``
is the relative Frobenius difference of the two updates from the same state and gradients.
"""

from __future__ import annotations

import numpy as np

from .common import FAST, Benchmark, SkipNotImplemented, gpt2_shapes, sync

_SETS = {"small": (64, 256), "medium": (256, 512), "layer": (768, 1024)}


class ShampooStep(Benchmark):
    params = [["numpy", "torch:cpu", "torch:cuda"], ["small"] if FAST else ["small", "medium", "layer"]]
    param_names = ["backend", "params"]
    timeout = 600
    number = 1
    repeat = (1, 5, 60.0)

    def make(self, pset):
        from xpmat.optim import shampoo

        if pset == "layer" and not self.backend.endswith("cuda"):
            raise SkipNotImplemented("d = 768 roots every step take too long on a CPU")
        d, block = _SETS[pset]
        shapes = gpt2_shapes(1, d)
        rng = np.random.default_rng(0)
        self.shampoo = shampoo
        self.params = [self.put(0.02 * rng.standard_normal(s)) for s in shapes]
        self.grads = [self.put(rng.standard_normal(s)) for s in shapes]
        self.hyper = {"lr": 1e-3, "precondition_every": 1, "start_preconditioning_step": 1,
                      "max_preconditioner_dim": block, "eps": 1e-6, "eps_mode": "relative"}
        warm = {**self.hyper, "root_method": "orthogonal_iteration"}  # state with eigenbases
        state = shampoo.init(self.params, **warm)
        for _ in range(5):
            gs = [self.put(rng.standard_normal(s)) for s in shapes]
            _, state = shampoo.update(gs, state, self.params, **warm)
        self.state = state

    def first_calls(self, *params):
        for method in ("eigh", "newton", "orthogonal_iteration"):  # warm up kernels / allocations
            self._step(method)

    def _step(self, method):
        u, _ = self.shampoo.update(self.grads, self.state, self.params, root_method=method,
                                   **self.hyper)
        sync(u[-1])
        return u

    def ours(self):
        return self._step("newton")

    def anchor(self):
        return self._step("eigh")

    def time_newton(self, backend, pset):
        self.ours()

    def time_eigh_anchor(self, backend, pset):
        self.anchor()

    def time_orthogonal_iteration(self, backend, pset):
        self._step("orthogonal_iteration")

    def track_newton_vs_eigh(self, backend, pset):
        """max over parameters of ‖u_newton − u_eigh‖_F / ‖u_eigh‖_F (float32)."""
        xp = self.xp
        a, b = self.ours(), self.anchor()
        return max(float(xp.linalg.vector_norm(x - y) / xp.linalg.vector_norm(y))
                   for x, y in zip(a, b, strict=True))

    track_newton_vs_eigh.unit = "relative difference"
