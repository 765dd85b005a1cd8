"""The primitives the other bench files do not time, and the missing ``peakmem_`` / ``track_``.

Each primitive has two classes, ``backend × size`` (small, medium, large; small only with
``XPMAT_BENCH_FAST=1``), that put ours beside its anchor under the same method names:

* ``X.time_ours`` / ``X.time_anchor``: one call, device synchronized;
* ``X.track_err_ours`` / ``X.track_err_anchor``: the float32 result's error against a float64
  reference computed on the host (the anchor's only where it computes the same quantity);
* ``XMemory.peakmem_ours`` / ``XMemory.peakmem_anchor``: process peak RSS, CPU backends only;
  no warm-up call in its setup (``ru_maxrss`` would keep the other side's peak).

What "ours", "anchor" and "err" are is the first line of each class's docstring; the table in
``asv_benchmarks/README.md`` lists them all.  Inputs are float32 on the device (unless noted),
drawn once from seeded host RNGs; classes whose anchor is a full ``n × n`` eigendecomposition
stop at n = 2048 (a 4096² CPU ``eigh`` is minutes of asv time on 2 cores).

The ``*Memory`` / ``*Accuracy`` classes at the end add what the older classes of
``bench_orthogonalize``, ``bench_iteration``, ``bench_lowrank`` and ``bench_kron_nmf`` lack.
"""

from __future__ import annotations

import warnings

import numpy as np

import xpmat

from .bench_iteration import known_spectrum
from .common import BACKENDS, CPU_BACKENDS, FAST, gaussian, host, namespace, rel_err, sizes, sync, to_device

try:
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # older asv: NotImplementedError is what it skips on
    SkipNotImplemented = NotImplementedError


def _sync(out):
    """Synchronize on the arrays of a result (an array, a tuple or a NamedTuple of them)."""
    for x in out if isinstance(out, (tuple, list)) else (out,):
        if hasattr(x, "shape"):
            sync(x)


def _rank_err(L, ref):
    """Relative error of the top eigen/singular values (sorted descending on both sides)."""
    got = np.sort(host(L).ravel())[::-1][: len(ref)]
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


class _Base:
    """Setup shared by the classes below: ``make(n)`` builds the inputs, ``ours()`` / ``anchor()``
    return results, ``err(result)`` is a result's float64 error.  ``anchor_err = False`` where the
    anchor computes another quantity; ``anchor_on`` restricts the anchor to some backends
    (host-only libraries: scikit-learn, SciPy)."""

    param_names = ["backend", "n"]
    timeout = 300
    anchor_err = True
    anchor_on: tuple[str, ...] | None = None  # None: every backend
    warm = True  # warm-up calls in setup (not for peakmem_: ru_maxrss would count them)

    def setup(self, backend, n):
        try:
            self.xp, self.dev = namespace(backend)
        except NotImplementedError as exc:
            raise SkipNotImplemented(str(exc)) from exc
        self.backend = backend
        self.make(n)
        if self.warm:  # kernels, allocator, lazy imports
            _sync(self.ours())
            if self._anchor_here():
                _sync(self.anchor())

    def put(self, a, dtype="float32"):
        return to_device(np.ascontiguousarray(a), self.xp, self.dev, dtype)

    def _anchor_here(self):
        return self.anchor_on is None or self.backend in self.anchor_on

    def _need_anchor(self):
        if not self._anchor_here():
            raise SkipNotImplemented(f"{type(self).__name__}: anchor only on {self.anchor_on}")


class _Time:
    def time_ours(self, backend, n):
        _sync(self.ours())

    def time_anchor(self, backend, n):
        self._need_anchor()
        _sync(self.anchor())


class _Mem:
    """peakmem_ of ours and of the anchor; CPU backends only (it is the process's peak RSS,
    ``ru_maxrss``: setup does no warm-up call, so each figure holds one call of one side)."""

    warm = False

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.params = [CPU_BACKENDS, *cls.params[1:]]

    def _need_cpu(self):
        if self.backend not in CPU_BACKENDS:
            raise SkipNotImplemented("peakmem_ measures host RSS: CPU backends only")

    def peakmem_ours(self, backend, n):
        self._need_cpu()
        self.ours()

    def peakmem_anchor(self, backend, n):
        self._need_cpu()
        self._need_anchor()
        self.anchor()


class _Track:
    def track_err_ours(self, backend, n):
        return self.err(self.ours())

    def track_err_anchor(self, backend, n):
        if not self.anchor_err:
            raise SkipNotImplemented(f"{type(self).__name__}: the anchor computes another quantity")
        self._need_anchor()
        return self.err(self.anchor())

    track_err_ours.unit = "relative error"
    track_err_anchor.unit = "relative error"


# ----------------------------------------------------------------------------- orthogonalize


class NsSchedule:
    """ours: ``ns_schedule(schedule, steps)`` (host coefficients; no arrays, no backend)."""

    params = [["polar_express", "jordan"], [5, 10]]
    param_names = ["schedule", "steps"]

    def time_ns_schedule(self, schedule, steps):
        xpmat.ns_schedule(schedule, steps)


class _Polar(_Base):
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


class Polar(_Time, _Track, _Polar):
    __doc__ = _Polar.__doc__

    def time_scipy_polar_anchor(self, backend, n):
        if backend != "numpy":
            raise SkipNotImplemented("scipy.linalg.polar is NumPy-only")
        import scipy.linalg

        scipy.linalg.polar(self.G)


class PolarMemory(_Mem, _Polar):
    __doc__ = "peakmem_ of " + _Polar.__doc__


# ----------------------------------------------------------------------------- iteration

_RANK = 32


def _decaying(n, k=_RANK):
    """Spectrum with a clear top-k: ``10·0.9^i`` then a flat tail ``0.1·(1 − i/n)``."""
    return np.concatenate([10 * 0.9 ** np.arange(k), 0.1 * (1 - np.arange(n - k) / n)])


class _Eig(_Base):
    """Symmetric ``A = H diag(s) H`` with a known spectrum; err: the top eigenvalues' error."""

    params = [BACKENDS, sizes(256, 1024, 2048)]
    spectrum = staticmethod(_decaying)
    k = _RANK

    def make(self, n):
        s = self.spectrum(n)
        self.ref = np.sort(s)[::-1][: self.k]
        self.A = self.put(known_spectrum(n, s, symmetric=True, seed=5)[0])

    def anchor(self):
        return self.xp.linalg.eigh(self.A)

    def err(self, out):
        return _rank_err(out[0], self.ref)


class _PowerIteration(_Eig):
    """ours: ``power_iteration(A, tol=1e-6)`` (dominant pair, λ₁/λ₂ = 2); anchor: full ``eigh``;
    err: relative error of λ₁."""

    spectrum = staticmethod(lambda n: np.concatenate([[10.0], 5 * 0.99 ** np.arange(n - 1)]))
    k = 1

    def ours(self):
        return xpmat.power_iteration(self.A, seed=0)


class PowerIteration(_Time, _Track, _PowerIteration):
    __doc__ = _PowerIteration.__doc__


class PowerIterationMemory(_Mem, _PowerIteration):
    __doc__ = "peakmem_ of " + _PowerIteration.__doc__


class _RandomizedEigh(_Eig):
    """ours: ``randomized_eigh(A, 32, power_iters=2)``; anchor: full ``eigh``; err: top-32
    eigenvalues."""

    def ours(self):
        return xpmat.randomized_eigh(self.A, _RANK, seed=0)


class RandomizedEigh(_Time, _Track, _RandomizedEigh):
    __doc__ = _RandomizedEigh.__doc__


class RandomizedEighMemory(_Mem, _RandomizedEigh):
    __doc__ = "peakmem_ of " + _RandomizedEigh.__doc__


class _NystromEigh(_Eig):
    """ours: ``nystrom_eigh(A, 32, power_iters=2)`` of a PSD A (same cost as ``RandomizedEigh``);
    anchor: full ``eigh``; err: top-32 eigenvalues."""

    def ours(self):
        return xpmat.nystrom_eigh(self.A, _RANK, power_iters=2, seed=0)


class NystromEigh(_Time, _Track, _NystromEigh):
    __doc__ = _NystromEigh.__doc__


class NystromEighMemory(_Mem, _NystromEigh):
    __doc__ = "peakmem_ of " + _NystromEigh.__doc__


class _PowerIter1(_Base):
    """ours: ``power_iter1(B, Q)`` (n × n, r = 32); anchor: Householder ``qr(B Q)``, ``Bᵀ P``;
    err: ``‖P Rᵀ − (P Pᵀ B)*‖_F / ‖(P Pᵀ B)*‖_F`` (float64)."""

    params = [BACKENDS, sizes(256, 1024, 2048)]

    def make(self, n):
        B, Q = gaussian((n, n), 6), gaussian((n, _RANK), 7)
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


class PowerIter1(_Time, _Track, _PowerIter1):
    __doc__ = _PowerIter1.__doc__


class PowerIter1Memory(_Mem, _PowerIter1):
    __doc__ = "peakmem_ of " + _PowerIter1.__doc__


# ----------------------------------------------------------------------------- lowrank_eigh


def _basis(n, r, seed):
    return np.linalg.qr(gaussian((n, r), seed))[0]


class _LowRankEighTruncate(_Base):
    """ours: ``lowrank_eigh_truncate(L, Q, rank=32, rtol=0)`` (r = 64, some λ < 0); anchor:
    ``argsort`` + ``take`` + zeroing by hand; err: the kept eigenvalues."""

    params = [BACKENDS, sizes(512, 2048, 4096)]

    def make(self, n):
        L = np.linspace(10.0, -1.0, 64)[np.random.default_rng(8).permutation(64)]
        self.ref = np.sort(L)[::-1][:_RANK]
        self.L, self.Q = self.put(L), self.put(_basis(n, 64, 9))

    def ours(self):
        return xpmat.lowrank_eigh_truncate(self.L, self.Q, rank=_RANK, rtol=0.0)

    def anchor(self):
        xp = self.xp
        idx = xp.argsort(self.L, descending=True)[:_RANK]
        L = xp.take(self.L, idx)
        return xp.where(L > 0, L, xp.zeros_like(L)), xp.take(self.Q, idx, axis=1)

    def err(self, out):
        return rel_err(out[0], self.ref)


class LowRankEighTruncate(_Time, _Track, _LowRankEighTruncate):
    __doc__ = _LowRankEighTruncate.__doc__


class LowRankEighTruncateMemory(_Mem, _LowRankEighTruncate):
    __doc__ = "peakmem_ of " + _LowRankEighTruncate.__doc__


class _ReprojectMoments(_Base):
    """ours: ``reproject_moments(Q_new, Q_old, m, v)`` (r = 64); anchor: through the n-space,
    ``Q_newᵀ (Q_old m)`` and ``diag(Q_newᵀ (Q_old diag(v) Q_oldᵀ) Q_new)``; err: ``[m, v]``."""

    params = [BACKENDS, sizes(512, 2048, 4096)]

    def make(self, n):
        Qo = _basis(n, 64, 10)
        Qn = np.linalg.qr(Qo + 0.1 * gaussian((n, 64), 11))[0]
        m, v = gaussian(64, 12), np.abs(gaussian(64, 13))
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


class ReprojectMoments(_Time, _Track, _ReprojectMoments):
    __doc__ = _ReprojectMoments.__doc__


class ReprojectMomentsMemory(_Mem, _ReprojectMoments):
    __doc__ = "peakmem_ of " + _ReprojectMoments.__doc__


class _LowRankInvRootApply(_Base):
    """ours: ``lowrank_inv_root_apply(L, Q, g, p=2)`` (r = 64, g: n × 8); anchor: ``eigh`` of the
    explicit ``Q diag(L) Qᵀ``, pseudo-inverse root applied to g; err: ``u`` (float64)."""

    params = [BACKENDS, sizes(256, 1024, 2048)]

    def make(self, n):
        L, Q, g = np.logspace(0, -2, 64), _basis(n, 64, 14), gaussian((n, 8), 15)
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


class LowRankInvRootApply(_Time, _Track, _LowRankInvRootApply):
    __doc__ = _LowRankInvRootApply.__doc__


class LowRankInvRootApplyMemory(_Mem, _LowRankInvRootApply):
    __doc__ = "peakmem_ of " + _LowRankInvRootApply.__doc__


class _GgtEigh(_Base):
    """ours: ``ggt_eigh(H)`` (H: n × 32 history); anchor: thin SVD of H (``L = S²``); err: L."""

    params = [BACKENDS, sizes(1024, 8192, 32768)]

    def make(self, n):
        H = gaussian((n, _RANK), 16) * np.logspace(0, -2, _RANK)
        self.ref = np.linalg.svd(H, compute_uv=False) ** 2
        self.H = self.put(H)

    def ours(self):
        return xpmat.ggt_eigh(self.H)

    def anchor(self):
        U, S, _ = self.xp.linalg.svd(self.H, full_matrices=False)
        return S * S, U

    def err(self, out):
        return _rank_err(out[0], self.ref)


class GgtEigh(_Time, _Track, _GgtEigh):
    __doc__ = _GgtEigh.__doc__


class GgtEighMemory(_Mem, _GgtEigh):
    __doc__ = "peakmem_ of " + _GgtEigh.__doc__


# ----------------------------------------------------------------------------- kron


class _KronRearrange(_Base):
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


class KronRearrange(_Time, _Track, _KronRearrange):
    __doc__ = _KronRearrange.__doc__


class KronRearrangeMemory(_Mem, _KronRearrange):
    __doc__ = "peakmem_ of " + _KronRearrange.__doc__


class _KronMatmul(_Base):
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


class KronMatmul(_Time, _Track, _KronMatmul):
    __doc__ = _KronMatmul.__doc__


class KronMatmulMemory(_Mem, _KronMatmul):
    __doc__ = "peakmem_ of " + _KronMatmul.__doc__


class _Shampoo(_Base):
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


class ShampooFactors(_Time, _Track, _ShampooFactors):
    __doc__ = _ShampooFactors.__doc__


class ShampooFactorsMemory(_Mem, _ShampooFactors):
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


class ShampooKron(_Time, _Track, _ShampooKron):
    __doc__ = _ShampooKron.__doc__


class ShampooKronMemory(_Mem, _ShampooKron):
    __doc__ = "peakmem_ of " + _ShampooKron.__doc__


# ----------------------------------------------------------------------------- nmf

_NMF_SHAPES = sizes((200, 100), (1000, 500), (2000, 1000))
_GRAD_SHAPES = sizes((256, 1024), (768, 3072), (1536, 6144))


def _poisson(shape, r=20, seed=24):
    rng = np.random.default_rng(seed)
    m, n = shape
    return rng.poisson(rng.random((m, r)) @ rng.random((r, n))).astype(np.float64)


def _quiet_sklearn_nmf(C, rank, iters, W=None, H=None):
    from sklearn.decomposition import NMF

    init = "custom" if W is not None else "nndsvda"
    model = NMF(rank, beta_loss="kullback-leibler", solver="mu", init=init, max_iter=iters, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter by design
        W = model.fit_transform(C, W=W, H=H)
    return W, model.components_


class _IDivergence(_Base):
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


class IDivergence(_Time, _Track, _IDivergence):
    __doc__ = _IDivergence.__doc__


class IDivergenceMemory(_Mem, _IDivergence):
    __doc__ = "peakmem_ of " + _IDivergence.__doc__


class _NMFEMStep(_Base):
    """ours: one ``nmf_em_step(C, A, B)`` (rank 20, Poisson C); anchor: one iteration of sklearn
    ``NMF(solver="mu", beta_loss="kullback-leibler")`` (NumPy rows); err: ``A B`` (float64 step)."""

    params = [BACKENDS, _NMF_SHAPES]
    param_names = ["backend", "shape"]
    anchor_on = ("numpy",)
    anchor_err = False

    def make(self, shape):
        rng = np.random.default_rng(26)
        C = _poisson(shape)
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


class NMFEMStep(_Time, _Track, _NMFEMStep):
    __doc__ = _NMFEMStep.__doc__


class NMFEMStepMemory(_Mem, _NMFEMStep):
    __doc__ = "peakmem_ of " + _NMFEMStep.__doc__


class _NMFRank1(_Base):
    """ours: closed-form ``nmf_rank1(C)``; anchor: sklearn KL-MU NMF with one component, 50
    iterations (NumPy rows); err: ``A B`` against float64."""

    params = [BACKENDS, _NMF_SHAPES]
    param_names = ["backend", "shape"]
    anchor_on = ("numpy",)
    anchor_err = False

    def make(self, shape):
        C = _poisson(shape)
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


class NMFRank1(_Time, _Track, _NMFRank1):
    __doc__ = _NMFRank1.__doc__


class NMFRank1Memory(_Mem, _NMFRank1):
    __doc__ = "peakmem_ of " + _NMFRank1.__doc__


class _NMFOnline(_Base):
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


class NMFOnline(_Time, _Track, _NMFOnline):
    __doc__ = _NMFOnline.__doc__

    def time_nmf_online_init(self, backend, shape):
        _sync(xpmat.nmf_online_init(self.G, 4, seed=0))


class NMFOnlineMemory(_Mem, _NMFOnline):
    __doc__ = "peakmem_ of " + _NMFOnline.__doc__


class _Adafactor(_Base):
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


class AdafactorFactors(_Time, _Track, _AdafactorFactors):
    __doc__ = _AdafactorFactors.__doc__


class AdafactorFactorsMemory(_Mem, _AdafactorFactors):
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


class AdafactorSecondMoment(_Time, _Track, _AdafactorSecondMoment):
    __doc__ = _AdafactorSecondMoment.__doc__


class AdafactorSecondMomentMemory(_Mem, _AdafactorSecondMoment):
    __doc__ = "peakmem_ of " + _AdafactorSecondMoment.__doc__


# ----------------------------------------------------------------------------- complements
# peakmem_ for the classes of the older files (same inputs, same anchors), track_ for
# LowRankUpdate.  CPU backends only for peakmem_ (it is the process's peak RSS).


class _Memory(_Mem, _Base):
    params = [CPU_BACKENDS]


class MsignMemory(_Memory):
    """peakmem of ``msign(G)`` (n × n) beside the SVD polar ``U Vᵀ`` (as ``bench_orthogonalize.Msign``)."""

    params = [CPU_BACKENDS, sizes(256, 512, 1024)]

    def make(self, n):
        self.G = self.put(gaussian((n, n), seed=n))

    def ours(self):
        return xpmat.msign(self.G)

    def anchor(self):
        U, _, Vh = self.xp.linalg.svd(self.G, full_matrices=False)
        return U @ Vh


class OrthonormalizeMemory(_Memory):
    """peakmem of ``orthonormalize(X)`` (m × 128) beside Householder ``qr`` (as ``Orthonormalize``)."""

    params = [CPU_BACKENDS, [16384] if FAST else [16384, 65536]]
    param_names = ["backend", "m"]

    def make(self, m):
        self.X = self.put(gaussian((m, 128), seed=1))

    def ours(self):
        return xpmat.orthonormalize(self.X)

    def anchor(self):
        return self.xp.linalg.qr(self.X)[0]


class OrthogonalIterationMemory(_Memory):
    """peakmem of one ``orthogonal_iteration`` step (r = 64) beside the full ``eigh``."""

    params = [CPU_BACKENDS, sizes(256, 1024, 2048)]

    def make(self, n):
        self.A = self.put(known_spectrum(n, _decaying(n, 64), symmetric=True, seed=1)[0])
        self.Q = self.put(_basis(n, 64, 2))

    def ours(self):
        return xpmat.orthogonal_iteration(self.A, self.Q, iters=1)

    def anchor(self):
        return self.xp.linalg.eigh(self.A)


class RandomizedSVDMemory(_Memory):
    """peakmem of ``randomized_svd(A, 32)`` beside sklearn's (NumPy) / ``torch.svd_lowrank`` (torch)."""

    params = [CPU_BACKENDS, sizes(512, 2048, 4096)]

    def make(self, n):
        A = known_spectrum(n, _decaying(n), symmetric=False, seed=3)[0]
        self.host, self.A = A.astype(np.float32), self.put(A)

    def ours(self):
        return xpmat.randomized_svd(self.A, _RANK, oversample=10, power_iters=2, seed=0)

    def anchor(self):
        if self.backend == "numpy":
            from sklearn.utils.extmath import randomized_svd

            return randomized_svd(self.host, _RANK, n_oversamples=10, n_iter=2, random_state=0)
        import torch

        return torch.svd_lowrank(self.A, q=_RANK + 10, niter=2)


class InvRootMemory(_Memory):
    """peakmem of ``inv_root(A, 4, method="newton")`` beside ``method="eigh"`` (as ``InvRoot``)."""

    params = [CPU_BACKENDS, sizes(256, 512, 1024)]

    def make(self, n):
        q = _basis(n, n, 4)
        A = (q * np.logspace(0, -3, n)) @ q.T
        self.A = self.put((A + A.T) / 2)

    def ours(self):
        return xpmat.inv_root(self.A, 4, method="newton")

    def anchor(self):
        return xpmat.inv_root(self.A, 4, method="eigh")


class NMFMemory(_Memory):
    """peakmem of ``nmf`` (rank 20, 20 iterations) beside sklearn's KL-MU NMF (NumPy rows)."""

    params = [CPU_BACKENDS, _NMF_SHAPES]
    param_names = ["backend", "shape"]
    anchor_on = ("numpy",)

    def make(self, shape):
        rng = np.random.default_rng(1)
        C = _poisson(shape)
        A0, B0 = rng.random((shape[0], 20)) + 0.1, rng.random((20, shape[1])) + 0.1
        self.host = [x.astype(np.float32) for x in (C, A0, B0)]
        self.C, self.A0, self.B0 = (self.put(a) for a in (C, A0, B0))

    def ours(self):
        return xpmat.nmf(self.C, 20, iters=20, init=(self.A0, self.B0)).A

    def anchor(self):
        C, A0, B0 = self.host
        return _quiet_sklearn_nmf(C, 20, 20, A0.copy(), B0.copy())


class NearestKronMemory(_Memory):
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


class LowRankUpdateAccuracy(_Track, _Base):
    """track_ of one ``lowrank_eigh_update`` (r = 64, k = 1, EMA 0.99) beside ``eigh`` of the
    explicit float32 matrix (as ``bench_lowrank.LowRankUpdate``); err: the top-64 eigenvalues
    against float64 ``eigh`` of the explicit matrix."""

    params = [BACKENDS, sizes(512, 1024, 2048)]

    def make(self, n):
        Q, L, C = _basis(n, 64, 1), np.sort(np.abs(gaussian(64, 2)))[::-1], gaussian((n, 1), 3) / np.sqrt(n)
        A = 0.99 * (Q * L) @ Q.T + 0.01 * C @ C.T
        self.ref = np.linalg.eigvalsh(A)[::-1][:64]
        self.L, self.Q, self.C, self.A = (self.put(a) for a in (L, Q, C, A))

    def ours(self):
        return xpmat.lowrank_eigh_update(self.L, self.Q, self.C, decay=0.99)

    def anchor(self):
        return self.xp.linalg.eigh(self.A)

    def err(self, out):
        return _rank_err(out[0], self.ref)
