"""Low-rank eigendecompositions (``xpmat/lowrank_eigh.py``) against their anchors.

* ``LowRankUpdate``: one rank-1 update of an (n, 64) eigenbasis (EMA 0.99), direct and
  randomized, beside ``eigh`` of the explicit n × n matrix.  Issue 4 targets: one update
  (n = 4096, r = 64, k = 1) >= 50x faster than ``eigh`` of the explicit matrix; O(n r) memory
  (``LowRankUpdateMemory``); ``LowRankUpdateAccuracy`` tracks the eigenvalues against float64.
* ``LowRankEighTruncate``, ``ReprojectMoments``, ``LowRankInvRootApply``, ``GgtEigh`` and their
  ``*Memory`` classes: the framework of ``common`` (ours / anchor / err, see each docstring).
"""

from __future__ import annotations

import numpy as np

import xpmat
from xpmat import lowrank_eigh_update

from .common import (
    BACKENDS,
    Benchmark,
    MemoryMixin,
    TimeMixin,
    TrackMixin,
    gaussian,
    host,
    orthonormal_basis,
    rank_err,
    rel_err,
    sizes,
    sync,
)

R = 64  # the basis width (Q: n × R) of every class here
K = 32  # the rank kept by LowRankEighTruncate, the history length of GgtEigh


class _LowRankUpdate(Benchmark):
    """``lowrank_eigh_update(L, Q, C, decay=0.99)`` of an (n, 64) basis with one new column C."""

    params = [BACKENDS, sizes(512, 2048, 4096)]

    def make(self, n):
        Q = orthonormal_basis(n, R, 1)
        L = np.sort(np.abs(gaussian(R, 2)))[::-1].copy()
        C = gaussian((n, 1), 3) / np.sqrt(n)
        self.host = L, Q, C
        self.L, self.Q, self.C = (self.put(a) for a in (L, Q, C))

    def explicit(self):
        """The n × n matrix ``0.99 Q diag(L) Qᵀ + 0.01 C Cᵀ`` on the host (float64)."""
        L, Q, C = self.host
        return 0.99 * (Q * L) @ Q.T + 0.01 * C @ C.T

    def ours(self):
        return lowrank_eigh_update(self.L, self.Q, self.C, decay=0.99)

    def anchor(self):
        return self.xp.linalg.eigh(self.A)


class LowRankUpdate(_LowRankUpdate):
    """One rank-1 update of an (n, 64) eigenbasis (EMA 0.99) vs eigh of the explicit matrix."""

    def make(self, n):
        super().make(n)
        self.A = self.put(self.explicit())

    def time_update(self, backend, n):
        _, Q = lowrank_eigh_update(self.L, self.Q, self.C, decay=0.99)
        sync(Q)

    def time_update_randomized(self, backend, n):
        _, Q = lowrank_eigh_update(self.L, self.Q, self.C, decay=0.99, method="randomized", seed=0)
        sync(Q)

    def time_eigh_anchor(self, backend, n):
        _, V = self.xp.linalg.eigh(self.A)
        sync(V)


class LowRankUpdateMemory(_LowRankUpdate):
    """Peak memory of one update (O(n r)) vs forming the n x n matrix and running eigh (CPU rows;
    no warm-up call in setup, no n × n matrix built there)."""

    params = [["numpy", "torch:cpu"], sizes(512, 2048, 4096)]
    warm = False

    def peakmem_update(self, backend, n):
        lowrank_eigh_update(self.L, self.Q, self.C, decay=0.99)

    def peakmem_eigh_anchor(self, backend, n):
        Qs = self.Q * self.L
        A = 0.99 * Qs @ self.xp.matrix_transpose(self.Q) + 0.01 * self.C @ self.xp.matrix_transpose(self.C)
        self.xp.linalg.eigh(A)


class LowRankUpdateAccuracy(TrackMixin, _LowRankUpdate):
    """track_ of one ``lowrank_eigh_update`` (r = 64, k = 1, EMA 0.99) beside ``eigh`` of the
    explicit float32 matrix (as ``LowRankUpdate``); err: the top-64 eigenvalues against float64
    ``eigh`` of the explicit matrix."""

    params = [BACKENDS, sizes(512, 1024, 2048)]

    def make(self, n):
        super().make(n)
        A = self.explicit()
        self.ref = np.linalg.eigvalsh(A)[::-1][:R]
        self.A = self.put(A)

    def err(self, out):
        return rank_err(out[0], self.ref)


class _LowRankEighTruncate(Benchmark):
    """ours: ``lowrank_eigh_truncate(L, Q, rank=32, rtol=0)`` (r = 64, some λ < 0); anchor:
    ``argsort`` + ``take`` + zeroing by hand; err: the kept eigenvalues."""

    params = [BACKENDS, sizes(512, 2048, 4096)]

    def make(self, n):
        L = np.linspace(10.0, -1.0, R)[np.random.default_rng(8).permutation(R)]
        self.ref = np.sort(L)[::-1][:K]
        self.L, self.Q = self.put(L), self.put(orthonormal_basis(n, R, 9))

    def ours(self):
        return xpmat.lowrank_eigh_truncate(self.L, self.Q, rank=K, rtol=0.0)

    def anchor(self):
        xp = self.xp
        idx = xp.argsort(self.L, descending=True)[:K]
        L = xp.take(self.L, idx)
        return xp.where(L > 0, L, xp.zeros_like(L)), xp.take(self.Q, idx, axis=1)

    def err(self, out):
        return rel_err(out[0], self.ref)


class LowRankEighTruncate(TimeMixin, TrackMixin, _LowRankEighTruncate):
    __doc__ = _LowRankEighTruncate.__doc__


class LowRankEighTruncateMemory(MemoryMixin, _LowRankEighTruncate):
    __doc__ = "peakmem_ of " + _LowRankEighTruncate.__doc__


class _ReprojectMoments(Benchmark):
    """ours: ``reproject_moments(Q_new, Q_old, m, v)`` (r = 64); anchor: through the n-space,
    ``Q_newᵀ (Q_old m)`` and ``diag(Q_newᵀ (Q_old diag(v) Q_oldᵀ) Q_new)``; err: ``[m, v]``."""

    params = [BACKENDS, sizes(512, 2048, 4096)]

    def make(self, n):
        Qo = orthonormal_basis(n, R, 10)
        Qn = np.linalg.qr(Qo + 0.1 * gaussian((n, R), 11))[0]
        m, v = gaussian(R, 12), np.abs(gaussian(R, 13))
        C = Qn.T @ Qo
        self.ref = np.concatenate([C @ m, (C * C) @ v])
        self.Qn, self.Qo, self.m, self.v = (self.put(a) for a in (Qn, Qo, m, v))

    def ours(self):
        return xpmat.reproject_moments(self.Qn, self.Qo, self.m, self.v)

    def anchor(self):
        xp, Qn, Qo = self.xp, self.Qn, self.Qo
        QnT = xp.matrix_transpose(Qn)
        V = (Qo * self.v) @ xp.matrix_transpose(Qo)  # n × n second moment
        return QnT @ (Qo @ self.m), xp.sum((QnT @ V) * QnT, axis=1)

    def err(self, out):
        return rel_err(np.concatenate([host(out[0]), host(out[1])]), self.ref)


class ReprojectMoments(TimeMixin, TrackMixin, _ReprojectMoments):
    __doc__ = _ReprojectMoments.__doc__


class ReprojectMomentsMemory(MemoryMixin, _ReprojectMoments):
    __doc__ = "peakmem_ of " + _ReprojectMoments.__doc__


class _LowRankInvRootApply(Benchmark):
    """ours: ``lowrank_inv_root_apply(L, Q, g, p=2)`` (r = 64, g: n × 8); anchor: ``eigh`` of the
    explicit ``Q diag(L) Qᵀ``, pseudo-inverse root applied to g; err: ``u`` (float64)."""

    params = [BACKENDS, sizes(256, 1024, 2048)]

    def make(self, n):
        L, Q, g = np.logspace(0, -2, R), orthonormal_basis(n, R, 14), gaussian((n, 8), 15)
        self.ref = (Q * L ** -0.5) @ (Q.T @ g)
        self.L, self.Q, self.g = (self.put(a) for a in (L, Q, g))
        self.A = self.put((Q * L) @ Q.T)

    def ours(self):
        return xpmat.lowrank_inv_root_apply(self.L, self.Q, self.g, p=2)

    def anchor(self):
        xp = self.xp
        w, V = xp.linalg.eigh(self.A)
        keep = w > 1e-3 * xp.max(w)  # the null space of the rank-64 matrix is rounding noise
        d = xp.where(keep, 1.0 / xp.sqrt(xp.where(keep, w, xp.ones_like(w))), xp.zeros_like(w))
        return (V * d) @ (xp.matrix_transpose(V) @ self.g)

    def err(self, out):
        return rel_err(out, self.ref)


class LowRankInvRootApply(TimeMixin, TrackMixin, _LowRankInvRootApply):
    __doc__ = _LowRankInvRootApply.__doc__


class LowRankInvRootApplyMemory(MemoryMixin, _LowRankInvRootApply):
    __doc__ = "peakmem_ of " + _LowRankInvRootApply.__doc__


class _GgtEigh(Benchmark):
    """ours: ``ggt_eigh(H)`` (H: n × 32 history); anchor: thin SVD of H (``L = S²``); err: L."""

    params = [BACKENDS, sizes(1024, 8192, 32768)]

    def make(self, n):
        H = gaussian((n, K), 16) * np.logspace(0, -2, K)
        self.ref = np.linalg.svd(H, compute_uv=False) ** 2
        self.H = self.put(H)

    def ours(self):
        return xpmat.ggt_eigh(self.H)

    def anchor(self):
        U, S, _ = self.xp.linalg.svd(self.H, full_matrices=False)
        return S * S, U

    def err(self, out):
        return rank_err(out[0], self.ref)


class GgtEigh(TimeMixin, TrackMixin, _GgtEigh):
    __doc__ = _GgtEigh.__doc__


class GgtEighMemory(MemoryMixin, _GgtEigh):
    __doc__ = "peakmem_ of " + _GgtEigh.__doc__
