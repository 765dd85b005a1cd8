"""Manifold Muon ([Su 2025][su-2025]; [Bernstein 2025][bernstein-2025]; [Stratos 2026, §8.2][stratos-2026]).

Weights live on the Stiefel manifold ``{W : Wᵀ W = I}`` (``W`` ``n × m`` tall; a wide parameter
is handled through its transpose).  The steepest descent direction under the spectral norm
restricted to the tangent space (eq. 78–79) is ``Φ = msign(G + W X)`` with a symmetric dual
``X`` chosen so that ``Wᵀ Φ + Φᵀ W = 0``; ``X`` is found by (sub)gradient descent on the
dual objective ``‖G + W X‖_*``, whose gradient is ``Wᵀ Φ + Φᵀ W``::

    mode="dual_ascent" (Bernstein 2025, per step):
        X = −¼ (Wᵀ G + Gᵀ W);  for k < K:  Φ = msign(G + W X);  H = Wᵀ Φ + Φᵀ W
            stop when RMS(H) < tol;  X ← X − α (1 − k/K) H
    mode="online" (Su 2025's cheap form, "synchronous update"):
        X kept in state;  Φ = msign(G + W X);  X ← X − α (Wᵀ Φ + Φᵀ W)   (one dual step per step)
    then  W ← retract(W − η Φ) = msign(W − η Φ)                          (eq. 77)

``radius=R`` scales the manifold: ``Wᵀ W = R² I`` (the step is taken on ``W / R``).
``manifold="spectral_sphere"``: ``‖W‖₂ = R`` instead, ``Φ = msign(G + λ W)``, the scalar dual
``λ ← λ − α tr(Wᵀ Φ)`` (Su 2025's "Muon + Spectral Sphere"), retraction ``W ← R W / ‖W‖₂``.

The gradient is divided by its Frobenius norm first (``Φ`` only depends on ``(G, X)`` up to
a joint scale), so ``dual_lr`` does not depend on the gradient's scale.  The first step with
``lr > 0`` also retracts a parameter that does not start on the manifold; ``lr = 0`` moves
nothing.  As a composition: ``skip_nonfinite(as_matrix(chain(momentum(μ), manifold_step)))``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from xpmat import _array
from xpmat.optim._base import (
    check_choice,
    check_common,
    check_int,
    check_real,
    maybe_nonzero,
    resolve_hyper,
    run_init,
    run_update,
    scalar_hyper,
    state_dtype_for,
    step_size,
)
from xpmat.optim._spec import MethodSpec
from xpmat.optim.transforms import Transform, as_matrix, chain, momentum, ns_schedule_checked, skip_nonfinite
from xpmat.orthogonalize import msign

__all__ = ["DEFAULTS", "ManifoldMuonState", "State", "dual_ascent", "init", "manifold_step",
           "retract_stiefel", "transform", "update"]

SPEC = MethodSpec(
    name="manifold_muon",
    class_name="ManifoldMuon",
    module=__name__,
    defaults={
        "lr": 0.05,
        "momentum": 0.0,
        "schedule": 1.0,
        "mode": "online",
        "manifold": "stiefel",
        "dual_lr": 0.1,
        "dual_steps": 20,
        "tol": 1e-6,
        "check_every": 5,
        "radius": 1.0,
        "ns_steps": 8,
        "ns_schedule": "polar_express",
        "polish_steps": 6,
        "state_dtype": None,
    },
    types={"ns_schedule": "Any"},
    matrix_only=True,
    fallback_lr_ratio=0.02,
    doc="Manifold Muon (§8.2): Stiefel weights, Phi = msign(G + W X), online dual",
    demo={"lr": 0.03, "momentum": 0.9, "radius": 3.0, "adamw_lr_ratio": 0.1},
    title="Manifold Muon",
    source="[Su 2025][su-2025]; [Bernstein 2025][bernstein-2025]; [Stratos 2026, §8.2][stratos-2026]",
    summary="""\
Manifold Muon ([Su 2025][su-2025], §8.2) over :mod:`xpmat.optim.manifold_muon`:
matrices stay on the Stiefel manifold ``Wᵀ W = R² I`` (or the spectral sphere ``‖W‖₂ = R``)::

    Φ = msign(G + W X);  X ← X − α (Wᵀ Φ + Φᵀ W);  W ← msign(W − s η Φ)

1-D parameters go to AdamW.  ``lr = 0`` moves nothing (the dual still moves).
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
momentum : float in [0, 1) or 1-element tensor
    EMA of the gradient (0: none).
mode : {"online", "dual_ascent"}
manifold : {"stiefel", "spectral_sphere"}
dual_lr : float >= 0
dual_steps, check_every : int >= 1
tol : float >= 0
    Dual ascent stops when the tangency residual's RMS is below it.
radius : float > 0
ns_steps, ns_schedule, polish_steps
    The msign of Φ and of the retraction, and the cubic polishing steps after it.
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults


class ManifoldMuonState(NamedTuple):
    """Per-parameter state: ``dual`` X ``(k, k)`` (k = min(m, n)) for the Stiefel manifold or λ
    ``()`` for the spectral sphere, ``momentum_buffer`` (matrix view), the non-finite counter."""

    momentum_buffer: Any = None
    dual: Any = None
    nonfinite_count: Any = None


class DualState(NamedTuple):
    """The state of :func:`manifold_step`: the dual variable."""

    dual: Any


State = ManifoldMuonState


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "manifold_muon")
    check_common(h)
    check_real("momentum", h["momentum"], 0.0, 1.0, high_open=True)
    check_choice("mode", h["mode"], ("online", "dual_ascent"))
    check_choice("manifold", h["manifold"], ("stiefel", "spectral_sphere"))
    check_real("dual_lr", h["dual_lr"])
    check_real("tol", h["tol"])
    check_real("radius", h["radius"], low_open=True)
    for k in ("dual_steps", "check_every"):
        check_int(k, h[k], 1)
    check_int("polish_steps", h["polish_steps"], 0)
    ns_schedule_checked(h["ns_schedule"], h["ns_steps"])
    return h


def _msign(A: Any, xp: Any, h: dict[str, Any]) -> Any:
    return msign(A, steps=h["ns_steps"], schedule=h["ns_schedule"], xp=xp)


def _polish(W: Any, xp: Any, steps: int) -> Any:
    """Cubic Newton–Schulz ``W ← W (3/2 I − ½ WᵀW)`` (Q.3: (c₁, c₂) = (3/2, −1/2)); quadratic
    convergence of singular values in (0, √3) to 1; tall ``W``, Gram side ``m × m``."""
    for _ in range(steps):
        W = 1.5 * W - 0.5 * (W @ (_array.mT(W, xp) @ W))
    return W


def retract_stiefel(A: Any, xp: Any, *, ns_steps: int = 8, ns_schedule: str = "polar_express",
                    polish_steps: int = 6) -> Any:
    """``msign(A)`` to float precision for tall ``A``: :func:`xpmat.msign` then cubic polishing."""
    return _polish(_msign(A, xp, {"ns_steps": ns_steps, "ns_schedule": ns_schedule}), xp, polish_steps)


def _tangency(W: Any, Phi: Any, xp: Any) -> Any:
    H = _array.mT(W, xp) @ Phi
    return H + _array.mT(H, xp)


def dual_ascent(W: Any, G: Any, xp: Any, *, dual_lr: float, dual_steps: int, tol: float,
                check_every: int, **ns: Any) -> tuple[Any, Any, int]:
    """The inner loop of the Thinking Machines reference: ``(Φ, X, steps taken)``.

    ``X₀ = −¼(WᵀG + GᵀW)``; ``X ← X − α (1 − k/K)(WᵀΦ + ΦᵀW)``; the RMS of the tangency
    residual is read on the host every ``check_every`` steps and the loop stops below ``tol``.
    """
    X = -0.25 * _tangency(W, G, xp)
    Phi = _msign(G + W @ X, xp, ns)
    k = 0
    for k in range(dual_steps):
        H = _tangency(W, Phi, xp)
        if tol and k % check_every == 0:
            rms = xp.linalg.vector_norm(H) / (H.shape[-1])
            if float(rms) < tol:  # host read every `check_every` inner steps
                break
        X = X - (dual_lr * (1.0 - k / dual_steps)) * H
        Phi = _msign(G + W @ X, xp, ns)
    return Phi, X, k


def update(grads: list[Any], state: list[ManifoldMuonState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[ManifoldMuonState]]:
    """One Manifold Muon step: ``(updates, new_state)``; ``params + updates`` is on the manifold.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2; conv kernels viewed as ``(out, in·k·k)``; wide matrices
        through their transpose).
    state : list of ManifoldMuonState
    **hyper
        ``lr`` (η ≥ 0; 0 leaves the parameter where it is, while the dual still moves),
        ``schedule`` (s multiplies η), ``momentum`` (EMA of the gradient in [0, 1), 0 = off),
        ``mode`` (``"online"`` |
        ``"dual_ascent"``), ``manifold`` (``"stiefel"`` | ``"spectral_sphere"``), ``dual_lr``
        (α, or η₂), ``dual_steps`` (K), ``tol`` and ``check_every`` (dual ascent stopping rule),
        ``radius`` (R: ``Wᵀ W = R² I`` on the scaled Stiefel manifold, ``‖W‖₂ = R`` on the
        sphere), ``ns_steps``, ``ns_schedule`` (msign for Φ and
        the retraction), ``polish_steps`` (cubic Newton–Schulz after the retraction's msign),
        ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype (``new_W − W``)
    new_state : list of ManifoldMuonState

    Notes
    -----
    [Su 2025][su-2025] ("Stiefel Manifold": dual gradient descent and the
    synchronous update; "Muon + Spectral Sphere": λ ← λ − η₂ tr(ΘᵀΦ)); [Stratos 2026][stratos-2026]
    §8.2 eq. (77)–(79).  A zero gradient gives ``Φ = 0`` and only the retraction; a gradient
    with a NaN or ±Inf entry is skipped (``nonfinite_count``).

    Backends: standard Array API; :func:`xpmat.msign`; ``matrix_norm(ord=2)`` (SVD) for the
    spectral-sphere retraction.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import manifold_muon as mm
    >>> W = [np.linalg.qr(np.random.default_rng(0).standard_normal((6, 3)))[0]]
    >>> G = [np.random.default_rng(1).standard_normal((6, 3))]
    >>> st = mm.init(W)
    >>> u, st = mm.update(G, st, W, lr=0.1)
    >>> W1 = W[0] + u[0]
    >>> print(np.allclose(W1.T @ W1, np.eye(3), atol=1e-12))
    True
    """
    return run_update(transform(**hyper), grads, state, params)


def _step(G: Any, dual: Any, W: Any, h: dict[str, Any], xp: Any) -> tuple[Any, Any]:
    """One step on a tall ``W``: ``(W_new − W, new dual)``; ``W_new = W`` when ``lr = 0``."""
    lr, alpha, R = step_size(h), float(h["dual_lr"]), float(h["radius"])
    lr = scalar_hyper(lr, W, xp)  # a tensor lr is never read: the step is computed at lr = 0 too
    nrm = xp.linalg.vector_norm(G)
    Gn = G / xp.where(nrm > 0, nrm, xp.ones_like(nrm))
    if h["manifold"] == "spectral_sphere":
        Phi = _msign(Gn + dual * W, xp, h)
        dual = dual - alpha * xp.sum(W * Phi)  # tr(Wᵀ Φ)
        A = W - lr * Phi
        sig = xp.linalg.matrix_norm(A, ord=2)
        return (A * (R / xp.where(sig > 0, sig, xp.ones_like(sig))) - W if maybe_nonzero(lr)
                else xp.zeros_like(W)), dual
    Ws = W / R if R != 1.0 else W  # scaled Stiefel: Wᵀ W = R² I
    if h["mode"] == "dual_ascent":
        Phi, dual, _ = dual_ascent(Ws, Gn, xp, dual_lr=alpha, dual_steps=h["dual_steps"], tol=h["tol"],
                                   check_every=h["check_every"], ns_steps=h["ns_steps"],
                                   ns_schedule=h["ns_schedule"])
    else:
        Phi = _msign(Gn + Ws @ dual, xp, h)
        dual = dual - alpha * _tangency(Ws, Phi, xp)
    if not maybe_nonzero(lr):
        return xp.zeros_like(W), dual
    W_new = retract_stiefel(Ws - lr * Phi, xp, ns_steps=h["ns_steps"], ns_schedule=h["ns_schedule"],
                            polish_steps=h["polish_steps"])
    return (W_new * R if R != 1.0 else W_new) - W, dual


def manifold_step(h: dict[str, Any]) -> Transform:
    """The manifold part of Manifold Muon as a transform on matrices (state ``dual``): input the
    (momentum-averaged) gradient, output ``W_new − W``.  ``h``: checked hyper-parameters."""

    def init(params):
        out = []
        for p in params:
            xp, k = _array.array_namespace(p), min(p.shape)
            shape = (k, k) if h["manifold"] == "stiefel" else ()
            out.append(DualState(xp.zeros(shape, device=_array.device(p),
                                          dtype=state_dtype_for(p, xp, h["state_dtype"]))))
        return out

    def update(grads, states, params):
        ups, new = [], []
        for g, s, p in zip(grads, states, params, strict=True):
            xp = _array.array_namespace(g, p)
            wide = p.shape[0] < p.shape[1]  # a wide matrix is handled through its transpose

            def tall(a, xp=xp, wide=wide, dt=s.dual.dtype):
                a = _array.as_float(a, xp, dt)
                return _array.mT(a, xp) if wide else a

            u, dual = _step(tall(g), s.dual, tall(p), h, xp)
            ups.append(_array.mT(u, xp) if wide else u)
            new.append(DualState(dual))
        return ups, new

    return Transform(init, update, DualState)


def transform(**hyper: Any) -> Transform:
    """Manifold Muon as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters:
    :func:`update`): ``skip_nonfinite(as_matrix(chain(momentum(μ), manifold_step)))``."""
    h = _checked(hyper)
    return skip_nonfinite(as_matrix(chain(momentum(h["momentum"], state_dtype=h["state_dtype"]),
                                          manifold_step(h), state=ManifoldMuonState)))


def init(params: list[Any], **hyper: Any) -> list[ManifoldMuonState]:
    """Zero dual (``(k, k)`` with ``k = min(m, n)``, or a scalar) and zero momentum."""
    return run_init(transform(**hyper), params)
