"""PowerSGD+ communication hook for ``torch.nn.parallel.DistributedDataParallel``.

[Xie, Chen, Yuan 2025][xie-chen-yuan-2025] Algorithm 1 (SSP-Comp, SVD-Comp), Algorithm 2, eq. (7a)–(9)::

    ddp.register_comm_hook(PowerSGDPlusState(None, 4, start_powerSGD_iter=10), powersgd_plus_hook)

Per compressible gradient matrix ``Δ⁽ⁱ⁾ = g⁽ⁱ⁾ + e⁽ⁱ⁾`` (``m × n``, rank ``r``) on rank ``i`` of ``N``:

* SSP-Comp (every step but restarts): ``P = mean_i Δ⁽ⁱ⁾ Q`` (all-reduce), ``P̃ = orth(P)``,
  ``Q = mean_i Δ⁽ⁱ⁾ᵀ P̃`` (all-reduce), ``Δ̂ = P̃ Qᵀ``; ``(m + n) r`` numbers per matrix.
* SVD-Comp (PowerSGD+, every ``restart_every = τ`` compressed steps, the first one included):
  ``Δ̄ = mean_i Δ⁽ⁱ⁾`` (all-reduce of the full bucket), ``P̃ = U[:, :r]`` of ``SVD(Δ̄)``,
  ``Q = Δ̄ᵀ P̃``, ``Δ̂ = P̃ Qᵀ``; ``m n`` numbers.  Algorithm 1 all-reduces ``Q⁽ⁱ⁾ = Δ⁽ⁱ⁾ᵀ P̃``
  once more; its mean is ``Δ̄ᵀ P̃``, which every rank already holds, so we skip that round.
* ``e⁽ⁱ⁾ ← Δ⁽ⁱ⁾ − Δ̂`` (error feedback).  Algorithm 2 keeps ``Δ⁽ⁱ⁾ − P̃ Q⁽ⁱ⁾ᵀ``; both have the
  same mean over ranks, ``(I − P̃P̃ᵀ) Δ̄``, and only that mean enters the next all-reduces, so
  the averaged gradients are the same; ours (PyTorch's choice) saves a matmul per matrix.

Vectors, scalars and matrices that compression would not shrink enough go uncompressed (one
all-reduce mean, fused with the ``P`` all-reduce).  The interface and the semantics of every
option follow ``torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook.PowerSGDState``;
the differences are listed in :class:`PowerSGDPlusState` and ``docs/distributed.md``.
"""

from __future__ import annotations

from typing import Any

from xpmat import _array
from xpmat.iteration import power_iter1
from xpmat.orthogonalize import orthonormalize

__all__ = ["PowerSGDPlusState", "powersgd_plus_hook"]

_ORTH_METHODS = ("auto", "householder", "cholesky_qr2")
_STATE_VERSION = 1


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def _check_real(name: str, value: Any, low: float, strict: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (value > low if strict else value >= low) or value != value:
        raise ValueError(f"{name} must be a number {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


class PowerSGDPlusState:
    """Options and memory of :func:`powersgd_plus_hook` (one instance for all buckets).

    Parameters
    ----------
    process_group : ProcessGroup or None
        The group to all-reduce over; ``None`` is the default (world) group.
    matrix_approximation_rank : int >= 1
        The rank ``r`` (per matrix, capped at ``min(m, n)``).
    start_powerSGD_iter : int >= 0
        Steps ``0 … start_powerSGD_iter − 1`` run a plain all-reduce mean (PyTorch's default
        1000).  Unlike PyTorch we key the memory by parameter, not by bucket, so DDP's bucket
        rebuild after step 0 needs no ``start_powerSGD_iter >= 2``.
    min_compression_rate : float > 0
        A gradient viewed as ``(m, n) = (shape[0], numel / shape[0])`` is compressed when
        ``(m + n) r · min_compression_rate < m n`` **and** ``(m + n) r < m n``; otherwise (and for
        every 1-D or 0-D tensor) it is all-reduced uncompressed.
    use_error_feedback : bool
        Keep ``e⁽ⁱ⁾ = Δ⁽ⁱ⁾ − Δ̂`` per compressed matrix and add it to the next gradient (7a).
    warm_start : bool
        Reuse last step's ``Q`` (Algorithm 2); otherwise draw a fresh random ``Q`` every step.
    orthogonalization_epsilon : float >= 0
        Accepted for compatibility with PyTorch's state and otherwise unused: PyTorch adds it to
        column norms in its Gram–Schmidt to avoid dividing by zero; our QR
        (:func:`xpmat.orthonormalize`) returns an orthonormal basis for zero or rank-deficient
        ``P`` with no division, and the output ``P̃ Qᵀ`` of a zero gradient is exactly zero.
    random_seed : int
        Seeds a ``numpy.random.RandomState``; each random draw of ``Q`` takes one integer from
        it and seeds a CPU ``torch.Generator`` with it, then draws ``Q`` in the bucket's order of
        tensors grouped by shape, as PyTorch's hook does: with equal seeds both start from the
        same ``Q``.
    batch_tensors_with_same_shape : bool
        Stack the compressed matrices of a bucket that share a shape and run one batched
        matmul / QR / SVD per shape.
    restart_every : int >= 1 or None, keyword-only
        ``τ`` of Algorithm 2: the compressed steps ``k = iter − start_powerSGD_iter`` with
        ``k mod τ = 0`` use SVD-Comp.  ``None`` gives PowerSGD (no restarts).  Default 100.
    restart_svd : {"full", "randomized"}, keyword-only
        ``"full"``: ``torch.linalg.svd`` of each mean matrix (Algorithm 2).  ``"randomized"``:
        :func:`xpmat.randomized_svd` (oversampling 10, two power iterations, seed
        ``random_seed + iter``, the same on every rank), a near-optimal contractive compressor
        (the paper's Remark 2) at a fraction of the cost for large matrices.
    orthogonalize : {"householder", "auto", "cholesky_qr2"}, keyword-only
        ``method`` of :func:`xpmat.orthonormalize` for ``P̃ = orth(P)`` and a random ``Q``.
        Default ``"householder"`` (the fastest on CPU for one ``(m, r)`` block, measured;
        ``"auto"`` picks CholeskyQR2 for tall blocks, faster on GPUs).

    Attributes
    ----------
    iter : int
        Steps seen (incremented on each step's last bucket).
    restarts : int
        Steps that ran SVD-Comp.
    error_dict, q_memory_dict : dict[int, torch.Tensor]
        Per compressed parameter (keyed by the order in which the hook first met it, which is
        DDP's initial bucket order, the same in every run of the same model): the error
        ``(m, n)`` and the last ``Q`` ``(n, r)``.
    rng : numpy.random.RandomState

    Notes
    -----
    :meth:`stats` reports the bytes each rank contributes to all-reduces per step (the payload;
    a ring all-reduce moves ``2 (N − 1) / N`` times it over each link), against a plain
    all-reduce of the same buckets.  :meth:`state_dict` / :meth:`load_state_dict` hold
    everything that the next steps depend on.  Not thread-safe across concurrent DDP models:
    use one state per model.
    """

    def __init__(self, process_group: Any = None, matrix_approximation_rank: int = 1,
                 start_powerSGD_iter: int = 1_000, min_compression_rate: float = 2,
                 use_error_feedback: bool = True, warm_start: bool = True,
                 orthogonalization_epsilon: float = 0, random_seed: int = 0,
                 batch_tensors_with_same_shape: bool = False, *,
                 restart_every: int | None = 100, restart_svd: str = "full",
                 orthogonalize: str = "householder") -> None:
        import numpy as np

        self.process_group = process_group
        self.matrix_approximation_rank = _check_int("matrix_approximation_rank",
                                                    matrix_approximation_rank, 1)
        self.start_powerSGD_iter = _check_int("start_powerSGD_iter", start_powerSGD_iter, 0)
        self.min_compression_rate = _check_real("min_compression_rate", min_compression_rate,
                                                0.0, strict=True)
        self.use_error_feedback = _check_bool("use_error_feedback", use_error_feedback)
        self.warm_start = _check_bool("warm_start", warm_start)
        self.orthogonalization_epsilon = _check_real("orthogonalization_epsilon",
                                                     orthogonalization_epsilon, 0.0, strict=False)
        self.random_seed = _check_int("random_seed", random_seed, 0)
        self.batch_tensors_with_same_shape = _check_bool("batch_tensors_with_same_shape",
                                                         batch_tensors_with_same_shape)
        if restart_every is not None:
            _check_int("restart_every", restart_every, 1)
        self.restart_every = restart_every
        if restart_svd not in ("full", "randomized"):
            raise ValueError(f"restart_svd must be 'full' or 'randomized', got {restart_svd!r}")
        self.restart_svd = restart_svd
        if orthogonalize not in _ORTH_METHODS:
            raise ValueError(f"orthogonalize must be one of {_ORTH_METHODS}, got {orthogonalize!r}")
        self.orthogonalize = orthogonalize
        self.rng = np.random.RandomState(random_seed)
        self.error_dict: dict[int, Any] = {}
        self.q_memory_dict: dict[int, Any] = {}
        self.iter = 0
        self.restarts = 0
        self.bytes_total = 0
        self.plain_bytes_total = 0
        self.bytes_last_step = 0
        self.plain_bytes_last_step = 0
        self._cur = [0, 0]  # bytes of the step in progress: ours, plain
        self._keys: dict[int, int] = {}  # id(param) -> stable key
        self._xp: Any = None

    # ------------------------------------------------------------------ bookkeeping
    def _key(self, p: Any) -> int:
        k = self._keys.get(id(p))
        if k is None:
            k = self._keys[id(p)] = len(self._keys)
        return k

    def _account(self, bucket: Any, sent: int, plain: int, restart: bool) -> None:
        self._cur[0] += sent
        self._cur[1] += plain
        if bucket.is_last():
            self.bytes_last_step, self.plain_bytes_last_step = self._cur
            self.bytes_total += self._cur[0]
            self.plain_bytes_total += self._cur[1]
            self._cur = [0, 0]
            self.restarts += int(restart)
            self.iter += 1

    def stats(self) -> dict[str, Any]:
        """Counters: ``iter``, ``restarts``, ``bytes_last_step`` / ``plain_bytes_last_step``
        (all-reduce payload per rank of the last completed step, ours / a plain all-reduce of
        the same buckets), ``bytes_total`` / ``plain_bytes_total`` and ``compression``
        (``plain_bytes_total / bytes_total``)."""
        return {"iter": self.iter, "restarts": self.restarts,
                "bytes_last_step": self.bytes_last_step,
                "plain_bytes_last_step": self.plain_bytes_last_step,
                "bytes_total": self.bytes_total, "plain_bytes_total": self.plain_bytes_total,
                "compression": self.plain_bytes_total / self.bytes_total if self.bytes_total
                else 1.0}

    # ------------------------------------------------------------------ checkpointing
    def _options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "matrix_approximation_rank", "start_powerSGD_iter", "min_compression_rate",
            "use_error_feedback", "warm_start", "orthogonalization_epsilon", "random_seed",
            "batch_tensors_with_same_shape", "restart_every", "restart_svd", "orthogonalize")}

    def state_dict(self) -> dict[str, Any]:
        """Everything later steps depend on, as tensors and Python scalars (safe for
        ``torch.save`` and ``torch.load(weights_only=True)``): counters, the RNG state, the error
        and ``Q`` memories (copies), and the options (for checking on load).

        Call it between steps (after ``optimizer.step()``), on every rank: errors are per rank.
        """
        import torch

        name, key, pos, has_gauss, gauss = self.rng.get_state()
        return {
            "version": _STATE_VERSION, "options": self._options(),
            "iter": self.iter, "restarts": self.restarts, "bytes_total": self.bytes_total,
            "plain_bytes_total": self.plain_bytes_total, "bytes_last_step": self.bytes_last_step,
            "plain_bytes_last_step": self.plain_bytes_last_step,
            "rng": {"name": name, "key": torch.as_tensor(key.astype("int64")), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
            "error": {k: v.detach().clone() for k, v in self.error_dict.items()},
            "q": {k: v.detach().clone() for k, v in self.q_memory_dict.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (this rank's); the next step then equals the
        uninterrupted run's.  ``matrix_approximation_rank`` must match the saved one (the ``Q``
        shapes depend on it); the other options are this instance's."""
        import numpy as np

        if not isinstance(state_dict, dict) or state_dict.get("version") != _STATE_VERSION:
            raise ValueError("state_dict must come from PowerSGDPlusState.state_dict() "
                             f"(version {_STATE_VERSION})")
        saved_r = state_dict["options"]["matrix_approximation_rank"]
        if saved_r != self.matrix_approximation_rank:
            raise ValueError(f"state_dict was saved with matrix_approximation_rank={saved_r}, "
                             f"this state has {self.matrix_approximation_rank}")
        rs = state_dict["rng"]
        self.rng.set_state((rs["name"], np.asarray(rs["key"].cpu().numpy(), dtype=np.uint32),
                            int(rs["pos"]), int(rs["has_gauss"]), float(rs["cached_gaussian"])))
        for k in ("iter", "restarts", "bytes_total", "plain_bytes_total", "bytes_last_step",
                  "plain_bytes_last_step"):
            setattr(self, k, int(state_dict[k]))
        self.error_dict = {int(k): v.detach().clone() for k, v in state_dict["error"].items()}
        self.q_memory_dict = {int(k): v.detach().clone() for k, v in state_dict["q"].items()}
        self._cur = [0, 0]


class _Group:
    """Compressed matrices of one bucket handled together: ``views`` (each ``(m, n)``, a view
    into the bucket buffer), their keys, and the batch ``M`` ``(b, m, n)`` (a view when b = 1)."""

    __slots__ = ("M", "Q0", "keys", "local", "m", "n", "r", "views")

    def __init__(self, keys: list[int], views: list[Any], r: int) -> None:
        self.keys, self.views, self.r = keys, views, r
        self.m, self.n = views[0].shape
        self.M = self.local = self.Q0 = None

    def stack(self) -> None:
        import torch

        self.M = self.views[0].unsqueeze(0) if len(self.views) == 1 else torch.stack(self.views)

    def write_back(self, out: Any) -> None:
        if len(self.views) == 1:
            self.views[0].copy_(out[0])
        else:
            for v, o in zip(self.views, out, strict=True):
                v.copy_(o)


def _plan(state: PowerSGDPlusState, bucket: Any) -> tuple[list[Any], list[_Group]]:
    """Split a bucket into uncompressed tensors and groups of compressed matrices, in the order
    PyTorch's hook uses (shape groups in order of first appearance)."""
    r_max = state.matrix_approximation_rank
    uncompressed: list[Any] = []
    by_shape: dict[tuple[int, ...], list[tuple[int, Any]]] = {}
    for p, g in zip(bucket.parameters(), bucket.gradients(), strict=True):
        key = state._key(p)
        if g.ndim >= 2:
            mat = g.view(g.shape[0], -1)
            m, n = mat.shape
            r = min(m, n, r_max)
            cost = (m + n) * r
            if cost * state.min_compression_rate < m * n and cost < m * n:
                by_shape.setdefault((m, n), []).append((key, mat))
                continue
        uncompressed.append(g)
    groups = []
    for (m, n), items in by_shape.items():
        r = min(m, n, r_max)
        chunks = [items] if state.batch_tensors_with_same_shape else [[it] for it in items]
        groups += [_Group([k for k, _ in c], [v for _, v in c], r) for c in chunks]
    return uncompressed, groups


def _allreduce(tensor: Any, group: Any) -> Any:
    import torch.distributed as dist

    return dist.all_reduce(tensor, group=group, async_op=True).get_future()


def powersgd_plus_hook(state: PowerSGDPlusState, bucket):  # DDP checks: no annotations here
    """DDP communication hook: PowerSGD+ compressed all-reduce mean of one gradient bucket.

    Parameters
    ----------
    state : PowerSGDPlusState
    bucket : torch.distributed.GradBucket
        DDP's bucket (``buffer()``, ``gradients()``, ``parameters()``, ``is_last()``).

    Returns
    -------
    torch.futures.Future[torch.Tensor]
        Resolves to the bucket's buffer holding the (approximate) mean gradient; the buffer is
        updated in place.

    Notes
    -----
    [Xie, Chen, Yuan 2025][xie-chen-yuan-2025] Algorithm 1 (SSP-Comp; SVD-Comp without its redundant second
    all-reduce), Algorithm 2 (``t mod τ = 0`` restarts counted from ``start_powerSGD_iter``),
    eq. (7a)–(9).  Communication per step and compressed ``m × n`` matrix: ``(m + n) r``
    numbers (one fused all-reduce of the uncompressed tensors with the ``P``'s, one of the
    ``Q``'s), ``m n`` on a restart.  Compute: three ``m n r`` matmuls, a QR of ``(m, r)``
    (:func:`xpmat.orthonormalize`), a column normalization of the warm-started ``Q``
    (:func:`xpmat.power_iter1`, the ``P`` all-reduce as its ``reduce``); on a
    restart a thin SVD (``torch.linalg.svd``; float16 / bfloat16 are computed in float32).

    Backends: torch only (DDP); the QR runs through :func:`xpmat.orthonormalize`.

    Examples
    --------
    >>> from xpmat.distributed import PowerSGDPlusState, powersgd_plus_hook
    >>> state = PowerSGDPlusState(None, 4, start_powerSGD_iter=10, restart_every=100)
    >>> # ddp_model.register_comm_hook(state, powersgd_plus_hook)
    >>> state.stats()["restarts"]
    0
    """
    import torch.distributed as dist

    if not isinstance(state, PowerSGDPlusState):
        raise TypeError(f"state must be a PowerSGDPlusState, got {type(state).__name__}")
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    world = dist.get_world_size(group)
    buf = bucket.buffer()
    item = buf.element_size()
    plain = buf.numel() * item
    step = state.iter

    tau = state.restart_every
    start = state.start_powerSGD_iter
    restart = step >= start and tau is not None and (step - start) % tau == 0
    if step >= start:
        uncompressed, groups = _plan(state, bucket)
    else:
        for p in bucket.parameters():
            state._key(p)  # fix the keys in DDP's initial bucket order
        groups = []
    if not groups:  # plain all-reduce mean (before start, or nothing worth compressing)
        state._account(bucket, plain, plain, restart)
        buf.div_(world)
        return _allreduce(buf, group).then(lambda fut: fut.value()[0])

    if state._xp is None:
        state._xp = _array.array_namespace(buf)
    _add_error(state, groups, buf.device, buf.dtype)
    if restart:
        state._account(bucket, plain, plain, True)
        return _restart(state, buf, groups, group, world, step)
    n_unc = sum(t.numel() for t in uncompressed)
    n_pq = sum(len(g.keys) * (g.m + g.n) * g.r for g in groups)
    state._account(bucket, (n_unc + n_pq) * item, plain, False)
    return _ssp_compress(state, buf, groups, uncompressed, group, world)


def _add_error(state: PowerSGDPlusState, groups: list[_Group], dev: Any, dtype: Any) -> None:
    """(7a): ``Δ = g + e`` in the bucket (with error feedback), then each group's stack."""
    for g in groups:
        if state.use_error_feedback:
            for k, v in zip(g.keys, g.views, strict=True):
                e = state.error_dict.get(k)
                if e is not None:
                    v.add_(e.to(device=dev, dtype=dtype))
        g.stack()


def _ssp_compress(state: PowerSGDPlusState, buf: Any, groups: list[_Group], uncompressed: list[Any],
                  group: Any, world: int) -> Any:
    """SSP-Comp: :func:`xpmat.power_iter1` of each group's ``Δ`` with the all-reduce of
    ``P = Δ Q`` (fused with the uncompressed tensors, which get their mean) as its first
    ``reduce``; ``Q = Δᵀ P̃`` is then all-reduced asynchronously and the future resolves to the
    bucket holding ``P̃ Q̄ᵀ`` (``Q̄`` the mean), so the second collective overlaps the rest of
    the backward pass.

    Both all-reduces are issued from DDP's thread, in bucket order, the same on every rank;
    only the decompression runs in the callback.  Issuing a collective from a callback instead
    (gloo's worker threads) can order two buckets' collectives differently across ranks, or
    block all of gloo's threads, and hang."""
    import torch
    import torch.distributed as dist

    _initial_q(state, groups, buf.device, buf.dtype)
    skip = sum(t.numel() for t in uncompressed)

    def sum_of_p(Ps: list[Any]) -> list[Any]:
        flat = torch.cat([t.reshape(-1) for t in uncompressed] + [p.reshape(-1) for p in Ps])
        dist.all_reduce(flat, group=group)
        _unpack_into(flat, uncompressed, world)
        return _views(flat, Ps, skip)

    rounds = iter([sum_of_p, lambda Qs: Qs])  # the Q round is reduced below, asynchronously
    P, Q, _ = power_iter1([g.M for g in groups], [g.Q0 for g in groups], method=state.orthogonalize,
                          reduce=lambda arrays: next(rounds)(arrays), xp=state._xp)
    qflat = torch.cat([q.reshape(-1) for q in Q])

    def decompress(fut: Any) -> Any:
        Qbar = _views(fut.value()[0].div_(world), Q, 0)
        for g, p, q in zip(groups, P, Qbar, strict=True):
            _finish(state, g, torch.bmm(p, q.transpose(1, 2)), q, state.use_error_feedback)
        return buf

    return _allreduce(qflat, group).then(decompress)


def _views(flat: Any, like: list[Any], off: int) -> list[Any]:
    """``flat[off:]`` cut into views shaped as the arrays ``like``, in order."""
    out = []
    for a in like:
        out.append(flat[off:off + a.numel()].view(a.shape))
        off += a.numel()
    return out


def _unpack_into(flat: Any, tensors: list[Any], world: int) -> None:
    """Copy the all-reduced sums of ``tensors`` (packed first in ``flat``) back, divided by N."""
    off = 0
    for t in tensors:
        t.copy_(flat[off:off + t.numel()].view_as(t)).div_(world)
        off += t.numel()


def _initial_q(state: PowerSGDPlusState, groups: list[_Group], dev: Any, dtype: Any) -> None:
    """``Q`` for SSP-Comp: last step's (column-normalized) or, when missing or
    ``warm_start=False``, seeded Gaussian (PyTorch's draw protocol) then orthonormalized."""
    import torch


    mem = state.q_memory_dict
    if state.warm_start and all(k in mem for g in groups for k in g.keys):
        for g in groups:
            Q = torch.stack([mem[k] for k in g.keys]).to(device=dev, dtype=dtype)
            g.Q0 = _array.normalize_columns(Q, state._xp)
        return
    gen = torch.Generator().manual_seed(int(state.rng.randint(1_000_000_000)))
    for g in groups:
        Q = torch.randn((len(g.keys), g.n, g.r), generator=gen, dtype=dtype).to(dev)
        g.Q0 = orthonormalize(Q, method=state.orthogonalize, xp=state._xp)


def _finish(state: PowerSGDPlusState, g: _Group, out: Any, Q: Any, ef: bool) -> None:
    """Write ``Δ̂ = P̃ Qᵀ`` into the bucket; keep ``e = Δ − Δ̂`` and ``Q`` per parameter."""
    if ef:
        local = g.local if g.local is not None else g.M
        err = local - out
        for i, k in enumerate(g.keys):
            state.error_dict[k] = err[i]
    if state.warm_start:
        for i, k in enumerate(g.keys):
            state.q_memory_dict[k] = Q[i]
    g.write_back(out)


def _restart(state: PowerSGDPlusState, buf: Any, groups: list[_Group], group: Any,
             world: int, step: int) -> Any:
    """SVD-Comp: all-reduce mean of the whole bucket, ``P̃ = U[:, :r]`` of each mean matrix."""
    import torch

    ef = state.use_error_feedback
    for g in groups:
        if ef:
            g.local = g.M.clone()

    def svd_compress(fut: Any) -> Any:
        fut.value()[0].div_(world)
        for g in groups:
            D = g.M if len(g.views) == 1 else torch.stack(g.views)  # the mean Δ̄
            low = D.dtype in (torch.float16, torch.bfloat16)
            Dc = D.float() if low else D
            if state.restart_svd == "full":
                P = torch.linalg.svd(Dc, full_matrices=False)[0][..., :g.r]
            else:
                from xpmat.iteration import randomized_svd

                P = randomized_svd(Dc, g.r, seed=state.random_seed + step,
                                   method=state.orthogonalize, xp=state._xp)[0]
            Q = Dc.transpose(1, 2) @ P
            out = P @ Q.transpose(1, 2)
            if low:
                out, Q = out.to(D.dtype), Q.to(D.dtype)
            _finish(state, g, out, Q, ef)
        return buf

    return _allreduce(buf, group).then(svd_compress)
