"""Muon ([Stratos 2026, §7, App. Q.3][stratos-2026]): momentum → msign → scaled update, batched by shape.

Per matrix parameter ``W`` (``m × n`` view; conv kernels ``(out, in·k·k)``), gradient ``G``::

    B = B + (1 − μ)(G − B)                      (momentum buffer, an EMA as in torch.optim.Muon)
    U = G + μ (B − G)  (Nesterov)   or   U = B
    O = msign(U) ≈ U_svd V_svdᵀ                 (xpmat.msign: Newton–Schulz, §Q.3.1)
    W = W − s η λ W − s η a(m, n) O             (decoupled weight decay, §4.4)

``a(m, n)`` (``adjust_lr_fn``): ``"original"`` √max(1, m/n) ([Jordan et al. 2024][jordan-2024]),
``"match_rms_adamw"`` 0.2·√max(m, n) ([Liu et al. 2025][liu-2025]), ``"none"`` 1 —
the same choices as ``torch.optim.Muon``.  All the
parameters of one call that share a shape (and dtype) go through ONE batched Newton–Schulz call
(``torch.optim.Muon`` loops over parameters); on a CPU, in stacks of at most 8 MiB.  The
elementwise work stays per matrix, because passes over memory bound a CPU step: on PyTorch the
two momentum lines are one ``torch.lerp`` each (the second writes the compute dtype directly),
the factor ``−η a(m, n)`` rides in the last Newton–Schulz step, and the decay is one
``torch.add`` that reads the compute-dtype result as is — no more passes than
``torch.optim.Muon`` takes, plus the stack of ``U`` when a shape repeats.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

from xpmat import _array
from xpmat.optim._base import (
    Transform,
    _check_lists,
    bind,
    check_hyper,
    group_by_shape,
    init_params,
    matrix_shape,
    zeros_step,
)
from xpmat.orthogonalize import _NORMALIZE, _newton_schulz, ns_schedule

__all__ = ["DEFAULTS", "MuonState", "State", "adjust_lr", "calls", "chunks", "init", "transform", "update"]

DEFAULTS: dict[str, Any] = {
    "lr": 0.02,
    "momentum": 0.95,
    "nesterov": True,
    "weight_decay": 0.0,
    "schedule": 1.0,
    "adjust_lr_fn": "original",
    "ns_steps": 5,
    "ns_schedule": "polar_express",
    "ns_normalize": "fro",
    "compute_dtype": None,
    "eps": 1e-7,
    "state_dtype": None,
}

_ADJUST = ("original", "match_rms_adamw", "none")


class MuonState(NamedTuple):
    """Per-parameter Muon state: the momentum buffer (matrix view)."""

    step: Any
    momentum_buffer: Any


State = MuonState


def adjust_lr(fn: str | None, m: int, n: int) -> float:
    """The shape factor ``a(m, n)`` of ``adjust_lr_fn`` (``None`` means ``"original"``, as torch)."""
    if fn is None or fn == "original":
        return math.sqrt(max(1.0, m / n))
    if fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(m, n))
    if fn == "none":
        return 1.0
    raise ValueError(f"adjust_lr_fn must be one of {_ADJUST} or None, got {fn!r}")


def _validate(h: dict[str, Any]) -> None:
    if not 0.0 <= h["momentum"] < 1.0:
        raise ValueError(f"momentum must lie in [0, 1), got {h['momentum']}")
    if h["lr"] < 0 or h["weight_decay"] < 0:
        raise ValueError(f"lr and weight_decay must be >= 0, got {h['lr']}, {h['weight_decay']}")
    adjust_lr(h["adjust_lr_fn"], 1, 1)
    ns_schedule(h["ns_schedule"], h["ns_steps"])
    if h["ns_normalize"] not in _NORMALIZE:
        raise ValueError(f"ns_normalize must be one of {_NORMALIZE}, got {h['ns_normalize']!r}")


# On a CPU a stack of same-shaped matrices goes through one Newton–Schulz call only while it
# stays this small (bytes in the compute dtype).  Measured (bf16, 2 cores, docs/optim.md Speed):
# batching wins on small matrices (12 × 64×256: 9.2 vs 32 ms unbatched; 12 × 256×1024, 6 MiB:
# 169 vs 188 ms) and loses on big ones (12 × 768×3072 in stacks of 3, 14 MiB: 5.35 vs 4.57 s),
# because glibc hands large blocks back to the system and every step page-faults them in again
# (with MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_ raised the two were equal, 4.41 vs 4.57 s).
# Accelerators take the whole stack: there one launch per shape is the point.
_CPU_STACK_BYTES = 8 << 20


def _sized_chunks(params: list[Any], compute_dtype: Any) -> list[tuple[list[int], int | None]]:
    """:func:`chunks` with the bytes of one of their matrices (None off-CPU: no cap)."""
    out = []
    for idx in group_by_shape(params).values():
        p = params[idx[0]]
        size, per = None, len(idx)
        if _array.is_cpu(p):
            m, n = matrix_shape(tuple(p.shape), f"params[{idx[0]}]")
            size = m * n * _array.itemsize(p, compute_dtype)
            per = max(1, min(per, _CPU_STACK_BYTES // size))
        out.extend((idx[c:c + per], size) for c in range(0, len(idx), per))
    return out


def chunks(params: list[Any], compute_dtype: Any = None) -> list[list[int]]:
    """Index lists of ``params`` that :func:`update` orthogonalizes in one Newton–Schulz call.

    Same-shaped (and -dtype) matrices, in first-seen order; on an accelerator all of one shape,
    on a CPU split so a stack stays within 8 MiB in ``compute_dtype`` (the parameter's dtype
    when None).
    """
    return [c for c, _ in _sized_chunks(params, compute_dtype)]


def calls(params: list[Any], compute_dtype: Any = None) -> list[list[int]]:
    """Index lists for successive :func:`update` calls, as the torch class steps: on a CPU,
    :func:`chunks` merged while their matrices stay within 8 MiB (so a big model never holds
    more than one chunk's updates, and a small one makes one call); elsewhere one call.  Any
    split gives the same result as one call on all of them.
    """
    out: list[list[int]] = []
    room = 0
    for c, size in _sized_chunks(params, compute_dtype):
        need = 0 if size is None else size * len(c)
        if out and need <= room:
            out[-1].extend(c)
            room -= need
        else:
            out.append(list(c))
            room = _CPU_STACK_BYTES - need
    return out


def init(params: list[Any], **hyper: Any) -> list[MuonState]:
    """Zero momentum (in the matrix view) for each matrix parameter."""
    _, items = init_params(params, hyper, DEFAULTS, "muon", _validate)
    out = []
    for i, p, xp, dev, dt in items:
        m, n = matrix_shape(p.shape, f"params[{i}]")
        out.append(MuonState(zeros_step(xp, dev), xp.zeros((m, n), dtype=dt, device=dev)))
    return out


def update(grads: list[Any], state: list[MuonState], params: list[Any], *, reuse_state: bool = False,
           **hyper: Any) -> tuple[list[Any], list[MuonState]]:
    """One Muon step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2; conv kernels viewed as ``(out, in·k·k)``); 1-D ones raise
        ``ValueError`` (use :func:`xpmat.optim.route` or the torch class's AdamW fallback).
    state : list of MuonState
    reuse_state : bool
        Write the new momentum into the buffers of ``state`` (PyTorch only; the caller gives
        ``state`` up, as the torch class does).  Default False: ``state`` is left untouched.
    **hyper
        ``lr`` (η), ``momentum`` (μ), ``nesterov``, ``weight_decay`` (λ, decoupled, times η
        as torch), ``schedule`` (s multiplies η), ``adjust_lr_fn``, and the ``msign`` options
        ``ns_steps``, ``ns_schedule`` (``"polar_express"``, ``"jordan"``, ...), ``ns_normalize``,
        ``compute_dtype`` (``"bfloat16"`` on GPUs and bf16-capable CPUs), ``eps``; ``state_dtype``.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of MuonState

    Notes
    -----
    [Stratos 2026][stratos-2026] §7 (eq. 67–69: the spectral-norm steepest descent direction
    U Vᵀ) and Q.3.1 (Newton–Schulz).  With ``ns_schedule="jordan"``, ``ns_normalize="fro"``,
    ``compute_dtype="bfloat16"``, ``eps=1e-7`` it is ``torch.optim.Muon`` (tested to bf16
    precision).  A zero gradient gives a zero direction (msign of 0 is 0).

    Backends: standard Array API; the orthogonalization is the loop of :func:`xpmat.msign`
    (batched); on PyTorch the elementwise steps and products take the one-pass forms of
    ``xpmat._array`` (``lerp``, ``add_scaled``, ``matmul_add``).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.optim import muon
    >>> p = [np.zeros((4, 4)), np.zeros((4, 4))]
    >>> g = [np.diag([4.0, 3.0, 2.0, 1.0]), np.eye(4)]
    >>> st = muon.init(p)
    >>> u, st = muon.update(g, st, p, lr=1.0, momentum=0.0, ns_steps=10)
    >>> print(np.allclose(-u[0], np.eye(4), atol=1e-2), np.allclose(-u[1], np.eye(4), atol=1e-2))
    True True
    """
    h = check_hyper(DEFAULTS, hyper, "muon")
    _validate(h)
    _check_lists(params, grads, state)
    lr_t = float(h["schedule"]) * float(h["lr"])
    mu, decay = h["momentum"], lr_t * h["weight_decay"]
    coeffs = ns_schedule(h["ns_schedule"], h["ns_steps"])
    cd = h["compute_dtype"]  # U is written in it directly (torch: no separate cast pass)
    ups: list[Any] = [None] * len(params)
    new: list[Any] = [None] * len(params)
    for chunk in chunks(params, cd):
        i0 = chunk[0]
        xp = _array.array_namespace(*[grads[i] for i in chunk], *[params[i] for i in chunk],
                                    names=[f"grads[{i}]" for i in chunk] + [f"params[{i}]" for i in chunk])
        shape = tuple(params[i0].shape)
        m, n = matrix_shape(shape, f"params[{i0}]")
        dt = state[i0].momentum_buffer.dtype
        bufs, Us = [], []
        for i in chunk:  # per matrix: torch.lerp is one pass; stacking first would add two
            g = xp.reshape(_array.as_float(grads[i], xp, dt), (m, n))
            B0 = state[i].momentum_buffer
            buf = _array.lerp(B0, g, 1.0 - mu, xp, out=B0 if reuse_state else None)
            U = _array.lerp(g, buf, mu, xp, cd) if h["nesterov"] else _array.cast(buf, cd, xp)
            bufs.append(buf)
            Us.append(U)
        U = Us[0][None, ...] if len(Us) == 1 else xp.stack(Us, axis=0)
        # −η a(m, n) msign(U) in the compute dtype: one batched Newton–Schulz call per chunk
        O = _newton_schulz(U, coeffs, normalize=h["ns_normalize"], eps=h["eps"], xp=xp,
                           scale=-lr_t * adjust_lr(h["adjust_lr_fn"], m, n))
        for j, i in enumerate(chunk):
            u = O[j, ...]
            if decay:  # decoupled weight decay, added without casting O first
                p = xp.reshape(_array.as_float(params[i], xp, dt), (m, n))
                u = _array.add_scaled(u, -decay, p, xp)
            ups[i] = xp.reshape(_array.as_float(u, xp, dt), shape)
            new[i] = MuonState(state[i].step + 1, bufs[j])
    return ups, new


def transform(*, reuse_state: bool = False, **hyper: Any) -> Transform:
    """:class:`~xpmat.optim.Transform` with these hyper-parameters bound (``reuse_state``: see
    :func:`update`)."""
    return bind(DEFAULTS, hyper, "muon", _validate, init,
                functools.partial(update, reuse_state=reuse_state) if reuse_state else update)
