"""Nonnegative factorizations (``xpmat/nmf.py``: ``nmf``, ``nmf_em_step``, ``nmf_rank1``,
``i_divergence``, ``nmf_online_*``, ``adafactor_*``) against their anchors.

* ``NMFKL``: ``xpmat.nmf`` vs ``sklearn.decomposition.NMF(beta_loss="kullback-leibler",
  solver="mu", init="custom", tol=0)`` (CPU, NumPy), same data, same start, same number of
  iterations; ``track_divergence_ratio`` is our final I-divergence / sklearn's.
* ``IDivergence``, ``NMFEMStep``, ``NMFRank1``, ``NMFOnline``, ``AdafactorFactors``,
  ``AdafactorSecondMoment`` and the ``*Memory`` classes: the framework of ``common`` (ours /
  anchor / err, see each class's docstring).
"""

from __future__ import annotations

import warnings

import numpy as np

import xpmat
from xpmat import i_divergence, nmf

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
    poisson_counts,
    rel_err,
    sizes,
    sync,
    sync_all,
)

_NMF_SHAPES = sizes((200, 100), (1000, 500), (2000, 1000))
_GRAD_SHAPES = sizes((256, 1024), (768, 3072), (1536, 6144))


def _quiet_sklearn_nmf(C, rank, iters, W=None, H=None):
    from sklearn.decomposition import NMF

    init = "custom" if W is not None else "nndsvda"
    model = NMF(rank, beta_loss="kullback-leibler", solver="mu", init=init, max_iter=iters, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter by design
        W = model.fit_transform(C, W=W, H=H)
    return W, model.components_


class NMFKL(Benchmark):
    """200 EM iterations (20 in the fast profile), rank 20, 2000×1000 at the large size."""

    params = [BACKENDS, _NMF_SHAPES, ["float64", "float32"]]
    param_names = ["backend", "shape", "dtype"]
    timeout = 600
    rank = 20

    def make(self, shape, dtype):
        try:
            import sklearn.decomposition  # noqa: F401  (import outside the timed call)
        except ImportError as exc:
            raise SkipNotImplemented("scikit-learn not installed (the anchor)") from exc
        self.iters = 20 if FAST else 200
        m, n = shape
        rng = np.random.default_rng(1)
        self.C_host = poisson_counts(shape, self.rank, seed=0).astype(dtype)
        self.A0_host = (rng.random((m, self.rank)) + 0.1).astype(dtype)
        self.B0_host = (rng.random((self.rank, n)) + 0.1).astype(dtype)
        self.C, self.A0, self.B0 = (self.put(a, dtype) for a in (self.C_host, self.A0_host, self.B0_host))

    def first_calls(self, *params):
        nmf(self.C, self.rank, iters=2, init=(self.A0, self.B0))  # warm up (not 2 x 200 iterations)

    def ours(self):
        res = nmf(self.C, self.rank, iters=self.iters, init=(self.A0, self.B0))
        sync(res.A)
        return res

    def anchor(self):
        from sklearn.decomposition import NMF

        model = NMF(self.rank, beta_loss="kullback-leibler", solver="mu", init="custom",
                    max_iter=self.iters, tol=0)
        W = model.fit_transform(self.C_host, W=self.A0_host.copy(), H=self.B0_host.copy())
        return W, model.components_

    def time_nmf(self, backend, shape, dtype):
        self.ours()

    def time_sklearn_kl_mu_anchor(self, backend, shape, dtype):
        self.anchor()  # on the host (NumPy) whatever the row's backend

    def track_divergence_ratio(self, backend, shape, dtype):
        res = self.ours()
        W, H = self.anchor()
        ours = float(i_divergence(self.C_host.astype(np.float64), host(res.A) @ host(res.B)))
        theirs = float(i_divergence(self.C_host.astype(np.float64), W.astype(np.float64) @ H))
        return ours / theirs

    track_divergence_ratio.unit = "ours / sklearn"

    def track_gemm_fraction(self, backend, shape, dtype):
        """4 products m n r per EM step at GEMM rate (same dtype) / our time."""
        m, n = shape
        return gemm_fraction(self.ours, self.iters * 4 * 2 * m * n * self.rank, self.xp, self.dev,
                             dtype)

    track_gemm_fraction.unit = "of GEMM rate"


class NMFMemory(MemoryMixin):
    """peakmem of ``nmf`` (rank 20, 20 iterations) beside sklearn's KL-MU NMF (NumPy rows)."""

    params = [CPU_BACKENDS, _NMF_SHAPES]
    param_names = ["backend", "shape"]
    anchor_on = ("numpy",)

    def make(self, shape):
        rng = np.random.default_rng(1)
        C = poisson_counts(shape, 20, seed=24)
        A0, B0 = rng.random((shape[0], 20)) + 0.1, rng.random((20, shape[1])) + 0.1
        self.host = [x.astype(np.float32) for x in (C, A0, B0)]
        self.C, self.A0, self.B0 = (self.put(a) for a in (C, A0, B0))

    def ours(self):
        return xpmat.nmf(self.C, 20, iters=20, init=(self.A0, self.B0)).A

    def anchor(self):
        C, A0, B0 = self.host
        return _quiet_sklearn_nmf(C, 20, 20, A0.copy(), B0.copy())


class _IDivergence(Benchmark):
    """ours: ``i_divergence(C, M)`` (n × n, C, M > 0); anchor: ``scipy.special.kl_div(C, M).sum()``
    on NumPy, the plain ``Σ C log(C/M) − C + M`` elsewhere; err: the value."""

    params = [BACKENDS, sizes(256, 1024, 2048)]

    def make(self, n):
        rng = np.random.default_rng(25)
        C, M = rng.random((n, n)) + 0.1, rng.random((n, n)) + 0.1
        self.ref = np.sum(C * np.log(C / M) - C + M)
        self.C, self.M = self.put(C), self.put(M)

    def ours(self):
        return xpmat.i_divergence(self.C, self.M)

    def anchor(self):
        if self.backend == "numpy":
            import scipy.special

            return scipy.special.kl_div(self.C, self.M).sum()
        xp, C, M = self.xp, self.C, self.M
        return xp.sum(C * xp.log(C / M) - C + M)

    def err(self, out):
        return abs(float(host(out)) - self.ref) / abs(self.ref)


class IDivergence(TimeMixin, TrackMixin, _IDivergence):
    __doc__ = _IDivergence.__doc__


class IDivergenceMemory(MemoryMixin, _IDivergence):
    __doc__ = "peakmem_ of " + _IDivergence.__doc__


class _NMFEMStep(Benchmark):
    """ours: one ``nmf_em_step(C, A, B)`` (rank 20, Poisson C); anchor: one iteration of sklearn
    ``NMF(solver="mu", beta_loss="kullback-leibler")`` (NumPy rows); err: ``A B`` (float64 step)."""

    params = [BACKENDS, _NMF_SHAPES]
    param_names = ["backend", "shape"]
    anchor_on = ("numpy",)
    anchor_err = False

    def make(self, shape):
        rng = np.random.default_rng(26)
        C = poisson_counts(shape, 20, seed=24)
        A, B = rng.random((shape[0], 20)) + 0.1, rng.random((20, shape[1])) + 0.1
        A1, B1 = xpmat.nmf_em_step(C, A, B)
        self.ref = A1 @ B1
        self.host = [x.astype(np.float32) for x in (C, A, B)]
        self.C, self.A, self.B = (self.put(a) for a in (C, A, B))

    def ours(self):
        return xpmat.nmf_em_step(self.C, self.A, self.B)

    def anchor(self):
        C, A, B = self.host
        return _quiet_sklearn_nmf(C, 20, 1, A.copy(), B.copy())

    def err(self, out):
        return rel_err(host(out[0]) @ host(out[1]), self.ref)


class NMFEMStep(TimeMixin, TrackMixin, _NMFEMStep):
    __doc__ = _NMFEMStep.__doc__


class NMFEMStepMemory(MemoryMixin, _NMFEMStep):
    __doc__ = "peakmem_ of " + _NMFEMStep.__doc__


class _NMFRank1(Benchmark):
    """ours: closed-form ``nmf_rank1(C)``; anchor: sklearn KL-MU NMF with one component, 50
    iterations (NumPy rows); err: ``A B`` against float64."""

    params = [BACKENDS, _NMF_SHAPES]
    param_names = ["backend", "shape"]
    anchor_on = ("numpy",)
    anchor_err = False

    def make(self, shape):
        C = poisson_counts(shape, 20, seed=24)
        A, B = xpmat.nmf_rank1(C)
        self.ref = A[:, None] * B[None, :] if A.ndim == 1 else A @ B
        self.host = C.astype(np.float32)
        self.C = self.put(C)

    def ours(self):
        return xpmat.nmf_rank1(self.C)

    def anchor(self):
        return _quiet_sklearn_nmf(self.host, 1, 50)

    def err(self, out):
        A, B = host(out[0]), host(out[1])
        return rel_err(A[:, None] * B[None, :] if A.ndim == 1 else A @ B, self.ref)


class NMFRank1(TimeMixin, TrackMixin, _NMFRank1):
    __doc__ = _NMFRank1.__doc__


class NMFRank1Memory(MemoryMixin, _NMFRank1):
    __doc__ = "peakmem_ of " + _NMFRank1.__doc__


class _NMFOnline(Benchmark):
    """ours: ``nmf_online_step(G, A, B, beta=0.999)`` (AdamNMF, rank 4, G: m × 4m); anchor: Adam's
    dense ``v ← β v + (1 − β) G²`` (what it replaces); err: ``A B`` against the float64 step.
    Also ``time_nmf_online_init``."""

    params = [BACKENDS, _GRAD_SHAPES]
    param_names = ["backend", "shape"]
    anchor_err = False

    def make(self, shape):
        G = gaussian(shape, 27)
        A, B = xpmat.nmf_online_init(G, 4, seed=0)
        A1, B1 = xpmat.nmf_online_step(G, A, B, beta=0.999)
        self.ref = A1 @ B1
        self.G, self.A, self.B = (self.put(a) for a in (G, A, B))
        self.v = self.put(G * G)

    def ours(self):
        return xpmat.nmf_online_step(self.G, self.A, self.B, beta=0.999)

    def anchor(self):
        return 0.999 * self.v + 0.001 * (self.G * self.G)

    def err(self, out):
        return rel_err(host(out[0]) @ host(out[1]), self.ref)


class NMFOnline(TimeMixin, TrackMixin, _NMFOnline):
    __doc__ = _NMFOnline.__doc__

    def time_nmf_online_init(self, backend, shape):
        sync_all(xpmat.nmf_online_init(self.G, 4, seed=0))


class NMFOnlineMemory(MemoryMixin, _NMFOnline):
    __doc__ = "peakmem_ of " + _NMFOnline.__doc__


class _Adafactor(Benchmark):
    params = [BACKENDS, _GRAD_SHAPES]
    param_names = ["backend", "shape"]

    def make(self, shape):
        G0, G = gaussian(shape, 28), gaussian(shape, 29)
        st = xpmat.adafactor_factors(G, xpmat.adafactor_factors(G0, beta2=0.999), beta2=0.999)
        self.ref_state = st
        self.G, self.v = self.put(G), self.put(G0 * G0)
        self.state = xpmat.adafactor_factors(self.put(G0), beta2=0.999)


class _AdafactorFactors(_Adafactor):
    """ours: ``adafactor_factors(G, state)`` (G: m × 4m); anchor: Adam's dense
    ``v ← β v + (1 − β) G²`` (what it replaces); err: ``[a, s]`` against float64."""

    anchor_err = False

    def ours(self):
        return xpmat.adafactor_factors(self.G, self.state, beta2=0.999)

    def anchor(self):
        return 0.999 * self.v + 0.001 * (self.G * self.G)

    def err(self, out):
        return max(rel_err(out.a, self.ref_state.a), rel_err(out.s, self.ref_state.s))


class AdafactorFactors(TimeMixin, TrackMixin, _AdafactorFactors):
    __doc__ = _AdafactorFactors.__doc__


class AdafactorFactorsMemory(MemoryMixin, _AdafactorFactors):
    __doc__ = "peakmem_ of " + _AdafactorFactors.__doc__


class _AdafactorSecondMoment(_Adafactor):
    """ours: ``adafactor_second_moment(state)``; anchor: ``a sᵀ / (w · Σa)`` by hand; err: ``V̂``."""

    def make(self, shape):
        super().make(shape)
        self.state = xpmat.adafactor_factors(self.G, self.state, beta2=0.999)
        self.ref = xpmat.adafactor_second_moment(self.ref_state)

    def ours(self):
        return xpmat.adafactor_second_moment(self.state)

    def anchor(self):
        xp, st = self.xp, self.state
        return (st.a[:, None] * st.s[None, :]) / (st.weight * xp.sum(st.a))

    def err(self, out):
        return rel_err(out, self.ref)


class AdafactorSecondMoment(TimeMixin, TrackMixin, _AdafactorSecondMoment):
    __doc__ = _AdafactorSecondMoment.__doc__


class AdafactorSecondMomentMemory(MemoryMixin, _AdafactorSecondMoment):
    __doc__ = "peakmem_ of " + _AdafactorSecondMoment.__doc__
