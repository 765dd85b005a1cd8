"""Subspace iteration (``xpmat.iteration``) against its anchors, on the same inputs.

* ``OrthogonalIterationStep``: one step of ``orthogonal_iteration`` (n × n symmetric, r = 64,
  float32), with Rayleigh–Ritz (``ritz=True``, an r × r eigh) and without (``ritz=False``),
  beside ``orth(A @ Q)`` alone (matmul + ``orthonormalize``) and the full ``eigh`` it replaces.
  ``track_sin_theta_20`` is the subspace error after 20 steps against the known top-r space.
* ``RandomizedSVD``: ``randomized_svd(rank=32, oversample=10, power_iters=2)`` on float32 beside
  ``sklearn.utils.extmath.randomized_svd(n_iter=2, n_oversamples=10)`` (NumPy rows) and
  ``torch.svd_lowrank(q=42, niter=2)`` (torch rows); ``track_err_ratio_*`` is
  ``‖A − U S Vh‖_F`` over the optimal rank-32 error (known: A has a prescribed spectrum).

Test matrices have a known spectrum without an O(n³) set-up: ``A = H₁ diag(s) H₂`` with
Householder reflectors ``H = I − 2 u uᵀ`` (dense, orthogonal), so the optimal errors and
eigenvectors are exact.
"""

from __future__ import annotations

import numpy as np

from xpmat import orthogonal_iteration, randomized_svd

from .common import BACKENDS, FAST, gemm_fraction, namespace, sizes, sync, to_device, warm_up

try:
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # older asv: NotImplementedError is what it skips on
    SkipNotImplemented = NotImplementedError


def _reflect(M, u, side):
    """``H M`` (side="left") or ``M H`` with ``H = I − 2 u uᵀ``, in O(n²)."""
    if side == "left":
        return M - 2 * np.outer(u, u @ M)
    return M - 2 * np.outer(M @ u, u)


def _unit(n, rng):
    u = rng.standard_normal(n)
    return u / np.linalg.norm(u)


def known_spectrum(n, s, *, symmetric, seed=0):
    """Dense ``H₁ diag(s) H₂`` (``H₂ = H₁`` when symmetric) and ``H₁``'s first columns' generator."""
    rng = np.random.default_rng(seed)
    u = _unit(n, rng)
    v = u if symmetric else _unit(n, rng)
    A = _reflect(_reflect(np.diag(s), u, "left"), v, "right")
    return A, u


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
        Qh = _host(Q, self.xp)
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
        U, S, Vh = (_host(x, self.xp) for x in (U, S, Vh))
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


def _host(x, xp):
    if hasattr(x, "detach"):
        return x.detach().cpu().double().numpy()
    if hasattr(x, "get"):
        return x.get().astype(np.float64)
    return np.asarray(x, dtype=np.float64)
