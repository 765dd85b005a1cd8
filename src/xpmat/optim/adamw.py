"""AdamW ([Stratos 2026, §4, Fig. 1][stratos-2026]): :func:`~xpmat.optim.transforms.scale_by_adam`,
decay and step size.

Per parameter, with gradient :math:`g_t` and step :math:`t = 1, 2, \\dots`::

    o_t = adam_direction(g_t)                    (m, v, bias correction; AMSGrad, Nesterov, atan2)
    w_{t+1} = w_t − s η o_t − decay                                   (§4.4)

As a composition (``weight_decay_mode``, with schedule multiplier ``s``)::

    "lr" (default, PyTorch's AdamW):  chain(scale_by_adam, add_decayed_weights(λ), scale_by_lr(s η))
    "decoupled" (Wortsman et al. 2024):  chain(scale_by_adam, scale_by_lr(s η), add_decayed_weights(−s λ))
    "l2" (classic Adam):              chain(add_decayed_weights(λ), scale_by_adam, scale_by_lr(s η))

wrapped in :func:`~xpmat.optim.transforms.skip_nonfinite`.  With default flags the step equals
``torch.optim.AdamW`` to float precision.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from xpmat.optim._base import (
    check_bool,
    check_choice,
    check_common,
    is_array_hyper,
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
    scale_by_adam,
    scale_by_lr,
    skip_nonfinite,
)

__all__ = ["DEFAULTS", "AdamWState", "State", "init", "transform", "update"]

SPEC = MethodSpec(
    name="adamw",
    class_name="AdamW",
    module=__name__,
    defaults={
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 1e-2,
        "amsgrad": False,
        "weight_decay_mode": "lr",
        "schedule": 1.0,
        "nesterov": False,
        "atan2": False,
        "state_dtype": None,
    },
    positional=5,
    complex_as_real=True,
    doc="AdamW (§4): bias correction, AMSGrad after correction, Nesterov, atan2",
    demo={"lr": 3e-3},
    source="[Stratos 2026, §4, Fig. 1][stratos-2026]; [Loshchilov & Hutter 2019][loshchilov-hutter-2019]",
    summary="""\
AdamW ([Stratos 2026, §4, Fig. 1][stratos-2026]) over :mod:`xpmat.optim.adamw`.

With the default flags it equals ``torch.optim.AdamW`` (complex parameters too, stepped as
real views); adds AMSGrad after the bias correction, Nesterov (Dozat), Adam-atan2 and three
weight-decay modes::

    m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;  m̂ = m / (1 − β₁ᵗ);  v̂ = v / (1 − β₂ᵗ)
    p ← p − s η m̂ / (√v̂ + ε) − s η λ p
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
betas : (float, float) in [0, 1)
    Each a float or a 1-element tensor.
eps : float >= 0
weight_decay : float >= 0 or 1-element tensor
amsgrad : bool
    Running max of the bias-corrected ``v̂`` (§4.2).
weight_decay_mode : {"lr", "decoupled", "l2"}
    ``"lr"``: decay ``s η λ p`` (torch); ``"decoupled"``: ``s λ p``; ``"l2"``: ``λ p`` added
    to the gradient.
nesterov, atan2 : bool
    Dozat's Nesterov momentum (§4.3); ``atan2(m̂, √v̂)`` instead of the ε division (§4.1.2).
""",
    notes="""\
torch.optim's switches ``foreach``, ``fused``, ``capturable``, ``differentiable`` are
accepted (by every class) as ``None`` / ``False``, what xpmat's step does, and refused
otherwise with what it does instead (docs/optim.md).
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults

# Sharded (DTensor) parameters (xpmat.optim.torch_sharded): every entry steps on its own,
# so each rank steps its local shard.
LOCAL_SHARDS = "elementwise"

_MODES = ("lr", "decoupled", "l2")


class AdamWState(NamedTuple):
    """Per-parameter AdamW state (keys match ``torch.optim.AdamW``'s ``self.state[p]``, plus
    the non-finite counter of :func:`~xpmat.optim.transforms.skip_nonfinite`)."""

    step: Any = None
    exp_avg: Any = None
    exp_avg_sq: Any = None
    max_exp_avg_sq: Any = None  # bias-corrected running max (AMSGrad only)
    nonfinite_count: Any = None


State = AdamWState


def transform(**hyper: Any) -> Transform:
    """AdamW as a :class:`~xpmat.optim.transforms.Transform` (hyper-parameters: :func:`update`)."""
    h = resolve_hyper(DEFAULTS, hyper, "adamw")
    check_common(h)
    check_choice("weight_decay_mode", h["weight_decay_mode"], _MODES)
    for k in ("amsgrad", "nesterov", "atan2"):
        check_bool(k, h[k])
    adam = scale_by_adam(h["betas"], h["eps"], amsgrad=h["amsgrad"], nesterov=h["nesterov"],
                         atan2=h["atan2"], state_dtype=h["state_dtype"])
    s, slr, wd = h["schedule"], step_size(h), h["weight_decay"]
    s = s if is_array_hyper(s) else float(s)
    steps = {"lr": (adam, add_decayed_weights(wd), scale_by_lr(slr)),
             "decoupled": (adam, scale_by_lr(slr), add_decayed_weights(-s * wd)),
             "l2": (add_decayed_weights(wd), adam, scale_by_lr(slr))}[h["weight_decay_mode"]]
    return skip_nonfinite(chain(*steps, state=AdamWState), sanitize=False)


def init(params: list[Any], **hyper: Any) -> list[AdamWState]:
    """AdamW state for each parameter: ``step = 0``, zero moments (and the AMSGrad max).

    Parameters
    ----------
    params : list of arrays
        Parameters of any shape, from one Array API library.
    **hyper
        The hyper-parameters of :data:`DEFAULTS` (``amsgrad`` and ``state_dtype`` matter here).
    """
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[AdamWState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[AdamWState]]:
    """One AdamW step: ``(updates, new_state)`` with ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays
        Same shapes, any shape per entry, one Array API library and device.  Integer
        parameters are promoted to the default floating dtype.
    state : list of AdamWState
        From :func:`init` or a previous :func:`update`.
    **hyper
        ``lr`` (η ≥ 0), ``betas`` (β₁, β₂ in [0, 1)), ``eps`` (ε ≥ 0), ``weight_decay``
        (λ ≥ 0), ``weight_decay_mode`` (``"lr"`` | ``"decoupled"`` | ``"l2"``), ``schedule``
        (s ≥ 0, the multiplier of η and λ), ``amsgrad``, ``nesterov``, ``atan2``,
        ``state_dtype``.

    Returns
    -------
    updates : list of arrays
        In the state dtype (float32 for bf16 parameters).
    new_state : list of AdamWState

    Notes
    -----
    [Stratos 2026][stratos-2026] §4 (eq. 46), §4.1.1 (ε), §4.1.2 (atan2), §4.2 (AMSGrad max after
    bias correction), §4.3 (Nesterov, Dozat), §4.4 (weight decay), Fig. 1.  A gradient with a
    NaN or ±Inf entry leaves its parameter and state unchanged and counts in
    ``nonfinite_count`` (:func:`~xpmat.optim.transforms.skip_nonfinite`).

    Backends: standard Array API only (``atan2``, ``sqrt``, ``maximum``); runs everywhere.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import adamw
    >>> p = [np.ones((2, 2))]
    >>> st = adamw.init(p)
    >>> u, st = adamw.update([np.full((2, 2), 0.5)], st, p, lr=0.1, weight_decay=0.0)
    >>> np.round(u[0], 6).tolist()   # first step: −η · sign(g)
    [[-0.1, -0.1], [-0.1, -0.1]]
    """
    return run_update(transform(**hyper), grads, state, params)
