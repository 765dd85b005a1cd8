"""Orthogonalization (``xpmat.orthogonalize``) against its anchors, on the same inputs.

* ``Msign``: ``msign(G)`` (5-step Polar Express, Frobenius scaling) on n × n float32 Gaussian G
  beside the SVD polar factor ``U Vᵀ`` (``xp.linalg.svd``) and, on NumPy, ``scipy.linalg.polar``.
  ``track_err_*``: relative Frobenius error of ``msign`` (5 and 10 steps) against float64 ``U Vᵀ``.
* ``MsignGram``: ``msign(G, gram=True)`` (Gram Newton–Schulz) beside the plain loop
  ``msign(G)`` on tall float32 Gaussian G; ``track_rel_diff``: their relative distance.
* ``Orthonormalize``: ``orthonormalize(X)`` (``method="auto"``: CholeskyQR2 on tall-skinny)
  beside the library's Householder QR (``numpy.linalg.qr`` / ``torch.linalg.qr``) on m × 128
  float32; ``track_orth_err`` is ``‖QᵀQ − I‖_max``.
"""

from __future__ import annotations

import numpy as np

from xpmat import msign, orthonormalize

from .common import BACKENDS, FAST, gaussian, gemm_fraction, namespace, sizes, sync, to_device

try:
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # older asv: NotImplementedError is what it skips on
    SkipNotImplemented = NotImplementedError


def _host(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().double().numpy()
    if hasattr(x, "get"):
        return x.get().astype(np.float64)
    return np.asarray(x, dtype=np.float64)


class Msign:
    params = (BACKENDS, sizes(256, 512, 1024))
    param_names = ["backend", "n"]
    timeout = 300

    def setup(self, backend, n):
        try:
            self.xp, dev = namespace(backend)
        except NotImplementedError as exc:
            raise SkipNotImplemented(str(exc)) from exc
        self.backend, self.dev = backend, dev
        self.host = gaussian((n, n), seed=n)
        self.G = to_device(self.host, self.xp, dev, "float32")
        sync(msign(self.G))
        sync(self.xp.linalg.svd(self.G, full_matrices=False)[0])

    def time_msign(self, backend, n):
        sync(msign(self.G))

    def time_polar_svd_anchor(self, backend, n):
        U, _, Vh = self.xp.linalg.svd(self.G, full_matrices=False)
        sync(U @ Vh)

    def time_scipy_polar_anchor(self, backend, n):
        if backend != "numpy":
            raise SkipNotImplemented("scipy.linalg.polar is NumPy-only")
        import scipy.linalg

        scipy.linalg.polar(self.G)

    def _err(self, steps):
        U, _, Vt = np.linalg.svd(self.host)
        ref = U @ Vt
        return float(np.linalg.norm(_host(msign(self.G, steps=steps)) - ref) / np.linalg.norm(ref))

    def track_err_5_steps(self, backend, n):
        return self._err(5)

    def track_err_10_steps(self, backend, n):
        return self._err(10)

    def time_one_gemm_anchor(self, backend, n):
        sync(self.G @ self.G)  # the unit of issue 16's goal: ≤ 3.3 of these per msign step

    def track_gemm_fraction(self, backend, n):
        """GEMM rate reached counting 3 n × n products per step (3 / this = GEMMs per step)."""
        return gemm_fraction(lambda: sync(msign(self.G)), 5 * 3 * 2 * n**3, self.xp, self.dev)

    track_gemm_fraction.unit = "of GEMM rate"


class MsignGram:
    params = (BACKENDS, ["4096x256"] if FAST else ["4096x256", "3072x768"])
    param_names = ["backend", "shape"]
    timeout = 300

    def setup(self, backend, shape):
        try:
            self.xp, dev = namespace(backend)
        except NotImplementedError as exc:
            raise SkipNotImplemented(str(exc)) from exc
        m, n = (int(v) for v in shape.split("x"))
        self.G = to_device(gaussian((m, n), seed=m + n), self.xp, dev, "float32")
        sync(msign(self.G, gram=True))
        sync(msign(self.G))

    def time_msign_gram(self, backend, shape):
        sync(msign(self.G, gram=True))

    def time_msign_plain_anchor(self, backend, shape):
        sync(msign(self.G))

    def track_rel_diff(self, backend, shape):
        a, b = _host(msign(self.G, gram=True)), _host(msign(self.G))
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))


class Orthonormalize:
    params = (BACKENDS, [16384] if FAST else [16384, 65536])
    param_names = ["backend", "m"]
    timeout = 300

    def setup(self, backend, m):
        try:
            self.xp, dev = namespace(backend)
        except NotImplementedError as exc:
            raise SkipNotImplemented(str(exc)) from exc
        self.X = to_device(gaussian((m, 128), seed=1), self.xp, dev, "float32")
        self.dev = dev
        sync(orthonormalize(self.X))

    def time_orthonormalize_auto(self, backend, m):
        sync(orthonormalize(self.X))

    def time_householder_qr_anchor(self, backend, m):
        sync(self.xp.linalg.qr(self.X)[0])

    def track_gemm_fraction(self, backend, m):
        """CholeskyQR2's 4 products (2 Grams, 2 applications of R⁻¹) at GEMM rate / its time."""
        return gemm_fraction(lambda: sync(orthonormalize(self.X)), 4 * 2 * m * 128**2, self.xp, self.dev)

    track_gemm_fraction.unit = "of GEMM rate"

    def track_orth_err(self, backend, m):
        Q = _host(orthonormalize(self.X))
        return float(np.abs(Q.T @ Q - np.eye(Q.shape[1])).max())
