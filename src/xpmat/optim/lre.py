"""LRE, low-rank eigenbasis ([LRE 2025][lre-2025]): curvature kept as ``Q diag(L) Qᵀ``.

Per parameter, flattened to a vector ``x ∈ Rⁿ`` (split into blocks of at most ``max_dim``
entries, see *Granularity*), with gradient ``g`` and step ``t`` ("The algorithm", steps 1-5)::

    C, S   = correction vectors and weights           (step 2, "Curvatures")
             covariance    C = g,                 S = 1
             hutchinson    C = [Hz + z, Hz − z],  S = [¼, −¼]      (= sym(Hz zᵀ), z Rademacher)
             bfgs          C = [y, B s],          S = [1/yᵀs, −1/sᵀBs]   (s = z, y = H s;
                           B = σ I + Q L Qᵀ, the low-rank part holds B − σ I, σ = yᵀy/yᵀs once)
             sr1           C = y − B s,           S = 1/((y − B s)ᵀ s)
             fisher        C = Gᵀ (the k per-sample gradients; g = their sum),  S = 1
             gauss_newton  C = Jᵀ (the k residuals' gradients; g = Jᵀ r),       S = 1
    L, Q   = fold C diag(S) Cᵀ into (L, Q)                                   (step 3, "Basis algorithms")
             direct / randomized  lowrank_eigh_update(L, Q, C, signs=S, decay=β, rank=r)
             nystrom              nystrom_eigh(β Q L Qᵀ + (1−β) C S Cᵀ, r)    (applied, not formed)
             ggt                  H ← [√β H[:, 1:], √(1−β) g] (a window), L, Q = ggt_eigh(H)
             full                 M ← β M + (1−β) C S Cᵀ (bs × bs, stored), L, Q = eigh(M)
             hebbian              Q ← Sanger's rule, AdamG steps, QR retraction; L = Rayleigh EMA
             random               Q fixed;                                  L = Rayleigh EMA
    keep   = L̂ > max(eig_rtol, r·eps) · max|L̂|,  L̂ = L / (1 − βᵗ)   (step 4: small/negative removed)
    x      = inner chain on ĝ = keep ∘ Qᵀ g, its state carried to the new basis by
             C = Q_newᵀ Q_old                                          (step 5, "Inner optimizers")
             e.g. "adam": m, v ← C m, (C∘C) v;  m ← β₁ m + (1−β₁) ĝ;  v ← β₂ v + (1−β₂) ĝ²;
                          x = m̂ / (√v̂ + ε)
                  "precondition": x = (L̂ + ε)^(−1/p) ĝ  (p = 2 covariance / fisher, 1 the others)
    u      = −s η Q (keep ∘ x) − s η λ x_param                        (decoupled weight decay)

The inner steps (:mod:`xpmat.optim._lre_inner`) and the bases
(:mod:`xpmat.optim._lre_basis`) live in internal modules; :func:`update` lists them all.

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
from collections import namedtuple
from collections.abc import Callable
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.optim._base import (
    block_layout,
    check_betas,
    check_choice,
    check_common,
    check_int,
    check_real,
    from_blocks,
    host_steps,
    refuse_tensor_hyper,
    resolve_hyper,
    run_init,
    run_update,
    state_dtype_for,
    step_size,
    to_blocks,
    zeros_step,
)
from xpmat.optim._lre_basis import EIGEN_BASES, PER_SAMPLE_CURVATURES, PSD_CURVATURES, fold, kept
from xpmat.optim._lre_inner import (
    HVP_STEPS,
    MOMENT_STEPS,
    ROOT_STEPS,
    STEPS,
    InnerContext,
    init_fields,
    run_chain,
)
from xpmat.optim._spec import MethodSpec
from xpmat.optim.transforms import (
    Transform,
    add_decayed_weights,
    chain,
    finite,
    scale_by_lr,
    skip_nonfinite,
)
from xpmat.orthogonalize import orthonormalize

__all__ = [
    "BASES",
    "CURVATURES",
    "DEFAULTS",
    "HESSIAN_CURVATURES",
    "INNERS",
    "PER_SAMPLE_CURVATURES",
    "LREState",
    "State",
    "eigenbasis_direction",
    "init",
    "inner_chain",
    "transform",
    "update",
]

SPEC = MethodSpec(
    name="lre",
    class_name="LRE",
    module=__name__,
    defaults={
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
        "ema_beta": 0.9,
        "norm_beta": 0.99,
        "clip_norm": None,
        "clip_value": None,
        "hebbian_lr": 0.05,
        "hebbian_betas": (0.9, 0.99),
        "weight_decay": 0.0,
        "schedule": 1.0,
        "seed": 0,
        "state_dtype": None,
    },
    types={"inner": "str | list[str]", "beta": "float | None", "clip_norm": "float | None",
           "clip_value": "float | None"},
    doc="LRE: gradient-covariance eigenbasis Q L Qᵀ (rank r), Adam inside the basis",
    demo={"lr": 0.03, "rank": 16},
    source="[LRE 2025][lre-2025]",
    summary="""\
LRE, low-rank eigenbasis ([LRE 2025][lre-2025]) over :mod:`xpmat.optim.lre`: each
parameter (flattened, blocks of at most ``max_dim``) keeps a curvature as ``Q diag(L) Qᵀ``
and runs an inner optimizer (a chain, Adam by default) on the rank-``r`` projected gradient
``Qᵀ g``, or preconditions by ``Q L^(-1/p) Qᵀ``.

Closures.  ``curvature="covariance"`` uses gradients only (``step()`` after
``backward()``).  The Hessian curvatures (``"hutchinson"``, ``"bfgs"``, ``"sr1"``) need
``step(closure)`` with a closure that takes ``backward``: ``closure(backward=False)``
must return the loss without calling ``backward`` (the optimizer differentiates it with
``create_graph=True`` and sets ``p.grad``); a plain closure that calls
``loss.backward(create_graph=True)`` works too.  One Hessian-vector product per param
group and step (``torch.autograd.grad`` on the gradients), on steps where the basis is
updated (every step with ``"hutchinson_adam"`` / ``"full_bfgs_adam"``).  The per-sample
curvatures need ``step(closure)`` with a closure that returns a tensor of ``k``
per-sample values built from the parameters, without calling ``backward`` (it is called
as ``closure(backward=False)`` when it takes ``backward``, else ``closure()``):
``"fisher"``: the per-sample losses ``ℓ_j`` (``reduction="none"``); the objective is
``Σ_j ℓ_j``, ``p.grad`` = ``Σ_j ∇ℓ_j``, the correction ``GᵀG``.  ``"gauss_newton"``: the
residuals ``r_j``; the objective is ``½ Σ_j r_j²``, ``p.grad`` = ``Jᵀ r``, the correction
``JᵀJ``.  The rows of ``G`` / ``J`` (one per sample, over every parameter) come from one
vectorized backward pass (``torch.autograd.grad(..., is_grads_batched=True)``, torch's
``vmap`` over the backward, as LRE computes them); they cost ``k`` times a gradient in
memory.  ``step`` returns the objective (detached).  One closure serves every group, so
Hessian and per-sample curvatures, or fisher and gauss_newton, cannot be mixed.
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
    Adam or Lion in the basis move each block by about ``lr·√rank`` a step (elementwise
    Adam: ``lr·√n``), so LRE takes an ``lr`` some 10-30 times AdamW's; Lion about a
    third of Adam's (docs: the LRE section of the optimizers page).
rank : int >= 1
    Per block (``basis="full"``: the block size).  ``curvature="fisher"`` /
    ``"gauss_newton"`` need a rank that holds the per-sample gradients' large directions:
    below it their basis follows per-sample noise rather than the mean gradient.
curvature : {"covariance", "hutchinson", "bfgs", "sr1", "fisher", "gauss_newton"}
basis : {"direct", "ggt", "randomized", "nystrom", "hebbian", "random", "full"}
inner : str or list of str
    A chain run in order: ``"adam"``, ``"lion"``, ``"full_adam"``, ``"hutchinson_adam"``,
    ``"full_bfgs_adam"``, ``"precondition"``, ``"inverse"``, ``"ema"``,
    ``"normalize_by_ema"``, ``"cautious"``, ``"clip_norm"``, ``"clip_value"``.
betas : (float, float) in [0, 1)
    The inner adam / lion / full_adam / hutchinson_adam / full_bfgs_adam.
beta : float in [0, 1) or None
    EMA of the curvature (None: a sum; bfgs / sr1 always sum).
eps, eig_rtol : float >= 0
history_size, max_dim, update_freq : int >= 1
ema_beta, norm_beta : float in [0, 1)
    The inner ``"ema"`` and ``"normalize_by_ema"``.
clip_norm, clip_value : float > 0 or None
    Clip the inner update (appended to the chain when set and not named in it).
hebbian_lr : float >= 0
hebbian_betas : (float, float) in [0, 1)
    ``basis="hebbian"``: step size and AdamG moments of the basis update.
weight_decay : float >= 0 or 1-element tensor
seed : int >= 0
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults

CURVATURES = ("covariance", "hutchinson", "bfgs", "sr1", *PER_SAMPLE_CURVATURES)
HESSIAN_CURVATURES = ("hutchinson", "bfgs", "sr1")
BASES = ("direct", "ggt", "randomized", "nystrom", "hebbian", "random", "full")
INNERS = tuple(STEPS)


class LREState(NamedTuple):
    """Per-parameter LRE state (``nb`` blocks of ``bs`` entries, rank ``r``), with ``step`` and
    the non-finite counter; a field is None where the settings do not use it.

    ``L`` (nb, r) eigenvalues, descending (Rayleigh quotients for ``basis="hebbian"`` /
    ``"random"``); ``Q`` (nb, bs, r) orthonormal basis (``L = 0`` marks an empty slot);
    ``history`` (nb, bs, history_size) the GGT window, newest column last; ``sigma`` (nb,)
    the BFGS base ``σ`` (the curvature is ``σ I + Q diag(L) Qᵀ``; 0 until the first pair sets
    ``σ = yᵀy / yᵀs``); ``curvature_matrix`` (nb, bs, bs) the stored matrix of
    ``basis="full"``; ``hebbian_momentum`` (nb, bs, r), ``hebbian_sq`` (nb,) the AdamG
    moments of ``basis="hebbian"``.  The inner optimizers' fields, in ``Q``'s coordinates:
    ``exp_avg`` (nb, r) the first moment (adam, lion, full_adam, hutchinson_adam,
    full_bfgs_adam); ``exp_avg_sq`` (nb, r) the diagonal second moment (adam,
    hutchinson_adam); ``exp_avg_outer`` (nb, r, r) full_adam's; ``bfgs_matrix`` (nb, r, r),
    ``bfgs_scale`` (nb,) full_bfgs_adam's ``B`` and ``σ``; ``momentum_buffer`` (nb, r) "ema";
    ``update_avg`` (nb, r) "normalize_by_ema".
    """

    step: Any = None
    L: Any = None
    Q: Any = None
    exp_avg: Any = None
    exp_avg_sq: Any = None
    history: Any = None
    sigma: Any = None
    curvature_matrix: Any = None
    hebbian_momentum: Any = None
    hebbian_sq: Any = None
    exp_avg_outer: Any = None
    bfgs_matrix: Any = None
    bfgs_scale: Any = None
    momentum_buffer: Any = None
    update_avg: Any = None
    nonfinite_count: Any = None


_BASIS_FIELDS = [f for f in LREState._fields if f != "nonfinite_count"]
BasisState = namedtuple("BasisState", _BASIS_FIELDS, defaults=(None,) * len(_BASIS_FIELDS))
BasisState.__doc__ = "The state of :func:`eigenbasis_direction` (the fields of :class:`LREState`)."

State = LREState


# ----------------------------------------------------------------------------- settings
def inner_chain(h: dict[str, Any]) -> tuple[str, ...]:
    """The inner steps of checked hyper-parameters ``h``: ``inner`` as a tuple (a single name
    is a chain of one), then ``"clip_norm"`` / ``"clip_value"`` when their threshold is set
    and the chain does not name them."""
    names = (h["inner"],) if isinstance(h["inner"], str) else tuple(h["inner"])
    for clip in ("clip_norm", "clip_value"):
        if h[clip] is not None and clip not in names:
            names += (clip,)
    return names


def _check_inner(h: dict[str, Any]) -> None:
    inner = h["inner"]
    if not isinstance(inner, str) and not (isinstance(inner, (list, tuple)) and inner
                                           and all(isinstance(n, str) for n in inner)):
        raise ValueError(f"inner must be one of {INNERS} or a non-empty list of them, got {inner!r}")
    names = (inner,) if isinstance(inner, str) else tuple(inner)
    for n in names:
        check_choice("inner", n, INNERS)
        if names.count(n) > 1:
            raise ValueError(f"inner: {n!r} appears twice in {list(names)}")
    for group, why in ((MOMENT_STEPS, "they share the first moment exp_avg"),
                       (ROOT_STEPS, "both divide by the eigenvalues")):
        both = [n for n in names if n in group]
        if len(both) > 1:
            raise ValueError(f"inner: at most one of {group} ({why}), got {both}")
    for n in names:
        if n in HVP_STEPS and h["curvature"] not in HESSIAN_CURVATURES:
            raise ValueError(f"inner={n!r} reuses the Hessian-vector products of a Hessian curvature "
                             f"{HESSIAN_CURVATURES}: got curvature={h['curvature']!r}")


def _check_combination(h: dict[str, Any]) -> None:
    curv, basis = h["curvature"], h["basis"]
    if basis == "ggt" and curv != "covariance":
        raise ValueError(f"basis='ggt' keeps a history of gradients (a PSD Gram): it needs "
                         f"curvature='covariance', got {curv!r}")
    if basis == "nystrom" and curv not in PSD_CURVATURES:
        raise ValueError(f"basis='nystrom' needs a positive semi-definite curvature {PSD_CURVATURES}, "
                         f"got curvature={curv!r}")
    if curv in ("bfgs", "sr1") and basis not in EIGEN_BASES:
        raise ValueError(f"curvature={curv!r} updates the stored curvature Q L Qᵀ along s: it needs "
                         f"a basis that holds it, one of {EIGEN_BASES}; got basis={basis!r}")


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "lre")
    check_common(h)
    check_choice("curvature", h["curvature"], CURVATURES)
    check_choice("basis", h["basis"], BASES)
    _check_inner(h)
    _check_combination(h)
    refuse_tensor_hyper(h, ("betas",), "lre", "its inner optimizers (sign, Adam, full-matrix Adam) "
                        "take their coefficients as numbers")
    check_betas("betas", h["betas"])
    check_betas("hebbian_betas", h["hebbian_betas"])
    for name in ("beta", "ema_beta", "norm_beta"):
        check_real(name, h[name], 0.0, 1.0, high_open=True, none=name == "beta")
    for name in ("eps", "eig_rtol", "hebbian_lr"):
        check_real(name, h[name])
    for name in ("clip_norm", "clip_value"):
        check_real(name, h[name], low_open=True, none=True)
    for name in ("rank", "history_size", "max_dim", "update_freq"):
        check_int(name, h[name], 1)
    check_int("seed", h["seed"], 0)
    return h


# ----------------------------------------------------------------------------- layout, init
def _rank(h: dict[str, Any], bs: int) -> int:
    if h["basis"] == "full":
        return bs
    r = min(h["rank"], bs)
    return min(r, h["history_size"]) if h["basis"] == "ggt" else r


def _init_one(p: Any, i: int, h: dict[str, Any]) -> BasisState:
    """Empty curvature ``L = 0`` on a random orthonormal ``Q`` (see :func:`init`)."""
    xp, dev = _array.array_namespace(p), _array.device(p)
    dt = state_dtype_for(p, xp, h["state_dtype"])
    nb, bs = block_layout(math.prod(tuple(p.shape)), h["max_dim"])
    r = _rank(h, bs)
    L = xp.zeros((nb, r), dtype=dt, device=dev)
    Q = orthonormalize(_array.random_normal((nb, bs, r), seed=int(h["seed"]) + i, xp=xp,
                                            dtype=dt, dev=dev), method="householder", xp=xp)

    def zeros(on: bool, *shape: int) -> Any:
        return xp.zeros(shape, dtype=dt, device=dev) if on else None

    basis = h["basis"]
    return BasisState(step=zeros_step(xp, dev), L=L, Q=Q,
                      history=zeros(basis == "ggt", nb, bs, h["history_size"]),
                      sigma=zeros(h["curvature"] == "bfgs", nb),
                      curvature_matrix=zeros(basis == "full", nb, bs, bs),
                      hebbian_momentum=zeros(basis == "hebbian", nb, bs, r),
                      hebbian_sq=zeros(basis == "hebbian", nb),
                      **init_fields(inner_chain(h), nb, r, xp, dt, dev))


def _column_blocks(C: Any, i: int, n: int, nb: int, bs: int, xp: Any, dt: Any) -> Any:
    """Correction vectors ``C`` (n, k) -> (nb, bs, k), zero-padded rows; a non-finite block
    becomes zero (the step is skipped, see :func:`transform`)."""
    if C.ndim != 2 or C.shape[0] != n:
        raise ValueError(f"corrections[{i}] must be (n, k) with n = {n} (params[{i}] flattened), "
                         f"got shape {tuple(C.shape)}")
    C = _array.as_float(C, xp, dt)
    C = xp.where(finite(C, xp), C, xp.zeros_like(C))
    pad = nb * bs - n
    if pad:
        C = xp.concat([C, xp.zeros((pad, C.shape[1]), dtype=dt, device=_array.device(C))], axis=0)
    return xp.reshape(C, (nb, bs, C.shape[1]))


# ----------------------------------------------------------------------------- per step
def _probe_seed(seed: int, i: int, t: int) -> int:
    """One int per (seed, parameter, step): ``(A² seed + A i + t) mod 2⁶⁴``, A odd (golden ratio)."""
    a, mask = 0x9E3779B97F4A7C15, (1 << 64) - 1
    return (((int(seed) * a + i) & mask) * a + t) & mask


def _rademacher(shape: tuple[int, ...], seed: int, xp: Any, dt: Any, dev: Any) -> Any:
    """±1 entries drawn on the host (NumPy Generator of ``seed``), moved once."""
    host = _array.rng(seed).integers(0, 2, size=shape) * 2.0 - 1.0
    return xp.asarray(host, dtype=dt, device=dev)


def _probes(params: list[Any], states: list[BasisState], ts: list[Any], due: list[bool],
            hvp: Any, h: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Rademacher probes ``z`` (host draws from ``(seed, i, t)``) and ``H z`` (one ``hvp`` call),
    on steps that update a basis, every step when an inner step reads them."""
    n = len(params)
    every = any(name in HVP_STEPS for name in inner_chain(h))
    if h["curvature"] not in HESSIAN_CURVATURES or not (any(due) or every):
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


def _bfgs_complement(G: Any, Q: Any, sigma: Any, eps: float, xp: Any) -> Any:
    """``(g − Q Qᵀ g) / (σ + ε)``: the Newton step on the complement of ``span(Q)``, whose BFGS
    curvature is ``σ`` (zero while ``σ`` is unset)."""
    rest = G - (Q @ _array.matmul_t(Q, G[..., None], xp))[..., 0]
    pos = sigma > 0
    inv = xp.where(pos, 1.0 / (xp.where(pos, sigma, xp.ones_like(sigma)) + eps), xp.zeros_like(sigma))
    return inv[:, None] * rest


def _probe_blocks(probe: tuple[Any, Any], nb: int, bs: int, xp: Any, dt: Any) -> tuple[Any, Any]:
    """``z`` and ``H z`` as (nb, bs) blocks; a non-finite ``H z`` (a diverging model) makes
    both zero, so that no curvature pair is taken this step."""
    Z, HZ = (to_blocks(v, nb, bs, xp, dt) for v in probe)
    ok = finite(HZ, xp)
    return xp.where(ok, Z, xp.zeros_like(Z)), xp.where(ok, HZ, xp.zeros_like(HZ))


def _project(Q: Any, V: Any, keep: Any, xp: Any) -> Any:
    """``keep ∘ Qᵀ v`` (nb, r) for blocks ``V`` (nb, bs); None stays None."""
    if V is None:
        return None
    vp = _array.matmul_t(Q, V[..., None], xp)[..., 0]
    return xp.where(keep, vp, xp.zeros_like(vp))


_BASIS_FIELDS_NEEDED = {"ggt": ("history",), "full": ("curvature_matrix",),
                        "hebbian": ("hebbian_momentum", "hebbian_sq")}


def _check_state(i: int, s: BasisState, p: Any, h: dict[str, Any]) -> None:
    """``state[i]`` fits ``params[i]`` and holds every field these settings use."""
    nb, bs = s.Q.shape[0], s.Q.shape[1]
    if (nb, bs) != block_layout(math.prod(tuple(p.shape)), h["max_dim"]):
        raise ValueError(f"state[{i}] (blocks {nb}×{bs}) does not fit params[{i}] of shape "
                         f"{tuple(p.shape)}: was it made with other max_dim?")
    names = inner_chain(h)
    need = [*_BASIS_FIELDS_NEEDED.get(h["basis"], ()), *(("sigma",) if h["curvature"] == "bfgs" else ()),
            *(f for name in names for f in STEPS[name].fields)]
    missing = [f for f in need if getattr(s, f) is None]
    if missing:
        raise ValueError(f"state[{i}] lacks {missing} (basis={h['basis']!r}, curvature="
                         f"{h['curvature']!r}, inner={list(names)}): was it made with other settings?")


def _step_one(i: int, g: Any, s: BasisState, p: Any, probe: tuple[Any, Any], C: Any, due: bool,
              h: dict[str, Any]) -> tuple[Any, BasisState]:
    """Steps 2-5 for ``params[i]``: the update (parameter-shaped) and the new state."""
    xp = _array.array_namespace(g, p)
    _check_state(i, s, p, h)
    nb, bs = s.Q.shape[0], s.Q.shape[1]
    n = math.prod(tuple(p.shape))
    dt = s.Q.dtype
    G = to_blocks(g, nb, bs, xp, dt)
    Z, HZ = (None, None) if probe[0] is None else _probe_blocks(probe, nb, bs, xp, dt)
    Cb = None if C is None else _column_blocks(C, i, n, nb, bs, xp, dt)
    b = fold(G, s, Z, HZ, Cb, due, i, h, xp)
    Q = b["Q"]
    Lh, keep, rtol = kept(b["L"], b["sigma"], s.step + 1, Q, h, xp)
    moved = due and h["basis"] != "random"
    names = inner_chain(h)
    root = 2 if h["curvature"] in ("covariance", "fisher") else 1
    ctx = InnerContext(_project(Q, G, keep, xp), keep, Lh, root, s.step, _project(Q, Z, keep, xp),
                       _project(Q, HZ, keep, xp), rtol)
    fields = {f: getattr(s, f) for name in names for f in STEPS[name].fields}
    x, inner = run_chain(names, fields, _array.matmul_t(Q, s.Q, xp) if moved else None, ctx, h, xp)
    U = (Q @ x[..., None])[..., 0]
    if b["sigma"] is not None and len(names) == 1 and names[0] in ("precondition", "inverse"):
        U = U + _bfgs_complement(G, Q, b["sigma"], h["eps"], xp)
    return from_blocks(U, tuple(p.shape), xp), s._replace(step=s.step + 1, **b, **inner)


def _step_corrections(source: Any, params: list[Any], h: dict[str, Any]) -> list[Any]:
    """The correction blocks of this step (per-sample curvatures), one per parameter."""
    if h["curvature"] not in PER_SAMPLE_CURVATURES:
        return [None] * len(params)
    Cs = list(source() if callable(source) else source)
    if len(Cs) != len(params):
        raise ValueError(f"corrections has {len(Cs)} arrays for {len(params)} parameters")
    return Cs


def eigenbasis_direction(h: dict[str, Any], hvp: Callable[[list[Any]], list[Any]] | None = None,
                         corrections: Any = None) -> Transform:
    """LRE's direction (steps 2-5 of the module doc) on parameters of any shape, flattened into
    blocks; ``h``: checked hyper-parameters; ``hvp``: Hessian-vector products for the Hessian
    curvatures; ``corrections``: the (n, k) correction blocks of the per-sample curvatures (a
    list, or a callable returning one).  State :class:`BasisState`."""

    def update(grads, states, params):
        ts, due = _schedule(states, params, h)
        Zs, HZs = _probes(params, states, ts, due, hvp, h)
        Cs = _step_corrections(corrections, params, h)
        out = [_step_one(i, g, s, p, (Zs[i], HZs[i]), Cs[i], due[i], h)
               for i, (g, s, p) in enumerate(zip(grads, states, params, strict=True))]
        return [u for u, _ in out], [st for _, st in out]

    return Transform(lambda params: [_init_one(p, i, h) for i, p in enumerate(params)], update, BasisState)


def transform(*, hvp: Callable[[list[Any]], list[Any]] | None = None, corrections: Any = None,
              **hyper: Any) -> Transform:
    """LRE as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters: :func:`update`;
    ``hvp`` bound for the Hessian curvatures, ``corrections`` for the per-sample ones: a list
    of (n, k) arrays, or a callable returning one, called up to twice per step)."""
    h = _checked(hyper)
    if h["curvature"] in HESSIAN_CURVATURES and hvp is None:
        raise ValueError(f"curvature={h['curvature']!r} needs Hessian-vector products: pass "
                         "hvp=callable (torch class: step(closure) with a closure(backward=True))")
    if hvp is not None and not callable(hvp):
        raise TypeError(f"hvp must be a callable vs -> H vs, got {type(hvp).__name__}")
    if h["curvature"] in PER_SAMPLE_CURVATURES and corrections is None:
        raise ValueError(f"curvature={h['curvature']!r} needs its correction vectors: pass "
                         "corrections=[C_i (n_i, k)] (torch class: step(closure) with a closure "
                         "returning per-sample losses / residuals)")
    return _build(h, hvp, corrections)


def _skip_nonfinite_corrections(t: Transform, corrections: Any, h: dict[str, Any]) -> Transform:
    """``t`` seeing a NaN gradient where the parameter's correction block is not finite, so
    that :func:`~xpmat.optim.transforms.skip_nonfinite` skips its step."""

    def update(grads, states, params):
        Cs = _step_corrections(corrections, params, h)
        gs = [g if C is None else _array.array_namespace(g).where(
              finite(C, _array.array_namespace(C)), g, _array.array_namespace(g).full_like(g, math.nan))
              for g, C in zip(grads, Cs, strict=True)]
        return t.update(gs, states, params)

    return Transform(t.init, update, t.state)


def _build(h: dict[str, Any], hvp: Any, corrections: Any = None) -> Transform:
    t = skip_nonfinite(chain(eigenbasis_direction(h, hvp, corrections),
                             add_decayed_weights(h["weight_decay"]),
                             scale_by_lr(step_size(h)), state=LREState))
    return _skip_nonfinite_corrections(t, corrections, h) if corrections is not None else t


def init(params: list[Any], **hyper: Any) -> list[LREState]:
    """Empty curvature: ``L = 0`` (every slot empty) on a random orthonormal ``Q`` (host draw,
    seed ``seed + i`` for ``params[i]``, the same on every backend); zero moments / history.

    ``Q`` is random rather than zero because an all-zero start makes the first eigenproblems
    block-diagonal with exact zero rows, on which LAPACK's float32 ``syevd`` (torch CPU) was
    measured to fail to converge (n = 2048, r = 64, third step).  ``basis="random"`` keeps
    this ``Q`` for good.
    """
    return run_init(_build(_checked(hyper), None), params)


def update(grads: list[Any], state: list[LREState], params: list[Any], *,
           hvp: Callable[[list[Any]], list[Any]] | None = None, corrections: Any = None,
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
        called once per step where the basis is updated (every step with
        ``"hutchinson_adam"`` / ``"full_bfgs_adam"`` in the chain); ignored otherwise.
    corrections : list of arrays (n_i, k), optional
        The per-sample curvatures' correction vectors: ``params[i]`` flattened (C order) has
        ``n_i`` entries; the curvature gains ``C Cᵀ`` (EMA-weighted by ``beta``).  For the
        empirical Fisher of ``Σ_j ℓ_j`` pass the per-sample gradients as columns,
        ``C = Gᵀ`` (and ``grads`` = their sum); for Gauss–Newton of ``½ Σ_j r_j²`` the
        residuals' Jacobian ``Jᵀ`` (and ``grads`` = ``Jᵀ r``).  A non-finite block skips the
        step of its parameter.
    **hyper
        ``lr`` (η ≥ 0); ``rank`` (r per block, an int ≥ 1; ignored by ``basis="full"``);
        ``curvature``, ``basis``, ``inner`` (see Notes); ``betas`` (β₁, β₂ of the inner
        adam / lion / full_adam / hutchinson_adam / full_bfgs_adam); ``beta`` (EMA factor of
        the curvature, ``None`` = plain sum; bfgs / sr1 always sum); ``eps`` (Adam's ε, or
        the damping of ``L`` in ``"precondition"`` / ``"inverse"``); ``eig_rtol``
        (eigenvalues ``≤ eig_rtol·max|L|`` are removed: LRE's ``eig_tol``);
        ``history_size`` (GGT window); ``max_dim`` (largest block); ``update_freq`` (the
        basis is updated every k steps); ``ema_beta`` ("ema"), ``norm_beta``
        ("normalize_by_ema"); ``clip_norm``, ``clip_value`` (thresholds; a set one is
        appended to the chain unless named in it; a named one that is None uses 1.0 / 0.2);
        ``hebbian_lr``, ``hebbian_betas`` (``basis="hebbian"``); ``weight_decay`` (λ,
        decoupled, times s η); ``schedule`` (s); ``seed`` (Hutchinson / quasi-Newton probes,
        randomized / Nyström sketch, initial ``Q``); ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of LREState

    Notes
    -----
    [LRE 2025][lre-2025], "The algorithm" steps 2-5, "Curvatures" 1-6, "Basis algorithms"
    1-7 and "Inner optimizers"; the primitives are :func:`xpmat.lowrank_eigh_update`,
    :func:`xpmat.ggt_eigh`, :func:`xpmat.nystrom_eigh` and :func:`xpmat.orthonormalize`.

    - ``curvature``: ``"covariance"`` (g gᵀ), ``"hutchinson"`` (sym(Hz zᵀ)), ``"bfgs"``,
      ``"sr1"`` (need ``hvp``), ``"fisher"``, ``"gauss_newton"`` (need ``corrections``;
      they differ in the root of ``"precondition"``: 2 for fisher, 1 for gauss_newton).
    - ``basis``: ``"direct"`` (Rayleigh–Ritz), ``"randomized"``, ``"ggt"`` (covariance
      only), ``"nystrom"`` (PSD curvatures: covariance, fisher, gauss_newton), ``"hebbian"``
      (Sanger's rule with AdamG-style steps on the Stiefel manifold, QR retraction),
      ``"random"`` (the initial random ``Q``, fixed), ``"full"`` (a stored ``bs × bs``
      matrix and its ``eigh``: r = bs, small blocks only).  bfgs / sr1 need direct,
      randomized or full.  Hebbian and random do not diagonalize: their ``L`` is the EMA of
      the Rayleigh quotients ``diag(Qᵀ C Cᵀ Q)``.
    - ``inner``: a name or a list run in order on ``keep ∘ Qᵀ g``: ``"adam"``, ``"lion"``,
      ``"full_adam"``, ``"hutchinson_adam"``, ``"full_bfgs_adam"`` (at most one of these
      five), ``"precondition"`` (``(L̂ + ε)^(−1/p)``), ``"inverse"`` (``(L̂ + ε)⁻¹``),
      ``"ema"``, ``"normalize_by_ema"``, ``"cautious"``, ``"clip_norm"``, ``"clip_value"``.
      The update is ``−s η Q x`` for the chain's output ``x``.
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
    - ``basis="randomized"`` / ``"nystrom"`` sketch with a fixed test matrix per parameter
      (seed ``seed + i``, drawn on the host each step), so no host read is needed, except
      the Cholesky check of :func:`xpmat.nystrom_eigh` on torch; ``"randomized"`` equals
      ``"direct"`` up to rounding while ``r + k ≤ r + 10``.

    Backends: standard Array API only (eigh, QR, Cholesky, matmul); the probes and the
    sketches are drawn on the host with NumPy and moved once.

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
    return run_update(transform(hvp=hvp, corrections=corrections, **hyper), grads, state, params)
