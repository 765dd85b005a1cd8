"""Matrix functions (``xpmat/matfun.py``): ``inv_root`` by coupled Newton against the ``eigh`` route.

``A^(-1/4)`` (Shampoo's root) of a κ = 1e3 SPD matrix in float32: ``InvRoot`` times both and
tracks the accuracy of both against a float64 reference (issue 4); ``InvRootMemory`` holds
their peak memory (CPU rows).
"""

from __future__ import annotations

import numpy as np

from xpmat import inv_root

from .common import BACKENDS, CPU_BACKENDS, Benchmark, MemoryMixin, host, orthonormal_basis, sizes, sync


def _spd(n):
    """``(q, w, A)``: a seeded orthonormal ``q``, eigenvalues ``w`` from 1 to 1e-3, ``A = q diag(w) qᵀ``."""
    q = orthonormal_basis(n, n, 4)
    w = np.logspace(0, -3, n)
    A = (q * w) @ q.T
    return q, w, (A + A.T) / 2


class InvRoot(Benchmark):
    """A^(-1/4) (Shampoo) of a kappa = 1e3 SPD matrix in float32: coupled Newton vs eigh."""

    params = [BACKENDS, sizes(256, 512, 1024)]

    def make(self, n):
        q, w, A = _spd(n)
        self.ref = (q * w ** -0.25) @ q.T
        self.A = self.put(A)

    def ours(self):
        return inv_root(self.A, 4, method="newton")

    def anchor(self):
        return inv_root(self.A, 4, method="eigh")

    def _err(self, X):
        return float(np.linalg.norm(host(X) - self.ref) / np.linalg.norm(self.ref))

    def time_newton(self, backend, n):
        sync(inv_root(self.A, 4, method="newton"))

    def time_eigh_anchor(self, backend, n):
        sync(inv_root(self.A, 4, method="eigh"))

    def track_newton_rel_error(self, backend, n):
        return self._err(inv_root(self.A, 4, method="newton"))

    def track_eigh_rel_error(self, backend, n):
        return self._err(inv_root(self.A, 4, method="eigh"))

    track_newton_rel_error.unit = "relative error"
    track_eigh_rel_error.unit = "relative error"


class InvRootMemory(MemoryMixin):
    """peakmem of ``inv_root(A, 4, method="newton")`` beside ``method="eigh"`` (as ``InvRoot``)."""

    params = [CPU_BACKENDS, sizes(256, 512, 1024)]

    def make(self, n):
        self.A = self.put(_spd(n)[2])

    def ours(self):
        return inv_root(self.A, 4, method="newton")

    def anchor(self):
        return inv_root(self.A, 4, method="eigh")
