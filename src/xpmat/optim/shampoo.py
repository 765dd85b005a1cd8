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
vector would only rescale AdamW's step anyway.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.iteration import orthogonal_iteration
from xpmat.kron import ShampooFactors, shampoo_factors
from xpmat.matfun import _inv_root_from_eig, inv_root
from xpmat.optim._base import (
    Transform,
    _check_lists,
    bind,
    check_hyper,
    host_steps,
    init_params,
    matrix_shape,
    zeros_step,
)

__all__ = ["DEFAULTS", "ROOT_METHODS", "ShampooState", "State", "block_layout", "init",
           "transform", "update"]

DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "beta1": 0.9,
    "beta2": 0.999,
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
}

ROOT_METHODS = ("eigh", "newton", "orthogonal_iteration")
_EPS_MODES = ("absolute", "relative")
_NEWTON_ACCEPT = 1e-2  # a Newton root is used when finite and its residual max|M − I| <= this


class ShampooState(NamedTuple):
    """Per-parameter Shampoo state (``k`` blocks of ``bm × bn``, see :func:`block_layout`).

    ``L`` (k, bm, bm), ``R`` (k, bn, bn): EMA factors (not bias-corrected); ``L_root``,
    ``R_root``: the inverse roots of the last refresh (identity before the first);
    ``L_basis``, ``R_basis``: eigenbases (``root_method="orthogonal_iteration"`` only);
    ``exp_avg`` (m, n): momentum (``beta1 > 0`` only); ``exp_avg_sq`` (m, n): the AdamW
    second moment of the grafting (``grafting="adamw"`` only).
    """

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


def _is_int(x: Any, minimum: int) -> bool:
    return not isinstance(x, bool) and isinstance(x, int) and x >= minimum


def _validate(h: dict[str, Any]) -> None:
    if not 0.0 <= h["beta1"] < 1.0:
        raise ValueError(f"beta1 must lie in [0, 1), got {h['beta1']}")
    if h["beta2"] is not None and not 0.0 <= h["beta2"] < 1.0:
        raise ValueError(f"beta2 must be None (running mean) or lie in [0, 1), got {h['beta2']}")
    if not 0.0 <= h["graft_beta2"] < 1.0:
        raise ValueError(f"graft_beta2 must lie in [0, 1), got {h['graft_beta2']}")
    for k in ("lr", "eps", "graft_eps", "weight_decay"):
        if not h[k] >= 0:
            raise ValueError(f"{k} must be >= 0, got {h[k]!r}")
    if h["eps_mode"] not in _EPS_MODES:
        raise ValueError(f"eps_mode must be one of {_EPS_MODES}, got {h['eps_mode']!r}")
    if not _is_int(h["root"], 1):
        raise ValueError(f"root must be an int >= 1 (4: L^(-1/4) G R^(-1/4); 2: the squared "
                         f"preconditioner of §6.2), got {h['root']!r}")
    if h["root_method"] not in ROOT_METHODS:
        raise ValueError(f"root_method must be one of {ROOT_METHODS}, got {h['root_method']!r}")
    for k in ("precondition_every", "max_preconditioner_dim", "newton_iters", "basis_iters"):
        if not _is_int(h[k], 1):
            raise ValueError(f"{k} must be an int >= 1, got {h[k]!r}")
    s = h["start_preconditioning_step"]
    if s is not None and not _is_int(s, 1):
        raise ValueError(f"start_preconditioning_step must be None or an int >= 1, got {s!r}")
    if h["grafting"] not in ("adamw", None):
        raise ValueError(f"grafting must be 'adamw' or None, got {h['grafting']!r}")
    if h["newton_tol"] is not None and not h["newton_tol"] > 0:
        raise ValueError(f"newton_tol must be None or > 0, got {h['newton_tol']!r}")


def block_layout(m: int, n: int, max_dim: int) -> tuple[int, int, int, int]:
    """``(bm, bn, gm, gn)``: blocks of ``bm × bn`` (``bm = min(m, max_dim)``), a ``gm × gn`` grid.

    Block ``(i, j)`` holds rows ``i·bm … min((i+1)·bm, m) − 1`` and columns
    ``j·bn … min((j+1)·bn, n) − 1``; blocks are numbered row-major (``i·gn + j``).
    """
    bm, bn = min(m, max_dim), min(n, max_dim)
    return bm, bn, -(-m // bm), -(-n // bn)


def _start(h: dict[str, Any]) -> int:
    s = h["start_preconditioning_step"]
    return h["precondition_every"] if s is None else s


def _eyes(k: int, d: int, xp: Any, dt: Any, dev: Any) -> Any:
    """``k`` stacked ``d × d`` identities (a new array)."""
    return xp.zeros((k, d, d), dtype=dt, device=dev) + xp.eye(d, dtype=dt, device=dev)


def init(params: list[Any], **hyper: Any) -> list[ShampooState]:
    """Zero factors, identity roots (and bases), zero moments for each matrix parameter."""
    h, items = init_params(params, hyper, DEFAULTS, "shampoo", _validate)
    out = []
    for i, p, xp, dev, dt in items:
        m, n = matrix_shape(p.shape, f"params[{i}]")
        bm, bn, gm, gn = block_layout(m, n, h["max_preconditioner_dim"])
        k = gm * gn
        basis = h["root_method"] == "orthogonal_iteration"
        z = xp.zeros((m, n), dtype=dt, device=dev)
        out.append(ShampooState(
            zeros_step(xp, dev), xp.zeros((k, bm, bm), dtype=dt, device=dev),
            xp.zeros((k, bn, bn), dtype=dt, device=dev), _eyes(k, bm, xp, dt, dev),
            _eyes(k, bn, xp, dt, dev), _eyes(k, bm, xp, dt, dev) if basis else None,
            _eyes(k, bn, xp, dt, dev) if basis else None,
            z if h["beta1"] else None, xp.zeros_like(z) if h["grafting"] else None))
    return out


def _to_blocks(X: Any, lay: tuple[int, int, int, int], xp: Any) -> Any:
    """``(m, n)`` -> ``(gm·gn, bm, bn)``, zero-padded at the bottom / right."""
    bm, bn, gm, gn = lay
    m, n = X.shape
    if gm * bm != m:
        X = xp.concat([X, xp.zeros((gm * bm - m, n), dtype=X.dtype, device=_array.device(X))], axis=0)
    if gn * bn != n:
        X = xp.concat([X, xp.zeros((X.shape[0], gn * bn - n), dtype=X.dtype,
                                   device=_array.device(X))], axis=1)
    if gm == gn == 1:
        return X[None, ...]
    X = xp.reshape(X, (gm, bm, gn, bn))
    return xp.reshape(xp.permute_dims(X, (0, 2, 1, 3)), (gm * gn, bm, bn))


def _from_blocks(B: Any, lay: tuple[int, int, int, int], m: int, n: int, xp: Any) -> Any:
    """Inverse of :func:`_to_blocks`: ``(gm·gn, bm, bn)`` -> ``(m, n)`` (padding dropped)."""
    bm, bn, gm, gn = lay
    if gm == gn == 1:
        X = B[0, ...]
    else:
        X = xp.reshape(xp.permute_dims(xp.reshape(B, (gm, gn, bm, bn)), (0, 2, 1, 3)),
                       (gm * bm, gn * bn))
    return X if (gm * bm, gn * bn) == (m, n) else X[:m, :n]


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
    if method == "eigh":
        return inv_root(A, p, method="eigh", xp=xp), None
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
    return _inv_root_from_eig(lam, Q, p, xp), Q


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
        ``lr`` (η); ``beta1`` (momentum on G, bias-corrected; 0: none); ``beta2`` (EMA of the
        factors, bias-corrected; ``None``: equal-weight running mean, the sum of eq. 53 over
        ``t``); ``eps`` (ε) and ``eps_mode`` (``"absolute"``: ``L̂ + ε I``; ``"relative"``:
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
    ``root=2``.  A zero gradient gives a zero update.  NaN/Inf gradients propagate.

    The step counters are read on the host once per call (one transfer) to decide which
    parameters refresh their roots.

    Backends: standard Array API (eigh, matmul); orthonormalization via
    :func:`xpmat.orthonormalize`.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import shampoo
    >>> G = np.array([[3.0, 0.0], [0.0, 0.5], [0.0, 0.0]])
    >>> p = [np.zeros((3, 2))]
    >>> h = dict(lr=1.0, beta1=0.0, eps=0.0, grafting=None, precondition_every=1)
    >>> u, st = shampoo.update([G], shampoo.init(p, **h), p, **h)
    >>> print(np.round(-u[0], 6))     # one gradient: the polar factor U Vᵀ
    [[1. 0.]
     [0. 1.]
     [0. 0.]]
    """
    h = check_hyper(DEFAULTS, hyper, "shampoo")
    _validate(h)
    _check_lists(params, grads, state)
    if not params:
        return [], []
    lr_t = float(h["schedule"]) * float(h["lr"])
    b1, b2, gb2, wd = h["beta1"], h["beta2"], h["graft_beta2"], h["weight_decay"]
    k_every, start = h["precondition_every"], _start(h)
    xp0 = _array.array_namespace(*params, names=[f"params[{i}]" for i in range(len(params))])
    steps = host_steps(state, xp0)

    work = []  # per parameter: everything phase 3 needs
    queue: dict[tuple, list[tuple[int, str, Any]]] = {}  # (d, dtype, device, first) -> jobs
    for i, (g, s, p) in enumerate(zip(grads, state, params, strict=True)):
        xp = _array.array_namespace(g, p, names=(f"grads[{i}]", f"params[{i}]"))
        dt = s.L.dtype
        dev = _array.device(p)
        m, n = matrix_shape(p.shape, f"params[{i}]")
        lay = block_layout(m, n, h["max_preconditioner_dim"])
        if tuple(s.L.shape) != (lay[2] * lay[3], lay[0], lay[0]):
            raise ValueError(f"state[{i}].L has shape {tuple(s.L.shape)}; params[{i}] of shape "
                             f"{tuple(p.shape)} with max_preconditioner_dim="
                             f"{h['max_preconditioner_dim']} needs {(lay[2] * lay[3], lay[0], lay[0])}")
        t = steps[i] + 1
        G = xp.reshape(_array.as_float(g, xp, dt), (m, n))
        M = None
        if b1:
            M = s.exp_avg + (1.0 - b1) * (G - s.exp_avg)
            Mbar = M / (1.0 - b1 ** t)
        else:
            Mbar = G
        V = O = None
        if h["grafting"]:
            V = s.exp_avg_sq * gb2 + (1.0 - gb2) * (G * G)
            O = Mbar / (xp.sqrt(V) / math.sqrt(1.0 - gb2 ** t) + h["graft_eps"])
        w_prev = float(t - 1) if b2 is None else 1.0 - b2 ** (t - 1)
        f = shampoo_factors(_to_blocks(G, lay, xp), ShampooFactors(s.L, s.R, w_prev), beta=b2, xp=xp)
        item = {"xp": xp, "m": m, "n": n, "lay": lay, "t": t, "Mbar": Mbar, "O": O,
                "new": s._replace(step=s.step + 1, L=f.L, R=f.R, exp_avg=M, exp_avg_sq=V)}
        work.append(item)
        if t >= start and (t - start) % k_every == 0:  # refresh this parameter's roots
            bm, bn, gm, gn = lay
            kb = gm * gn
            for side, F, b, size, by_row in (("L", f.L, bm, m, True), ("R", f.R, bn, n, False)):
                mask = None
                if (gm * bm if by_row else gn * bn) != size:
                    mask = _real_mask(kb, b, gn, size, by_row, xp, dt, dev)
                A = _regularize(F / f.weight, mask, h["eps"], h["eps_mode"], xp)
                # the tracked basis starts from an eigh at the first refresh (or when the state
                # comes from another root_method and has no basis)
                first = h["root_method"] == "orthogonal_iteration" and (
                    t == start or getattr(s, f"{side}_basis") is None)
                key = (b, str(dt), str(dev), first)
                queue.setdefault(key, []).append((i, side, A))

    for (_, _, _, first), jobs in queue.items():  # ONE batched root call per factor size
        xp = work[jobs[0][0]]["xp"]

        def cat(xs, xp=xp):
            return xs[0] if len(xs) == 1 else xp.concat(xs, axis=0)

        A = cat([a for _, _, a in jobs])
        olds = [work[i]["new"] for i, _, _ in jobs]
        X_old = cat([getattr(o, f"{side}_root") for o, (_, side, _) in zip(olds, jobs, strict=True)])
        Q_old = None
        if h["root_method"] == "orthogonal_iteration" and not first:
            Q_old = cat([getattr(o, f"{side}_basis") for o, (_, side, _) in zip(olds, jobs, strict=True)])
        X, Q = _roots(A, X_old, Q_old, first, h, xp)
        off = 0
        for i, side, a in jobs:
            kb = a.shape[0]
            upd = {f"{side}_root": X[off:off + kb, ...]}
            if Q is not None:
                upd[f"{side}_basis"] = Q[off:off + kb, ...]
            work[i]["new"] = work[i]["new"]._replace(**upd)
            off += kb

    ups, new = [], []
    for item, p in zip(work, params, strict=True):
        xp, s_new, lay, m, n = item["xp"], item["new"], item["lay"], item["m"], item["n"]
        if item["t"] >= start:
            D = s_new.L_root @ _to_blocks(item["Mbar"], lay, xp) @ s_new.R_root
            if item["O"] is not None:  # grafting: each block takes the AdamW block's norm
                Ob = _to_blocks(item["O"], lay, xp)
                nd = xp.linalg.vector_norm(D, axis=(-2, -1), keepdims=True)
                no = xp.linalg.vector_norm(Ob, axis=(-2, -1), keepdims=True)
                D = D * xp.where(nd > 0, no / xp.where(nd > 0, nd, xp.ones_like(nd)), xp.zeros_like(nd))
            D = _from_blocks(D, lay, m, n, xp)
        else:
            D = item["O"] if item["O"] is not None else item["Mbar"]
        u = -lr_t * D
        if wd:
            u = u - (lr_t * wd) * xp.reshape(_array.as_float(p, xp, s_new.L.dtype), (m, n))
        ups.append(xp.reshape(u, tuple(p.shape)))
        new.append(s_new)
    return ups, new


def transform(**hyper: Any) -> Transform:
    """:class:`~xpmat.optim.Transform` with these hyper-parameters bound."""
    return bind(DEFAULTS, hyper, "shampoo", _validate, init, update)
