"""Low-rank eigendecomposition update vs eigh on the explicit n x n matrix; inv_root Newton vs eigh.

Issue 4 targets: one update (n = 4096, r = 64, k = 1) >= 50x faster than ``eigh`` of the
explicit matrix; O(n r) memory (``peakmem_``); ``inv_root(method="newton")`` vs the
``eigh`` route with the accuracy of both tracked against a float64 reference.
"""

import numpy as np

from xpmat import inv_root, lowrank_eigh_update

from .common import BACKENDS, gaussian, namespace, sizes, sync, to_device, warm_up

RANK = 64


def _orthonormal(n, r, seed):
    q, _ = np.linalg.qr(gaussian((n, r), seed))
    return q


def _update_inputs(n, r=RANK, k=1):
    Q = _orthonormal(n, r, 1)
    L = np.sort(np.abs(gaussian(r, 2)))[::-1].copy()
    C = gaussian((n, k), 3) / np.sqrt(n)
    return L, Q, C


class LowRankUpdate:
    """One rank-1 update of an (n, 64) eigenbasis (EMA 0.99) vs eigh of the explicit matrix."""

    params = [BACKENDS, sizes(512, 2048, 4096)]
    param_names = ["backend", "n"]
    timeout = 300

    def setup(self, backend, n):
        self.xp, dev = namespace(backend)
        L, Q, C = _update_inputs(n)
        self.L, self.Q, self.C = (to_device(a, self.xp, dev) for a in (L, Q, C))
        A = 0.99 * (Q * L) @ Q.T + 0.01 * C @ C.T
        self.A = to_device(A, self.xp, dev)
        warm_up(self, backend, n)

    def time_update(self, backend, n):
        _, Q = lowrank_eigh_update(self.L, self.Q, self.C, decay=0.99)
        sync(Q)

    def time_update_randomized(self, backend, n):
        _, Q = lowrank_eigh_update(self.L, self.Q, self.C, decay=0.99, method="randomized", seed=0)
        sync(Q)

    def time_eigh_anchor(self, backend, n):
        _, V = self.xp.linalg.eigh(self.A)
        sync(V)


class LowRankUpdateMemory:
    """Peak memory of one update (O(n r)) vs forming the n x n matrix and running eigh."""

    params = [["numpy", "torch:cpu"], sizes(512, 2048, 4096)]
    param_names = ["backend", "n"]
    timeout = 300

    def setup(self, backend, n):
        self.xp, dev = namespace(backend)
        L, Q, C = _update_inputs(n)
        self.L, self.Q, self.C = (to_device(a, self.xp, dev) for a in (L, Q, C))

    def peakmem_update(self, backend, n):
        lowrank_eigh_update(self.L, self.Q, self.C, decay=0.99)

    def peakmem_eigh_anchor(self, backend, n):
        Qs = self.Q * self.L
        A = 0.99 * Qs @ self.xp.matrix_transpose(self.Q) + 0.01 * self.C @ self.xp.matrix_transpose(self.C)
        self.xp.linalg.eigh(A)


class InvRoot:
    """A^(-1/4) (Shampoo) of a kappa = 1e3 SPD matrix in float32: coupled Newton vs eigh."""

    params = [BACKENDS, sizes(256, 512, 1024)]
    param_names = ["backend", "n"]
    timeout = 300

    def setup(self, backend, n):
        self.xp, dev = namespace(backend)
        q = _orthonormal(n, n, 4)
        w = np.logspace(0, -3, n)
        A = (q * w) @ q.T
        self.ref = (q * w ** -0.25) @ q.T
        self.A = to_device((A + A.T) / 2, self.xp, dev)
        warm_up(self, backend, n)

    def _err(self, X):
        import array_api_compat

        if array_api_compat.is_torch_array(X):
            X = X.cpu().numpy()
        elif hasattr(X, "get"):
            X = X.get()
        X = np.asarray(X, dtype=np.float64)
        return float(np.linalg.norm(X - self.ref) / np.linalg.norm(self.ref))

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
