"""Steepest descent under a norm ([Stratos 2026, §7 eq. 65–69][stratos-2026]), with optional momentum.

The step ``Δ`` minimizes the linearized loss ``⟨G, Δ⟩`` either inside the ball ``‖Δ‖ ≤ η``
(trust region, eq. 65/67, ``scaling="tr"``) or with the penalty ``‖Δ‖² / (2η)``
(majorization-minimization, eq. 66/68, ``scaling="mm"``).  Eq. 69 in closed form, per
parameter ``W`` with gradient ``G`` (or its momentum)::

    norm         "tr"                 "mm"
    "fro"        −η G / ‖G‖_F         −η G                        (gradient descent)
    "linf"       −η sign(G)           −η ‖G‖₁ sign(G)             (sign descent; elementwise norms)
    "spectral"   −η U Vᵀ              −η ‖G‖_nuc U Vᵀ             (G = U Σ Vᵀ; the Muon direction)

``"spectral"`` uses the matrix view (conv kernels ``(out, in·k·k)``) and :func:`xpmat.msign`
(Newton–Schulz, batched by shape); a 1-D parameter is a column, so it gets ``G / ‖G‖₂`` (TR) and
``G`` (MM).  ``‖G‖_nuc = ⟨G, msign(G)⟩`` costs no extra product.  With momentum μ the direction
is taken of Muon's momentum (``B ← B + (1 − μ)(G − B)``, the input ``B``, or
``G + μ (B − G)`` with ``nesterov``) — §2.3.2's double momentum with a transform.  Decoupled
weight decay ``−s η λ W`` as Muon.  As a composition::

    skip_nonfinite(chain(momentum(μ, nesterov), steepest_direction(norm, scaling, ns_*),
                         add_decayed_weights(λ), scale_by_lr(s η)))

**Muon is the spectral / trust-region member plus momentum**: on matrices,
``steepest_descent`` with ``norm="spectral", scaling="tr"`` and Muon's momentum settings is
:mod:`xpmat.optim.muon` with ``adjust_lr_fn="none"`` (both are built on
:func:`~xpmat.optim.transforms.steepest_direction`; tested equal).  The Frobenius / MM member
with momentum is SGD with the step ``(1 − μ) η`` (the EMA is ``(1 − μ)`` times the heavy ball).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from xpmat.optim._base import (
    check_bool,
    check_choice,
    check_common,
    check_dtype,
    check_real,
    resolve_hyper,
    run_init,
    run_update,
    step_size,
)
from xpmat.optim._spec import NS_DEFAULTS, MethodSpec
from xpmat.optim.transforms import (
    STEEPEST_NORMS,
    STEEPEST_SCALINGS,
    Transform,
    add_decayed_weights,
    chain,
    momentum,
    ns_schedule_checked,
    scale_by_lr,
    skip_nonfinite,
    steepest_direction,
)
from xpmat.orthogonalize import NORMALIZATIONS

__all__ = ["DEFAULTS", "State", "SteepestDescentState", "init", "transform", "update"]

SPEC = MethodSpec(
    name="steepest_descent",
    class_name="SteepestDescent",
    module=__name__,
    defaults={
        "lr": 0.02,
        "norm": "spectral",
        "scaling": "tr",
        "momentum": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
        "schedule": 1.0,
        **NS_DEFAULTS,
        "state_dtype": None,
    },
    types={"ns_schedule": "Any"},
    doc="steepest descent under a norm (§7, eq. 69); the demo: spectral, trust region",
    demo={"lr": 0.02, "momentum": 0.95, "nesterov": True},
    title="Steepest descent under a norm",
    source="[Stratos 2026, §7 eqs. 65–69][stratos-2026]",
    summary="""\
Steepest descent under a norm ([Stratos 2026, §7 eq. 65–69][stratos-2026]) over
:mod:`xpmat.optim.steepest_descent`::

    B ← B + (1 − μ)(G − B);  U = G + μ (B − G) (nesterov) or B  (U = G when μ = 0)
    W ← W − s η λ W − s η dir(U)
    dir: fro  U/‖U‖_F | U;  linf  sign U | ‖U‖₁ sign U;  spectral  msign(U) | ‖U‖_nuc msign(U)
         (scaling "tr" | "mm")

``norm="spectral", scaling="tr"`` with momentum is Muon without its shape factor
(:class:`Muon` with ``adjust_lr_fn="none"``).  Every parameter follows the norm: a 1-D
parameter is a column vector under ``"spectral"``.
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
norm : {"fro", "linf", "spectral"}
scaling : {"tr", "mm"}
    Trust region (eq. 67) or majorization-minimization (eq. 68).
momentum : float in [0, 1) or 1-element tensor
nesterov : bool
weight_decay : float >= 0 or 1-element tensor
    Decoupled, times ``lr`` (as Muon).
ns_steps : int >= 0
ns_schedule : {"polar_express", "jordan", "quintic", "cubic"} or sequence of (a, b, c)
ns_normalize : {"fro", "spectral_estimate", "aol"}
compute_dtype : "auto", dtype or name, optional
    Newton–Schulz precision of ``"spectral"``; ``"auto"`` (default) as :class:`Muon`.
eps : float >= 0
    Floor of the Frobenius norm in the Newton–Schulz normalization.
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults


class SteepestDescentState(NamedTuple):
    """Per-parameter state: the momentum buffer (zero while μ = 0) and the non-finite counter."""

    momentum_buffer: Any = None
    nonfinite_count: Any = None


State = SteepestDescentState


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "steepest_descent")
    check_common(h)
    check_choice("norm", h["norm"], STEEPEST_NORMS)
    check_choice("scaling", h["scaling"], STEEPEST_SCALINGS)
    check_real("momentum", h["momentum"], 0.0, 1.0, high_open=True)
    check_bool("nesterov", h["nesterov"])
    ns_schedule_checked(h["ns_schedule"], h["ns_steps"])
    check_choice("ns_normalize", h["ns_normalize"], NORMALIZATIONS)
    check_real("eps", h["eps"])
    check_dtype("compute_dtype", h["compute_dtype"], auto=True)
    return h


def transform(**hyper: Any) -> Transform:
    """Steepest descent as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters:
    :func:`update`)."""
    h = _checked(hyper)
    return skip_nonfinite(chain(
        momentum(h["momentum"], nesterov=h["nesterov"], state_dtype=h["state_dtype"]),
        steepest_direction(h["norm"], h["scaling"], ns_steps=h["ns_steps"], ns_schedule=h["ns_schedule"],
                           ns_normalize=h["ns_normalize"], compute_dtype=h["compute_dtype"], eps=h["eps"]),
        add_decayed_weights(h["weight_decay"]),
        scale_by_lr(step_size(h)), state=SteepestDescentState))


def init(params: list[Any], **hyper: Any) -> list[SteepestDescentState]:
    """Zero momentum for each parameter (any shape)."""
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[SteepestDescentState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[SteepestDescentState]]:
    """One steepest-descent step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays
        Any shapes, one Array API library and device.
    state : list of SteepestDescentState
    **hyper
        ``lr`` (η ≥ 0), ``norm`` (``"fro"`` | ``"linf"`` | ``"spectral"``), ``scaling``
        (``"tr"`` | ``"mm"``), ``momentum`` (μ in [0, 1)), ``nesterov``, ``weight_decay``
        (λ ≥ 0, decoupled, times η), ``schedule`` (s ≥ 0, multiplies η and the decay), the
        ``msign`` options of ``"spectral"`` (``ns_steps``, ``ns_schedule``, ``ns_normalize``,
        ``compute_dtype``, ``eps``), ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of SteepestDescentState

    Notes
    -----
    [Stratos 2026][stratos-2026] §7: eq. 65–68 (trust region and majorization-minimization),
    eq. 69 (the closed forms), App. Q.3.1 (Newton–Schulz for ``U Vᵀ``); §2.3.2 (double
    momentum with a transform).  A zero gradient gives a zero step; a gradient with a NaN or
    ±Inf entry leaves its parameter and momentum unchanged and counts in ``nonfinite_count``.

    Backends: standard Array API only (the spectral norm: the Newton–Schulz loop of
    :func:`xpmat.msign`).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import steepest_descent as sd
    >>> p = [np.zeros((2, 2))]
    >>> g = [np.array([[3.0, -1.0], [0.0, 2.0]])]
    >>> st = sd.init(p, norm="linf", scaling="mm")
    >>> u, st = sd.update(g, st, p, lr=0.1, norm="linf", scaling="mm")
    >>> np.round(u[0], 12).tolist()        # −η ‖G‖₁ sign(G), ‖G‖₁ = 6
    [[-0.6, 0.6], [0.0, -0.6]]
    """
    return run_update(transform(**hyper), grads, state, params)
