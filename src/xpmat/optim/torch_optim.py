"""The ``torch.optim.Optimizer`` classes of :mod:`xpmat.optim` (imports torch; load it lazily).

Every class is the one adapter :class:`~xpmat.optim.torch_adapter.XpmatOptimizer` over a
functional core: explicit keyword arguments (torch's names: ``lr``, ``momentum``, ``betas``,
``eps``, ``weight_decay``, ``maximize``), each a ``defaults`` entry a param group may override;
``lr``, ``momentum``, ``weight_decay`` (and AdamW's and PowerSGD's ``betas``, the AdamW
fallback's ``adamw_betas``, ``adamw_weight_decay``) may be 1-element tensors, as in torch.optim
(docs/optim.md, "Tensor hyper-parameters");
state keys are the core's field names (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ...).

Matrix methods (:class:`Muon`, :class:`Dion`, :class:`PowerSGD`, :class:`PowerSGDPlus`,
:class:`ManifoldMuon`, :class:`AdamNMF`, :class:`Shampoo`) take four more arguments for their
AdamW fallback — ``adamw_lr_ratio`` (its lr is the group's ``lr`` times this),
``adamw_betas``, ``adamw_eps``, ``adamw_weight_decay`` — and a param-group key ``algorithm``:
the method's name (default) or ``"adamw"``, which runs that whole group on AdamW (embeddings,
output heads), as ``use_muon=False`` does in the reference Muon code.  Parameters with
``ndim < 2`` always go to AdamW.

Non-finite gradients: a parameter whose gradient has a NaN or ±Inf entry is not moved and its
state is not changed; ``state[p]["nonfinite_count"]`` counts such steps (on the device, no
host synchronisation).

Each class equals its functional core on the same inputs: the step is literally
``core.update`` followed by ``p.add_(u)`` (on a CPU Muon makes one such call per 8 MiB of
matrices, :func:`xpmat.optim.muon.calls`; any split gives the same result).
"""

from __future__ import annotations

import inspect
from typing import Any

from xpmat._optional import require
from xpmat.optim import adafactor as _adafactor
from xpmat.optim import adagrad as _adagrad
from xpmat.optim import adamnmf as _adamnmf
from xpmat.optim import adamw as _adamw
from xpmat.optim import dion as _dion
from xpmat.optim import dion2 as _dion2
from xpmat.optim import exponentiated_gradient as _exponentiated_gradient
from xpmat.optim import lre as _lre
from xpmat.optim import manifold_muon as _manifold_muon
from xpmat.optim import muon as _muon
from xpmat.optim import normuon as _normuon
from xpmat.optim import powersgd as _powersgd
from xpmat.optim import sgd as _sgd
from xpmat.optim import shampoo as _shampoo
from xpmat.optim import sphere_sgd as _sphere_sgd
from xpmat.optim import steepest_descent as _steepest_descent
from xpmat.optim.torch_adapter import XpmatOptimizer, collect_arguments
from xpmat.optim.transforms import Transform

torch = require("torch", "The torch optimizers of xpmat.optim (xpmat.optim.Muon, AdamW, ...)")

__all__ = ["LRE", "SGD", "AdaGrad", "Adafactor", "AdamNMF", "AdamW", "Dion", "Dion2", "ExponentiatedGradient",
           "ManifoldMuon", "Muon", "NorMuon", "PowerSGD", "PowerSGDPlus", "Shampoo", "SphereSGD",
           "SteepestDescent", "XpmatOptimizer"]

class AdamW(XpmatOptimizer):
    """AdamW ([Stratos 2026, §4, Fig. 1][stratos-2026]) over :mod:`xpmat.optim.adamw`.

    With the default flags it equals ``torch.optim.AdamW`` (complex parameters too, stepped as
    real views); adds AMSGrad after the bias correction, Nesterov (Dozat), Adam-atan2 and three
    weight-decay modes::

        m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;  m̂ = m / (1 − β₁ᵗ);  v̂ = v / (1 − β₂ᵗ)
        p ← p − s η m̂ / (√v̂ + ε) − s η λ p

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
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
    %(schedule)s %(state_dtype)s %(maximize)s

    Notes
    -----
    torch.optim's switches ``foreach``, ``fused``, ``capturable``, ``differentiable`` are
    accepted (by every class) as ``None`` / ``False``, what xpmat's step does, and refused
    otherwise with what it does instead (docs/optim.md).
    """

    method = _adamw
    algorithm = "adamw"
    complex_as_real = True

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 weight_decay_mode: str = "lr", schedule: float = 1.0, nesterov: bool = False,
                 atan2: bool = False, state_dtype: Any = None, maximize: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class Muon(XpmatOptimizer):
    """Muon ([Stratos 2026][stratos-2026] §7, Q.3) over :mod:`xpmat.optim.muon`::

        B ← B + (1 − μ)(G − B);  U = G + μ (B − G)  (Nesterov)  or  B
        W ← W − s η λ W − s η a(m, n) msign(U)

    Same-shaped matrices are orthogonalized in one batched ``msign`` call; 1-D parameters go to
    AdamW.  ``Muon(params, ns_schedule="jordan", compute_dtype="bfloat16", weight_decay=0.1,
    lr=1e-3)`` is ``torch.optim.Muon``'s default update.  Every argument below (but
    ``params``, ``maximize`` and the ``adamw_*`` ones) can be set per param group.

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    lr : float >= 0 or 1-element tensor
    momentum : float in [0, 1) or 1-element tensor
    nesterov : bool
    weight_decay : float >= 0 or 1-element tensor
        Decoupled, times ``lr`` (as torch).
    cautious_weight_decay : bool
        Decay only the entries where the Muon direction ``O = msign(U)`` and the weight have the
        same sign (``O ⊙ W ≥ 0``: the step ``−η a O`` already moves the weight toward zero)::

            W ← W − s η λ (W ⊙ 1[O ⊙ W ≥ 0]) − s η a(m, n) O

        Chen et al. 2025's cautious weight decay; ``cautious_wd`` of microsoft/dion, the mask
        of modded-nanogpt's Muon step.  Default False (decay everywhere, as torch).
    adjust_lr_fn : {"original", "match_rms_adamw", "none"} or None
        ``a(m, n)``: √max(1, m/n), 0.2·√max(m, n), or 1 (None: "original", as torch).
    flatten : bool
        How a parameter of ndim ≥ 3 is a matrix.  True (default, today's behaviour): conv
        style, ``(out, in·k·k)``, one msign and one ``a(out, in·k·k)``.  False: its leading
        axes are a batch of matrices (a stack of experts ``(E, m, n)``): each ``m × n`` matrix
        gets its own msign, and ``a(m, n)`` from its own shape; the momentum buffer keeps the
        parameter's shape.  As dion's ``flatten``.  Keep it fixed for a parameter's lifetime
        (the momentum buffer's shape follows it).
    num_heads : int, optional
        Per-head Newton–Schulz (dion's ``num_heads``): a 2-D ``(H·d, n)`` parameter, e.g. an
        attention projection, is the batch ``(H, d, n)`` of its heads — each head its own msign
        and ``a(d, n)``; the momentum buffer is ``(H, d, n)``.  Set it on the param group of
        the attention weights (every matrix of the group must split so; N-D ones raise).
        None or 1: off.
    split_sizes : sequence of int, optional
        Uneven row blocks (a fused QKV weight ``(q + k + v, n)``, dion's ``split_sizes``): the
        rows of each matrix of the group are split into consecutive blocks of these sizes, each
        its own msign and ``a(s_i, n)``, as if they were separate parameters; the momentum
        buffer stays whole.  The sizes must add up to the rows (of the matrix view); excludes
        ``num_heads``.
    ns_steps : int >= 0
    ns_schedule : {"polar_express", "jordan", "quintic", "cubic"} or sequence of (a, b, c)
    ns_normalize : {"fro", "spectral_estimate", "aol"}
    use_gram_newton_schulz : bool
        Gram Newton–Schulz (``xpmat.msign(..., gram=True)``: the same polynomial, iterated on
        the small Gram matrix, restarted for stability) on the shapes where it takes fewer
        matrix products (5 steps: ``max(m, n) > 1.5 min(m, n)``; 0.47× the products at
        4096 × 256); square-ish matrices keep the plain loop.  The name is dion's and the
        Dao lab's; DeepSpeed's ``ns_method="gram"`` likewise skips square matrices.
    compute_dtype : dtype or name, optional
        Newton–Schulz precision (``"bfloat16"`` on GPUs and bf16-capable CPUs).
    eps : float >= 0
        Floor of the Frobenius norm in the Newton–Schulz normalization.
    %(schedule)s %(state_dtype)s %(maximize)s %(adamw_fallback)s
    """

    method = _muon
    algorithm = "muon"
    matrix_only = True
    reuse_state = True  # momentum updated in place (torch.lerp(out=)), as torch.optim.Muon

    def __init__(self, params: Any, lr: float = 0.02, *, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, schedule: float = 1.0, adjust_lr_fn: str | None = "original",
                 ns_steps: int = 5, ns_schedule: Any = "polar_express", ns_normalize: str = "fro",
                 compute_dtype: Any = None, eps: float = 1e-7, state_dtype: Any = None,
                 use_gram_newton_schulz: bool = False, cautious_weight_decay: bool = False,
                 flatten: bool = True, num_heads: int | None = None, split_sizes: Any = None,
                 maximize: bool = False, adamw_lr_ratio: float = 0.05,
                 adamw_betas: tuple[float, float] = (0.9, 0.95), adamw_eps: float = 1e-8,
                 adamw_weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))

    def _calls(self, params: list[torch.Tensor], group: dict) -> list[list[int]]:
        """The core calls of :func:`xpmat.optim.muon.calls` (on a CPU at most 8 MiB of
        matrices each, so only one chunk's updates are alive at a time); 1-D parameters (AdamW)
        join the first call."""
        if self._is_fallback_group(group):
            return [list(range(len(params)))]
        mats = [i for i, p in enumerate(params) if p.ndim >= 2]
        rest = [i for i, p in enumerate(params) if p.ndim < 2]
        out = [[mats[j] for j in c] for c in _muon.calls([params[i] for i in mats], group["compute_dtype"],
                                                          group["flatten"], group["num_heads"])]
        return [out[0] + rest, *out[1:]] if out else [rest]


class NorMuon(XpmatOptimizer):
    """NorMuon ([Li et al. 2025][li-2025-normuon], Algorithm 1) over :mod:`xpmat.optim.normuon`:
    Muon whose orthogonalized update has each row (output neuron) divided by the root of an EMA
    of its mean square, then rescaled to its Frobenius norm before::

        B ← B + (1 − μ)(G − B);  U = G + μ (B − G)  (Nesterov)  or  B;   O = msign(U)
        v ← β₂ v + (1 − β₂) mean_cols(O ⊙ O);   Ô = O ⊘ (√v + 1e-8) · ‖O‖_F / ‖O ⊘ (√v + 1e-8)‖_F
        W ← W − s η λ W − s η a(m, n) Ô

    As microsoft/dion's ``NorMuon`` (its ``muon_beta2`` is ``beta2`` here).  1-D parameters go
    to AdamW.  State: ``momentum_buffer`` (the matrix view), ``variance_neuron`` ``(m, 1)``.

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
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
    %(schedule)s %(state_dtype)s %(maximize)s %(adamw_fallback)s
    """

    method = _normuon
    algorithm = "normuon"
    matrix_only = True

    def __init__(self, params: Any, lr: float = 0.02, *, momentum: float = 0.95, nesterov: bool = True,
                 beta2: float = 0.95, weight_decay: float = 0.0, schedule: float = 1.0,
                 adjust_lr_fn: str | None = "original", ns_steps: int = 5, ns_schedule: Any = "polar_express",
                 ns_normalize: str = "fro", compute_dtype: Any = None, eps: float = 1e-7,
                 state_dtype: Any = None, use_gram_newton_schulz: bool = False,
                 cautious_weight_decay: bool = False, flatten: bool = True, num_heads: int | None = None,
                 split_sizes: Any = None, maximize: bool = False, adamw_lr_ratio: float = 0.05,
                 adamw_betas: tuple[float, float] = (0.9, 0.95), adamw_eps: float = 1e-8,
                 adamw_weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class Dion2(XpmatOptimizer):
    """Dion2 (microsoft/dion's ``Dion2``) over :mod:`xpmat.optim.dion2`: each step only the
    ``⌈f L⌉`` slices of the shorter side with the largest ℓ1 momentum are orthogonalized and
    applied, and decay in the momentum by ``ef_decay``::

        B ← B + G;   I = top-⌈f L⌉ slices of B by ℓ1 norm;   O = msign(B[I]);   B[I] ← ef · B[I]
        W ← W − s η λ W;   W[I] ← W[I] − s η a(m, n) O

    1-D parameters go to AdamW.  State: ``momentum_buffer`` (the matrix view).

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    lr : float >= 0 or 1-element tensor
    fraction : float in (0, 1]
        Share of the shorter side's slices (rows when ``m ≤ n``, else columns) used per step.
    ef_decay : float in [0, 1]
        Error-feedback factor of the selected slices of the momentum.
    weight_decay : float >= 0 or 1-element tensor
        Decoupled, times ``lr``, on the whole matrix (as dion).
    adjust_lr_fn : {"original", "match_rms_adamw", "none"} or None
        ``a(m, n)`` as :class:`Muon` (of the whole matrix).
    flatten : bool
        As :class:`Muon`.
    ns_steps, ns_schedule, ns_normalize, use_gram_newton_schulz, compute_dtype, eps
        The ``msign`` of the selected submatrix, as :class:`Muon`.
    %(schedule)s %(state_dtype)s %(maximize)s %(adamw_fallback)s
    """

    method = _dion2
    algorithm = "dion2"
    matrix_only = True

    def __init__(self, params: Any, lr: float = 0.01, *, fraction: float = 0.25, ef_decay: float = 0.95,
                 weight_decay: float = 0.0, schedule: float = 1.0, adjust_lr_fn: str | None = "original",
                 ns_steps: int = 5, ns_schedule: Any = "polar_express", ns_normalize: str = "fro",
                 compute_dtype: Any = None, eps: float = 1e-7, state_dtype: Any = None,
                 use_gram_newton_schulz: bool = False, flatten: bool = True, maximize: bool = False,
                 adamw_lr_ratio: float = 0.05, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, adamw_weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class ManifoldMuon(XpmatOptimizer):
    """Manifold Muon ([Su 2025][su-2025], §8.2) over :mod:`xpmat.optim.manifold_muon`:
    matrices stay on the Stiefel manifold ``Wᵀ W = R² I`` (or the spectral sphere ``‖W‖₂ = R``)::

        Φ = msign(G + W X);  X ← X − α (Wᵀ Φ + Φᵀ W);  W ← msign(W − s η Φ)

    1-D parameters go to AdamW.  ``lr = 0`` moves nothing (the dual still moves).

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
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
    %(schedule)s %(state_dtype)s %(maximize)s %(adamw_fallback)s
    """

    method = _manifold_muon
    algorithm = "manifold_muon"
    matrix_only = True

    def __init__(self, params: Any, lr: float = 0.05, *, momentum: float = 0.0, schedule: float = 1.0,
                 mode: str = "online", manifold: str = "stiefel", dual_lr: float = 0.1,
                 dual_steps: int = 20, tol: float = 1e-6, check_every: int = 5, radius: float = 1.0,
                 ns_steps: int = 8, ns_schedule: Any = "polar_express", polish_steps: int = 6,
                 state_dtype: Any = None, maximize: bool = False, adamw_lr_ratio: float = 0.02,
                 adamw_betas: tuple[float, float] = (0.9, 0.95), adamw_eps: float = 1e-8,
                 adamw_weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class Dion(XpmatOptimizer):
    """Dion ([Pethick 2025][pethick-2025]) over :mod:`xpmat.optim.dion`::

        B = M + G;  P, R, Q = PowerIter1(B; Q);  M ← B − (1 − μ) P Rᵀ
        X ← X − s η √(m/n) P Qᵀ − s η λ X

    1-D parameters go to AdamW.

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    lr : float >= 0 or 1-element tensor
    momentum : float in [0, 1) or 1-element tensor
        μ (was ``mu``); 0 is Pethick's plain error feedback.
    rank : int >= 1 or float in (0, 1]
        Absolute, or a fraction of ``min(m, n)`` (rounded up); capped at ``min(m, n)``.
    rank_multiple_of : int >= 1
    weight_decay : float >= 0 or 1-element tensor
    lr_scale : {"fan", None}
        √(m/n), or 1.
    orthogonalize : {"auto", "householder", "cholesky_qr2", "rcqr"}
    oversample : float >= 1
        Rows of the rcqr sketch per rank.
    seed : int >= 0
        The initial ``Q`` (parameter ``i`` from ``seed + i``).
    %(schedule)s %(state_dtype)s %(maximize)s %(adamw_fallback)s
    """

    method = _dion
    algorithm = "dion"
    matrix_only = True
    renamed = _dion.RENAMED

    def __init__(self, params: Any, lr: float = 0.01, *, momentum: float = 0.95, rank: float = 0.25,
                 rank_multiple_of: int = 1, weight_decay: float = 0.0, schedule: float = 1.0,
                 lr_scale: str | None = "fan", orthogonalize: str = "auto", oversample: float = 1.25,
                 seed: int = 0, state_dtype: Any = None, maximize: bool = False,
                 adamw_lr_ratio: float = 0.1, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, adamw_weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class PowerSGD(XpmatOptimizer):
    """PowerSGD / PowerSGD+ ([Xie, Chen, Yuan 2025][xie-chen-yuan-2025] §3–4, Alg. 2)
    over :mod:`xpmat.optim.powersgd`, in one process::

    %(powersgd_update)s

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    %(powersgd_params)s
    restart_every : int >= 1 or None
        τ: None = PowerSGD, an int = PowerSGD+.
    %(powersgd_compression)s
    %(schedule)s %(state_dtype)s %(maximize)s %(adamw_fallback)s
    """

    method = _powersgd
    algorithm = "powersgd"
    matrix_only = True

    def __init__(self, params: Any, lr: float = 0.01, *, momentum: float = 0.9, rank: float = 4,
                 rank_multiple_of: int = 1, restart_every: int | None = None, svd: str = "full",
                 base: str = "sgd", betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, schedule: float = 1.0, orthogonalize: str = "auto",
                 seed: int = 0, state_dtype: Any = None, maximize: bool = False,
                 adamw_lr_ratio: float = 0.1, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, adamw_weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class PowerSGDPlus(PowerSGD):
    """PowerSGD+ ([Xie, Chen, Yuan 2025][xie-chen-yuan-2025] §4, Alg. 2) over
    :mod:`xpmat.optim.powersgd`: :class:`PowerSGD` with ``restart_every=100`` by default, so
    the power iteration restarts from an SVD every τ steps, in one process::

    %(powersgd_update)s

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    restart_every : int >= 1 or None
        τ, steps between two SVD restarts (default 100; None = plain :class:`PowerSGD`).
    %(powersgd_params)s
    %(powersgd_compression)s
    %(schedule)s %(state_dtype)s %(maximize)s %(adamw_fallback)s
    """

    algorithm = "powersgd+"

    def __init__(self, params: Any, lr: float = 0.01, *, momentum: float = 0.9, rank: float = 4,
                 rank_multiple_of: int = 1, restart_every: int | None = 100, svd: str = "full",
                 base: str = "sgd", betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, schedule: float = 1.0, orthogonalize: str = "auto",
                 seed: int = 0, state_dtype: Any = None, maximize: bool = False,
                 adamw_lr_ratio: float = 0.1, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, adamw_weight_decay: float = 0.0, **kwargs: Any) -> None:
        # PowerSGD's signature with τ = 100, spelled out so that help() and the API page show it
        XpmatOptimizer.__init__(self, params, collect_arguments(type(self), locals()))


class Adafactor(XpmatOptimizer):
    """Adafactor ([Stratos 2026][stratos-2026] §4.7 eq. 52, §4.7.1) over :mod:`xpmat.optim.adafactor`::

        V̂ = rank-1 factored EMA of G² + ε₁ (β₂ₜ = 1 − t^beta2_decay);  O = G / √V̂
        O ← O / max(1, RMS(O) / d);  [M ← β₁ M + (1 − β₁) O];  W ← W − s η max(ε₂, RMS(W)) O − s η λ W

    1-D parameters keep an unfactored second moment (no AdamW fallback).  Names as
    ``torch.optim.Adafactor`` (``beta2_decay``, ``eps``, ``d``).

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    lr : float >= 0 or 1-element tensor
    betas : (float, float) in [0, 1)
        β₁ (0: no first moment, the paper's default), β₂ (used when ``beta2_decay`` is None).
    beta2_decay : float < 0 or None
    eps : (float, float) >= 0
        ε₁ added to G², ε₂ the floor of RMS(W).
    d : float > 0
        Update clipping threshold.
    scale_parameter : bool
        Relative step size ``max(ε₂, RMS(W))``.
    weight_decay : float >= 0 or 1-element tensor
    %(schedule)s %(state_dtype)s %(maximize)s
    """

    method = _adafactor
    algorithm = "adafactor"
    renamed = _adafactor.RENAMED

    def __init__(self, params: Any, lr: float = 1e-2, *, betas: tuple[float, float] = (0.0, 0.999),
                 beta2_decay: float | None = -0.8, eps: tuple[float, float] = (1e-30, 1e-3),
                 d: float = 1.0, scale_parameter: bool = True, weight_decay: float = 0.0,
                 schedule: float = 1.0, state_dtype: Any = None, maximize: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class AdamNMF(XpmatOptimizer):
    """AdamNMF ([Stratos 2026, App. L.2][stratos-2026]) over :mod:`xpmat.optim.adamnmf`::

        A, B ← one warm-started EM step of the rank-r NMF of G² (or of β A B + (1 − β) G²)
        W ← W − s η M̄ / (√(A B) + ε) − s η λ W       (M̄ = G, or bias-corrected momentum)

    1-D parameters go to AdamW.

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    lr : float >= 0 or 1-element tensor
    rank : int >= 1 or float in (0, 1]
    betas : (float, float or None)
        β₁ momentum in [0, 1) (0: the raw gradient); β the EMA of the EM target (None: G²).
    eps : float >= 0
    init_scale : float > 0
    factor_floor, nmf_eps : float >= 0
    weight_decay : float >= 0 or 1-element tensor
    seed : int >= 0
    %(schedule)s %(state_dtype)s %(maximize)s %(adamw_fallback)s
    """

    method = _adamnmf
    algorithm = "adamnmf"
    matrix_only = True
    renamed = _adamnmf.RENAMED

    def __init__(self, params: Any, lr: float = 1e-3, *, rank: float = 1,
                 betas: tuple[float, float | None] = (0.0, None), eps: float = 1e-8,
                 init_scale: float = 1e-3, factor_floor: float = 1e-12, nmf_eps: float = 1e-30,
                 weight_decay: float = 0.0, schedule: float = 1.0, seed: int = 0,
                 state_dtype: Any = None, maximize: bool = False, adamw_lr_ratio: float = 1.0,
                 adamw_betas: tuple[float, float] = (0.9, 0.95), adamw_eps: float = 1e-8,
                 adamw_weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class LRE(XpmatOptimizer):
    """LRE, low-rank eigenbasis ([LRE 2025][lre-2025]) over :mod:`xpmat.optim.lre`: each
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

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
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
    %(schedule)s %(state_dtype)s %(maximize)s
    """

    method = _lre
    algorithm = "lre"

    def __init__(self, params: Any, lr: float = 1e-3, *, rank: int = 16, curvature: str = "covariance",
                 basis: str = "direct", inner: str | list[str] = "adam",
                 betas: tuple[float, float] = (0.9, 0.999), beta: float | None = 0.99, eps: float = 1e-8,
                 eig_rtol: float = 1e-7, history_size: int = 32, max_dim: int = 4096, update_freq: int = 1,
                 ema_beta: float = 0.9, norm_beta: float = 0.99, clip_norm: float | None = None,
                 clip_value: float | None = None, hebbian_lr: float = 0.05,
                 hebbian_betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
                 schedule: float = 1.0, seed: int = 0, state_dtype: Any = None, maximize: bool = False,
                 **kwargs: Any) -> None:
        self._graph: dict[torch.Tensor, torch.Tensor] | None = None
        self._jac: dict[torch.Tensor, torch.Tensor] | None = None
        super().__init__(params, collect_arguments(type(self), locals()))

    def _closure_kind(self) -> str | None:
        """``"hessian"``, ``"fisher"``, ``"gauss_newton"`` or None: what the closure provides."""
        curvs = {g["curvature"] for g in self.param_groups}
        hess = curvs & set(_lre.HESSIAN_CURVATURES)
        per = sorted(curvs & set(_lre.PER_SAMPLE_CURVATURES))
        if per and (hess or len(per) > 1):
            raise ValueError(f"LRE: param groups with curvatures {sorted(curvs)} need different "
                             "closures; one closure serves every group")
        return "hessian" if hess else (per[0] if per else None)

    def _evaluate(self, closure: Any) -> Any:
        """With a Hessian curvature: the closure's loss differentiated with ``create_graph``
        (the graph kept for this step's Hessian-vector products); with a per-sample one: the
        per-sample gradients of the closure's vector (kept for the corrections)."""
        kind = self._closure_kind()
        if kind is None:
            return super()._evaluate(closure)
        if closure is None:
            raise ValueError(f"LRE: curvature {kind!r} needs step(closure) (see the class doc)")
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        takes_backward = "backward" in inspect.signature(closure).parameters
        with torch.enable_grad():
            out = closure(backward=False) if takes_backward else closure()
            if kind != "hessian":
                return self._per_sample(out, params, kind)
            if takes_backward:
                grads = torch.autograd.grad(out, params, create_graph=True, allow_unused=True)
            else:
                grads = tuple(p.grad for p in params)
                if any(g is not None and g.grad_fn is None for g in grads):
                    raise ValueError("LRE: a Hessian curvature needs a closure(backward=True) "
                                     "or loss.backward(create_graph=True) in the closure")
        self._graph = {p: g for p, g in zip(params, grads, strict=True) if g is not None}
        for p, g in self._graph.items():
            p.grad = g.detach()
        return out.detach()  # the closure's loss holds the create_graph graph: release it

    def _per_sample(self, out: Any, params: list[torch.Tensor], kind: str) -> torch.Tensor:
        """Rows of the Jacobian of ``out`` (k values) in one vmapped backward; sets ``p.grad``
        (``Σ ∇ℓ_j`` or ``Jᵀ r``) and keeps ``Jᵀ`` (n, k) per parameter; returns the objective."""
        if not torch.is_tensor(out) or out.numel() == 0:
            raise ValueError(f"LRE: curvature={kind!r} needs a closure returning a tensor of "
                             f"per-sample {'losses' if kind == 'fisher' else 'residuals'}, got {out!r}")
        v = out.reshape(-1)
        eye = torch.eye(v.numel(), dtype=v.dtype, device=v.device)
        jacs = torch.autograd.grad(v, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        r = v.detach()
        self._jac = {}
        for p, J in zip(params, jacs, strict=True):
            if J is None:
                continue
            J = J.reshape(v.numel(), -1)
            g = J.sum(0) if kind == "fisher" else r.to(J.dtype) @ J
            p.grad = g.reshape(p.shape)
            self._jac[p] = J.mT
        return r.sum() if kind == "fisher" else 0.5 * (r * r).sum()

    def _main_transform(self, group: dict[str, Any]) -> Transform:
        hyper = self._hyper(group, _lre)
        curv, ps = group["curvature"], self._with_grad(group)
        if curv in _lre.PER_SAMPLE_CURVATURES:
            jac = self._jac

            def corrections() -> list[torch.Tensor]:
                if jac is None or any(p not in jac for p in ps):
                    raise ValueError(f"LRE: curvature={curv!r} needs step(closure) with a closure "
                                     "returning per-sample values that depend on every parameter")
                return [jac[p] for p in ps]

            return _lre.transform(corrections=corrections, **hyper)
        if curv not in _lre.HESSIAN_CURVATURES:
            return _lre.transform(**hyper)
        graph, sign = self._graph, -1.0 if group["maximize"] else 1.0

        def hvp(vs: list[torch.Tensor]) -> list[torch.Tensor]:
            if graph is None or any(p not in graph for p in ps):
                raise ValueError("LRE: every parameter of a Hessian-curvature group needs a "
                                 "gradient from the closure")
            with torch.enable_grad():
                out = torch.autograd.grad([graph[p] for p in ps], ps, grad_outputs=vs,
                                          retain_graph=True, allow_unused=True)
            return [torch.zeros_like(p) if h is None else sign * h.detach()
                    for p, h in zip(ps, out, strict=True)]

        return _lre.transform(hvp=hvp, **hyper)

    def _finish(self) -> None:
        self._graph = self._jac = None  # release the create_graph graph and the Jacobians


class Shampoo(XpmatOptimizer):
    """Shampoo ([Stratos 2026][stratos-2026] §5, §5.1, §6.2) over :mod:`xpmat.optim.shampoo`::

        L ← β₂ L + (1 − β₂) G Gᵀ;  R ← β₂ R + (1 − β₂) Gᵀ G       (blocks, bias-corrected)
        every k steps: P_L = (L̂ + ε I)^(−1/p), P_R = (R̂ + ε I)^(−1/p)
        D = P_L M̄ P_R, grafted to AdamW's norm per block;  W ← W − s η D − s η λ W

    1-D parameters go to AdamW.

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
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
    %(schedule)s %(state_dtype)s %(maximize)s %(adamw_fallback)s
    """

    method = _shampoo
    algorithm = "shampoo"
    matrix_only = True
    renamed = _shampoo.RENAMED

    def __init__(self, params: Any, lr: float = 1e-3, *, betas: tuple[float, float | None] = (0.9, 0.999),
                 eps: float = 1e-12, eps_mode: str = "absolute", root: int = 4, root_method: str = "eigh",
                 precondition_every: int = 10, start_preconditioning_step: int | None = None,
                 max_preconditioner_dim: int = 1024, grafting: str | None = "adamw",
                 graft_beta2: float = 0.999, graft_eps: float = 1e-8, newton_iters: int = 100,
                 newton_tol: float | None = None, basis_iters: int = 1, weight_decay: float = 0.0,
                 schedule: float = 1.0, state_dtype: Any = None, maximize: bool = False,
                 adamw_lr_ratio: float = 1.0, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, adamw_weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class SGD(XpmatOptimizer):
    """SGD with Polyak or Nesterov momentum ([Stratos 2026, §2.2–2.3.1][stratos-2026]) over
    :mod:`xpmat.optim.sgd`::

        d = g + λ w;  v ← μ v + d;  w ← w − s η v      (nesterov: w ← w − s η (d + μ v))

    ``torch.optim.SGD`` with ``dampening=0`` (tested equal, Nesterov and complex parameters
    included: those step as real views, as torch); ``dampening``
    is not supported (torch's first step ignores it, so a zero buffer cannot reproduce it), and
    the arguments after ``momentum`` are keyword-only (torch's fourth positional one is
    ``dampening``).

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    lr : float >= 0 or 1-element tensor
    momentum : float in [0, 1) or 1-element tensor
        μ of eq. 25 (0: plain SGD; the buffer is kept, at zero).
    weight_decay : float >= 0 or 1-element tensor
        λ, added to the gradient (as torch).
    nesterov : bool
        The double-momentum form of §2.3.1 (needs μ > 0).
    %(schedule_lr_only)s %(state_dtype)s %(maximize)s
    """

    method = _sgd
    algorithm = "sgd"
    complex_as_real = True

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0, *, weight_decay: float = 0.0,
                 nesterov: bool = False, schedule: float = 1.0, state_dtype: Any = None,
                 maximize: bool = False, **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class AdaGrad(XpmatOptimizer):
    """AdaGrad ([Stratos 2026, §3][stratos-2026]) over :mod:`xpmat.optim.adagrad`::

        d = g + λ w;  diagonal: S ← S + d²,  u = d / (√S + ε)            (eq. 44)
                      full: O ← O + d dᵀ per block,  u = O^{-1/2} d    (§3.2.1; exact or rank r)
                      norm: s ← s + ‖d‖²,  u = d / (√s + ε)            (eq. 33)
        m ← μ m + (1 − μ) u  (μ > 0);  w ← w − s η m / (1 + (t − 1) lr_decay)

    With the defaults it is ``torch.optim.Adagrad`` (same names; tested equal, complex
    parameters included: the diagonal preconditioner steps them as real views, as torch).

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    lr : float >= 0 or 1-element tensor
        η, the scale D of the regret bounds (§3.1.1, §3.2.1).
    lr_decay : float >= 0
    weight_decay : float >= 0 or 1-element tensor
        λ, added to the gradient (as torch).
    initial_accumulator_value : float >= 0
        ``S₀`` (full: ``v I``).
    eps : float >= 0
        Added to the square roots.
    momentum : float in [0, 1) or 1-element tensor
        μ, an average of the preconditioned direction (0: none, as torch).
    preconditioner : {"diagonal", "full", "norm"}
    rank : int >= 1 or None
        ``"full"``: None keeps each block's ``O`` exactly; an int r keeps the blocks larger
        than r at rank r (:func:`xpmat.lowrank_eigh_update`).
    max_dim : int >= 1
        ``"full"``: the flattened parameter is cut into blocks of at most this many entries.
    %(schedule_lr_only)s %(state_dtype)s %(maximize)s
    """

    method = _adagrad
    algorithm = "adagrad"

    def _complex_ok(self, group: dict[str, Any]) -> bool:
        """Complex parameters step as real views with the diagonal preconditioner (as
        ``torch.optim.Adagrad``); ``"full"`` and ``"norm"`` couple entries, so they refuse them."""
        return group["preconditioner"] == "diagonal"

    def _complex_hint(self, group: dict[str, Any]) -> str:
        return (f"; preconditioner={group['preconditioner']!r} couples entries: use "
                "preconditioner='diagonal', which steps complex parameters as real views (as torch)")

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, momentum: float = 0.0,
                 preconditioner: str = "diagonal", rank: int | None = None, max_dim: int = 256,
                 schedule: float = 1.0, state_dtype: Any = None, maximize: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class ExponentiatedGradient(XpmatOptimizer):
    """Exponentiated gradient, mirror descent on the simplex ([Stratos 2026, §1.1, App. D][stratos-2026])
    over :mod:`xpmat.optim.exponentiated_gradient`::

        entropy:     w ← w ⊙ exp(−s η m) / Σ w ⊙ exp(−s η m)   (each row on the simplex; eq. 91)
        euclidean:   w ← Π_Δ(w − s η m)                         (projected SGD; eq. 2–3)
        hypentropy:  w ← β sinh(asinh(w / β) − s η m)          (any sign; EGU±)

    ``m`` is the gradient, or its average ``m ← μ m + (1 − μ) g``.  With ``"entropy"`` /
    ``"euclidean"`` every row (last axis) of every parameter must be a probability vector
    (``ValueError`` at the first step otherwise).

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    lr : float >= 0 or 1-element tensor
    mirror : {"entropy", "euclidean", "hypentropy"}
    scale : float > 0
        β of ``"hypentropy"``: entries with ``|w| ≪ β`` move as gradient descent with step
        ``η β``, larger ones multiplicatively.
    momentum : float in [0, 1) or 1-element tensor
        μ (0: the gradient itself).
    %(schedule_lr_only)s %(state_dtype)s %(maximize)s
    """

    method = _exponentiated_gradient
    algorithm = "exponentiated_gradient"

    def __init__(self, params: Any, lr: float = 0.1, *, mirror: str = "entropy", scale: float = 1.0,
                 momentum: float = 0.0, schedule: float = 1.0, state_dtype: Any = None,
                 maximize: bool = False, **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class SteepestDescent(XpmatOptimizer):
    """Steepest descent under a norm ([Stratos 2026, §7 eq. 65–69][stratos-2026]) over
    :mod:`xpmat.optim.steepest_descent`::

        B ← B + (1 − μ)(G − B);  U = G + μ (B − G) (nesterov) or B  (U = G when μ = 0)
        W ← W − s η λ W − s η dir(U)
        dir: fro  U/‖U‖_F | U;  linf  sign U | ‖U‖₁ sign U;  spectral  msign(U) | ‖U‖_nuc msign(U)
             (scaling "tr" | "mm")

    ``norm="spectral", scaling="tr"`` with momentum is Muon without its shape factor
    (:class:`Muon` with ``adjust_lr_fn="none"``).  Every parameter follows the norm: a 1-D
    parameter is a column vector under ``"spectral"``.

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
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
    compute_dtype : dtype or name, optional
        Newton–Schulz precision of ``"spectral"``.
    eps : float >= 0
        Floor of the Frobenius norm in the Newton–Schulz normalization.
    %(schedule)s %(state_dtype)s %(maximize)s
    """

    method = _steepest_descent
    algorithm = "steepest_descent"

    def __init__(self, params: Any, lr: float = 0.02, *, norm: str = "spectral", scaling: str = "tr",
                 momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 schedule: float = 1.0, ns_steps: int = 5, ns_schedule: Any = "polar_express",
                 ns_normalize: str = "fro", compute_dtype: Any = None, eps: float = 1e-7,
                 state_dtype: Any = None, maximize: bool = False, **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))


class SphereSGD(XpmatOptimizer):
    """SGD with each unit on the sphere ([Stratos 2026, §8.1][stratos-2026]) over
    :mod:`xpmat.optim.sphere_sgd`: every row of a parameter's matrix view (a 1-D parameter:
    the vector) is kept at norm ``radius``::

        v ← μ v + g;  w̄ = r w / ‖w‖;  v⊥ = v − w̄ (w̄ᵀ v) / r²
        pin: x = w̄ − s η v;  classical: x = w̄ − s η v⊥;  trust_region: x = w̄ − s η z (‖z‖ ≤ 1, z ⟂ w̄)
        w ← r x / ‖x‖

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    lr : float >= 0 or 1-element tensor
    method : {"pin", "classical", "trust_region"}
        Eq. 70, 72, 73.
    norm : {"l2", "linf"}
        The trust region's norm (``"linf"``: the duality of Lemma S.21).
    radius : float > 0
    momentum : float in [0, 1) or 1-element tensor
        Heavy ball on the gradient (0: none).
    nesterov : bool
    %(schedule_lr_only)s %(state_dtype)s %(maximize)s
    """

    method = _sphere_sgd
    algorithm = "sphere_sgd"

    def __init__(self, params: Any, lr: float = 0.05, *, method: str = "classical", norm: str = "l2",
                 radius: float = 1.0, momentum: float = 0.0, nesterov: bool = False,
                 schedule: float = 1.0, state_dtype: Any = None, maximize: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(params, collect_arguments(type(self), locals()))
