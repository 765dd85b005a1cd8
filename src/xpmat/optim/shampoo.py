"""Shampoo ([Stratos 2026, §5, §5.1, §6.2][stratos-2026]): Kronecker-factored preconditioning.

Per matrix parameter ``W`` (``m × n`` view; conv kernels ``(out, in·k·k)``), gradient ``G``,
step ``t = 1, 2, …``::

    M = β₁ M + (1 − β₁) G,  M̄ = M / (1 − β₁ᵗ)          (optional momentum; β₁ = 0: M̄ = G)
    L = β₂ L + (1 − β₂) G Gᵀ,  R = β₂ R + (1 − β₂) Gᵀ G   (§5.1 EMA, xpmat.shampoo_factors)
    L̂ = L / (1 − β₂ᵗ),  R̂ = R / (1 − β₂ᵗ)                 (bias correction)
    every k steps:  P_L = (L̂ + ε I)^(-1/p),  P_R = (R̂ + ε I)^(-1/p)   (kept, stale, in between)
    D = P_L M̄ P_R                                         (p = 4: eq. 53; p = 2: eq. 63, §6.2)
    D ← D · ‖O‖_F / ‖D‖_F   with O = M̄ / (√v̂ + ε_g) the AdamW direction   (grafting, per block)
    W ← W − s η D − s η λ W                                (decoupled weight decay)

Dimensions above ``max_preconditioner_dim`` are split into blocks of that size (the last one
smaller), as Distributed Shampoo does; every block has its own factors, roots and grafting
norm.  Blocks are stored zero-padded to one block shape per parameter (so the state is a few
stacked arrays); the padded rows of a factor get the block's mean eigenvalue on the diagonal
before the root, so they change nothing in the real rows (the root of a block-diagonal matrix
is block-diagonal) and do not spoil the conditioning.  Matrix-only: 1-D parameters go to
AdamW (the torch class does it, or :func:`xpmat.optim.route`); with grafting, Shampoo on a
vector would only rescale AdamW's step anyway.  As a composition::

    skip_nonfinite(as_matrix(chain(kron_precondition(...), add_decayed_weights(λ), scale_by_lr(s η))))

where :func:`kron_precondition` holds the momentum, the factors, the roots and the grafting
(whose arithmetic is :func:`~xpmat.optim.transforms.adam_direction`).  The refresh decision
reads the step counters on the host (one transfer per step); under ``torch.compile`` it is a
``torch.cond`` on the device instead (``root_method="eigh"`` or ``"newton"``).
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.iteration import orthogonal_iteration
from xpmat.kron import ShampooFactors, shampoo_factors
from xpmat.matfun import inv_root, inv_root_from_eig
from xpmat.optim._base import (
    block_grid,
    check_betas,
    check_choice,
    check_common,
    check_int,
    check_real,
    from_block_grid,
    host_steps,
    one_minus_power,
    refuse_tensor_hyper,
    resolve_hyper,
    run_init,
    run_update,
    state_dtype_for,
    step_size,
    to_block_grid,
    zeros_step,
)
from xpmat.optim._spec import MethodSpec
from xpmat.optim.transforms import (
    AdamState,
    Transform,
    adam_direction,
    add_decayed_weights,
    as_matrix,
    chain,
    ema_update,
    scale_by_lr,
    skip_nonfinite,
)

__all__ = ["DEFAULTS", "RENAMED", "ROOT_METHODS", "ShampooState", "State", "init",
           "kron_precondition", "transform", "update"]

RENAMED = {"beta1": "betas=(beta1, beta2)", "beta2": "betas=(beta1, beta2)"}

SPEC = MethodSpec(
    name="shampoo",
    class_name="Shampoo",
    module=__name__,
    defaults={
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-12,
        "eps_mode": "absolute",
        "root": 4,
        "root_method": "eigh",
        "precondition_every": 10,
        "start_preconditioning_step": None,
        "max_preconditioner_dim": 1024,
        "grafting": "adamw",
        "graft_beta2": 0.999,
        "graft_eps": 1e-8,
        "newton_iters": 100,
        "newton_tol": None,
        "basis_iters": 1,
        "weight_decay": 0.0,
        "schedule": 1.0,
        "state_dtype": None,
    },
    types={"betas": "tuple[float, float | None]", "start_preconditioning_step": "int | None",
           "grafting": "str | None", "newton_tol": "float | None"},
    matrix_only=True,
    fallback_lr_ratio=1.0,
    renamed=RENAMED,
    doc="Shampoo (§5, 5.1, 6.2): EMA factors, L^(-1/4) G R^(-1/4), AdamW grafting",
    demo={"lr": 3e-3, "precondition_every": 10, "adamw_lr_ratio": 1.0},
    source="[Stratos 2026, §5, §5.1, §6.2][stratos-2026]; [Gupta, Koren, Singer 2018][gupta-2018]",
    summary="""\
Shampoo ([Stratos 2026][stratos-2026] §5, §5.1, §6.2) over :mod:`xpmat.optim.shampoo`::

    L ← β₂ L + (1 − β₂) G Gᵀ;  R ← β₂ R + (1 − β₂) Gᵀ G       (blocks, bias-corrected)
    every k steps: P_L = (L̂ + ε I)^(−1/p), P_R = (R̂ + ε I)^(−1/p)
    D = P_L M̄ P_R, grafted to AdamW's norm per block;  W ← W − s η D − s η λ W

1-D parameters go to AdamW.
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
betas : (float, float or None)
    β₁ momentum on G (0: none), β₂ EMA of the factors (None: running mean).
eps : float >= 0
eps_mode : {"absolute", "relative"}
root : int >= 1
    4: ``L^(-1/4) G R^(-1/4)``; 2: the squared preconditioner (§6.2).
root_method : {"eigh", "newton", "orthogonal_iteration"}
precondition_every : int >= 1
start_preconditioning_step : int >= 1 or None
max_preconditioner_dim : int >= 1
grafting : {"adamw", None}
graft_beta2 : float in [0, 1)
graft_eps : float >= 0
newton_iters : int >= 1
newton_tol : float > 0 or None
basis_iters : int >= 1
weight_decay : float >= 0 or 1-element tensor
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults

ROOT_METHODS = ("eigh", "newton", "orthogonal_iteration")
_EPS_MODES = ("absolute", "relative")
_NEWTON_ACCEPT = 1e-2  # a Newton root is used when finite and its residual max|M − I| <= this


class ShampooState(NamedTuple):
    """Per-parameter Shampoo state (``k`` blocks of ``bm × bn``, see :func:`block_layout`).

    ``L`` (k, bm, bm), ``R`` (k, bn, bn): EMA factors (not bias-corrected); ``L_root``,
    ``R_root``: the inverse roots of the last refresh (identity before the first);
    ``L_basis``, ``R_basis``: eigenbases (``root_method="orthogonal_iteration"`` only);
    ``exp_avg`` (m, n): momentum (β₁ > 0 only); ``exp_avg_sq`` (m, n): the AdamW second moment
    of the grafting (``grafting="adamw"`` only); ``step``; the non-finite counter.
    """

    step: Any = None
    L: Any = None
    R: Any = None
    L_root: Any = None
    R_root: Any = None
    L_basis: Any = None
    R_basis: Any = None
    exp_avg: Any = None
    exp_avg_sq: Any = None
    nonfinite_count: Any = None


class KronState(NamedTuple):
    """The state of :func:`kron_precondition` (the fields of :class:`ShampooState`)."""

    step: Any
    L: Any
    R: Any
    L_root: Any
    R_root: Any
    L_basis: Any = None
    R_basis: Any = None
    exp_avg: Any = None
    exp_avg_sq: Any = None


State = ShampooState


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "shampoo", RENAMED)
    check_common(h)
    refuse_tensor_hyper(h, ("betas",), "shampoo", "β₁ = 0 decides whether a momentum buffer is kept")
    check_betas("betas", h["betas"], none=(1,))
    check_real("graft_beta2", h["graft_beta2"], 0.0, 1.0, high_open=True)
    for k in ("eps", "graft_eps"):
        check_real(k, h[k])
    check_choice("eps_mode", h["eps_mode"], _EPS_MODES)
    if not isinstance(h["root"], int) or isinstance(h["root"], bool) or h["root"] < 1:
        raise ValueError(f"root must be an int >= 1 (4: L^(-1/4) G R^(-1/4); 2: the squared "
                         f"preconditioner of §6.2), got {h['root']!r}")
    check_choice("root_method", h["root_method"], ROOT_METHODS)
    for k in ("precondition_every", "max_preconditioner_dim", "newton_iters", "basis_iters"):
        check_int(k, h[k], 1)
    check_int("start_preconditioning_step", h["start_preconditioning_step"], 1, none=True)
    check_choice("grafting", h["grafting"], ("adamw", None))
    check_real("newton_tol", h["newton_tol"], low_open=True, none=True)
    return _static_ints(h)


def _static_ints(h: dict[str, Any]) -> dict[str, Any]:
    """``h`` with the integers that pick code paths and shapes as plain ints
    (``operator.index``): under ``torch.compile(..., dynamic=True)`` Dynamo makes an int of a
    param group a symbol, which the refresh's ``torch.cond`` cannot take (its branch would check
    a symbolic ``root``); ``operator.index`` specializes it (a guard on its value)."""
    ints = ("root", "precondition_every", "start_preconditioning_step", "max_preconditioner_dim",
            "newton_iters", "basis_iters")
    return {**h, **{k: operator.index(h[k]) for k in ints if h[k] is not None}}


def _start(h: dict[str, Any]) -> int:
    s = h["start_preconditioning_step"]
    return h["precondition_every"] if s is None else s


def _eyes(k: int, d: int, xp: Any, dt: Any, dev: Any) -> Any:
    """``k`` stacked ``d × d`` identities (a new array)."""
    return xp.zeros((k, d, d), dtype=dt, device=dev) + xp.eye(d, dtype=dt, device=dev)


def _init_one(p: Any, h: dict[str, Any]) -> KronState:
    xp, dev = _array.array_namespace(p), _array.device(p)
    dt = state_dtype_for(p, xp, h["state_dtype"])
    m, n = p.shape
    bm, bn, gm, gn = block_grid(m, n, h["max_preconditioner_dim"])
    k = gm * gn
    basis = h["root_method"] == "orthogonal_iteration"
    z = xp.zeros((m, n), dtype=dt, device=dev)
    return KronState(zeros_step(xp, dev), xp.zeros((k, bm, bm), dtype=dt, device=dev),
                     xp.zeros((k, bn, bn), dtype=dt, device=dev), _eyes(k, bm, xp, dt, dev),
                     _eyes(k, bn, xp, dt, dev), _eyes(k, bm, xp, dt, dev) if basis else None,
                     _eyes(k, bn, xp, dt, dev) if basis else None,
                     z if h["betas"][0] else None, xp.zeros_like(z) if h["grafting"] else None)


def _moments(G: Any, s: KronState, h: dict[str, Any], xp: Any) -> tuple[Any, Any, KronState]:
    """``(M̄, O, state)``: the momentum M̄ (G when β₁ = 0), the grafting direction ``O`` (AdamW's,
    :func:`~xpmat.optim.transforms.adam_direction`; None without grafting), the factors folded."""
    b1, b2 = h["betas"]
    step = s.step + 1
    O = V = None
    if h["grafting"]:
        O, a = adam_direction(G, AdamState(s.step, s.exp_avg if b1 else G, s.exp_avg_sq), xp,
                              betas=(b1, h["graft_beta2"]), eps=h["graft_eps"])
        M, V = (a.exp_avg if b1 else None), a.exp_avg_sq
        Mbar = M / xp.astype(one_minus_power(b1, step), G.dtype) if b1 else G
    else:
        Mbar, M = ema_update(s.exp_avg, G, b1, step, xp) if b1 else (G, None)
    w_prev = xp.astype(s.step if b2 is None else one_minus_power(b2, s.step), G.dtype)
    lay = block_grid(*G.shape, h["max_preconditioner_dim"])
    f = shampoo_factors(to_block_grid(G, lay, xp), ShampooFactors(s.L, s.R, w_prev), beta=b2, xp=xp)
    return Mbar, O, s._replace(step=step, L=f.L, R=f.R, exp_avg=M, exp_avg_sq=V)


def _real_mask(k: int, b: int, g_other: int, size: int, by_row: bool, xp: Any, dt: Any, dev: Any):
    """``(k, b)`` 1.0 on the rows of each block's factor that hold real data, 0.0 on padding."""
    idx = xp.arange(k, device=dev)
    blk = idx // g_other if by_row else idx % g_other
    pos = blk[:, None] * b + xp.arange(b, device=dev)[None, :]
    return xp.astype(pos < size, dt)


def _regularize(F: Any, mask: Any, eps: float, mode: str, xp: Any) -> Any:
    """``F + diag(ε_eff + c·pad)``: ε on the real rows (times the mean real eigenvalue in
    ``"relative"`` mode), and on padded rows ``c`` = that mean eigenvalue (+ ε)."""
    d = xp.linalg.diagonal(F)
    if mask is None:
        mean = xp.mean(d, axis=-1, keepdims=True)
        add = (eps * mean if mode == "relative" else eps) * xp.ones_like(d)
    else:
        mean = xp.sum(d * mask, axis=-1, keepdims=True) / xp.sum(mask, axis=-1, keepdims=True)
        e = eps * mean if mode == "relative" else eps
        add = e + (1.0 - mask) * mean
    eye = xp.eye(F.shape[-1], dtype=F.dtype, device=_array.device(F))
    return F + add[..., :, None] * eye


def _roots(A: Any, X_old: Any, Q_old: Any, first: bool, h: dict[str, Any], xp: Any):
    """Inverse ``p``-th roots of a stack ``A`` (batch, d, d) by ``root_method``; new basis."""
    p, method = h["root"], h["root_method"]
    if method == "eigh":  # eps given: under torch.compile(dynamic=True) a float default would
        # be a symbol, which the branch of the refresh's torch.cond refuses
        return inv_root(A, p, method="eigh", eps=0.0, xp=xp), None
    if method == "newton":
        X, info = inv_root(A, p, method="newton", iters=h["newton_iters"], tol=h["newton_tol"],
                           return_info=True, xp=xp)
        ok = xp.all(xp.isfinite(X), axis=(-2, -1)) & (info.error <= _NEWTON_ACCEPT)
        return xp.where(ok[:, None, None], X, X_old), None
    if first:  # Q.2.1: start the tracked basis from an exact eigendecomposition
        lam, Q = _array.eigh((A + _array.mT(A, xp)) / 2, xp, descending=True)
    else:
        Q, lam = orthogonal_iteration(A, Q_old, iters=h["basis_iters"], align_to=Q_old,
                                      ritz=False, xp=xp)
    return inv_root_from_eig(lam, Q, p, xp=xp), Q


def _host_steps(states: list[KronState], h: dict[str, Any], xp: Any) -> list[int] | None:
    """The step counts (after this step) on the host, one transfer; None while torch.compile
    traces with ``root_method="eigh"`` (the refresh decision then stays on the device)."""
    if _array.is_compiling(xp) and h["root_method"] == "eigh":
        return None
    return host_steps([s.step for s in states], xp)


def _factors(s: KronState, lay: tuple[int, int, int, int], m: int, n: int, h: dict[str, Any], xp: Any):
    """``(side, A)`` for L and R: the bias-corrected factors with ε and the padding regularized
    (see :func:`_regularize`), ready for the inverse root."""
    b2 = h["betas"][1]
    weight = xp.astype(s.step if b2 is None else one_minus_power(b2, s.step), s.L.dtype)
    bm, bn, gm, gn = lay
    out = []
    for side, F, b, size, by_row in (("L", s.L, bm, m, True), ("R", s.R, bn, n, False)):
        mask = None
        if (gm * bm if by_row else gn * bn) != size:
            mask = _real_mask(gm * gn, b, gn, size, by_row, xp, F.dtype, _array.device(F))
        out.append((side, _regularize(F / weight, mask, h["eps"], h["eps_mode"], xp)))
    return out


def _refresh(work: list[dict[str, Any]], host: list[int] | None, h: dict[str, Any]) -> None:
    """New inverse roots for the parameters due a refresh: ONE batched root call per factor size
    (over blocks and parameters).  Eager: only the due ones, decided on the host.  Traced: all of
    them inside a ``torch.cond`` on "any due", each block keeping its old root unless due."""
    start = _start(h)
    queue: dict[tuple, list[tuple[int, str, Any]]] = {}
    for i, w in enumerate(work):
        s, t = w["state"], None if host is None else host[i]
        if t is not None and not (t >= start and (t - start) % h["precondition_every"] == 0):
            continue
        for side, A in _factors(s, w["lay"], w["m"], w["n"], h, w["xp"]):
            first = h["root_method"] == "orthogonal_iteration" and (
                t == start or getattr(s, f"{side}_basis") is None)
            key = (A.shape[-1], str(A.dtype), str(_array.device(A)), first)
            queue.setdefault(key, []).append((i, side, A))
    for (_, _, _, first), jobs in queue.items():
        xp = work[jobs[0][0]]["xp"]
        olds = [work[i]["state"] for i, _, _ in jobs]
        A = _cat([a for _, _, a in jobs], xp)
        sides = [side for _, side, _ in jobs]
        X_old = _cat([getattr(o, f"{side}_root") for o, side in zip(olds, sides, strict=True)], xp)
        Q_old = None
        if h["root_method"] == "orthogonal_iteration" and not first:
            Q_old = _cat([getattr(o, f"{side}_basis") for o, side in zip(olds, sides, strict=True)], xp)
        if host is None:
            due = _cat([xp.broadcast_to(_due(o.step, h)[0], (a.shape[0],))
                        for o, (_, _, a) in zip(olds, jobs, strict=True)], xp)
            X, Q = _traced_roots(A, X_old, due, h, xp), None
        else:
            X, Q = _roots(A, X_old, Q_old, first, h, xp)
        off = 0
        for i, side, a in jobs:
            upd = {f"{side}_root": X[off:off + a.shape[0], ...]}
            if Q is not None:
                upd[f"{side}_basis"] = Q[off:off + a.shape[0], ...]
            work[i]["state"] = work[i]["state"]._replace(**upd)
            off += a.shape[0]


def _cat(xs: list[Any], xp: Any) -> Any:
    return xs[0] if len(xs) == 1 else xp.concat(xs, axis=0)


def _traced_roots(A: Any, X_old: Any, due: Any, h: dict[str, Any], xp: Any) -> Any:
    """The refresh under torch.compile: roots of every block when any is due (``torch.cond``),
    kept where not due."""

    def fresh(A, X_old, due):
        return xp.where(due[:, None, None], _roots(A, X_old, None, False, h, xp)[0], X_old)

    return _array.cond(xp.any(due), fresh, lambda A, X_old, due: X_old * 1, (A, X_old, due), xp=xp)


def _due(step: Any, h: dict[str, Any]) -> tuple[Any, Any]:
    """``(refresh now, Shampoo direction in use)`` for the step count ``step`` (after this
    step): refresh at ``s, s + k, s + 2k, …``, the direction from ``s`` on."""
    start = _start(h)
    return (step >= start) & ((step - start) % h["precondition_every"] == 0), step >= start


def _direction(w: dict[str, Any], t: int | None, h: dict[str, Any]) -> Any:
    """``L_root M̄ R_root`` per block, grafted to AdamW's block norms; the grafting direction
    (or M̄) before the first refresh."""
    xp, s, lay = w["xp"], w["state"], w["lay"]
    before = w["O"] if w["O"] is not None else w["Mbar"]
    if t is not None and t < _start(h):
        return before
    D = s.L_root @ to_block_grid(w["Mbar"], lay, xp) @ s.R_root
    if w["O"] is not None:  # grafting: each block takes the AdamW block's norm
        Ob = to_block_grid(w["O"], lay, xp)
        nd = xp.linalg.vector_norm(D, axis=(-2, -1), keepdims=True)
        no = xp.linalg.vector_norm(Ob, axis=(-2, -1), keepdims=True)
        D = D * xp.where(nd > 0, no / xp.where(nd > 0, nd, xp.ones_like(nd)), xp.zeros_like(nd))
    D = from_block_grid(D, lay, w["m"], w["n"], xp)
    return D if t is not None else xp.where(_due(s.step, h)[1], D, before)


def kron_precondition(h: dict[str, Any]) -> Transform:
    """Shampoo's direction on matrices (see the module doc): momentum, EMA Kronecker factors in
    blocks, inverse roots refreshed every ``precondition_every`` steps (batched over
    parameters), AdamW grafting.  ``h``: checked hyper-parameters; state :class:`KronState`."""

    def update(grads, states, params):
        work = []
        for i, (g, s) in enumerate(zip(grads, states, strict=True)):
            xp = _array.array_namespace(g)
            m, n = g.shape
            lay = block_grid(m, n, h["max_preconditioner_dim"])
            if tuple(s.L.shape) != (lay[2] * lay[3], lay[0], lay[0]):
                raise ValueError(f"state[{i}].L has shape {tuple(s.L.shape)}; a {m}×{n} matrix with "
                                 f"max_preconditioner_dim={h['max_preconditioner_dim']} needs "
                                 f"{(lay[2] * lay[3], lay[0], lay[0])}")
            Mbar, O, s = _moments(_array.as_float(g, xp, s.L.dtype), s, h, xp)
            work.append({"xp": xp, "m": m, "n": n, "lay": lay, "Mbar": Mbar, "O": O, "state": s})
        host = _host_steps([w["state"] for w in work], h, work[0]["xp"]) if work else None
        _refresh(work, host, h)
        ups = [_direction(w, None if host is None else host[i], h) for i, w in enumerate(work)]
        return ups, [w["state"] for w in work]

    return Transform(lambda params: [_init_one(p, h) for p in params], update, KronState)


def transform(**hyper: Any) -> Transform:
    """Shampoo as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters: :func:`update`)."""
    h = _checked(hyper)
    return skip_nonfinite(as_matrix(chain(kron_precondition(h), add_decayed_weights(h["weight_decay"]),
                                          scale_by_lr(step_size(h)),
                                          state=ShampooState)))


def init(params: list[Any], **hyper: Any) -> list[ShampooState]:
    """Zero factors, identity roots (and bases), zero moments for each matrix parameter."""
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[ShampooState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[ShampooState]]:
    """One Shampoo step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2; conv kernels viewed as ``(out, in·k·k)``); 1-D ones raise
        ``ValueError`` (route them to AdamW).
    state : list of ShampooState
    **hyper
        ``lr`` (η ≥ 0); ``betas`` (β₁: momentum on G, bias-corrected, 0: none; β₂: EMA of
        the factors, bias-corrected, ``None``: equal-weight running mean, the sum of eq. 53
        over ``t``); ``eps`` (ε) and ``eps_mode`` (``"absolute"``: ``L̂ + ε I``; ``"relative"``:
        ``L̂ + ε·(tr L̂ / d) I``); ``root`` (p: 4 for ``L^(-1/4) G R^(-1/4)``, 2 for the squared
        preconditioner ``L^(-1/2) G R^(-1/2)`` of §6.2); ``root_method`` (``"eigh"``,
        ``"newton"`` coupled Newton, ``"orthogonal_iteration"`` warm-started eigenbasis);
        ``precondition_every`` (k) and ``start_preconditioning_step`` (s, default k): roots are
        recomputed at steps s, s + k, s + 2k, …, and the Shampoo direction is used from step s
        on (before: the grafting direction, or M̄ without grafting);
        ``max_preconditioner_dim`` (block size); ``grafting`` (``"adamw"`` or ``None``),
        ``graft_beta2``, ``graft_eps``; ``newton_iters``, ``newton_tol`` (passed to
        :func:`xpmat.inv_root`); ``basis_iters`` (orthogonal-iteration steps per refresh);
        ``weight_decay`` (λ, decoupled, times s η); ``schedule`` (s); ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of ShampooState

    Notes
    -----
    [Stratos 2026][stratos-2026] §5 eq. (53) (Shampoo), §5.1 (EMA factors), §6.2 eq. (63) (the
    squared preconditioner, ``root=2``).  The factors are folded by
    :func:`xpmat.shampoo_factors`; the roots come from :func:`xpmat.inv_root` (``"eigh"``: a
    pseudo-inverse root; ``"newton"``: the coupled iteration, a block keeps its previous root
    when the result is not finite or its residual ``max|M − I|`` exceeds 1e-2) or from
    :func:`xpmat.orthogonal_iteration` (``ritz=False``, ``align_to`` the previous basis;
    the first refresh is an exact ``eigh``, appendix Q.2.1) with the Rayleigh quotients as
    eigenvalues.  All the factors of one size (over blocks and parameters) go through ONE
    batched root call.  With one gradient, ``β₁ = 0``, ``ε = 0`` and no grafting the update is
    ``−η U Vᵀ`` (``G = U Σ Vᵀ``; the polar factor) for ``root=4`` and ``−η U Σ⁻¹ Vᵀ`` for
    ``root=2``.  A zero gradient gives a zero update; a gradient with a NaN or ±Inf entry is
    skipped (``nonfinite_count``), so no factorization ever sees it.

    The step counters are read on the host once per call (one transfer) to decide which
    parameters refresh their roots; under ``torch.compile`` the decision is a ``torch.cond``.

    Backends: standard Array API (eigh, matmul); orthonormalization via
    :func:`xpmat.orthonormalize`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import shampoo
    >>> G = np.array([[3.0, 0.0], [0.0, 0.5], [0.0, 0.0]])
    >>> p = [np.zeros((3, 2))]
    >>> h = dict(lr=1.0, betas=(0.0, 0.999), eps=0.0, grafting=None, precondition_every=1)
    >>> u, st = shampoo.update([G], shampoo.init(p, **h), p, **h)
    >>> print(np.round(-u[0], 6))     # one gradient: the polar factor U Vᵀ
    [[1. 0.]
     [0. 1.]
     [0. 0.]]
    """
    return run_update(transform(**hyper), grads, state, params)
