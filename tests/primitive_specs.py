"""Every public primitive as a *spec*: how to build its inputs from a drawn matrix, and its
documented policy per input class (the table "Input policy" of ``docs/backends.md``).

Shared by the policy tests (``test_policy.py``: fixed draws, every backend) and the
property-based test (``test_properties.py``: hypothesis draws, NumPy and PyTorch by default).

A ``Draw`` fixes the shapes (``m``, ``n``, a batch), the spectrum of the main matrix argument
(random, zero, rank-deficient, repeated, tiny gaps) and a seed; a spec's ``build`` turns it into
float64 host arguments, and ``call`` runs the primitive on backend arrays (every option bound).

Policy fields:

- ``nan``: ``"member"`` — NaN/Inf in a batch member's input make *all* that member's floating
  outputs NaN; ``"ieee"`` — NaN/Inf propagate as arithmetic does (entries the bad entry does not
  reach stay exact), and every output holds a NaN; ``"error"`` — a ``ValueError`` naming the
  argument on eager arrays (on lazy ones the NaN propagates: no value can be read);
  ``"unread"`` — the values are not read (only the shape: ``nmf_online_init``).
- ``empty``: ``"empty"`` — zero-size input gives results of the right shapes (zeros where an
  axis is not empty); ``"error"`` — a ``ValueError`` naming the argument.
- ``degrees`` / ``out_degrees``: scale covariance.  Multiplying argument ``i`` by ``t**degrees[i]``
  multiplies floating output ``j`` by ``t**out_degrees[j]`` (``None``: not a scale-covariant
  output, e.g. a step count).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import xpmat as xm

SPECTRA = ("random", "zero", "rank_deficient", "repeated", "tiny_gap")


@dataclass(frozen=True)
class Draw:
    """Shapes, spectrum and seed of one example.  ``m``, ``n`` may be 0 (empty input)."""

    m: int
    n: int
    batch: tuple[int, ...] = ()
    spectrum: str = "random"
    seed: int = 0

    @property
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def values(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """``k`` non-negative singular values following ``spectrum`` (largest about 1)."""
        if k == 0:
            return np.zeros(0)
        if self.spectrum == "zero":
            return np.zeros(k)
        s = np.sort(rng.uniform(0.1, 1.0, k))[::-1].copy()
        if self.spectrum == "rank_deficient":
            s[max(1, k // 2):] = 0.0
        elif self.spectrum == "repeated":
            s[:] = 0.5
        elif self.spectrum == "tiny_gap" and k > 1:
            s[1] = s[0] * (1 - 1e-9)
        return s

    def _haar(self, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
        if rows == 0 or cols == 0:
            return np.zeros((*self.batch, rows, cols))
        q, r = np.linalg.qr(rng.standard_normal((*self.batch, rows, cols)))
        return q * np.where(np.diagonal(r, axis1=-2, axis2=-1) < 0, -1.0, 1.0)[..., None, :]

    def matrix(self, m: int, n: int, seed: int = 0) -> np.ndarray:
        """``U diag(s) Vᵀ`` of shape ``(*batch, m, n)`` with the drawn spectrum."""
        rng = np.random.default_rng((self.seed, seed))
        k = min(m, n)
        U, V = self._haar(m, k, rng), self._haar(n, k, rng)
        return (U * self.values(k, rng)) @ np.swapaxes(V, -1, -2)

    def sym(self, n: int, *, psd: bool = False, seed: int = 1) -> np.ndarray:
        """Symmetric ``Q diag(w) Qᵀ``; eigenvalue signs random unless ``psd``."""
        rng = np.random.default_rng((self.seed, seed))
        Q = self._haar(n, n, rng)
        w = self.values(n, rng)
        if not psd:
            w = w * np.where(np.arange(n) % 3 == 2, -1.0, 1.0)
        A = (Q * w) @ np.swapaxes(Q, -1, -2)
        return (A + np.swapaxes(A, -1, -2)) / 2

    def orthonormal(self, n: int, r: int, seed: int = 2) -> np.ndarray:
        return self._haar(n, r, np.random.default_rng((self.seed, seed)))

    def nonneg(self, m: int, n: int, seed: int = 3) -> np.ndarray:
        """A non-negative matrix: a product of non-negative factors of the spectrum's rank."""
        rng = np.random.default_rng((self.seed, seed))
        if self.spectrum == "zero":
            return np.zeros((*self.batch, m, n))
        r = 1 if self.spectrum in ("rank_deficient", "repeated") else max(1, min(m, n))
        return rng.random((*self.batch, m, r)) @ rng.random((*self.batch, r, n)) + (
            1e-9 if self.spectrum == "tiny_gap" else 0.0)

    def normal(self, *shape: int, seed: int = 4) -> np.ndarray:
        return np.random.default_rng((self.seed, seed)).standard_normal(shape)

    def positive(self, *shape: int, seed: int = 5) -> np.ndarray:
        return np.random.default_rng((self.seed, seed)).random(shape) + 0.1


@dataclass(frozen=True)
class Spec:
    name: str
    build: Callable[[Draw], tuple[np.ndarray, ...]]
    call: Callable[..., Any]
    nan: str
    empty: str
    degrees: tuple[float, ...]
    out_degrees: tuple[float | None, ...]
    #: arguments that must stay non-negative when a NaN/Inf or a scale is put in them
    nonneg: bool = False
    #: which argument gets the NaN / Inf (its index)
    bad_arg: int = 0
    #: outputs of a member that the NaN reaches under "member" (default: all floating ones)
    notes: str = ""
    needs: dict = field(default_factory=dict)


def _k(d: Draw) -> int:
    """A rank / sketch size that fits the drawn shape (at least 1 where possible)."""
    return max(1, min(2, d.m, d.n)) if min(d.m, d.n) > 0 else 1


def _tall(d: Draw) -> tuple[int, int]:
    return max(d.m, d.n), min(d.m, d.n)


def _specs() -> list[Spec]:
    s = Spec
    return [
        s("msign", lambda d: (d.matrix(d.m, d.n),), lambda G: xm.msign(G), "member", "empty",
          (1,), (0,)),
        s("polar", lambda d: (d.matrix(d.m, d.n),), lambda G: xm.polar(G), "member", "empty",
          (1,), (0, 1)),
        s("orthonormalize", lambda d: (d.matrix(*_tall(d)),), lambda X: xm.orthonormalize(X),
          "member", "empty", (1,), (0,)),
        s("power_iteration", lambda d: (d.sym(d.n),), lambda A: xm.power_iteration(A, iters=20, seed=0),
          "member", "error", (1,), (1, 0)),
        s("orthogonal_iteration",
          lambda d: (d.sym(d.n), d.orthonormal(d.n, min(d.n, 2))),
          lambda A, Q: xm.orthogonal_iteration(A, Q, iters=2), "member", "empty", (1, 0), (0, 1)),
        s("power_iter1", lambda d: (d.matrix(d.m, d.n), d.orthonormal(d.n, min(d.m, 2))),
          lambda B, Q: xm.power_iter1(B, Q), "member", "empty", (1, 0), (0, 1, 0)),
        s("randomized_svd", lambda d: (d.matrix(d.m, d.n),),
          lambda A: xm.randomized_svd(A, 1, seed=0, oversample=2), "member", "error", (1,), (0, 1, 0)),
        s("randomized_eigh", lambda d: (d.sym(d.n),),
          lambda A: xm.randomized_eigh(A, 1, seed=0, oversample=2), "member", "error", (1,), (1, 0)),
        s("nystrom_eigh", lambda d: (d.sym(d.n, psd=True),),
          lambda A: xm.nystrom_eigh(A, 1, seed=0, oversample=2), "member", "error", (1,), (1, 0)),
        s("lowrank_eigh_update",
          lambda d: (np.abs(d.normal(min(d.n, 2))) + 0.5, d.orthonormal(d.n, min(d.n, 2)),
                     d.matrix(d.n, 2)),
          lambda L, Q, C: xm.lowrank_eigh_update(L, Q, C, decay=0.9), "member", "empty",
          (1, 0, 0.5), (1, 0), bad_arg=2),
        s("lowrank_eigh_truncate", lambda d: (d.values(3, d.rng), d.orthonormal(d.n, 3)) if d.n >= 3
          else (d.values(d.n, d.rng), d.orthonormal(d.n, d.n)),
          lambda L, Q: xm.lowrank_eigh_truncate(L, Q, rtol=1e-3), "member", "empty", (1, 0), (1, 0)),
        s("reproject_moments",
          lambda d: (d.orthonormal(d.n, min(d.n, 2)), d.orthonormal(d.n, min(d.n, 2), seed=7),
                     d.normal(min(d.n, 2)), d.positive(min(d.n, 2))),
          lambda Qn, Qo, m, v: xm.reproject_moments(Qn, Qo, m, v), "ieee", "empty", (0, 0, 1, 1), (1, 1),
          bad_arg=2),
        s("lowrank_inv_root_apply",
          lambda d: (d.values(min(d.n, 2), d.rng) * 4, d.orthonormal(d.n, min(d.n, 2)),
                     d.matrix(d.n, max(d.m, 1))),
          lambda L, Q, g: xm.lowrank_inv_root_apply(L, Q, g), "member", "empty", (2, 0, 1), (0,)),
        s("ggt_eigh", lambda d: (d.matrix(d.n, max(1, d.m)),), lambda H: xm.ggt_eigh(H),
          "member", "empty", (1,), (2, 0)),
        s("inv_root", lambda d: (d.sym(d.n, psd=True),), lambda A: xm.inv_root(A, 4), "member", "empty",
          (1,), (-0.25,)),
        s("kron_rearrange", lambda d: (d.matrix(2 * d.m, 3 * d.n),),
          lambda H: xm.kron_rearrange(H, (2, 3), (H.shape[-2] // 2, H.shape[-1] // 3)),
          "ieee", "error", (1,), (1,)),
        s("nearest_kron", lambda d: (d.matrix(2 * d.m, 3 * d.n),),
          lambda H: xm.nearest_kron(H, (2, 3), (H.shape[-2] // 2, H.shape[-1] // 3)),
          "member", "error", (1,), (0.5, 0.5)),
        s("kron_matmul", lambda d: (d.matrix(d.m, 2), d.matrix(3, d.n, seed=8), d.normal(*d.batch, 2, d.n)),
          lambda A, B, X: xm.kron_matmul(A, B, X), "ieee", "empty", (1, 1, 1), (3,)),
        s("shampoo_factors", lambda d: (d.matrix(d.m, d.n),), lambda G: xm.shampoo_factors(G),
          "ieee", "empty", (1,), (2, 2, 0)),
        s("shampoo_kron", lambda d: (d.matrix(d.m, d.n),), lambda G: xm.shampoo_kron(xm.shampoo_factors(G)),
          "ieee", "empty", (1,), (1, 1)),
        s("i_divergence", lambda d: (d.nonneg(d.m, d.n), d.nonneg(d.m, d.n, seed=9) + 0.1),
          lambda C, M: xm.i_divergence(C, M), "ieee", "empty", (1, 1), (1,), nonneg=True),
        s("nmf_em_step", lambda d: (d.nonneg(d.m, d.n), d.positive(*d.batch, d.m, 2),
                                    d.positive(*d.batch, 2, d.n, seed=6)),
          lambda C, A, B: xm.nmf_em_step(C, A, B), "ieee", "empty", (1, 0.5, 0.5), (0.5, 0.5), nonneg=True),
        s("nmf", lambda d: (d.nonneg(d.m, d.n),), lambda C: xm.nmf(C, 2, iters=5, seed=0),
          "error", "empty", (1,), (0.5, 0.5, 1, None), nonneg=True),
        s("nmf_rank1", lambda d: (d.nonneg(d.m, d.n),), lambda C: xm.nmf_rank1(C), "error", "empty",
          (1,), (1, 0), nonneg=True),
        s("nmf_online_init", lambda d: (d.matrix(d.m, d.n),), lambda G: xm.nmf_online_init(G, 2, seed=0),
          "unread", "empty", (1,), (None, None)),
        s("nmf_online_step", lambda d: (d.matrix(d.m, d.n), d.positive(*d.batch, d.m, 2),
                                        d.positive(*d.batch, 2, d.n, seed=6)),
          lambda G, A, B: xm.nmf_online_step(G, A, B), "ieee", "empty", (1, 1, 1), (1, 1)),
        s("adafactor_factors", lambda d: (d.matrix(d.m, d.n),), lambda G: xm.adafactor_factors(G),
          "ieee", "empty", (1,), (2, 2, 0)),
        s("adafactor_second_moment", lambda d: (d.matrix(d.m, d.n),),
          lambda G: xm.adafactor_second_moment(xm.adafactor_factors(G, beta2=0.5)), "ieee", "empty",
          (1,), (2,)),
    ]


SPECS: dict[str, Spec] = {spec.name: spec for spec in _specs()}
