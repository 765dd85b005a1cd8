"""Muon ([Stratos 2026, §7, App. Q.3][stratos-2026]): momentum → msign → scaled update, batched by shape.

Per matrix parameter ``W`` (``m × n`` view; conv kernels ``(out, in·k·k)``), gradient ``G``::

    B = B + (1 − μ)(G − B)                      (momentum buffer, an EMA as in torch.optim.Muon)
    U = G + μ (B − G)  (Nesterov)   or   U = B
    O = msign(U) ≈ U_svd V_svdᵀ                 (xpmat.msign: Newton–Schulz, §Q.3.1)
    W = W − s η λ W − s η a(m, n) O             (decoupled weight decay, §4.4)

Options (per group): ``cautious_weight_decay`` decays only where ``O ⊙ W ≥ 0`` ([Chen et al.
2025][chen-2025-cwd]); ``flatten=False`` keeps the leading axes of an N-D parameter as a batch
of matrices (each its own msign and ``a(m, n)``); ``num_heads`` H sees a 2-D ``(H·d, n)``
parameter as its H heads ``(H, d, n)`` (per-head msign, ``a(d, n)``); ``split_sizes`` cuts the
rows into uneven blocks (fused QKV), each its own msign and ``a(s_i, n)``; ``use_gram_newton_schulz``
computes ``O`` by Gram Newton–Schulz ([Zhang et al. 2026][zhang-2026-gram]) where it takes
fewer products.

As a composition of transforms (:func:`composed`)::

    skip_nonfinite(as_matrix(chain(momentum(μ, nesterov), steepest_direction("spectral", "tr", ns_*),
                                   scale_by_shape(a), add_decayed_weights(λ), scale_by_lr(s η))))

that is, steepest descent under the spectral norm with trust-region scaling (eq. 69, the block
:mod:`xpmat.optim.steepest_descent` is made of) plus momentum and the shape factor.

:func:`transform` is the same method as one fused pass per matrix (what the torch class runs):
the two momentum lines are one ``torch.lerp`` each (the second writes the compute dtype
directly; the first in place when the caller gives its state up), the factor ``−s η a(m, n)``
rides in the last Newton–Schulz step, and the decay is one ``torch.add`` that reads the
compute-dtype result as is.  ``a(m, n)`` (``adjust_lr_fn``): ``"original"`` √max(1, m/n)
([Jordan et al. 2024][jordan-2024]), ``"match_rms_adamw"`` 0.2·√max(m, n)
([Liu et al. 2025][liu-2025]), ``"none"`` 1 — the choices of ``torch.optim.Muon``.
All the matrices of one call that share a shape (and dtype) go through ONE batched
Newton–Schulz call (on a CPU in stacks of at most 8 MiB,
:data:`~xpmat.orthogonalize.MSIGN_CPU_STACK_BYTES`, :func:`xpmat.msign_many`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from xpmat import _array, orthogonalize
from xpmat.optim._base import (
    check_bool,
    check_choice,
    check_common,
    check_dtype,
    check_int,
    check_real,
    is_array_hyper,
    matrix_view_shape,
    maybe_nonzero,
    resolve_hyper,
    run_init,
    run_update,
    scalar_hyper,
    state_dtype_for,
    step_size,
    zeros_step,
)
from xpmat.optim._spec import NS_DEFAULTS, MethodSpec
from xpmat.optim.transforms import (
    Transform,
    add_decayed_weights,
    as_matrix,
    chain,
    check_split_sizes,
    ema_momentum,
    finite,
    momentum,
    ns_schedule_checked,
    scale_by_lr,
    scale_by_shape,
    skip_nonfinite,
    steepest_direction,
)
from xpmat.orthogonalize import NORMALIZATIONS, msign_groups, msign_many

__all__ = ["DEFAULTS", "MuonState", "ShardedParts", "State", "adjust_lr", "calls", "check", "chunks",
           "composed", "composed_with", "init", "momentum_dtype", "orthogonalized", "sharded_parts",
           "transform", "update"]

SPEC = MethodSpec(
    name="muon",
    class_name="Muon",
    module=__name__,
    defaults={
        "lr": 0.02,
        "momentum": 0.95,
        "nesterov": True,
        "weight_decay": 0.0,
        "schedule": 1.0,
        "adjust_lr_fn": "original",
        **NS_DEFAULTS,
        "state_dtype": None,
        "use_gram_newton_schulz": False,
        "cautious_weight_decay": False,
        "flatten": True,
        "num_heads": None,
        "split_sizes": None,
    },
    types={"adjust_lr_fn": "str | None", "ns_schedule": "Any", "num_heads": "int | None"},
    matrix_only=True,
    reuse_state=True,
    fallback_lr_ratio=0.05,
    doc="Muon (§7): momentum -> batched msign -> shape-scaled update",
    demo={"lr": 0.02, "adamw_lr_ratio": 0.15},
    source="[Stratos 2026, §7, App. Q.3][stratos-2026]; [Jordan et al. 2024][jordan-2024]",
    summary="""\
Muon ([Stratos 2026][stratos-2026] §7, Q.3) over :mod:`xpmat.optim.muon`::

    B ← B + (1 − μ)(G − B);  U = G + μ (B − G)  (Nesterov)  or  B
    W ← W − s η λ W − s η a(m, n) msign(U)

Same-shaped matrices are orthogonalized in one batched ``msign`` call; 1-D parameters go to
AdamW.  ``Muon(params, ns_schedule="jordan", compute_dtype="bfloat16", weight_decay=0.1,
lr=1e-3)`` is ``torch.optim.Muon``'s default update.  Every argument below (but
``params``, ``maximize`` and the ``adamw_*`` ones) can be set per param group.
""",
    parameters="""\
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
compute_dtype : "auto", dtype or name, optional
    Newton–Schulz precision.  ``"auto"`` (default): bfloat16 for float32 matrices on a device
    that multiplies bf16 natively (CPUs with AMX or AVX512-BF16, CUDA GPUs of compute
    capability ≥ 8.0, TPUs; on a CPU for calls of at least 1e8 FLOPs), where it is about twice
    as fast at the accuracy Muon needs; the input's dtype elsewhere (float64 stays float64).
    None: the input's dtype.
eps : float >= 0
    Floor of the Frobenius norm in the Newton–Schulz normalization.
""",
)
DEFAULTS: dict[str, Any] = SPEC.defaults

_ADJUST = ("original", "match_rms_adamw", "none", None)


class MuonState(NamedTuple):
    """Per-parameter Muon state: the momentum buffer (matrix view, torch.optim.Muon's key) and
    the non-finite counter."""

    momentum_buffer: Any = None
    nonfinite_count: Any = None


State = MuonState


def adjust_lr(fn: str | None, m: int, n: int) -> float:
    """The shape factor ``a(m, n)`` of ``adjust_lr_fn`` (``None`` means ``"original"``, as torch)."""
    check_choice("adjust_lr_fn", fn, _ADJUST)
    if fn is None or fn == "original":
        return math.sqrt(max(1.0, m / n))
    return 0.2 * math.sqrt(max(m, n)) if fn == "match_rms_adamw" else 1.0


def _checked(hyper: dict[str, Any]) -> dict[str, Any]:
    h = resolve_hyper(DEFAULTS, hyper, "muon")
    check(h)
    return h


def check(h: dict[str, Any]) -> None:
    """Validate Muon's hyper-parameters in the resolved dict ``h`` (every key of
    :data:`DEFAULTS`; a variant's extra keys are its own to check): ``ValueError`` /
    ``TypeError`` naming the argument."""
    check_common(h)
    check_real("momentum", h["momentum"], 0.0, 1.0, high_open=True)
    check_bool("nesterov", h["nesterov"])
    check_choice("adjust_lr_fn", h["adjust_lr_fn"], _ADJUST)
    ns_schedule_checked(h["ns_schedule"], h["ns_steps"])
    check_choice("ns_normalize", h["ns_normalize"], NORMALIZATIONS)
    check_real("eps", h["eps"])
    check_dtype("compute_dtype", h["compute_dtype"], auto=True)
    for k in ("use_gram_newton_schulz", "cautious_weight_decay", "flatten"):
        check_bool(k, h[k])
    check_int("num_heads", h["num_heads"], 1, none=True)
    check_split_sizes(h["split_sizes"])
    if h["split_sizes"] is not None and h["num_heads"] not in (None, 1):
        raise ValueError("num_heads (uniform heads) and split_sizes (uneven row blocks) exclude each other")


def composed(**hyper: Any) -> Transform:
    """Muon written as a chain of transforms: the same method as :func:`transform` (equal to
    rounding), one pass per block — the form to read, and to start a variant from."""
    return composed_with(_checked(hyper))


def composed_with(h: dict[str, Any], extra: tuple[Transform, ...] = (), state: Any = None) -> Transform:
    """Muon's chain on checked hyper-parameters ``h``, with the transforms ``extra`` right after
    the orthogonalized direction (a variant's own block: NorMuon's neuron-wise scaling) and the
    state class ``state`` (default :class:`MuonState`)."""
    return skip_nonfinite(as_matrix(chain(
        momentum(h["momentum"], nesterov=h["nesterov"], state_dtype=h["state_dtype"]),
        steepest_direction("spectral", "tr", ns_steps=h["ns_steps"], ns_schedule=h["ns_schedule"],
                           eps=h["eps"], ns_normalize=h["ns_normalize"], compute_dtype=h["compute_dtype"],
                           use_gram_newton_schulz=h["use_gram_newton_schulz"], flatten=False,
                           split_sizes=h["split_sizes"]),
        *extra,
        scale_by_shape(lambda m, n: adjust_lr(h["adjust_lr_fn"], m, n), split_sizes=h["split_sizes"]),
        add_decayed_weights(h["weight_decay"], cautious=h["cautious_weight_decay"]),
        scale_by_lr(step_size(h)), state=state or MuonState), flatten=h["flatten"], num_heads=h["num_heads"]))


def chunks(params: list[Any], compute_dtype: Any = None, flatten: bool = True,
           num_heads: int | None = None) -> list[list[int]]:
    """Index lists of ``params`` orthogonalized in one Newton–Schulz call (same shape; on a CPU
    at most 8 MiB per stack in ``compute_dtype``): :func:`~xpmat.orthogonalize.msign_groups`
    on the matrix views (``flatten``, ``num_heads`` as the hyper-parameters)."""
    return [c for c, _ in msign_groups(_views(params, flatten, num_heads), compute_dtype,
                                       orthogonalize.MSIGN_CPU_STACK_BYTES)]


def calls(params: list[Any], compute_dtype: Any = None, flatten: bool = True,
          num_heads: int | None = None) -> list[list[int]]:
    """Index lists for successive :func:`update` calls, as the torch class steps: on a CPU,
    :func:`chunks` merged while their matrices stay within 8 MiB (so a big model never holds
    more than one chunk's updates, and a small one makes one call); elsewhere one call.  Any
    split gives the same result as one call on all of them.
    """
    out: list[list[int]] = []
    room = 0
    budget = orthogonalize.MSIGN_CPU_STACK_BYTES
    for c, size in msign_groups(_views(params, flatten, num_heads), compute_dtype, budget):
        need = 0 if size is None else size * len(c)
        if out and need <= room:
            out[-1].extend(c)
            room -= need
        else:
            out.append(list(c))
            room = budget - need
    return out


def _views(params: list[Any], flatten: bool = True, num_heads: int | None = None) -> list[Any]:
    out = []
    for i, p in enumerate(params):
        view = matrix_view_shape(p.shape, flatten, f"params[{i}]", num_heads)
        out.append(p if view == tuple(p.shape) else _array.array_namespace(p).reshape(p, view))
    return out


def init(params: list[Any], **hyper: Any) -> list[MuonState]:
    """Zero momentum (in the matrix view) for each matrix parameter."""
    return run_init(transform(**hyper), params)


def transform(*, reuse_state: bool = False, **hyper: Any) -> Transform:
    """Muon, fused (see the module doc); ``reuse_state``: the new momentum is written into the
    buffers of the state handed in (PyTorch; the caller gives that state up, as the torch class
    does).  Equals :func:`composed` to rounding."""
    h = _checked(hyper)

    def init_(params):
        out = []
        for i, p in enumerate(params):
            xp, dev = _array.array_namespace(p), _array.device(p)
            view = matrix_view_shape(p.shape, h["flatten"], f"params[{i}]", h["num_heads"])
            check_split_sizes(h["split_sizes"], view, f"params[{i}]")
            out.append(MuonState(xp.zeros(view, dtype=state_dtype_for(p, xp, h["state_dtype"]),
                                          device=dev), zeros_step(xp, dev)))
        return out

    def update_(grads, states, params):
        ups, new = list(grads), list(states)  # zero-size parameters: nothing to do
        live = [i for i, p in enumerate(params) if math.prod(p.shape)]
        for chunk in chunks([params[i] for i in live], h["compute_dtype"], h["flatten"], h["num_heads"]):
            idx = [live[j] for j in chunk]
            for i, u, s in zip(idx, *_fused_chunk(h, reuse_state, [grads[i] for i in idx],
                                                  [states[i] for i in idx], [params[i] for i in idx]),
                               strict=True):
                ups[i], new[i] = u, s
        return ups, new

    return Transform(init_, update_, MuonState)


def _fused_chunk(h: dict[str, Any], reuse: bool, grads: list[Any], states: list[MuonState],
                 params: list[Any]) -> tuple[list[Any], list[MuonState]]:
    """One batched Newton–Schulz call for same-shaped matrices, everything else fused: the
    three phases :func:`_momentum`, :func:`orthogonalized`, :func:`_updates`."""
    xp = _array.array_namespace(*grads, *params, names=[f"grads[{i}]" for i in range(len(grads))]
                                + [f"params[{i}]" for i in range(len(params))])
    dtype = momentum_dtype(h, [s.momentum_buffer for s in states], xp)  # one Newton–Schulz call
    carry, Us = _momentum(h, reuse, grads, states, xp, dtype)
    return _updates(h, orthogonalized(h, Us, xp), carry, states, params, xp)


def _momentum(h: dict[str, Any], reuse: bool, grads: list[Any], states: list[MuonState],
              xp: Any, dtype: Any) -> tuple[list[tuple[Any, Any]], list[Any]]:
    """Phase 1, elementwise: per matrix ``(ok, new buffer)`` and the direction ``U`` (matrix
    view, in ``dtype``: :func:`momentum_dtype`).  A non-finite gradient leaves the buffer as it was."""
    carry, Us = [], []
    for g, s in zip(grads, states, strict=True):  # per matrix: torch.lerp is one pass
        B0 = s.momentum_buffer
        g = xp.reshape(_array.as_float(g, xp, B0.dtype), tuple(B0.shape))
        ok = finite(g, xp)
        g = xp.where(ok, g, B0)  # a skipped step leaves the buffer as it was: lerp(B, B) = B
        U, buf = ema_momentum(B0, g, h["momentum"], xp, nesterov=h["nesterov"], dtype=dtype,
                              out=B0 if reuse else None)
        carry.append((ok, buf))
        Us.append(U)
    return carry, Us


def momentum_dtype(h: dict[str, Any], bufs: list[Any] | None, xp: Any) -> Any:
    """The dtype the momentum step writes ``U`` in for the Newton–Schulz call on the momentum
    buffers ``bufs`` (one shape): ``h["compute_dtype"]`` resolved; ``"auto"`` per call
    (:func:`xpmat.orthogonalize.ns_compute_dtype`), or None (the state dtype) where ``bufs`` is
    None — a caller that does not hold the call (a rank's shards): :func:`xpmat.msign_many`
    then picks the precision when the call is made."""
    cdt = h["compute_dtype"]
    if not (isinstance(cdt, str) and cdt == _array.AUTO):
        return _array.resolve_dtype(xp, cdt)
    if bufs is None:
        return None
    return orthogonalize.ns_compute_dtype(cdt, bufs[0], len(bufs), h["ns_steps"], xp)


def _lr(h: dict[str, Any]) -> Any:
    return step_size(h)


def orthogonalized(h: dict[str, Any], Us: list[Any], xp: Any) -> list[Any]:
    """Phase 2, whole matrices of one shape (resolved hyper-parameters ``h``): ``−s η a(m, n)
    msign(U)`` in one batched call
    (with ``split_sizes`` each row block its own msign and ``a``)."""
    coeffs = ns_schedule_checked(h["ns_schedule"], h["ns_steps"])
    split = None if h["split_sizes"] is None else tuple(h["split_sizes"])
    check_split_sizes(split, tuple(Us[0].shape), f"parameter (matrix view {tuple(Us[0].shape)})")
    lr, fn = _lr(h), h["adjust_lr_fn"]
    tensor = is_array_hyper(lr)  # a tensor lr: not folded into Newton–Schulz (its GEMMs take host floats)
    Os = msign_many(Us, steps=len(coeffs), schedule=coeffs, normalize=h["ns_normalize"], eps=h["eps"],
                    compute_dtype=h["compute_dtype"], scale=(lambda m, n: adjust_lr(fn, m, n)) if tensor
                    else (lambda m, n: -lr * adjust_lr(fn, m, n)),
                    gram="auto" if h["use_gram_newton_schulz"] else False, split_sizes=split,
                    stack_bytes=None, xp=xp)  # one chunk: chunks() cut it
    if tensor:
        neg = scalar_hyper(-lr, Us[0], xp)
        Os = [neg * O for O in Os]
    return Os


def _updates(h: dict[str, Any], Os: list[Any], carry: list[tuple[Any, Any]], states: list[MuonState],
             params: list[Any], xp: Any) -> tuple[list[Any], list[MuonState]]:
    """Phase 3, elementwise: decoupled (optionally cautious) weight decay, the non-finite skip
    and counter; updates in the parameters' shapes."""
    decay = _lr(h) * h["weight_decay"]
    ups, new = [], []
    for O, (ok, buf), s, p in zip(Os, carry, states, params, strict=True):
        dt = buf.dtype
        if maybe_nonzero(decay):  # decoupled weight decay, added without casting O first
            W = xp.reshape(_array.as_float(p, xp, dt), tuple(buf.shape))
            if h["cautious_weight_decay"]:  # O = −s η a msign: the direction's sign is −O's
                W = xp.where(O * W <= 0, W, xp.zeros((), dtype=dt, device=_array.device(W)))
            u = _array.add_scaled(O, scalar_hyper(-decay, O, xp), W, xp)
        else:
            u = _array.as_float(O, xp, dt)
        ups.append(xp.reshape(xp.where(ok, u, xp.zeros((), dtype=dt, device=_array.device(u))),
                              tuple(p.shape)))
        count = s.nonfinite_count
        new.append(MuonState(buf, count + xp.astype(xp.logical_not(ok), count.dtype)))
    return ups, new


class ShardedParts(NamedTuple):
    """Muon cut at its Newton–Schulz call, for sharded parameters (see :func:`sharded_parts`)."""

    local_in: Callable[[list[Any], list[MuonState]], tuple[list[Any], list[Any]]]
    whole: Callable[[list[Any]], list[Any]]
    local_out: Callable[[list[Any], list[Any], list[MuonState], list[Any]],
                        tuple[list[Any], list[MuonState]]]


def sharded_parts(*, reuse_state: bool = False, **hyper: Any) -> ShardedParts | None:
    """The phases of :func:`transform` for a caller that holds row blocks of each matrix (a
    sharded parameter: xpmat.optim.torch_sharded), whose composition is :func:`transform`:

    - ``local_in(grads, states) -> (carry, Us)`` on each rank's blocks (momentum: elementwise);
    - ``whole(Us) -> Os`` on whole matrix views, once per matrix (same shapes batched);
    - ``local_out(Os, carry, states, params) -> (updates, states)`` on the blocks again.

    So only ``U`` travels to a matrix's owner and ``O`` back: the floor of a sharded Muon step.
    None with ``num_heads`` or ``split_sizes`` (a rank's rows need not hold whole heads or
    blocks: such matrices step whole on their owner).
    """
    h = _checked(hyper)
    if h["num_heads"] is not None or h["split_sizes"] is not None:
        return None

    def local_in(grads, states):
        xp = _array.array_namespace(*grads)
        return _momentum(h, reuse_state, grads, states, xp, momentum_dtype(h, None, xp))

    def whole(Us):
        xp, out = _array.array_namespace(*Us), [None] * len(Us)
        for chunk in chunks(Us, h["compute_dtype"], flatten=False):
            for i, O in zip(chunk, orthogonalized(h, [Us[i] for i in chunk], xp), strict=True):
                out[i] = O
        return out

    def local_out(Os, carry, states, params):
        return _updates(h, Os, carry, states, params, _array.array_namespace(*params))

    return ShardedParts(local_in, whole, local_out)


def update(grads: list[Any], state: list[MuonState], params: list[Any], *, reuse_state: bool = False,
           **hyper: Any) -> tuple[list[Any], list[MuonState]]:
    """One Muon step: ``(updates, new_state)``, ``new_params = params + updates``.

    Parameters
    ----------
    grads, params : list of arrays (out, ...)
        Matrix parameters (ndim ≥ 2; conv kernels viewed as ``(out, in·k·k)`` unless
        ``flatten=False``); 1-D ones raise
        ``ValueError`` (use :func:`xpmat.optim.transforms.route` or the torch class's AdamW
        fallback).
    state : list of MuonState
    reuse_state : bool
        Write the new momentum into the buffers of ``state`` (PyTorch; the caller gives
        ``state`` up, as the torch class does).  Default False: ``state`` is left untouched.
    **hyper
        ``lr`` (η ≥ 0), ``momentum`` (μ in [0, 1)), ``nesterov``, ``weight_decay`` (λ ≥ 0,
        decoupled, times η as torch), ``schedule`` (s multiplies η), ``adjust_lr_fn``, and the
        ``msign`` options ``ns_steps``, ``ns_schedule`` (``"polar_express"``, ``"jordan"``, ...),
        ``ns_normalize``, ``compute_dtype`` (default ``"auto"``: bf16 for float32 where the device
        multiplies bf16 natively and the call is big enough, else the input's dtype; None: the
        input's dtype),
        ``eps``, ``use_gram_newton_schulz`` (Gram Newton–Schulz where it takes fewer products);
        ``state_dtype``; ``cautious_weight_decay`` (decay only where ``msign(U) ⊙ W ≥ 0``);
        ``flatten`` (True: an N-D parameter is the matrix ``(out, prod(rest))``; False: its
        leading axes are a batch of matrices, each with its own msign and ``a(m, n)``);
        ``num_heads`` (a 2-D ``(H·d, n)`` parameter as its H heads, per-head msign);
        ``split_sizes`` (row blocks of these sizes, each its own msign).  See the torch class
        :class:`xpmat.optim.Muon` for each.

    Returns
    -------
    updates : list of arrays, in the state dtype
    new_state : list of MuonState

    Notes
    -----
    [Stratos 2026][stratos-2026] §7 (eq. 67–69: the spectral-norm steepest descent direction
    U Vᵀ) and Q.3.1 (Newton–Schulz).  With ``ns_schedule="jordan"``, ``ns_normalize="fro"``,
    ``compute_dtype="bfloat16"``, ``eps=1e-7`` it is ``torch.optim.Muon`` (tested to bf16
    precision).  A zero gradient gives a zero direction (msign of 0 is 0); a gradient with a
    NaN or ±Inf entry leaves the parameter and its momentum unchanged and counts in
    ``nonfinite_count``.

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
    return run_update(transform(reuse_state=reuse_state, **hyper), grads, state, params)
