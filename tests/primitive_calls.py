"""One small call of every public primitive, shared by the ``jax.jit`` and torch ``meta`` tests.

``CALLS`` maps a case id to a ``Call``: the primitive's public name, a function of arrays only
(every option bound, as ``jax.jit`` wants them static) and the float64 host inputs.  Case ids
are the public name, or ``name[variant]`` for a second configuration of the same primitive.
``syncs`` says whether the call reads a device value on the host (``bool()`` / ``float()``)
on an eager array, as ``xpmat.backends.HOST_SYNCS`` and ``docs/backends.md`` document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import xpmat as xm


@dataclass(frozen=True)
class Call:
    name: str
    fn: Callable[..., Any]
    args: tuple[np.ndarray, ...]
    syncs: bool = False


_rng = np.random.default_rng(20260)


def _normal(*shape: int) -> np.ndarray:
    return _rng.standard_normal(shape)


def _spd(n: int, batch: tuple[int, ...] = ()) -> np.ndarray:
    M = _normal(*batch, n, n)
    return M @ np.swapaxes(M, -1, -2) / n + np.eye(n)


def _orthonormal(n: int, r: int) -> np.ndarray:
    return np.linalg.qr(_normal(n, r))[0]


_G = _normal(2, 12, 8)  # a batch of two wide-enough matrices
_TALL = _normal(2, 40, 4)  # m >= 4 r: "auto" takes CholeskyQR2
_SPD = _spd(10)
_Q = _orthonormal(10, 3)
_C = _rng.random((12, 9))
_A0, _B0 = _rng.random((12, 2)) + 0.1, _rng.random((2, 9)) + 0.1
_L = np.array([3.0, 2.0, 1.0])


def _calls() -> list[Call]:
    c = Call
    return [
        c("msign", lambda G: xm.msign(G), (_G,)),
        c("msign", lambda G: xm.msign(G, normalize="spectral_estimate", steps=3), (_G,)),
        c("msign", lambda G: xm.msign(G, normalize="aol", schedule="jordan"), (_G,)),
        c("msign", lambda G: xm.msign(G, gram=True), (_G,)),
        c("msign_many", lambda G, T: tuple(xm.msign_many([G, T[0, ...], G[1, ...]])), (_G, _TALL)),
        c("polar", lambda G: xm.polar(G), (_G,)),
        c("polar", lambda G: xm.polar(G, method="newton_schulz"), (_G,)),
        c("orthonormalize", lambda X: xm.orthonormalize(X), (_TALL,), syncs=True),
        c("orthonormalize", lambda X: xm.orthonormalize(X, method="householder"), (_TALL,)),
        c("power_iteration", lambda A: xm.power_iteration(A, seed=0), (_SPD,), syncs=True),
        c("power_iteration", lambda A: xm.power_iteration(A, seed=0, tol=None, iters=30), (_SPD,)),
        c("orthogonal_iteration", lambda A, Q: xm.orthogonal_iteration(A, Q, iters=3),
          (_SPD, _Q[:, :2]), syncs=True),
        c("orthogonal_iteration", lambda A, Q: xm.orthogonal_iteration(
            A, Q, iters=2, align_to=Q, ritz=False, method="householder"), (_SPD, _Q)),
        c("power_iter1", lambda B, Q: xm.power_iter1(B, Q), (_normal(40, 30), _normal(30, 2)),
          syncs=True),
        c("power_iter1", lambda B, Q: xm.power_iter1(B, Q, method="householder"), (_G, _normal(8, 2))),
        c("randomized_svd", lambda A: xm.randomized_svd(A, 2, seed=0), (_normal(60, 9),), syncs=True),
        c("randomized_svd", lambda A: xm.randomized_svd(A, 2, seed=0, method="householder"), (_G,)),
        c("randomized_eigh", lambda A: xm.randomized_eigh(A, 2, seed=0, oversample=0), (_SPD,),
          syncs=True),
        c("randomized_eigh", lambda A: xm.randomized_eigh(A, 2, seed=0, method="householder"), (_SPD,)),
        c("nystrom_eigh", lambda A: xm.nystrom_eigh(A, 2, seed=0, oversample=0), (_SPD,), syncs=True),
        c("nystrom_eigh", lambda A: xm.nystrom_eigh(A, 2, seed=0, oversample=0, method="householder"),
          (_SPD,)),
        c("lowrank_eigh_update", lambda L, Q, C: xm.lowrank_eigh_update(L, Q, C, decay=0.9),
          (_L, _Q, _normal(10, 2))),
        c("lowrank_eigh_update", lambda L, Q, C: xm.lowrank_eigh_update(
            L, Q, C, method="randomized", rank=3, seed=0), (_L, _Q, _normal(10, 2))),
        c("lowrank_eigh_update", lambda L, Q, C: xm.lowrank_eigh_update(  # a 60 x 13 sketch
            L, Q, C, method="randomized", rank=3, seed=0), (_L, _orthonormal(60, 3), _normal(60, 2)),
          syncs=True),
        c("lowrank_eigh_truncate", lambda L, Q: xm.lowrank_eigh_truncate(L, Q, rank=2), (_L, _Q)),
        c("reproject_moments", lambda Qn, Qo, m, v: xm.reproject_moments(Qn, Qo, m, v),
          (_Q, _orthonormal(10, 3), _L, _L)),
        c("lowrank_inv_root_apply", lambda L, Q, g: xm.lowrank_inv_root_apply(L, Q, g, eps=0.1),
          (_L, _Q, _normal(10, 4))),
        c("ggt_eigh", lambda H: xm.ggt_eigh(H, rank=3), (_normal(10, 5),)),
        c("inv_root", lambda A: xm.inv_root(A, 4), (_spd(6, (2,)),)),
        c("inv_root", lambda A: xm.inv_root(A, 2, method="newton"), (_spd(6, (2,)),), syncs=True),
        c("inv_root", lambda A: xm.inv_root(A, 4, method="newton", iters=30, return_info=True),
          (_spd(6, (2,)),), syncs=True),
        c("kron_rearrange", lambda H: xm.kron_rearrange(H, (2, 3), (4, 3)), (_normal(8, 9),)),
        c("nearest_kron", lambda H: xm.nearest_kron(H, (2, 3), (4, 3)), (_normal(8, 9),)),
        c("nearest_kron", lambda H: xm.nearest_kron(H, (2, 3), (4, 3), method="power", iters=5, seed=0),
          (_normal(8, 9),)),
        c("kron_matmul", lambda A, B, X: xm.kron_matmul(A, B, X),
          (_normal(3, 2), _normal(4, 5), _normal(2, 5))),
        c("shampoo_factors", lambda G: xm.shampoo_factors(G, beta=0.9), (_G,)),
        c("shampoo_kron", lambda G: xm.shampoo_kron(xm.shampoo_factors(G)), (_G,)),
        c("i_divergence", lambda C, M: xm.i_divergence(C, M), (_C, _A0 @ _B0)),
        c("nmf_em_step", lambda C, A, B: xm.nmf_em_step(C, A, B), (_C, _A0, _B0)),
        c("nmf", lambda C: xm.nmf(C, 2, iters=15, seed=0), (_C,), syncs=True),
        c("nmf", lambda C, A, B: xm.nmf(C, 2, iters=15, init=(A, B), tol=1e-4, check_every=5),
          (_C, _A0, _B0), syncs=True),
        c("nmf_rank1", lambda C: xm.nmf_rank1(C), (_C,), syncs=True),
        c("nmf_online_init", lambda G: xm.nmf_online_init(G, 2, seed=0), (_C,)),
        c("nmf_online_step", lambda G, A, B: xm.nmf_online_step(G, A, B, beta=0.5), (_C, _A0, _B0)),
        c("adafactor_factors", lambda G: xm.adafactor_factors(G, beta2=0.9), (_G,)),
        c("adafactor_second_moment", lambda G: xm.adafactor_second_moment(
            xm.adafactor_factors(G, xm.adafactor_factors(G))), (_G,)),
    ]


def _ids(calls: list[Call]) -> dict[str, Call]:
    out: dict[str, Call] = {}
    for call in calls:
        key, i = call.name, 1
        while key in out:
            i += 1
            key = f"{call.name}[{i}]"
        out[key] = call
    return out


CALLS: dict[str, Call] = _ids(_calls())

#: public names that are not array primitives (pure Python)
NOT_ARRAY_FUNCTIONS = {"ns_schedule"}
