"""LRE (``xpmat/optim/lre.py``): one optimizer step (LRE 2025, the low-rank eigenbasis) vs ``eigh``
of the explicit covariance.

One parameter of ``n`` entries (one block), rank 64, Adam in the basis, covariance curvature
(EMA 0.99), float32.  The state is warmed up by 64 steps so every slot is filled.  Ours: the
whole functional step (basis update, moment reprojection, projection, Adam, unprojection)
with ``basis="direct"`` and ``basis="randomized"``; the anchor is what a dense
implementation pays for the basis alone: ``eigh`` of the explicit ``n × n`` matrix
``β Q L Qᵀ + (1 − β) g gᵀ`` built from the same state and gradient.
"""

from __future__ import annotations

import numpy as np

from .common import BACKENDS, Benchmark, gaussian, sizes, sync

RANK = 64
BETA = 0.99


class LREStep(Benchmark):
    """One ``xpmat.optim.lre.update`` (direct / randomized basis) vs eigh of the explicit matrix."""

    params = [BACKENDS, sizes(512, 2048, 4096)]

    def make(self, n):
        from xpmat.optim import lre

        self.lre = lre
        self.hyper = {"rank": RANK, "beta": BETA, "max_dim": n, "lr": 1e-3}
        self.params = [self.put(np.zeros(n))]
        st = lre.init(self.params, **self.hyper)
        scale = np.linspace(2.0, 0.1, n)
        for k in range(RANK):  # fill every slot
            g = self.put(scale * gaussian(n, 100 + k))
            _, st = lre.update([g], st, self.params, **self.hyper)
        self.state = st
        self.g = [self.put(scale * gaussian(n, 7))]
        L, Q = st[0].L[0], st[0].Q[0]
        gc = self.g[0][:, None]
        self.A = BETA * (Q * L) @ self.xp.matrix_transpose(Q) + (1 - BETA) * gc @ self.xp.matrix_transpose(gc)

    def first_calls(self, backend, n):
        super().first_calls(backend, n)
        self.time_step_randomized(backend, n)

    def ours(self):
        u, _ = self.lre.update(self.g, self.state, self.params, **self.hyper)
        return u[0]

    def anchor(self):
        return self.xp.linalg.eigh(self.A)[1]

    def time_step_direct(self, backend, n):
        sync(self.ours())

    def time_step_randomized(self, backend, n):
        u, _ = self.lre.update(self.g, self.state, self.params, basis="randomized", **self.hyper)
        sync(u[0])

    def time_eigh_anchor(self, backend, n):
        sync(self.anchor())
