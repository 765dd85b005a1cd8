"""Subspace iteration (``xpmat/iteration.py``) against its anchors, on the same inputs.

* ``OrthogonalIterationStep``: one step of ``orthogonal_iteration`` (n × n symmetric, r = 64,
  float32), with Rayleigh–Ritz (``ritz=True``, an r × r eigh) and without (``ritz=False``),
  beside ``orth(A @ Q)`` alone (matmul + ``orthonormalize``) and the full ``eigh`` it replaces.
  ``track_sin_theta_20`` is the subspace error after 20 steps against the known top-r space.
* ``RandomizedSVD``: ``randomized_svd(rank=32, oversample=10, power_iters=2)`` on float32 beside
  ``sklearn.utils.extmath.randomized_svd(n_iter=2, n_oversamples=10)`` (NumPy rows) and
  ``torch.svd_lowrank(q=42, niter=2)`` (torch rows); ``track_err_ratio_*`` is
  ``‖A − U S Vh‖_F`` over the optimal rank-32 error (known: A has a prescribed spectrum).
* ``PowerIteration``, ``RandomizedEigh``, ``NystromEigh``, ``PowerIter1`` and the ``*Memory``
  classes: the framework of ``common`` (ours / anchor / err, see each class's docstring);
  classes whose anchor is a full ``n × n`` ``eigh`` stop at n = 2048.

Test matrices have a known spectrum without an O(n³) set-up (``common.known_spectrum``:
Householder reflectors), so the optimal errors and eigenvectors are exact.
``OrthogonalIterationStep`` and ``RandomizedSVD`` keep their own ``setup`` (its source is part of
asv's benchmark version: rewriting it would restart their history).
"""

from __future__ import annotations

import numpy as np

import xpmat
from xpmat import orthogonal_iteration, randomized_svd

from .common import (
    BACKENDS,
    CPU_BACKENDS,
    FAST,
    Benchmark,
    MemoryMixin,
    SkipNotImplemented,
    TimeMixin,
    TrackMixin,
    decaying,
    gaussian,
    gemm_fraction,
    host,
    known_spectrum,
    namespace,
    orthonormal_basis,
    rank_err,
    rel_err,
    sizes,
    sync,
    to_device,
    warm_up,
)

RANK = 32


def _orth_anchor(xp):
    try:
        from xpmat import orthonormalize

        return lambda X: orthonormalize(X, method="cholesky_qr2", xp=xp)
    except ImportError:  # the orthogonalization module is not in this commit
        return lambda X: xp.linalg.qr(X)[0]


class OrthogonalIterationStep:
    params = [BACKENDS, sizes(256, 2048, 4096)]
    param_names = ["backend", "n"]
    r = 64

    def setup(self, backend, n):
        self.xp, dev = namespace(backend)
        r = self.r
        w = np.concatenate([np.linspace(10.0, 1.0, r), 0.5 * 0.999 ** np.arange(n - r)])
        A, u = known_spectrum(n, w, symmetric=True, seed=1)
        self.V_top = np.eye(n)[:, :r] - 2 * np.outer(u, u[:r])  # exact top-r eigenvectors
        rng = np.random.default_rng(2)
        Q0 = np.linalg.qr(rng.standard_normal((n, r)))[0]
        self.A = to_device(A, self.xp, dev)
        self.Q = to_device(Q0, self.xp, dev)
        self.orth = _orth_anchor(self.xp)
        warm_up(self, backend, n)
        self.time_step_plain(backend, n)
        self.time_matmul_orth_anchor(backend, n)

    def time_step_ritz(self, backend, n):
        sync(orthogonal_iteration(self.A, self.Q, iters=1)[0])

    def time_step_plain(self, backend, n):
        sync(orthogonal_iteration(self.A, self.Q, iters=1, ritz=False)[0])

    def time_matmul_orth_anchor(self, backend, n):
        sync(self.orth(self.A @ self.Q))

    def time_full_eigh_anchor(self, backend, n):
        if n > 2048 and backend in ("numpy", "torch:cpu"):
            raise SkipNotImplemented("full eigh of n > 2048 on 2 CPU cores: minutes of asv time")
        sync(self.xp.linalg.eigh(self.A)[1])

    def track_sin_theta_20(self, backend, n):
        Q, _ = orthogonal_iteration(self.A, self.Q, iters=20)
        Qh = host(Q)
        return float(np.linalg.norm(Qh - self.V_top @ (self.V_top.T @ Qh), 2))

    track_sin_theta_20.unit = "sin theta"


class RandomizedSVD:
    params = [BACKENDS, [512] if FAST else [2048, 4096]]
    param_names = ["backend", "n"]
    rank = 32

    def setup(self, backend, n):
        self.xp, self.dev = namespace(backend)
        k = self.rank
        s = np.concatenate([10 * 0.9 ** np.arange(k), 0.1 * (1 - np.arange(n - k) / n)])
        A, _ = known_spectrum(n, s, symmetric=False, seed=3)
        self.opt = float(np.sqrt(np.sum(s[k:] ** 2)))
        self.A64 = A
        self.host = A.astype(np.float32)
        self.A = to_device(A, self.xp, self.dev)
        self.torch = None
        if backend.startswith("torch"):
            import torch

            self.torch = torch
        self.sklearn = False
        if backend == "numpy":
            try:
                import sklearn.utils.extmath  # noqa: F401
            except ImportError:
                pass
            else:
                self.sklearn = True
        warm_up(self, backend, n)

    def _ours(self):
        U, S, Vh = randomized_svd(self.A, self.rank, oversample=10, power_iters=2, seed=0)
        sync(Vh)
        return U, S, Vh

    def _sklearn(self):
        from sklearn.utils.extmath import randomized_svd as sk_rsvd

        return sk_rsvd(self.host, self.rank, n_oversamples=10, n_iter=2, random_state=0)

    def _torch(self):
        U, S, V = self.torch.svd_lowrank(self.A, q=self.rank + 10, niter=2)
        sync(V)
        return U[:, : self.rank], S[: self.rank], V[:, : self.rank].mT

    def time_ours(self, backend, n):
        self._ours()

    def time_sklearn_anchor(self, backend, n):
        if backend != "numpy" or not self.sklearn:
            raise SkipNotImplemented("sklearn anchor: NumPy rows only")
        self._sklearn()

    def time_torch_svd_lowrank_anchor(self, backend, n):
        if self.torch is None:
            raise SkipNotImplemented("torch.svd_lowrank anchor: torch rows only")
        self._torch()

    def _ratio(self, U, S, Vh):
        U, S, Vh = (host(x) for x in (U, S, Vh))
        return float(np.linalg.norm(self.A64 - (U * S) @ Vh) / self.opt)

    def track_err_ratio_ours(self, backend, n):
        return self._ratio(*self._ours())

    track_err_ratio_ours.unit = "err / optimal"

    def track_gemm_fraction(self, backend, n):
        """6 products of A with the n × 42 sketch at GEMM rate / our time."""
        return gemm_fraction(self._ours, 6 * 2 * n * n * (self.rank + 10), self.xp, self.dev)

    track_gemm_fraction.unit = "of GEMM rate"

    def track_err_ratio_anchor(self, backend, n):
        if backend == "numpy" and self.sklearn:
            return self._ratio(*self._sklearn())
        if self.torch is not None:
            return self._ratio(*self._torch())
        raise SkipNotImplemented("no anchor for this backend")

    track_err_ratio_anchor.unit = "err / optimal"


class _Eig(Benchmark):
    """Symmetric ``A = H diag(s) H`` with a known spectrum; err: the top eigenvalues' error."""

    params = [BACKENDS, sizes(256, 1024, 2048)]
    spectrum = staticmethod(decaying)
    k = RANK

    def make(self, n):
        s = self.spectrum(n)
        self.ref = np.sort(s)[::-1][: self.k]
        self.A = self.put(known_spectrum(n, s, symmetric=True, seed=5)[0])

    def anchor(self):
        return self.xp.linalg.eigh(self.A)

    def err(self, out):
        return rank_err(out[0], self.ref)


class _PowerIteration(_Eig):
    """ours: ``power_iteration(A, tol=1e-6)`` (dominant pair, λ₁/λ₂ = 2); anchor: full ``eigh``;
    err: relative error of λ₁."""

    spectrum = staticmethod(lambda n: np.concatenate([[10.0], 5 * 0.99 ** np.arange(n - 1)]))
    k = 1

    def ours(self):
        return xpmat.power_iteration(self.A, seed=0)


class PowerIteration(TimeMixin, TrackMixin, _PowerIteration):
    __doc__ = _PowerIteration.__doc__


class PowerIterationMemory(MemoryMixin, _PowerIteration):
    __doc__ = "peakmem_ of " + _PowerIteration.__doc__


class _RandomizedEigh(_Eig):
    """ours: ``randomized_eigh(A, 32, power_iters=2)``; anchor: full ``eigh``; err: top-32
    eigenvalues."""

    def ours(self):
        return xpmat.randomized_eigh(self.A, RANK, seed=0)


class RandomizedEigh(TimeMixin, TrackMixin, _RandomizedEigh):
    __doc__ = _RandomizedEigh.__doc__


class RandomizedEighMemory(MemoryMixin, _RandomizedEigh):
    __doc__ = "peakmem_ of " + _RandomizedEigh.__doc__


class _NystromEigh(_Eig):
    """ours: ``nystrom_eigh(A, 32, power_iters=2)`` of a PSD A (same cost as ``RandomizedEigh``);
    anchor: full ``eigh``; err: top-32 eigenvalues."""

    def ours(self):
        return xpmat.nystrom_eigh(self.A, RANK, power_iters=2, seed=0)


class NystromEigh(TimeMixin, TrackMixin, _NystromEigh):
    __doc__ = _NystromEigh.__doc__


class NystromEighMemory(MemoryMixin, _NystromEigh):
    __doc__ = "peakmem_ of " + _NystromEigh.__doc__


class _PowerIter1(Benchmark):
    """ours: ``power_iter1(B, Q)`` (n × n, r = 32); anchor: Householder ``qr(B Q)``, ``Bᵀ P``;
    err: ``‖P Rᵀ − (P Pᵀ B)*‖_F / ‖(P Pᵀ B)*‖_F`` (float64)."""

    params = [BACKENDS, sizes(256, 1024, 2048)]

    def make(self, n):
        B, Q = gaussian((n, n), 6), gaussian((n, RANK), 7)
        P = np.linalg.qr(B @ Q)[0]
        self.ref = P @ (P.T @ B)
        self.B, self.Q = self.put(B), self.put(Q)

    def ours(self):
        return xpmat.power_iter1(self.B, self.Q)

    def anchor(self):
        P = self.xp.linalg.qr(self.B @ self.Q)[0]
        return P, self.xp.matrix_transpose(self.B) @ P

    def err(self, out):
        return rel_err(host(out[0]) @ host(out[1]).T, self.ref)


class PowerIter1(TimeMixin, TrackMixin, _PowerIter1):
    __doc__ = _PowerIter1.__doc__


class PowerIter1Memory(MemoryMixin, _PowerIter1):
    __doc__ = "peakmem_ of " + _PowerIter1.__doc__


class OrthogonalIterationMemory(MemoryMixin):
    """peakmem of one ``orthogonal_iteration`` step (r = 64) beside the full ``eigh``."""

    params = [CPU_BACKENDS, sizes(256, 1024, 2048)]

    def make(self, n):
        self.A = self.put(known_spectrum(n, decaying(n, 64), symmetric=True, seed=1)[0])
        self.Q = self.put(orthonormal_basis(n, 64, 2))

    def ours(self):
        return xpmat.orthogonal_iteration(self.A, self.Q, iters=1)

    def anchor(self):
        return self.xp.linalg.eigh(self.A)


class RandomizedSVDMemory(MemoryMixin):
    """peakmem of ``randomized_svd(A, 32)`` beside sklearn's (NumPy) / ``torch.svd_lowrank`` (torch)."""

    params = [CPU_BACKENDS, sizes(512, 2048, 4096)]

    def make(self, n):
        A = known_spectrum(n, decaying(n), symmetric=False, seed=3)[0]
        self.host, self.A = A.astype(np.float32), self.put(A)

    def ours(self):
        return xpmat.randomized_svd(self.A, RANK, oversample=10, power_iters=2, seed=0)

    def anchor(self):
        if self.backend == "numpy":
            from sklearn.utils.extmath import randomized_svd

            return randomized_svd(self.host, RANK, n_oversamples=10, n_iter=2, random_state=0)
        import torch

        return torch.svd_lowrank(self.A, q=RANK + 10, niter=2)
