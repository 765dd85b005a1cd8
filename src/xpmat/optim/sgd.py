"""SGD with Polyak or Nesterov momentum ([Stratos 2026, §2, §2.2–2.3.1][stratos-2026]).

Per parameter ``w`` with gradient ``g``, momentum μ, L2 weight decay λ and step size s η::

    d = g + λ w                                 (weight decay added to the gradient, as torch)
    v ← μ v + d                                 (eq. 25; v₀ = 0)
    w ← w − s η v                               (eq. 26, Polyak's heavy ball)
    w ← w − s η (d + μ v)                       (nesterov=True: the double-momentum form of §2.3.1)

As a composition of transforms::

    skip_nonfinite(chain(add_decayed_weights(λ), momentum(μ, nesterov, kind="heavy_ball"),
                         scale_by_lr(s η)))

With μ = 0 it is plain SGD (eq. 21).  It equals ``torch.optim.SGD`` with ``dampening=0``
(tested, with and without Nesterov).  The double-momentum form performs Nesterov's method
(eq. 28–31) exactly for constant η and μ (Lemma S.10); with a changing η the exact form has the
extra term ``(η_t μ − η_{t+1} μ) v_t``, which this form (like torch's) leaves out.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from xpmat.optim._base import (
    check_bool,
    check_common,
    check_real,
    maybe_nonzero,
    resolve_hyper,
    run_init,
    run_update,
    step_size,
)
from xpmat.optim._spec import MethodSpec
from xpmat.optim.transforms import (
    Transform,
    add_decayed_weights,
    chain,
    momentum,
    scale_by_lr,
    skip_nonfinite,
)

__all__ = ["DEFAULTS", "SGDState", "State", "init", "transform", "update"]

SPEC = MethodSpec(
    name="sgd",
    class_name="SGD",
    module=__name__,
    defaults={
        "lr": 1e-3,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "nesterov": False,
        "schedule": 1.0,
        "state_dtype": None,
    },
    positional=2,
    complex_as_real=True,
    decay_follows_lr=False,
    doc="SGD (§2.2–2.3.1): heavy ball, Nesterov as double momentum (torch.optim.SGD)",
    demo={"lr": 0.1, "momentum": 0.9, "nesterov": True},
    source="[Stratos 2026, §2.2–2.3.2][stratos-2026]",
    summary="""\
SGD with Polyak or Nesterov momentum ([Stratos 2026, §2.2–2.3.1][stratos-2026]) over
:mod:`xpmat.optim.sgd`::

    d = g + λ w;  v ← μ v + d;  w ← w − s η v      (nesterov: w ← w − s η (d + μ v))

``torch.optim.SGD`` with ``dampening=0`` (tested equal, Nesterov and complex parameters
included: those step as real views, as torch); ``dampening``
is not supported (torch's first step ignores it, so a zero buffer cannot reproduce it), and
the arguments after ``momentum`` are keyword-only (torch's fourth positional one is
``dampening``).
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
momentum : float in [0, 1) or 1-element tensor
    μ of eq. 25 (0: plain SGD; the buffer is kept, at zero).
weight_decay : float >= 0 or 1-element tensor
    λ, added to the gradient (as torch).
nesterov : bool
    The double-momentum form of §2.3.1 (needs μ > 0).
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults

# Sharded (DTensor) parameters (xpmat.optim.torch_sharded): every entry steps on its own,
# so each rank steps its local shard.
LOCAL_SHARDS = "elementwise"


class SGDState(NamedTuple):
    """Per-parameter SGD state: ``momentum_buffer`` v (``torch.optim.SGD``'s key; kept, at
    zero, when μ = 0) and the non-finite counter."""

    momentum_buffer: Any = None
    nonfinite_count: Any = None


State = SGDState


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "sgd")
    check_common(h)
    check_real("momentum", h["momentum"], 0.0, 1.0, high_open=True)
    check_bool("nesterov", h["nesterov"])
    if h["nesterov"] and not maybe_nonzero(h["momentum"]):
        raise ValueError("nesterov=True needs momentum > 0 (as torch.optim.SGD)")
    return h


def transform(**hyper: Any) -> Transform:
    """SGD as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters: :func:`update`)."""
    h = _checked(hyper)
    return skip_nonfinite(chain(
        add_decayed_weights(h["weight_decay"]),
        momentum(h["momentum"], nesterov=h["nesterov"], kind="heavy_ball", state_dtype=h["state_dtype"]),
        scale_by_lr(step_size(h)), state=SGDState), sanitize=False)


def init(params: list[Any], **hyper: Any) -> list[SGDState]:
    """Zero momentum for each parameter (any shape)."""
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[SGDState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[SGDState]]:
    """One SGD step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays
        Any shapes, one Array API library and device.
    state : list of SGDState
    **hyper
        ``lr`` (η ≥ 0), ``momentum`` (μ in [0, 1)), ``nesterov`` (needs μ > 0),
        ``weight_decay`` (λ ≥ 0, added to the gradient), ``schedule`` (s ≥ 0, multiplies η),
        ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of SGDState

    Notes
    -----
    [Stratos 2026][stratos-2026] eq. 21 (SGD), 25–26 (Polyak momentum), §2.3.1 (Nesterov as
    double momentum, Lemma S.10).  A gradient with a NaN or ±Inf entry leaves its parameter
    and momentum unchanged and counts in ``nonfinite_count``.

    Backends: standard Array API only.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import sgd
    >>> p = [np.zeros(2)]
    >>> st = sgd.init(p)
    >>> for _ in range(2):
    ...     u, st = sgd.update([np.ones(2)], st, p, lr=0.1, momentum=0.5)
    ...     p = [p[0] + u[0]]
    >>> p[0].tolist()                      # −0.1 · 1, then −0.1 · (1 + 0.5)
    [-0.25, -0.25]
    """
    return run_update(transform(**hyper), grads, state, params)
