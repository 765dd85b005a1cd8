"""NorMuon ([Li et al. 2025][li-2025-normuon], Algorithm 1): Muon with a per-neuron second moment.

Per matrix parameter ``W`` (``m × n`` view, rows are output neurons), gradient ``G``::

    B = B + (1 − μ)(G − B);  U = G + μ (B − G)  (Nesterov)  or  U = B      (Muon's momentum)
    O = msign(U)
    v = β₂ v + (1 − β₂) mean_cols(O ⊙ O)                  (v: one entry per row, shape (m, 1))
    Ô = O ⊘ (√v + ε);   Ô ← Ô · ‖O‖_F / max(‖Ô‖_F, ε)       (rows balanced, Frobenius norm kept)
    W = W − s η λ W − s η a(m, n) Ô

As [microsoft/dion][dion-code]'s ``NorMuon`` (``muon_beta2`` there, ``beta2`` here as in the
paper and modded-nanogpt; ``ε = 1e-8``).  The paper's step size ``0.2 η √(mn) / ‖Ô‖_F`` is
this with ``adjust_lr_fn="match_rms_adamw"`` (``a = 0.2 √max(m, n)`` and ``‖Ô‖_F = ‖O‖_F =
√min(m, n)`` for a full-rank ``U``).  Every Muon option applies (``flatten``,
``cautious_weight_decay``, ``use_gram_newton_schulz``, the ``ns_*`` ones).  As a composition::

    skip_nonfinite(as_matrix(chain(momentum(μ, nesterov), steepest_direction("spectral", "tr"),
                                   scale_by_neuron_rms(β₂), scale_by_shape(a),
                                   add_decayed_weights(λ), scale_by_lr(s η))))
"""

from __future__ import annotations

from typing import Any, NamedTuple

from xpmat import _array
from xpmat.optim import muon
from xpmat.optim._base import check_real, resolve_hyper, run_init, run_update, state_dtype_for
from xpmat.optim._spec import MethodSpec, insert_after
from xpmat.optim.transforms import (
    Transform,
    per_parameter,
)

__all__ = ["DEFAULTS", "NEURON_EPS", "NorMuonState", "State", "init", "scale_by_neuron_rms", "transform",
           "update"]

SPEC = MethodSpec(
    name="normuon",
    class_name="NorMuon",
    module=__name__,
    defaults=insert_after(muon.DEFAULTS, "nesterov", beta2=0.95),
    types=muon.SPEC.types,
    matrix_only=True,
    fallback_lr_ratio=0.05,
    doc="NorMuon: Muon with each row of msign(U) normalized by an EMA of its mean square",
    demo={"lr": 0.02, "adamw_lr_ratio": 0.15},
    source="[Li et al. 2025, Alg. 1][li-2025-normuon]; [microsoft/dion][dion-code]",
    summary="""\
NorMuon ([Li et al. 2025][li-2025-normuon], Algorithm 1) over :mod:`xpmat.optim.normuon`:
Muon whose orthogonalized update has each row (output neuron) divided by the root of an EMA
of its mean square, then rescaled to its Frobenius norm before::

    B ← B + (1 − μ)(G − B);  U = G + μ (B − G)  (Nesterov)  or  B;   O = msign(U)
    v ← β₂ v + (1 − β₂) mean_cols(O ⊙ O);   Ô = O ⊘ (√v + 1e-8) · ‖O‖_F / ‖O ⊘ (√v + 1e-8)‖_F
    W ← W − s η λ W − s η a(m, n) Ô

As microsoft/dion's ``NorMuon`` (its ``muon_beta2`` is ``beta2`` here).  1-D parameters go
to AdamW.  State: ``momentum_buffer`` (the matrix view), ``variance_neuron`` ``(m, 1)``.
""",
    parameters="""\
lr : float >= 0 or 1-element tensor
momentum : float in [0, 1) or 1-element tensor
nesterov : bool
beta2 : float in [0, 1)
    EMA factor of each row's mean square (default 0.95, as dion and modded-nanogpt).
weight_decay : float >= 0 or 1-element tensor
    Decoupled, times ``lr``.
cautious_weight_decay : bool
    Decay only where ``Ô ⊙ W ≥ 0`` (see :class:`Muon`).
adjust_lr_fn : {"original", "match_rms_adamw", "none"} or None
    ``a(m, n)`` as :class:`Muon`; ``"match_rms_adamw"`` gives the paper's RMS-matched step
    ``0.2 η √(mn) / ‖Ô‖_F`` for full-rank updates.
flatten, num_heads, split_sizes
    As :class:`Muon` (False: leading axes of an N-D parameter are a batch of matrices, and
    ``variance_neuron`` is ``(..., m, 1)``; ``num_heads``: ``(H, d, 1)``).
ns_steps, ns_schedule, ns_normalize, use_gram_newton_schulz, compute_dtype, eps
    The ``msign`` of ``U``, as :class:`Muon`.
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults

#: ε of the row normalization and the floor of ‖Ô‖_F (dion's 1e-8)
NEURON_EPS = 1e-8


class NeuronState(NamedTuple):
    """``variance_neuron``: the EMA of each row's mean square, shape ``(..., m, 1)`` (dion's key)."""

    variance_neuron: Any = None


class NorMuonState(NamedTuple):
    """Per-parameter NorMuon state: Muon's momentum buffer, the per-row second moment and the
    non-finite counter."""

    momentum_buffer: Any = None
    variance_neuron: Any = None
    nonfinite_count: Any = None


State = NorMuonState


def scale_by_neuron_rms(beta2: float, eps: float = NEURON_EPS, *, state_dtype: Any = None) -> Transform:
    """NorMuon's row normalization of matrix updates ``O`` (..., m, n): ``v ← β₂ v + (1 − β₂)
    mean_cols(O²)``, ``O ⊘ (√v + ε)`` rescaled to ``‖O‖_F`` (per matrix; a zero ``O`` stays
    zero).  State ``variance_neuron`` ``(..., m, 1)`` in the state dtype."""
    check_real("beta2", beta2, 0.0, 1.0, high_open=True)

    def init_one(p, xp):
        return NeuronState(xp.zeros((*tuple(p.shape[:-1]), 1), dtype=state_dtype_for(p, xp, state_dtype),
                                    device=_array.device(p)))

    def update_one(u, s, p, xp):
        v = s.variance_neuron
        O = _array.as_float(u, xp, v.dtype)
        v = _array.lerp(v, xp.mean(O * O, axis=-1, keepdims=True), 1.0 - beta2, xp)
        N = O / (xp.sqrt(v) + eps)
        floor = xp.asarray(eps, dtype=v.dtype, device=_array.device(v))
        ratio = _array.frobenius_norm(O, xp, keepdims=True) / xp.maximum(
            _array.frobenius_norm(N, xp, keepdims=True), floor)
        return _array.as_float(N * ratio, xp, u.dtype), NeuronState(v)

    return per_parameter(init_one, update_one, NeuronState)


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "normuon")
    muon.check(h)
    check_real("beta2", h["beta2"], 0.0, 1.0, high_open=True)
    return h


def transform(**hyper: Any) -> Transform:
    """NorMuon as its chain of transforms (see the module doc)."""
    h = _checked(hyper)
    neuron_rms = scale_by_neuron_rms(h["beta2"], state_dtype=h["state_dtype"])
    return muon.composed_with(h, (neuron_rms,), NorMuonState)


def init(params: list[Any], **hyper: Any) -> list[NorMuonState]:
    """Zero momentum (matrix view) and zero per-row second moment for each matrix parameter."""
    return run_init(transform(**hyper), params)


def update(grads: list[Any], state: list[NorMuonState], params: list[Any],
           **hyper: Any) -> tuple[list[Any], list[NorMuonState]]:
    """One NorMuon step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2), as :func:`xpmat.optim.muon.update`.
    state : list of NorMuonState
    **hyper
        Muon's (:data:`xpmat.optim.muon.DEFAULTS`) and ``beta2`` (β₂ in [0, 1), the EMA factor of
        each row's mean square; default 0.95).

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of NorMuonState

    Notes
    -----
    [Li et al. 2025, Algorithm 1][li-2025-normuon] with Muon's momentum and shape factor
    (module doc); a zero gradient gives a zero step; a non-finite gradient leaves the
    parameter and its state unchanged and counts in ``nonfinite_count``.

    Backends: standard Array API; the orthogonalization is :func:`xpmat.msign`'s loop, batched
    over same-shaped matrices.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import normuon
    >>> p = [np.zeros((4, 4))]
    >>> g = [np.diag([4.0, 3.0, 2.0, 1.0])]
    >>> u, st = normuon.update(g, normuon.init(p), p, lr=1.0, momentum=0.0, ns_steps=10)
    >>> bool(np.allclose(-u[0], np.eye(4), atol=1e-2)), st[0].variance_neuron.shape
    (True, (4, 1))
    """
    return run_update(transform(**hyper), grads, state, params)

