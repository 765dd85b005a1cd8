"""Data-parallel Dion on ``torch.distributed``: compressed collectives instead of DDP's all-reduce.

Each rank ``i`` of ``N`` keeps its own error-feedback buffer ``M_i`` and computes its local
gradient ``G_i`` (plain ``loss.backward()``, no DDP averaging).  Per matrix parameter
(``m × n`` view, rank ``r``, shared right factor ``Q`` ``(n, r)``)::

    B_i  = M_i + G_i                                  local
    P    = orth( mean_i (B_i Q) )                     all-reduce m·r numbers, then orthonormalize
    R    = mean_i (B_iᵀ P)                            all-reduce n·r numbers
    Q    = colnorm(R)                                 identical on every rank
    M_i  = B_i − (1 − μ) P Rᵀ                          local
    X    = X − s η √(m/n) P Qᵀ − s η λ X               identical on every rank

This is the communication pattern of [Xie et al. 2025][xie-chen-yuan-2025] Algorithm 1
(SSP-Comp: all-reduce ``P``, QR, all-reduce ``Q``) applied to Dion ([Pethick 2025][pethick-2025]).
Only the two reduced quantities enter the nonlinear steps (orthonormalization, column normalization), and the
buffers enter linearly, so by induction ``mean_i M_i`` is the single-process buffer and every
step equals single-process :class:`xpmat.optim.Dion` fed the averaged gradient (in exact
arithmetic; tested to float64 rounding).  1-D parameters (and matrices where
``(m + n) r ≥ m n``) have their gradient all-reduced whole and go through the single-process
core (AdamW for 1-D, Dion for those matrices) on the average.

It is the single-process class with two hooks of its core: ``reduce`` (the mean over ranks of
``B_i Q`` and ``B_iᵀ P``, :func:`xpmat.optim.dion.dion_direction`) and ``flags`` (the
non-finite check agreed over the ranks, so every rank skips the same parameters and they stay
identical); the adapter's ``_prepare`` hook runs the consistency check and averages the
gradients of the parameters that go to AdamW.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from xpmat import _array
from xpmat.optim import dion as _dion
from xpmat.optim._base import check_bool, matrix_shape, resolve_rank, state_dtype_for
from xpmat.optim.torch_adapter import XpmatOptimizer, collect_arguments
from xpmat.optim.torch_optim import Dion
from xpmat.optim.transforms import Transform, finite

__all__ = ["DistributedDion"]


def _resolve_group(process_group: Any) -> Any:
    if not dist.is_available():
        raise RuntimeError("DistributedDion: torch.distributed is not available in this PyTorch build")
    if process_group is not None and not isinstance(process_group, dist.ProcessGroup):
        raise TypeError("DistributedDion: process_group must be a torch.distributed.ProcessGroup "
                        f"or None (the default WORLD group), got {type(process_group).__name__}")
    if not dist.is_initialized():
        raise RuntimeError("DistributedDion: the default process group is not initialized; call "
                           "torch.distributed.init_process_group(...) on every rank first "
                           "(or start the ranks with xpmat.distributed.run_ranks)")
    return process_group if process_group is not None else dist.group.WORLD


class DistributedDion(Dion):
    """Data-parallel Dion: ``opt.step()`` does the (compressed) gradient communication itself.

    Use it *without* DDP gradient averaging: every rank runs ``loss.backward()`` on its own
    shard of the data and calls ``opt.step()``; the step all-reduces ``B_i Q`` and ``B_iᵀ P``
    (``(m + n) r`` numbers per matrix instead of ``m n``) and the whole gradient of 1-D
    parameters.  The result equals single-process :class:`xpmat.optim.Dion` on the gradient
    averaged over the ranks (see the module doc and ``docs/distributed.md``).  :meth:`stats`
    counts the bytes communicated.

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
        The same parameters, in the same order and with the same shapes, on every rank.
    lr, momentum, rank, rank_multiple_of, weight_decay, schedule, lr_scale, orthogonalize
        As :class:`xpmat.optim.Dion`; the same values on every rank.
    oversample, seed, state_dtype, maximize
        As :class:`xpmat.optim.Dion`; the same values on every rank.
    adamw_lr_ratio, adamw_betas, adamw_eps, adamw_weight_decay
        As :class:`xpmat.optim.Dion`.
    process_group : torch.distributed.ProcessGroup, optional
        The ranks that share the data-parallel step (default: the WORLD group).  It must be
        initialized before the optimizer is built.
    check_consistency : bool
        Before each step all-reduce a few integers per parameter (has a gradient, shape, rank)
        and raise a ``ValueError`` on every rank when the ranks disagree, instead of
        exchanging mismatched buffers or hanging.  ``False`` skips the check (the non-finite
        flags then travel alone).

    Notes
    -----
    State is per rank (``M_i`` differs between ranks; ``Q`` and the AdamW moments of 1-D
    parameters are identical): save and load one ``state_dict`` per rank.  ``Q`` starts from the
    same seed on every rank, so no broadcast is needed.  Communication runs in the state dtype
    (float32 for bf16/fp16 parameters), one flat ``all_reduce`` per dtype and round: per step
    the check (with the non-finite flags), one round for the AdamW gradients, and two rounds per
    param group that has Dion matrices.

    Backends: torch tensors on any device the process group's backend supports (gloo: CPU,
    NCCL: CUDA, one device per rank).
    """

    def __init__(self, params: Any, lr: float = 0.01, *, momentum: float = 0.95, rank: float = 0.25,
                 rank_multiple_of: int = 1, weight_decay: float = 0.0, schedule: float = 1.0,
                 lr_scale: str | None = "fan", orthogonalize: str = "auto", oversample: float = 1.25,
                 seed: int = 0, state_dtype: Any = None, maximize: bool = False,
                 adamw_lr_ratio: float = 0.1, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, adamw_weight_decay: float = 0.0,
                 process_group: Any = None, check_consistency: bool = True, **kwargs: Any) -> None:
        hyper = collect_arguments(type(self), locals())
        self.process_group = _resolve_group(hyper.pop("process_group"))
        self.check_consistency = hyper.pop("check_consistency")
        check_bool("check_consistency", self.check_consistency)
        self.world_size = dist.get_world_size(self.process_group)
        self._ok: dict[torch.Tensor, Any] = {}
        self._counts = {"steps": 0, "bytes_last_step": 0, "plain_bytes_last_step": 0,
                        "control_bytes_last_step": 0, "collectives_last_step": 0,
                        "bytes_total": 0, "plain_bytes_total": 0}
        self._step = {"bytes": 0, "calls": 0, "control": 0, "plain": 0}
        XpmatOptimizer.__init__(self, params, hyper)
        for g in self.param_groups:  # a bad rank is an error now, not at the first step
            for p in g["params"]:
                self._rank_of(g, p)

    def stats(self) -> dict[str, Any]:
        """Communication counters of this rank (the key names of the PowerSGD+ hook's ``stats``).

        Bytes of the buffers handed to ``all_reduce``: ``bytes_last_step`` (our payload),
        ``plain_bytes_last_step`` (what a plain all-reduce of the same gradients, as DDP does,
        would hand over), ``control_bytes_last_step`` (the consistency check and the non-finite
        flags), ``collectives_last_step`` (``all_reduce`` calls); running totals ``steps``,
        ``bytes_total``, ``plain_bytes_total``, and ``compression``
        (``plain_bytes_total / bytes_total``).  A ring all-reduce moves about ``2 (N − 1) / N``
        times the buffer size over each rank's link.  Not part of ``state_dict``.
        """
        out = dict(self._counts)
        out["compression"] = (out["plain_bytes_total"] / out["bytes_total"] if out["bytes_total"]
                              else 1.0)
        return out

    # -- the hooks of the adapter and of the Dion core --------------------------------------------
    def _main_transform(self, group: dict[str, Any]) -> Transform:
        return _dion.transform(reduce=self._mean, flags=self._flags, **self._hyper(group, _dion))

    def _flags(self, grads: list[Any], params: list[Any]) -> list[Any]:
        return [self._ok[p] for p in params]

    def _rank_of(self, group: dict, p: torch.Tensor) -> int:
        if p.ndim < 2 or self._is_fallback_group(group):
            return 0
        m, n = matrix_shape(p.shape)
        return resolve_rank(group["rank"], group["rank_multiple_of"], m, n)

    def _prepare(self, work: list[tuple[dict, list, list]]) -> list[tuple[dict, list, list]]:
        """Before the updates: the consistency check with the non-finite flags of the Dion
        matrices (one MAX all-reduce), then the mean of the AdamW gradients (one round)."""
        self._step = {"bytes": 0, "calls": 0, "control": 0,
                      "plain": sum(g.numel() * g.element_size() for _, _, gs in work for g in gs)}
        device = next((ps[0].device for _, ps, _ in work),
                      next((p.device for g in self.param_groups for p in g["params"]), torch.device("cpu")))
        mats = {p: g for group, ps, gs in work if not self._is_fallback_group(group)
                for p, g in zip(ps, gs, strict=True) if p.ndim >= 2}
        zero = torch.zeros((), dtype=torch.int64, device=device)
        everyone = [p for g in self.param_groups for p in g["params"]]  # the same list on every rank
        flags = [torch.logical_not(finite(mats[p], _array.array_namespace(p))).to(torch.int64)
                 if p in mats else zero for p in everyone]
        nonfinite = self._check(device, flags)
        self._ok = {p: nonfinite[j] == 0 for j, p in enumerate(everyone) if p in mats}
        dense = [(w, i) for w, (group, ps, _) in enumerate(work) for i, p in enumerate(ps)
                 if p.ndim < 2 or self._is_fallback_group(group)]
        means = self._mean([self._state_dtype(work[w][0], work[w][1][i], work[w][2][i])
                            for w, i in dense]) if dense else []
        out = [(group, ps, list(gs)) for group, ps, gs in work]
        for (w, i), g in zip(dense, means, strict=True):
            out[w][2][i] = g
        return out

    @staticmethod
    def _state_dtype(group: dict, p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return g.to(state_dtype_for(p, _array.array_namespace(p), group["state_dtype"]))

    def _finish(self) -> None:
        c, s = self._counts, self._step
        c.update(steps=c["steps"] + 1, bytes_last_step=s["bytes"], plain_bytes_last_step=s["plain"],
                 control_bytes_last_step=s["control"], collectives_last_step=s["calls"],
                 bytes_total=c["bytes_total"] + s["bytes"],
                 plain_bytes_total=c["plain_bytes_total"] + s["plain"])

    def _check(self, device: torch.device, flags: list[torch.Tensor]) -> torch.Tensor:
        """All ranks agree on which parameters have gradients, their shapes and ranks (when
        ``check_consistency``); returns the non-finite flags (one per parameter of every group)
        MAX-reduced over the ranks."""
        f = torch.stack(flags) if flags else torch.zeros(0, dtype=torch.int64, device=device)
        if not self.check_consistency:
            if flags:
                self._all_reduce(f, dist.ReduceOp.MAX, control=True)
            return f
        rows, where = [], []
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                has = p.grad is not None
                shape0 = p.shape[0] if p.ndim else 1
                rows.append([int(has), p.ndim, p.numel(), shape0, self._rank_of(group, p)] if has
                            else [0, 0, 0, 0, 0])
                where.append((gi, pi, tuple(p.shape), has))
        v = torch.tensor(rows, dtype=torch.int64, device=device).reshape(-1)
        both = torch.cat([v, -v, f.to(device)])
        self._all_reduce(both, dist.ReduceOp.MAX, control=True)
        n = v.numel()
        hi, lo = both[:n].reshape(-1, 5), -both[n:2 * n].reshape(-1, 5)
        bad = torch.nonzero((hi != lo).any(dim=1)).flatten().tolist()
        if bad:
            gi, pi, shape, has = where[bad[0]]
            what = ("has a gradient on some ranks and none on others" if hi[bad[0], 0] != lo[bad[0], 0]
                    else "differs in shape or rank between ranks")
            raise ValueError(f"DistributedDion: parameter {pi} of param group {gi} (shape {shape} "
                             f"here, gradient {'present' if has else 'missing'} here) {what}; every "
                             "rank must step the same parameters with the same shapes and settings")
        return both[2 * n:]

    def _all_reduce(self, t: torch.Tensor, op: Any, *, control: bool = False) -> None:
        dist.all_reduce(t, op=op, group=self.process_group)
        self._step["control" if control else "bytes"] += t.numel() * t.element_size()
        self._step["calls"] += 1

    def _mean(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Mean over the ranks of each tensor: one flat SUM all-reduce per dtype."""
        out: list[Any] = [None] * len(tensors)
        by_dtype: dict[Any, list[int]] = {}
        for i, t in enumerate(tensors):
            by_dtype.setdefault(t.dtype, []).append(i)
        for idx in by_dtype.values():
            flat = torch.cat([tensors[i].reshape(-1) for i in idx])
            self._all_reduce(flat, dist.ReduceOp.SUM)
            flat = flat / self.world_size
            for i, piece in zip(idx, torch.split(flat, [tensors[i].numel() for i in idx]), strict=True):
                out[i] = piece.reshape(tensors[i].shape)
        return out
