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
a joint scale), so ``dual_lr`` does not depend on the gradient's scale.  The first step also
retracts a parameter that does not start on the manifold.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from xpmat import _array
from xpmat.optim._base import (
    Transform,
    _check_lists,
    bind,
    check_hyper,
    init_params,
    matrix_shape,
    zeros_step,
)
from xpmat.orthogonalize import msign

__all__ = ["DEFAULTS", "ManifoldMuonState", "State", "dual_ascent", "init", "retract_stiefel",
           "transform", "update"]

DEFAULTS: dict[str, Any] = {
    "lr": 0.05,
    "momentum": 0.0,
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
}


class ManifoldMuonState(NamedTuple):
    """Per-parameter state (tall orientation): ``dual`` X ``(m, m)`` for the Stiefel manifold or
    λ ``()`` for the spectral sphere, ``momentum_buffer`` (matrix view)."""

    step: Any
    dual: Any
    momentum_buffer: Any


State = ManifoldMuonState


def _validate(h: dict[str, Any]) -> None:
    if h["mode"] not in ("online", "dual_ascent"):
        raise ValueError(f"mode must be 'online' or 'dual_ascent', got {h['mode']!r}")
    if h["manifold"] not in ("stiefel", "spectral_sphere"):
        raise ValueError(f"manifold must be 'stiefel' or 'spectral_sphere', got {h['manifold']!r}")
    if not 0.0 <= h["momentum"] < 1.0:
        raise ValueError(f"momentum must lie in [0, 1), got {h['momentum']}")
    for k in ("dual_steps", "check_every"):
        if not isinstance(h[k], int) or h[k] < 1:
            raise ValueError(f"{k} must be an int >= 1, got {h[k]!r}")


def _tall(shape: tuple[int, ...], name: str) -> tuple[int, int, bool]:
    m, n = matrix_shape(shape, name)
    return (m, n, False) if m >= n else (n, m, True)


def init(params: list[Any], **hyper: Any) -> list[ManifoldMuonState]:
    """Zero dual (``(k, k)`` with ``k = min`` side, or a scalar) and zero momentum."""
    h, items = init_params(params, hyper, DEFAULTS, "manifold_muon", _validate)
    out = []
    for i, p, xp, dev, dt in items:
        n, m, _ = _tall(tuple(p.shape), f"params[{i}]")
        dual = xp.zeros((m, m) if h["manifold"] == "stiefel" else (), dtype=dt, device=dev)
        out.append(ManifoldMuonState(zeros_step(xp, dev), dual, xp.zeros((n, m), dtype=dt, device=dev)))
    return out


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
        ``lr`` (η), ``momentum`` (EMA of the gradient, 0 = off), ``mode`` (``"online"`` |
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
    [Su 2025][su-2025] ("Stiefel Manifold": dual gradient descent and the synchronous update;
    "Muon + Spectral Sphere": λ ← λ − η₂ tr(ΘᵀΦ)); [Stratos 2026, §8.2 eqs. 77–79][stratos-2026].
    A zero gradient gives ``Φ = 0`` and only the retraction.

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
    h = check_hyper(DEFAULTS, hyper, "manifold_muon")
    _validate(h)
    _check_lists(params, grads, state)
    lr, mu, alpha = float(h["lr"]), h["momentum"], float(h["dual_lr"])
    ups, new = [], []
    for i, (g, s, p) in enumerate(zip(grads, state, params, strict=True)):
        xp = _array.array_namespace(g, p, names=(f"grads[{i}]", f"params[{i}]"))
        _, _, flip = _tall(tuple(p.shape), f"params[{i}]")
        dt = s.momentum_buffer.dtype

        def view(a, rows=p.shape[0], flip=flip, xp=xp, dt=dt):
            a = xp.reshape(_array.as_float(a, xp, dt), (rows, -1))
            return _array.mT(a, xp) if flip else a

        G, W = view(g), view(p)
        R = float(h["radius"])
        buf = s.momentum_buffer + (1.0 - mu) * (G - s.momentum_buffer) if mu else G
        nrm = xp.linalg.vector_norm(buf)
        Gn = buf / xp.where(nrm > 0, nrm, xp.ones_like(nrm))
        if h["manifold"] == "stiefel":
            W = W / R if R != 1.0 else W  # scaled Stiefel: Wᵀ W = R² I
            if h["mode"] == "dual_ascent":
                Phi, X, _ = dual_ascent(W, Gn, xp, dual_lr=alpha, dual_steps=h["dual_steps"],
                                        tol=h["tol"], check_every=h["check_every"],
                                        ns_steps=h["ns_steps"], ns_schedule=h["ns_schedule"])
            else:
                Phi = _msign(Gn + W @ s.dual, xp, h)
                X = s.dual - alpha * _tangency(W, Phi, xp)
            W_new = retract_stiefel(W - lr * Phi, xp, ns_steps=h["ns_steps"],
                                    ns_schedule=h["ns_schedule"], polish_steps=h["polish_steps"])
            dual = X
            if R != 1.0:
                W, W_new = W * R, W_new * R
        else:
            Phi = _msign(Gn + s.dual * W, xp, h)
            dual = s.dual - alpha * xp.sum(W * Phi)  # tr(Wᵀ Φ)
            A = W - lr * Phi
            sig = xp.linalg.matrix_norm(A, ord=2)
            W_new = A * (R / xp.where(sig > 0, sig, xp.ones_like(sig)))
        u = W_new - W
        if flip:
            u = _array.mT(u, xp)
        ups.append(xp.reshape(u, tuple(p.shape)))
        new.append(ManifoldMuonState(s.step + 1, dual, buf if mu else s.momentum_buffer))
    return ups, new


def transform(**hyper: Any) -> Transform:
    """:class:`~xpmat.optim.Transform` with these hyper-parameters bound."""
    return bind(DEFAULTS, hyper, "manifold_muon", _validate, init, update)
