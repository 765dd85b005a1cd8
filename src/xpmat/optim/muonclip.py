"""QK-clip, the attention-logit guard of MuonClip ([Kimi Team 2025, §2.1][kimi-k2-2025]).

A training loop measures, in the forward pass, each attention head's largest logit
``S_h = max_{i,j} q_i^h · k_j^h / √d`` over the batch, steps the optimizer, then calls
:func:`qk_clip_` (torch parameters, in place) or :func:`qk_clip` (any library, new arrays) with
those maxima.  Every head with ``S_h > τ`` gets its query and key weights rescaled so that, on
the same batch, its largest logit becomes exactly ``τ``::

    γ_h = min(1, τ / S_h)
    W_q^h ← γ_h^α W_q^h,   W_k^h ← γ_h^(1−α) W_k^h          (α = 1/2: √γ_h each, the report's)

For multi-head latent attention (MLA) the head-specific rotary part of the query takes the whole
``γ_h`` and the rotary key, shared by all heads, is left alone (``q_rope_dim``).  With grouped
keys (GQA: several query heads share one key head) this module scales the key head by the
``1 − α`` power of its group's smallest ``γ`` and gives each query head the rest, so every head's
logits are still multiplied by exactly its own ``γ_h`` (an extension: the report's model has one
key per head).  Nothing else changes: the forward and backward passes, the optimizer state.
"""

from __future__ import annotations

import math
from typing import Any

from xpmat import _array
from xpmat.optim._base import check_int, check_real

__all__ = ["qk_clip", "qk_clip_"]


def _plan(w_q: Any, w_k: Any, max_logits: Any, tau: Any, alpha: Any, num_kv_heads: Any,
          q_rope_dim: Any, axis: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Checks; the per-row scales of ``w_q`` and ``w_k`` along ``axis`` and the per-head γ."""
    check_real("tau", tau, 0.0, math.inf, low_open=True)
    check_real("alpha", alpha, 0.0, 1.0)
    check_int("q_rope_dim", q_rope_dim, 0)
    for name, w in (("w_q", w_q), ("w_k", w_k)):
        if w.ndim < 1:
            raise ValueError(f"`{name}` must be an array of ndim >= 1, got shape {tuple(w.shape)}")
    if isinstance(axis, bool) or not isinstance(axis, int) or not -w_q.ndim <= axis < w_q.ndim \
            or not -w_k.ndim <= axis < w_k.ndim:
        raise ValueError(f"`axis` must be an int indexing an axis of w_q {tuple(w_q.shape)} and "
                         f"w_k {tuple(w_k.shape)}, got {axis!r}")
    if max_logits.ndim != 1 or max_logits.shape[0] < 1:
        raise ValueError(f"`max_logits` must be 1-D, one entry per query head, got shape "
                         f"{tuple(max_logits.shape)}")
    h = max_logits.shape[0]
    rows_q, rows_k = w_q.shape[axis], w_k.shape[axis]
    if rows_q % h:
        raise ValueError(f"`w_q` has {rows_q} rows along axis {axis}, not a multiple of the "
                         f"{h} heads of `max_logits`")
    d_q = rows_q // h
    if q_rope_dim >= d_q:
        raise ValueError(f"`q_rope_dim` ({q_rope_dim}) must be below a query head's {d_q} rows")
    if num_kv_heads is None:
        d_k = d_q - q_rope_dim  # the key head holds the query head's non-rotary rows
        h_kv = rows_k // d_k if rows_k % d_k == 0 else 0
        if not h_kv or h % h_kv:
            raise ValueError(f"`w_k` has {rows_k} rows along axis {axis}: not whole key heads of "
                             f"{d_k} rows dividing the {h} query heads; pass `num_kv_heads`")
    else:
        check_int("num_kv_heads", num_kv_heads, 1)
        h_kv = num_kv_heads
        if h % h_kv or rows_k % h_kv:
            raise ValueError(f"`num_kv_heads` ({h_kv}) must divide the {h} query heads and the "
                             f"{rows_k} rows of `w_k` along axis {axis}")
    dt = _array.float_dtype(xp, max_logits, w_q)  # γ in the wider of the two, at least float32
    if _array.is_low_precision(dt, xp):
        dt = xp.float32
    dev = _array.device(w_q)
    s = _array.as_float(max_logits, xp, dt)
    one = xp.ones_like(s)
    clip = xp.logical_and(xp.isfinite(s), s > tau)  # non-finite maxima: leave the head alone
    gamma = xp.where(clip, tau / xp.where(clip, s, one), one)
    g_kv = xp.min(xp.reshape(gamma, (h_kv, h // h_kv)), axis=-1)  # (h_kv,): the group's smallest
    k_head = g_kv ** (1.0 - alpha)
    q_head = gamma / xp.reshape(xp.broadcast_to(k_head[:, None], (h_kv, h // h_kv)), (h,))
    col = xp.arange(d_q, device=dev)
    rope = xp.astype(col >= d_q - q_rope_dim, dt)[None, :]  # (1, d_q): 1 on the rotary rows
    q_rows = xp.reshape(q_head[:, None] * (1 - rope) + gamma[:, None] * rope, (rows_q,))
    k_rows = xp.reshape(xp.broadcast_to(k_head[:, None], (h_kv, rows_k // h_kv)), (rows_k,))
    return q_rows, k_rows, gamma


def _along(v: Any, w: Any, axis: int, xp: Any) -> Any:
    """``v`` (length ``w.shape[axis]``) shaped to broadcast along ``axis`` of ``w``."""
    shape = [1] * w.ndim
    shape[axis] = v.shape[0]
    return xp.reshape(v, tuple(shape))


def _logits(max_logits: Any, w_q: Any, xp: Any) -> Any:
    """``max_logits`` as an array of ``xp`` on ``w_q``'s device: an array of the weights'
    library as it is; a host sequence (floats, a NumPy array) moved there once, in ``w_q``'s
    floating dtype."""
    host = not hasattr(max_logits, "shape") or (type(max_logits).__module__ == "numpy"
                                                 and not _array.is_numpy(xp))
    if host:
        try:
            if isinstance(max_logits, (str, bytes)):
                raise TypeError
            vals = [float(v) for v in max_logits]
        except (TypeError, ValueError):
            raise TypeError(f"`max_logits` must be an array or a sequence of floats, got "
                            f"{type(max_logits).__name__}") from None
        return xp.asarray(vals, dtype=_array.float_dtype(xp, w_q), device=_array.device(w_q))
    _array.array_namespace(w_q, max_logits, names=("w_q", "max_logits"))
    return max_logits


def qk_clip(w_q: Any, w_k: Any, max_logits: Any, /, *, tau: float = 100.0, alpha: float = 0.5,
            num_kv_heads: int | None = None, q_rope_dim: int = 0, axis: int = 0,
            xp: Any = None) -> tuple[Any, Any]:
    """QK-clip of one attention layer: ``(w_q, w_k)`` with each head over ``tau`` rescaled.

    Parameters
    ----------
    w_q : array (..., H·d_q, ...)
        Query projection weight; the ``H`` heads' rows are consecutive blocks of ``d_q`` along
        ``axis`` (``torch.nn.Linear.weight`` ``(H·d_q, d_model)``: ``axis=0``, the default; a
        ``x @ W`` kernel ``(d_model, H·d_q)``: ``axis=-1``).  Real floating.
    w_k : array (..., H_kv·d_k, ...)
        Key projection weight, laid out as ``w_q`` (``H_kv`` key heads; ``d_k = d_q −
        q_rope_dim``).  For MLA pass the per-head non-rotary key rows (e.g. a view of the
        ``wkv_b`` rows of each head's key, with ``num_kv_heads=H``); the shared rotary key is
        not passed.
    max_logits : array (H,) or sequence of float
        Each query head's largest attention logit ``S_h = max q·k / √d`` measured on the last
        batch (before the step), in ``w_q``'s namespace (or host floats).  Non-finite entries
        leave their head unchanged.
    tau : float > 0
        The threshold ``τ`` (Kimi K2: 100).
    alpha : float in [0, 1]
        The query's share of the factor: ``W_q^h ← γ^α W_q^h``, ``W_k^h ← γ^(1−α) W_k^h``
        (the report's ``√γ`` each is 1/2).
    num_kv_heads : int, optional
        Key heads (GQA); default: ``w_k``'s rows over ``d_k``.
    q_rope_dim : int >= 0
        The last ``q_rope_dim`` rows of each query head are its rotary part (MLA), scaled by
        the whole ``γ_h`` (the rotary key is shared, so it is not scaled).
    axis : int
        The axis of ``w_q`` and ``w_k`` holding the heads.
    xp : namespace, optional

    Returns
    -------
    w_q, w_k : arrays
        New arrays, the inputs' shapes, namespace, device and dtypes (bfloat16 / float16
        weights are scaled in float32 and cast back).  Heads with ``S_h <= tau`` keep their
        values exactly.

    Notes
    -----
    [Kimi Team 2025, §2.1 (MuonClip)][kimi-k2-2025]: ``γ_h = min(1, τ / S_h^max)``; for MHA the
    query and key weights of head ``h`` are each scaled by ``√γ_h``, so the head's logits are
    scaled by ``γ_h`` and its largest one on the measured batch becomes ``τ``.  Only the
    heads over ``τ`` change (a per-head clip, not a per-layer one).  GQA (``H_kv < H``, this
    module's extension): key head ``g`` takes ``(min_{h∈g} γ_h)^(1−α)`` and query head ``h``
    ``γ_h`` divided by that, so each head's logits are still scaled by exactly ``γ_h``.
    For the torch training loop, :func:`qk_clip_` does the same in place.

    Backends: standard Array API (elementwise products, one ``min`` per key group); no host
    read (a host sequence ``max_logits`` is moved to the device once).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import qk_clip
    >>> w_q, w_k = np.ones((4, 3)), np.ones((4, 3))        # 2 heads of 2 rows, d_model = 3
    >>> q, k = qk_clip(w_q, w_k, np.array([400.0, 50.0]), tau=100.0)
    >>> q[:, 0].tolist(), k[:, 0].tolist()                  # head 0: sqrt(100 / 400) = 0.5
    ([0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0])
    """
    xp = _array.array_namespace(w_q, w_k, names=("w_q", "w_k"), xp=xp)
    logits = _logits(max_logits, w_q, xp)
    q_rows, k_rows, _ = _plan(w_q, w_k, logits, tau, alpha, num_kv_heads, q_rope_dim, axis, xp)
    return _scaled(w_q, q_rows, axis, xp), _scaled(w_k, k_rows, axis, xp)


def _scaled(w: Any, rows: Any, axis: int, xp: Any) -> Any:
    dt = _array.float_dtype(xp, w)
    work = xp.float32 if _array.is_low_precision(dt, xp) else dt
    out = _array.as_float(w, xp, work) * _along(xp.astype(rows, work), w, axis, xp)
    return xp.astype(out, dt) if out.dtype != dt else out


def qk_clip_(w_q: Any, w_k: Any, max_logits: Any, /, *, tau: float = 100.0, alpha: float = 0.5,
             num_kv_heads: int | None = None, q_rope_dim: int = 0, axis: int = 0) -> Any:
    """:func:`qk_clip` in place, for ``torch`` parameters: what a training loop calls after
    ``optimizer.step()``.

    Parameters
    ----------
    w_q, w_k : torch.Tensor (or ``nn.Parameter``)
        Query and key weights (or views of them: every element of a view is scaled in place),
        laid out as in :func:`qk_clip`.  Modified in place under ``torch.no_grad()`` (a leaf
        parameter needs no other care; its ``.grad`` and the optimizer state are untouched).
    max_logits : torch.Tensor (H,) or sequence of float
        Each query head's largest logit on the last batch.
    tau, alpha, num_kv_heads, q_rope_dim, axis
        As :func:`qk_clip`.

    Returns
    -------
    gamma : torch.Tensor (H,)
        The factors ``γ_h = min(1, τ / S_h)`` applied to each head's logits (1 where a head
        was left alone): ``(gamma < 1).sum()`` counts the clipped heads.

    Notes
    -----
    [Kimi Team 2025, §2.1][kimi-k2-2025]; the rule and its GQA / MLA forms are
    :func:`qk_clip`'s.  ``TypeError`` for arrays of another library (use :func:`qk_clip`,
    which returns new arrays).  A sharded ``DTensor`` weight is not supported here.

    Backends: PyTorch only (in-place ``mul_``); no host read.

    Examples
    --------
    >>> import torch
    >>> from xpmat.optim import qk_clip_
    >>> attn_q, attn_k = torch.nn.Linear(3, 4, bias=False), torch.nn.Linear(3, 4, bias=False)
    >>> torch.nn.init.ones_(attn_q.weight), torch.nn.init.ones_(attn_k.weight)   # doctest: +ELLIPSIS
    (...)
    >>> gamma = qk_clip_(attn_q.weight, attn_k.weight, torch.tensor([400.0, 50.0]), tau=100.0)
    >>> gamma.tolist(), attn_q.weight[:, 0].tolist()
    ([0.25, 1.0], [0.5, 0.5, 1.0, 1.0])
    """
    xp = _array.array_namespace(w_q, w_k, names=("w_q", "w_k"))
    if not _array.is_torch(xp):
        raise TypeError("qk_clip_ works in place on torch tensors; for arrays of another library "
                        "use xpmat.optim.qk_clip, which returns new arrays")
    import torch

    logits = _logits(max_logits, w_q, xp)
    q_rows, k_rows, gamma = _plan(w_q, w_k, logits, tau, alpha, num_kv_heads, q_rope_dim, axis, xp)
    with torch.no_grad():
        w_q.mul_(_along(q_rows, w_q, axis, xp))
        w_k.mul_(_along(k_rows, w_k, axis, xp))
    return gamma
