"""Orthogonalization (``xpmat/orthogonalize.py``: ``msign``, ``msign_many``, ``orthonormalize``, ``polar``,
``ns_schedule``) against its anchors, on the same inputs.

* ``Msign``: ``msign(G)`` (5-step Polar Express, Frobenius scaling) on n × n float32 Gaussian G
  beside the SVD polar factor ``U Vᵀ`` (``xp.linalg.svd``) and, on NumPy, ``scipy.linalg.polar``.
  ``track_err_*``: relative Frobenius error of ``msign`` (5 and 10 steps) against float64 ``U Vᵀ``.
* ``MsignGram``: ``msign(G, gram=True)`` (Gram Newton–Schulz) beside the plain loop
  ``msign(G)`` on tall float32 Gaussian G; ``track_rel_diff``: their relative distance.
* ``Orthonormalize``: ``orthonormalize(X)`` (``method="auto"``: CholeskyQR2 on tall-skinny)
  beside the library's Householder QR (``numpy.linalg.qr`` / ``torch.linalg.qr``) on m × 128
  float32; ``track_orth_err`` is ``‖QᵀQ − I‖_max``.
* ``MsignMany``: ``msign_many`` of 16 GPT-like matrices beside one ``msign`` per matrix.
* ``Polar``, ``NsSchedule`` and the ``*Memory`` classes: the framework of ``common`` (ours /
  anchor / err, see each class's docstring).

``Msign`` and ``Orthonormalize`` keep their own ``setup`` (its source is part of asv's benchmark
version: rewriting it would restart their history).
"""

from __future__ import annotations

import numpy as np

import xpmat
from xpmat import msign, orthonormalize

from .common import (
    BACKENDS,
    CPU_BACKENDS,
    FAST,
    Benchmark,
    MemoryMixin,
    SkipNotImplemented,
    TimeMixin,
    TrackMixin,
    gaussian,
    gemm_fraction,
    host,
    namespace,
    rel_err,
    sizes,
    sync,
    to_device,
)


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
        return float(np.linalg.norm(host(msign(self.G, steps=steps)) - ref) / np.linalg.norm(ref))

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
        a, b = host(msign(self.G, gram=True)), host(msign(self.G))
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
        Q = host(orthonormalize(self.X))
        return float(np.abs(Q.T @ Q - np.eye(Q.shape[1])).max())


class NsSchedule:
    """ours: ``ns_schedule(schedule, steps)`` (host coefficients; no arrays, no backend)."""

    params = [["polar_express", "jordan"], [5, 10]]
    param_names = ["schedule", "steps"]

    def time_ns_schedule(self, schedule, steps):
        xpmat.ns_schedule(schedule, steps)


class _Polar(Benchmark):
    """ours: ``polar(method="newton_schulz")`` of n × n/2; anchor: SVD polar (``U Vᵀ``, ``V Σ Vᵀ``),
    and ``scipy.linalg.polar`` on NumPy; err: ``‖U − U*‖_F / ‖U*‖_F`` (float64 SVD)."""

    params = [BACKENDS, sizes(256, 1024, 2048)]

    def make(self, n):
        self.host = gaussian((n, n // 2), seed=n)
        U, _, Vt = np.linalg.svd(self.host, full_matrices=False)
        self.ref = U @ Vt
        self.G = self.put(self.host)

    def ours(self):
        return xpmat.polar(self.G, method="newton_schulz")

    def anchor(self):
        U, S, Vh = self.xp.linalg.svd(self.G, full_matrices=False)
        return U @ Vh, (self.xp.matrix_transpose(Vh) * S) @ Vh

    def err(self, out):
        return rel_err(out[0], self.ref)


class Polar(TimeMixin, TrackMixin, _Polar):
    __doc__ = _Polar.__doc__

    def time_scipy_polar_anchor(self, backend, n):
        if backend != "numpy":
            raise SkipNotImplemented("scipy.linalg.polar is NumPy-only")
        import scipy.linalg

        scipy.linalg.polar(self.G)


class _MsignMany(Benchmark):
    """ours: ``msign_many`` of one GPT-like layer set, 4 × [d×4d, 4d×d, 3d×d, d×d] (float32,
    batched by shape); anchor: one ``msign`` call per matrix; err: worst relative Frobenius
    distance to the float64 SVD polar ``U Vᵀ`` of each matrix."""

    params = [BACKENDS, sizes(64, 128, 256)]

    def make(self, d):
        hosts = [gaussian(s, seed=i) for i, s in enumerate([(d, 4 * d), (4 * d, d), (3 * d, d), (d, d)] * 4)]
        self.refs = [u @ vt for u, _, vt in (np.linalg.svd(a, full_matrices=False) for a in hosts)]
        self.mats = [self.put(a) for a in hosts]

    def ours(self):
        return xpmat.msign_many(self.mats)

    def anchor(self):
        return [msign(G) for G in self.mats]

    def err(self, out):
        return max(rel_err(o, r) for o, r in zip(out, self.refs, strict=True))


class MsignMany(TimeMixin, TrackMixin, _MsignMany):
    __doc__ = _MsignMany.__doc__


class PolarMemory(MemoryMixin, _Polar):
    __doc__ = "peakmem_ of " + _Polar.__doc__


class MsignMemory(MemoryMixin):
    """peakmem of ``msign(G)`` (n × n) beside the SVD polar ``U Vᵀ`` (as ``Msign``)."""

    params = [CPU_BACKENDS, sizes(256, 512, 1024)]

    def make(self, n):
        self.G = self.put(gaussian((n, n), seed=n))

    def ours(self):
        return xpmat.msign(self.G)

    def anchor(self):
        U, _, Vh = self.xp.linalg.svd(self.G, full_matrices=False)
        return U @ Vh


class OrthonormalizeMemory(MemoryMixin):
    """peakmem of ``orthonormalize(X)`` (m × 128) beside Householder ``qr`` (as ``Orthonormalize``)."""

    params = [CPU_BACKENDS, [16384] if FAST else [16384, 65536]]
    param_names = ["backend", "m"]

    def make(self, m):
        self.X = self.put(gaussian((m, 128), seed=1))

    def ours(self):
        return xpmat.orthonormalize(self.X)

    def anchor(self):
        return self.xp.linalg.qr(self.X)[0]
