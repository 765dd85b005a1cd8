"""LRE, low-rank eigenbasis ([LRE 2025][lre-2025]): curvature kept as ``Q diag(L) Qᵀ``.

Per parameter, flattened to a vector ``x ∈ Rⁿ`` (split into blocks of at most ``max_dim``
entries, see *Granularity*), with gradient ``g`` and step ``t`` ("The algorithm", steps 1-5)::

    C, S   = correction vectors and weights           (step 2, "Curvatures")
             covariance  C = g,                 S = 1
             hutchinson  C = [Hz + z, Hz − z],  S = [¼, −¼]      (= sym(Hz zᵀ), z Rademacher)
             bfgs        C = [y, B s],          S = [1/yᵀs, −1/sᵀBs]   (s = z, y = H s;
                         B = σ I + Q L Qᵀ, the low-rank part holds B − σ I, σ = yᵀy/yᵀs once)
             sr1         C = y − B s,           S = 1/((y − B s)ᵀ s)
    L, Q   = lowrank_eigh_update(L, Q, C, signs=S, decay=β, rank=r, method=basis)   (step 3)
             basis="ggt": H ← [√β H[:, 1:], √(1−β) g] (a window of history_size), L, Q = ggt_eigh(H)
    keep   = L̂ > max(eig_rtol, r·eps) · max|L̂|,  L̂ = L / (1 − βᵗ)   (step 4: small/negative removed)
    inner="adam":          m, v ← C m, (C∘C) v  with C = Q_newᵀ Q_old       (step 5, reprojection)
                           ĝ = keep ∘ Qᵀ g;  m ← β₁ m + (1−β₁) ĝ;  v ← β₂ v + (1−β₂) ĝ²
                           u = −s η Q (keep ∘ m̂ / (√v̂ + ε))
    inner="precondition":  u = −s η Q (L̂ + ε)^(−1/p) Qᵀ g   (p = 2 covariance, 1 Hessian ones)
    u ← u − s η λ x                                             (decoupled weight decay)

*Granularity.* LRE 2025 runs on the whole model flattened to one vector.  Here each
parameter is its own vector (so the state is per parameter, as ``torch.optim`` expects), and
a parameter with more than ``max_dim`` entries is cut into ``nb = ceil(n / max_dim)``
contiguous blocks of equal size ``bs = ceil(n / nb)`` (the last one zero-padded), each with
its own rank-``r`` basis; the blocks are updated in one batched call.  Memory: ``Q`` holds
``n·r`` numbers per parameter (``r`` times a vector) whatever the blocking; blocking raises
the total rank to ``nb·r`` and keeps each eigenproblem small.  Parameters with ``n ≤ r`` get
a full (``n × n``) basis.  Nothing is routed to another optimizer.

The update lives in ``span(Q)``: the part of ``g`` outside the kept basis is dropped, as in
[LRE 2025][lre-2025] (the preconditioner is the pseudo-inverse root of the low-rank curvature).  As a
composition::

    skip_nonfinite(chain(eigenbasis_direction(...), add_decayed_weights(λ), scale_by_lr(s η)))

where the inner Adam is :func:`~xpmat.optim.transforms.adam_direction` in the basis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.lowrank_eigh import ggt_eigh, lowrank_eigh_update, lowrank_inv_root_apply, reproject_moments
from xpmat.optim._base import (
    check_betas,
    check_choice,
    check_common,
    check_int,
    check_real,
    host_steps,
    resolve_hyper,
    run_init,
    run_update,
    state_dtype_for,
    zeros_step,
)
from xpmat.optim.transforms import (
    AdamState,
    Transform,
    adam_direction,
    add_decayed_weights,
    chain,
    scale_by_lr,
    skip_nonfinite,
)
from xpmat.orthogonalize import orthonormalize

__all__ = ["BASES", "CURVATURES", "DEFAULTS", "HESSIAN_CURVATURES", "INNERS", "LREState", "State",
           "block_layout", "eigenbasis_direction", "init", "transform", "update"]

DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "rank": 16,
    "curvature": "covariance",
    "basis": "direct",
    "inner": "adam",
    "betas": (0.9, 0.999),
    "beta": 0.99,
    "eps": 1e-8,
    "eig_rtol": 1e-7,
    "history_size": 32,
    "max_dim": 4096,
    "update_freq": 1,
    "weight_decay": 0.0,
    "schedule": 1.0,
    "seed": 0,
    "state_dtype": None,
}

CURVATURES = ("covariance", "hutchinson", "bfgs", "sr1")
HESSIAN_CURVATURES = ("hutchinson", "bfgs", "sr1")
BASES = ("direct", "ggt", "randomized")
INNERS = ("adam", "precondition")
_QN_TOL = 1e-8  # a secant pair is skipped when |denominator| <= _QN_TOL · ‖a‖ ‖s‖


class LREState(NamedTuple):
    """Per-parameter LRE state (``nb`` blocks of ``bs`` entries, rank ``r``), with ``step`` and
    the non-finite counter.

    ``L`` (nb, r) eigenvalues, descending; ``Q`` (nb, bs, r) orthonormal eigenvectors (``L = 0``
    marks an empty slot); ``exp_avg``, ``exp_avg_sq`` (nb, r) Adam's moments in ``Q``'s
    coordinates (``inner="adam"``); ``history`` (nb, bs, history_size) the GGT window
    (``basis="ggt"``), newest column last; ``sigma`` (nb,) the BFGS base ``σ`` (the curvature
    is ``σ I + Q diag(L) Qᵀ``; 0 until the first pair sets ``σ = yᵀy / yᵀs``).
    """

    step: Any = None
    L: Any = None
    Q: Any = None
    exp_avg: Any = None
    exp_avg_sq: Any = None
    history: Any = None
    sigma: Any = None
    nonfinite_count: Any = None


class BasisState(NamedTuple):
    """The state of :func:`eigenbasis_direction` (the fields of :class:`LREState`)."""

    step: Any
    L: Any
    Q: Any
    exp_avg: Any = None
    exp_avg_sq: Any = None
    history: Any = None
    sigma: Any = None


State = LREState


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "lre")
    check_common(h)
    check_choice("curvature", h["curvature"], CURVATURES)
    check_choice("basis", h["basis"], BASES)
    check_choice("inner", h["inner"], INNERS)
    if h["basis"] == "ggt" and h["curvature"] != "covariance":
        raise ValueError(f"basis='ggt' keeps a history of gradients (a PSD Gram): it needs "
                         f"curvature='covariance', got {h['curvature']!r}")
    check_betas("betas", h["betas"])
    check_real("beta", h["beta"], 0.0, 1.0, high_open=True, none=True)
    for name in ("eps", "eig_rtol"):
        check_real(name, h[name])
    for name in ("rank", "history_size", "max_dim", "update_freq"):
        check_int(name, h[name], 1)
    check_int("seed", h["seed"], 0)
    return h


def _init_one(p: Any, i: int, h: dict[str, Any]) -> BasisState:
    """Empty curvature ``L = 0`` on a random orthonormal ``Q`` (see :func:`init`)."""
    xp, dev = _array.array_namespace(p), _array.device(p)
    dt = state_dtype_for(p, xp, h["state_dtype"])
    nb, bs = block_layout(math.prod(tuple(p.shape)), h["max_dim"])
    r = _rank(h, bs)
    L = xp.zeros((nb, r), dtype=dt, device=dev)
    Q = orthonormalize(_array.random_normal((nb, bs, r), seed=int(h["seed"]) + i, xp=xp,
                                            dtype=dt, dev=dev), method="householder", xp=xp)
    adam = h["inner"] == "adam"
    hist = xp.zeros((nb, bs, h["history_size"]), dtype=dt, device=dev) if h["basis"] == "ggt" else None
    sigma = xp.zeros((nb,), dtype=dt, device=dev) if h["curvature"] == "bfgs" else None
    return BasisState(zeros_step(xp, dev), L, Q, xp.zeros_like(L) if adam else None,
                      xp.zeros_like(L) if adam else None, hist, sigma)


def block_layout(n: int, max_dim: int) -> tuple[int, int]:
    """``(nb, bs)``: ``n`` entries cut into ``nb = ceil(n / max_dim)`` blocks of ``bs = ceil(n / nb)``."""
    nb = max(1, -(-n // max_dim))
    return nb, max(1, -(-n // nb))


def _rank(h: dict[str, Any], bs: int) -> int:
    r = min(h["rank"], bs)
    return min(r, h["history_size"]) if h["basis"] == "ggt" else r


def _blocks(x: Any, nb: int, bs: int, xp: Any, dt: Any) -> Any:
    """A parameter-shaped array -> (nb, bs), zero-padded at the end."""
    v = xp.reshape(_array.as_float(x, xp, dt), (-1,))
    pad = nb * bs - v.shape[0]
    if pad:
        v = xp.concat([v, xp.zeros((pad,), dtype=dt, device=_array.device(v))])
    return xp.reshape(v, (nb, bs))


def _unblock(u: Any, shape: tuple[int, ...], xp: Any) -> Any:
    n = math.prod(shape)
    v = xp.reshape(u, (-1,))
    return xp.reshape(v[:n] if v.shape[0] != n else v, shape)


def _probe_seed(seed: int, i: int, t: int) -> int:
    """One int per (seed, parameter, step): ``(A² seed + A i + t) mod 2⁶⁴``, A odd (golden ratio)."""
    a, mask = 0x9E3779B97F4A7C15, (1 << 64) - 1
    return (((int(seed) * a + i) & mask) * a + t) & mask


def _rademacher(shape: tuple[int, ...], seed: int, xp: Any, dt: Any, dev: Any) -> Any:
    """±1 entries drawn on the host (NumPy Generator of ``seed``), moved once."""
    host = _array.rng(seed).integers(0, 2, size=shape) * 2.0 - 1.0
    return xp.asarray(host, dtype=dt, device=dev)


def _correction(h: dict[str, Any], G: Any, s: BasisState, Z: Any, HZ: Any, xp: Any):
    """Step 2: correction vectors ``C`` (nb, bs, k), weights (nb, k), the EMA factor, ``σ``."""
    curv = h["curvature"]
    if curv == "covariance":
        return G[..., None], None, h["beta"], None
    if curv == "hutchinson":  # sym(Hz zᵀ) = ¼ [(a+b)(a+b)ᵀ − (a−b)(a−b)ᵀ]
        C = xp.stack([HZ + Z, HZ - Z], axis=-1)
        w = xp.asarray([0.25, -0.25], dtype=G.dtype, device=_array.device(G))
        return C, xp.broadcast_to(w, (G.shape[0], 2)), h["beta"], None
    Qt = _array.mT(s.Q, xp)
    BZ = (s.Q @ (s.L[..., :, None] * (Qt @ Z[..., None])))[..., 0]  # Q L Qᵀ s
    nz = xp.linalg.vector_norm(Z, axis=-1)
    zero = xp.zeros_like(nz)
    if curv == "bfgs":  # B = σ I + Q L Qᵀ; the low-rank part holds B − σ I
        ys, yy = xp.sum(HZ * Z, axis=-1), xp.sum(HZ * HZ, axis=-1)
        ok_y = ys > _QN_TOL * xp.sqrt(yy) * nz
        ys1 = xp.where(ok_y, ys, xp.ones_like(ys))
        sigma = xp.where((s.sigma == 0) & ok_y, yy / ys1, s.sigma)
        BZ = BZ + sigma[:, None] * Z
        sbs = xp.sum(BZ * Z, axis=-1)
        ok_b = sbs > _QN_TOL * xp.linalg.vector_norm(BZ, axis=-1) * nz
        wy = xp.where(ok_y, 1.0 / ys1, zero)
        wb = xp.where(ok_y & ok_b, -1.0 / xp.where(ok_b, sbs, xp.ones_like(sbs)), zero)
        return xp.stack([HZ, BZ], axis=-1), xp.stack([wy, wb], axis=-1), None, sigma
    R = HZ - BZ  # sr1
    rs = xp.sum(R * Z, axis=-1)
    ok = xp.abs(rs) > _QN_TOL * xp.linalg.vector_norm(R, axis=-1) * nz
    w = xp.where(ok, 1.0 / xp.where(ok, rs, xp.ones_like(rs)), zero)
    return R[..., None], w[..., None], None, None


def _debias(h: dict[str, Any], step: Any, dt: Any, xp: Any) -> Any:
    """``1 − βᵗ`` (``1 − β^min(t, k)`` for the GGT window); 1 for sums and quasi-Newton."""
    if h["beta"] is None or h["curvature"] in ("bfgs", "sr1"):
        return None
    t = xp.minimum(step, xp.asarray(float(h["history_size"]), dtype=step.dtype,
                                    device=_array.device(step))) if h["basis"] == "ggt" else step
    return xp.astype(1.0 - h["beta"] ** t, dt)


def _basis(G: Any, s: BasisState, Z: Any, HZ: Any, due: bool, i: int, h: dict[str, Any], xp: Any):
    """Steps 2-3: ``(L, Q, history, sigma)`` after folding this step's correction (when ``due``)."""
    L, Q, hist, sigma = s.L, s.Q, s.history, s.sigma
    if h["basis"] == "ggt":
        b = h["beta"]
        old = hist[..., 1:] if b is None else math.sqrt(b) * hist[..., 1:]
        hist = xp.concat([old, (G if b is None else math.sqrt(1.0 - b) * G)[..., None]], axis=-1)
    if not due:
        return L, Q, hist, sigma
    if h["basis"] == "ggt":
        L, Q = ggt_eigh(hist, rank=Q.shape[-1], xp=xp)
        return L, Q, hist, sigma
    C, w, decay, sig = _correction(h, G, s, Z, HZ, xp)
    seed = int(h["seed"]) + i if h["basis"] == "randomized" else None
    L, Q = lowrank_eigh_update(L, Q, C, signs=w, decay=decay, rank=Q.shape[-1], method=h["basis"],
                               seed=seed, xp=xp)
    return L, Q, hist, sigma if sig is None else sig


def _kept(L: Any, sigma: Any, step: Any, Q: Any, h: dict[str, Any], xp: Any) -> tuple[Any, Any]:
    """Step 4: the debiased eigenvalues ``L̂`` (plus σ for BFGS) and the mask of kept slots."""
    bc = _debias(h, step, L.dtype, xp)
    Lh = L if bc is None else L / bc
    if sigma is not None:  # BFGS: eigenvalues of σ I + Q L Qᵀ along Q
        Lh = Lh + sigma[:, None]
    top = xp.max(xp.abs(Lh), axis=-1, keepdims=True)
    # eigenvalues at rounding level of the (r + k)-sized eigenproblem are noise, not curvature:
    # Adam in the basis would blow their ~eps·top gradient components up to full-size steps
    rtol = max(h["eig_rtol"], Q.shape[-1] * float(xp.finfo(L.dtype).eps))
    return Lh, Lh > rtol * top


def _inner_adam(G: Any, s: BasisState, Q: Any, keep: Any, due: bool, h: dict[str, Any], xp: Any):
    """Step 5, ``inner="adam"``: Adam (:func:`~xpmat.optim.transforms.adam_direction`) on
    ``keep ∘ Qᵀ g``, its moments reprojected when the basis moved; ``(U, m, v)``."""
    m, v = s.exp_avg, s.exp_avg_sq
    if due:
        m, v = reproject_moments(Q, s.Q, m, v, xp=xp)
    gp = (_array.matmul_t(Q, G[..., None], xp))[..., 0]  # (nb, r)
    gp = xp.where(keep, gp, xp.zeros_like(gp))  # removed / empty slots see nothing
    o, a = adam_direction(gp, AdamState(s.step, m, v), xp, betas=h["betas"], eps=h["eps"])
    o = xp.where(keep, o, xp.zeros_like(o))
    return (Q @ o[..., None])[..., 0], a.exp_avg, a.exp_avg_sq


def _inner_precondition(G: Any, Lh: Any, keep: Any, Q: Any, sigma: Any, h: dict[str, Any], xp: Any) -> Any:
    """Step 5, ``inner="precondition"``: ``Q (L̂ + ε)^(−1/p) Qᵀ g`` (+ ``(g − Q Qᵀ g)/σ`` for BFGS)."""
    p_root = 2 if h["curvature"] == "covariance" else 1
    Lk = xp.where(keep, Lh, xp.zeros_like(Lh))
    U = lowrank_inv_root_apply(Lk, Q, G[..., None], p=p_root, eps=h["eps"], xp=xp)[..., 0]
    if sigma is not None:  # BFGS: the complement of span(Q) has curvature σ
        rest = G - (Q @ _array.matmul_t(Q, G[..., None], xp))[..., 0]
        pos = sigma > 0
        safe = xp.where(pos, sigma, xp.ones_like(sigma))
        inv = xp.where(pos, 1.0 / (safe + h["eps"]), xp.zeros_like(sigma))
        U = U + inv[:, None] * rest
    return U


def _probes(params: list[Any], states: list[BasisState], ts: list[Any], due: list[bool],
            hvp: Any, h: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Rademacher probes ``z`` (host draws from ``(seed, i, t)``) and ``H z`` (one ``hvp`` call)."""
    n = len(params)
    if h["curvature"] not in HESSIAN_CURVATURES or not any(due):
        return [None] * n, [None] * n
    Zs = [_rademacher(tuple(p.shape), _probe_seed(h["seed"], i, ts[i]), _array.array_namespace(p),
                      s.Q.dtype, _array.device(p))
          for i, (p, s) in enumerate(zip(params, states, strict=True))]
    HZs = list(hvp(list(Zs)))
    if len(HZs) != n:
        raise ValueError(f"hvp returned {len(HZs)} arrays for {n} parameters")
    return Zs, HZs


def _schedule(states: list[BasisState], params: list[Any], h: dict[str, Any]) -> tuple[list[Any], list[bool]]:
    """Host step counts (after this step) where the method needs them (probes, ``update_freq``:
    one transfer), and which parameters update their basis now."""
    hess, freq = h["curvature"] in HESSIAN_CURVATURES, h["update_freq"]
    ts: list[Any] = [None] * len(states)
    if (hess or freq > 1) and params:
        ts = [t + 1 for t in host_steps([s.step for s in states], _array.array_namespace(*params))]
    return ts, [t is None or (t - 1) % freq == 0 for t in ts]


def eigenbasis_direction(h: dict[str, Any], hvp: Callable[[list[Any]], list[Any]] | None = None) -> Transform:
    """LRE's direction (steps 2-5 of the module doc) on parameters of any shape, flattened into
    blocks; ``h``: checked hyper-parameters; ``hvp``: Hessian-vector products for the Hessian
    curvatures.  State :class:`BasisState`."""

    def update(grads, states, params):
        ts, due = _schedule(states, params, h)
        Zs, HZs = _probes(params, states, ts, due, hvp, h)
        ups, new = [], []
        for i, (g, s, p) in enumerate(zip(grads, states, params, strict=True)):
            xp = _array.array_namespace(g, p)
            nb, bs = s.Q.shape[0], s.Q.shape[1]
            if (nb, bs) != block_layout(math.prod(tuple(p.shape)), h["max_dim"]):
                raise ValueError(f"state[{i}] (blocks {nb}×{bs}) does not fit params[{i}] of shape "
                                 f"{tuple(p.shape)}: was it made with other max_dim?")
            G = _blocks(g, nb, bs, xp, s.Q.dtype)
            Z, HZ = (None, None) if Zs[i] is None else (_blocks(Zs[i], nb, bs, xp, s.Q.dtype),
                                                        _blocks(HZs[i], nb, bs, xp, s.Q.dtype))
            L, Q, hist, sigma = _basis(G, s, Z, HZ, due[i], i, h, xp)
            Lh, keep = _kept(L, sigma, s.step + 1, Q, h, xp)
            m = v = None
            if h["inner"] == "adam":
                U, m, v = _inner_adam(G, s, Q, keep, due[i], h, xp)
            else:
                U = _inner_precondition(G, Lh, keep, Q, sigma, h, xp)
            ups.append(_unblock(U, tuple(p.shape), xp))
            new.append(BasisState(s.step + 1, L, Q, m, v, hist, sigma))
        return ups, new

    return Transform(lambda params: [_init_one(p, i, h) for i, p in enumerate(params)], update, BasisState)


def transform(*, hvp: Callable[[list[Any]], list[Any]] | None = None, **hyper: Any) -> Transform:
    """LRE as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters: :func:`update`;
    ``hvp`` bound for the Hessian curvatures)."""
    h = _checked(hyper)
    if h["curvature"] in HESSIAN_CURVATURES and hvp is None:
        raise ValueError(f"curvature={h['curvature']!r} needs Hessian-vector products: pass "
                         "hvp=callable (torch class: step(closure) with a closure(backward=True))")
    if hvp is not None and not callable(hvp):
        raise TypeError(f"hvp must be a callable vs -> H vs, got {type(hvp).__name__}")
    return _build(h, hvp)


def _build(h: dict[str, Any], hvp: Any) -> Transform:
    return skip_nonfinite(chain(eigenbasis_direction(h, hvp), add_decayed_weights(h["weight_decay"]),
                                scale_by_lr(float(h["schedule"]) * float(h["lr"])), state=LREState))


def init(params: list[Any], **hyper: Any) -> list[LREState]:
    """Empty curvature: ``L = 0`` (every slot empty) on a random orthonormal ``Q`` (host draw,
    seed ``seed + i`` for ``params[i]``, the same on every backend); zero moments / history.

    ``Q`` is random rather than zero because an all-zero start makes the first eigenproblems
    block-diagonal with exact zero rows, on which LAPACK's float32 ``syevd`` (torch CPU) was
    measured to fail to converge (n = 2048, r = 64, third step).
    """
    return run_init(_build(_checked(hyper), None), params)


def update(grads: list[Any], state: list[LREState], params: list[Any], *,
           hvp: Callable[[list[Any]], list[Any]] | None = None,
           **hyper: Any) -> tuple[list[Any], list[LREState]]:
    """One LRE step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays
        Any shapes (each parameter is flattened, see the module doc), one Array API library.
    state : list of LREState
    hvp : callable, optional
        ``hvp(vs) -> Hvs``: the Hessian of the loss at ``params`` applied to a list of
        tangents ``vs`` (one per parameter, parameter shapes), returning a list of the same
        shapes.  Needed by the Hessian curvatures (``"hutchinson"``, ``"bfgs"``, ``"sr1"``),
        called once per step where the basis is updated; ignored for ``"covariance"``.
    **hyper
        ``lr`` (η ≥ 0); ``rank`` (r per block, an int ≥ 1); ``curvature`` (``"covariance"`` | ``"hutchinson"``
        | ``"bfgs"`` | ``"sr1"``); ``basis`` (``"direct"`` | ``"ggt"`` | ``"randomized"``);
        ``inner`` (``"adam"``: Adam in the basis, ``"precondition"``: ``Q L^(-1/p) Qᵀ g``);
        ``betas`` (Adam's β₁, β₂ in the basis); ``beta`` (EMA factor of the covariance and
        Hutchinson curvature, ``None`` = plain sum; bfgs / sr1 always sum); ``eps`` (Adam's ε,
        or the damping of ``L`` in ``"precondition"``); ``eig_rtol`` (eigenvalues
        ``≤ eig_rtol·max|L|`` are removed: LRE's ``eig_tol``); ``history_size`` (GGT
        window); ``max_dim`` (largest block); ``update_freq`` (the basis is updated every k
        steps); ``weight_decay`` (λ, decoupled, times s η); ``schedule`` (s); ``seed``
        (Hutchinson / quasi-Newton probes, randomized sketch); ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of LREState

    Notes
    -----
    [LRE 2025][lre-2025], "The algorithm" steps 2-5, "Curvatures" 1-4 and "Basis
    algorithms" 1-3; the primitives are :func:`xpmat.lowrank_eigh_update`,
    :func:`xpmat.ggt_eigh`, :func:`xpmat.reproject_moments` and
    :func:`xpmat.lowrank_inv_root_apply`.

    - The stored ``(L, Q)`` is the best rank-``r`` approximation of the (decayed) curvature
      sum, nothing clipped (indefinite quasi-Newton / Hutchinson estimates keep their negative
      eigenvalues); the ``eig_rtol`` cut (the rule of :func:`xpmat.lowrank_eigh_truncate`)
      is applied to the view the inner optimizer uses, not stored, so no shift accumulates.
    - ``L̂ = L / (1 − βᵗ)`` is the debiased EMA (as Adam's moments); with the GGT window of
      ``k`` columns the weights sum to ``1 − β^min(t, k)``.
    - Hessian curvatures draw a Rademacher ``z`` per parameter from ``(seed, i, t)`` on the
      host: these read the step counter (one host sync per step); so does
      ``update_freq > 1``.  BFGS / SR1 use the probe as the step ``s = z`` and ``y = H z``
      (LRE's Hessian-vector products in place of gradient differences).  One ``hvp``
      call covers all parameters, so the block ``(Hz)_b`` also holds ``Σ_{c≠b} H_bc z_c``:
      zero-mean noise for Hutchinson (the estimate stays unbiased for the diagonal block
      ``H_bb``), but exact secant pairs for BFGS / SR1 only where the Hessian is
      block-diagonal over parameters / blocks.  A pair with a non-positive ``yᵀs`` (BFGS)
      or a tiny SR1 denominator is skipped.
    - With ``update_freq = k > 1`` the curvature is updated only every k-th step (the
      corrections of the other steps are dropped, except the GGT window, which records every
      gradient); between updates the basis and the moments are not rotated.
    - A gradient with a NaN or ±Inf entry is skipped
      (:func:`~xpmat.optim.transforms.skip_nonfinite`): the basis update never sees it.
    - ``basis="randomized"`` sketches with a fixed test matrix per parameter (seed
      ``seed + i``), so no host read is needed; it equals ``"direct"`` up to rounding while
      ``r + k ≤ r + 10``.

    Backends: standard Array API only (eigh, QR, matmul); the probes and the randomized
    sketch are drawn on the host with NumPy and moved once.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import lre
    >>> p = [np.zeros(3)]
    >>> st = lre.init(p, rank=1, inner="precondition", beta=None)
    >>> u, st = lre.update([np.array([0.0, 3.0, 4.0])], st, p, rank=1, inner="precondition",
    ...                    beta=None, lr=1.0, eps=0.0)
    >>> print(st[0].L, np.round(u[0], 6))          # L = ‖g‖², u = −Q L^(-1/2) Qᵀ g = −g/‖g‖
    [[25.]] [-0.  -0.6 -0.8]
    """
    return run_update(transform(hvp=hvp, **hyper), grads, state, params)
