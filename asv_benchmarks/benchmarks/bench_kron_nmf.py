"""NMF (blockwise EM) vs scikit-learn's KL multiplicative updates; nearest_kron power vs full SVD.

The anchors sit in the same class as ours, on the same inputs:

* ``NMFKL``: ``xpmat.nmf`` vs ``sklearn.decomposition.NMF(beta_loss="kullback-leibler",
  solver="mu", init="custom", tol=0)`` (CPU, NumPy), same data, same start, same number of
  iterations; ``track_divergence_ratio`` is our final I-divergence / sklearn's.
* ``NearestKron``: ``nearest_kron(method="power")`` vs the full SVD of the rearranged matrix
  (``method="svd"``); ``track_rel_err`` is ``‖A⊗B − A*⊗B*‖_F / ‖A*⊗B*‖_F`` against the SVD
  solution in float64.
"""

from __future__ import annotations

import numpy as np

from xpmat import i_divergence, nearest_kron, nmf

from .common import BACKENDS, FAST, gemm_fraction, namespace, sizes, sync, to_device, warm_up


def _poisson(m, n, r, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(rng.random((m, r)) @ rng.random((r, n))).astype(np.float64)


class NMFKL:
    """200 EM iterations (20 in the fast profile), rank 20, 2000×1000 at the large size."""

    params = [BACKENDS, sizes((200, 100), (1000, 500), (2000, 1000)), ["float64", "float32"]]
    param_names = ["backend", "shape", "dtype"]
    timeout = 600
    rank = 20

    def setup(self, backend, shape, dtype):
        self.xp, dev = namespace(backend)
        self.dev = dev
        self.iters = 20 if FAST else 200
        m, n = shape
        rng = np.random.default_rng(1)
        self.C_host = _poisson(m, n, self.rank).astype(dtype)
        self.A0_host = (rng.random((m, self.rank)) + 0.1).astype(dtype)
        self.B0_host = (rng.random((self.rank, n)) + 0.1).astype(dtype)
        self.C = to_device(self.C_host, self.xp, dev, dtype)
        self.A0 = to_device(self.A0_host, self.xp, dev, dtype)
        self.B0 = to_device(self.B0_host, self.xp, dev, dtype)
        nmf(self.C, self.rank, iters=2, init=(self.A0, self.B0))  # warm up
        try:
            import sklearn.decomposition  # noqa: F401  (import outside the timed call)
        except ImportError as exc:
            raise NotImplementedError("scikit-learn not installed (the anchor)") from exc

    def _ours(self):
        res = nmf(self.C, self.rank, iters=self.iters, init=(self.A0, self.B0))
        sync(res.A)
        return res

    def _sklearn(self):
        from sklearn.decomposition import NMF

        model = NMF(self.rank, beta_loss="kullback-leibler", solver="mu", init="custom",
                    max_iter=self.iters, tol=0)
        W = model.fit_transform(self.C_host, W=self.A0_host.copy(), H=self.B0_host.copy())
        return W, model.components_

    def time_nmf(self, backend, shape, dtype):
        self._ours()

    def time_sklearn_kl_mu_anchor(self, backend, shape, dtype):
        self._sklearn()  # on the host (NumPy) whatever the row's backend

    def track_divergence_ratio(self, backend, shape, dtype):
        res = self._ours()
        W, H = self._sklearn()
        ours = float(i_divergence(self.C_host.astype(np.float64),
                                  _host(res.A, self.xp) @ _host(res.B, self.xp)))
        theirs = float(i_divergence(self.C_host.astype(np.float64), W.astype(np.float64) @ H))
        return ours / theirs

    track_divergence_ratio.unit = "ours / sklearn"

    def track_gemm_fraction(self, backend, shape, dtype):
        """4 products m n r per EM step at GEMM rate (same dtype) / our time."""
        m, n = shape
        return gemm_fraction(self._ours, self.iters * 4 * 2 * m * n * self.rank, self.xp, self.dev,
                             dtype)

    track_gemm_fraction.unit = "of GEMM rate"


def _host(x, xp):
    """A backend array as a float64 NumPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    elif hasattr(x, "get"):
        x = x.get()
    return np.asarray(x, dtype=np.float64)


class NearestKron:
    """``nearest_kron`` of ``C = A⊗B + noise``; 4096×4096 C with 64×64 factors at the large size."""

    params = [BACKENDS, sizes(16, 32, 64)]
    param_names = ["backend", "factor"]
    timeout = 900
    iters = 10

    def setup(self, backend, factor):
        self.xp, dev = namespace(backend)
        rng = np.random.default_rng(2)
        k = factor
        A, B = rng.standard_normal((k, k)), rng.standard_normal((k, k))
        C = np.kron(A, B)
        C += 0.1 * np.linalg.norm(C) / C.shape[0] * rng.standard_normal(C.shape)
        self.C_host = C
        self.C = to_device(C, self.xp, dev, "float64")
        self.shape = (k, k)
        warm_up(self, backend, factor)

    def time_nearest_kron_power(self, backend, factor):
        A, _ = nearest_kron(self.C, self.shape, self.shape, method="power", iters=self.iters, seed=0)
        sync(A)

    def time_full_svd_anchor(self, backend, factor):
        A, _ = nearest_kron(self.C, self.shape, self.shape, method="svd")
        sync(A)

    def track_power_rel_err(self, backend, factor):
        """‖A⊗B − A*⊗B*‖_F / ‖A*⊗B*‖_F of the power result against the float64 SVD solution."""
        A, B = nearest_kron(self.C, self.shape, self.shape, method="power", iters=self.iters, seed=0)
        A, B = _host(A, self.xp), _host(B, self.xp)
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
