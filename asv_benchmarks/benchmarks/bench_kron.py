"""Kronecker structure (``xpmat/kron.py``: ``nearest_kron``, ``kron_rearrange``, ``kron_matmul``,
``shampoo_factors``, ``shampoo_kron``) against its anchors.

* ``NearestKron``: ``nearest_kron(method="power")`` vs the full SVD of the rearranged matrix
  (``method="svd"``); ``track_power_rel_err`` is ``‖A⊗B − A*⊗B*‖_F / ‖A*⊗B*‖_F`` against the
  SVD solution in float64.
* ``KronRearrange``, ``KronMatmul``, ``ShampooFactors``, ``ShampooKron`` and the ``*Memory``
  classes: the framework of ``common`` (ours / anchor / err, see each class's docstring).
"""

from __future__ import annotations

import numpy as np

import xpmat
from xpmat import nearest_kron

from .common import (
    BACKENDS,
    CPU_BACKENDS,
    Benchmark,
    MemoryMixin,
    TimeMixin,
    TrackMixin,
    gaussian,
    host,
    rel_err,
    sizes,
    sync,
)


class NearestKron(Benchmark):
    """``nearest_kron`` of ``C = A⊗B + noise``; 4096×4096 C with 64×64 factors at the large size."""

    params = [BACKENDS, sizes(16, 32, 64)]
    param_names = ["backend", "factor"]
    timeout = 900
    iters = 10

    def make(self, k):
        rng = np.random.default_rng(2)
        A, B = rng.standard_normal((k, k)), rng.standard_normal((k, k))
        C = np.kron(A, B)
        C += 0.1 * np.linalg.norm(C) / C.shape[0] * rng.standard_normal(C.shape)
        self.C_host = C
        self.C = self.put(C, "float64")
        self.shape = (k, k)

    def ours(self):
        return nearest_kron(self.C, self.shape, self.shape, method="power", iters=self.iters, seed=0)

    def anchor(self):
        return nearest_kron(self.C, self.shape, self.shape, method="svd")

    def time_nearest_kron_power(self, backend, factor):
        A, _ = self.ours()
        sync(A)

    def time_full_svd_anchor(self, backend, factor):
        A, _ = self.anchor()
        sync(A)

    def track_power_rel_err(self, backend, factor):
        """‖A⊗B − A*⊗B*‖_F / ‖A*⊗B*‖_F of the power result against the float64 SVD solution."""
        A, B = (host(x) for x in self.ours())
        As, Bs = nearest_kron(self.C_host, self.shape, self.shape, method="svd")
        return kron_rel_err(A, B, As, Bs)

    track_power_rel_err.unit = "relative error"


def kron_rel_err(A, B, As, Bs):
    """‖A⊗B − As⊗Bs‖_F / ‖As⊗Bs‖_F from the factors (no Kronecker product formed)."""
    a, b, c, d = (np.ravel(x) for x in (A, B, As, Bs))
    # a bᵀ − c dᵀ = (a − c) bᵀ + c (b − d)ᵀ: computed from the differences (no cancellation)
    da, db = a - c, b - d
    sq = (da @ da) * (b @ b) + (c @ c) * (db @ db) + 2 * (da @ c) * (b @ db)
    return float(np.sqrt(max(sq, 0.0)) / (np.linalg.norm(As) * np.linalg.norm(Bs)))


class NearestKronMemory(MemoryMixin):
    """peakmem of ``nearest_kron(method="power")`` beside ``method="svd"`` (as ``NearestKron``)."""

    params = [CPU_BACKENDS, sizes(16, 32, 64)]
    param_names = ["backend", "factor"]

    def make(self, k):
        C = np.kron(gaussian((k, k), 30), gaussian((k, k), 31)) + 0.01 * gaussian((k * k, k * k), 32)
        self.C, self.shape = self.put(C, "float64"), (k, k)

    def ours(self):
        return xpmat.nearest_kron(self.C, self.shape, self.shape, method="power", iters=10, seed=0)

    def anchor(self):
        return xpmat.nearest_kron(self.C, self.shape, self.shape, method="svd")


class _KronRearrange(Benchmark):
    """ours: ``kron_rearrange(A ⊗ B)`` (k × k factors, C: k² × k²); anchor: a copy of C (the
    memory-traffic floor of a permutation); err: against ``vec(A) vec(B)ᵀ``."""

    params = [BACKENDS, sizes(16, 48, 64)]
    anchor_err = False

    def make(self, k):
        A, B = gaussian((k, k), 17), gaussian((k, k), 18)
        self.ref = np.outer(A.ravel(), B.ravel())
        self.C, self.shape = self.put(np.kron(A, B)), (k, k)

    def ours(self):
        return xpmat.kron_rearrange(self.C, self.shape, self.shape)

    def anchor(self):
        return self.C * 1.0

    def err(self, out):
        return rel_err(out, self.ref)


class KronRearrange(TimeMixin, TrackMixin, _KronRearrange):
    __doc__ = _KronRearrange.__doc__


class KronRearrangeMemory(MemoryMixin, _KronRearrange):
    __doc__ = "peakmem_ of " + _KronRearrange.__doc__


class _KronMatmul(Benchmark):
    """ours: ``kron_matmul(A, B, X)`` = ``A X Bᵀ`` (k × k); anchor: the explicit ``kron(A, B)``
    (array-api-extra) times ``vec(X)``; err: against float64 ``A X Bᵀ``."""

    params = [BACKENDS, sizes(16, 48, 64)]

    def make(self, k):
        A, B, X = gaussian((k, k), 19), gaussian((k, k), 20), gaussian((k, k), 21)
        self.ref = A @ X @ B.T
        self.A, self.B, self.X = (self.put(a) for a in (A, B, X))

    def ours(self):
        return xpmat.kron_matmul(self.A, self.B, self.X)

    def anchor(self):
        import array_api_extra as xpx

        xp, k = self.xp, self.X.shape[0]
        return xp.reshape(xpx.kron(self.A, self.B, xp=xp) @ xp.reshape(self.X, (k * k,)), (k, k))

    def err(self, out):
        return rel_err(out, self.ref)


class KronMatmul(TimeMixin, TrackMixin, _KronMatmul):
    __doc__ = _KronMatmul.__doc__


class KronMatmulMemory(MemoryMixin, _KronMatmul):
    __doc__ = "peakmem_ of " + _KronMatmul.__doc__


class _Shampoo(Benchmark):
    params = [BACKENDS, sizes(256, 768, 1536)]
    beta = 0.95

    def make(self, n):
        G0, G = gaussian((n, 2 * n), 22), gaussian((n, 2 * n), 23)
        b = self.beta
        self.ref_L = b * (1 - b) * G0 @ G0.T + (1 - b) * G @ G.T
        self.ref_R = b * (1 - b) * G0.T @ G0 + (1 - b) * G.T @ G
        self.ref_w = 1 - b * b
        self.G = self.put(G)
        self.state = xpmat.shampoo_factors(self.put(G0), beta=b)


class _ShampooFactors(_Shampoo):
    """ours: ``shampoo_factors(G, state, beta=0.95)`` (G: n × 2n); anchor: ``β L + (1 − β) G Gᵀ``
    and ``β R + (1 − β) Gᵀ G`` by hand; err: ``[L, R]``."""

    def ours(self):
        return xpmat.shampoo_factors(self.G, self.state, beta=self.beta)

    def anchor(self):
        xp, G, b, st = self.xp, self.G, self.beta, self.state
        GT = xp.matrix_transpose(G)
        return b * st.L + (1 - b) * (G @ GT), b * st.R + (1 - b) * (GT @ G)

    def err(self, out):
        return max(rel_err(out[0], self.ref_L), rel_err(out[1], self.ref_R))


class ShampooFactors(TimeMixin, TrackMixin, _ShampooFactors):
    __doc__ = _ShampooFactors.__doc__


class ShampooFactorsMemory(MemoryMixin, _ShampooFactors):
    __doc__ = "peakmem_ of " + _ShampooFactors.__doc__


class _ShampooKron(_Shampoo):
    """ours: ``shampoo_kron(state)``; anchor: ``L / w / √t``, ``R / w / √t`` by hand
    (``t = tr L / w``); err: ``[A, B]``."""

    def make(self, n):
        super().make(n)
        self.state = xpmat.shampoo_factors(self.G, self.state, beta=self.beta)
        t = np.trace(self.ref_L) / self.ref_w
        self.ref_A = self.ref_L / self.ref_w / np.sqrt(t)
        self.ref_B = self.ref_R / self.ref_w / np.sqrt(t)

    def ours(self):
        return xpmat.shampoo_kron(self.state)

    def anchor(self):
        xp, st = self.xp, self.state
        w = st.weight
        s = xp.sqrt(xp.sum(xp.linalg.diagonal(st.L)) / w)
        return st.L / w / s, st.R / w / s

    def err(self, out):
        return max(rel_err(out[0], self.ref_A), rel_err(out[1], self.ref_B))


class ShampooKron(TimeMixin, TrackMixin, _ShampooKron):
    __doc__ = _ShampooKron.__doc__


class ShampooKronMemory(MemoryMixin, _ShampooKron):
    __doc__ = "peakmem_ of " + _ShampooKron.__doc__
