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
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from xpmat import _array
from xpmat.optim import dion as _dion
from xpmat.optim._base import matrix_shape, resolve_rank
from xpmat.optim.torch_optim import Dion

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
    process_group : torch.distributed.ProcessGroup, optional
        The ranks that share the data-parallel step (default: the WORLD group).  It must be
        initialized before the optimizer is built.
    check_consistency : bool
        Before each step all-reduce a few integers per parameter (has a gradient, shape, rank)
        and raise a ``ValueError`` on every rank when the ranks disagree, instead of
        exchanging mismatched buffers or hanging.  ``False`` skips this small collective.
    **hyper
        Everything :class:`xpmat.optim.Dion` takes (``lr``, ``mu``, ``rank``,
        ``rank_multiple_of``, ``weight_decay``, ``schedule``, ``lr_scale``, ``orthogonalize``,
        ``oversample``, ``seed``, ``state_dtype``, ``maximize``, the ``adamw_*`` fallback
        settings, ``fallback``).  The same values on every rank.

    Notes
    -----
    State is per rank (``M_i`` differs between ranks; ``Q`` and the AdamW moments of 1-D
    parameters are identical): save and load one ``state_dict`` per rank.  ``Q`` starts from the
    same seed on every rank, so no broadcast is needed.  Communication runs in the state dtype
    (float32 for bf16/fp16 parameters), one flat ``all_reduce`` per dtype and round: two rounds
    per step (plus the small consistency check).

    Backends: torch tensors on any device the process group's backend supports (gloo: CPU,
    NCCL: CUDA, one device per rank).
    """

    def __init__(self, params: Any, *, process_group: Any = None, check_consistency: bool = True,
                 **hyper: Any) -> None:
        group = _resolve_group(process_group)
        if not isinstance(check_consistency, bool):
            raise TypeError(f"check_consistency must be a bool, got {check_consistency!r}")
        super().__init__(params, **hyper)
        for g in self.param_groups:  # a bad rank is an error now, not at the first step
            for p in g["params"]:
                self._rank_of(g, p)
        self.process_group = group
        self.world_size = dist.get_world_size(group)
        self.check_consistency = check_consistency
        self._counts = {"steps": 0, "bytes_last_step": 0, "plain_bytes_last_step": 0,
                        "control_bytes_last_step": 0, "collectives_last_step": 0,
                        "bytes_total": 0, "plain_bytes_total": 0}

    def stats(self) -> dict[str, Any]:
        """Communication counters of this rank (the key names of the PowerSGD+ hook's ``stats``).

        Bytes of the buffers handed to ``all_reduce``: ``bytes_last_step`` (our payload),
        ``plain_bytes_last_step`` (what a plain all-reduce of the same gradients, as DDP does,
        would hand over), ``control_bytes_last_step`` (the consistency check),
        ``collectives_last_step`` (``all_reduce`` calls); running totals ``steps``,
        ``bytes_total``, ``plain_bytes_total``, and ``compression``
        (``plain_bytes_total / bytes_total``).  A ring all-reduce moves about ``2 (N − 1) / N``
        times the buffer size over each rank's link.  Not part of ``state_dict``.
        """
        out = dict(self._counts)
        out["compression"] = (out["plain_bytes_total"] / out["bytes_total"] if out["bytes_total"]
                              else 1.0)
        return out

    # -- helpers ----------------------------------------------------------------------------
    def _rank_of(self, group: dict, p: torch.Tensor) -> int:
        if p.ndim < 2:
            return 0
        m, n = matrix_shape(p.shape)
        return resolve_rank(group["rank"], group["rank_multiple_of"], m, n)

    def _check(self, device: torch.device) -> int:
        """All ranks agree on which parameters have gradients, their shapes and ranks."""
        rows, where = [], []
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                has = p.grad is not None
                shape0 = p.shape[0] if p.ndim else 1
                rows.append([int(has), p.ndim, p.numel(), shape0, self._rank_of(group, p)] if has
                            else [0, 0, 0, 0, 0])
                where.append((gi, pi, tuple(p.shape), has))
        if not rows:
            return 0
        v = torch.tensor(rows, dtype=torch.int64, device=device)
        both = torch.cat([v, -v])
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.process_group)
        hi, lo = both[: len(rows)], -both[len(rows):]
        bad = torch.nonzero((hi != lo).any(dim=1)).flatten().tolist()
        if bad:
            gi, pi, shape, has = where[bad[0]]
            what = ("has a gradient on some ranks and none on others" if hi[bad[0], 0] != lo[bad[0], 0]
                    else "differs in shape or rank between ranks")
            raise ValueError(f"DistributedDion: parameter {pi} of param group {gi} (shape {shape} "
                             f"here, gradient {'present' if has else 'missing'} here) {what}; every "
                             "rank must step the same parameters with the same shapes and settings")
        return both.numel() * both.element_size()

    def _all_reduce_mean(self, tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], int, int]:
        """Mean over the ranks of each tensor: one flat SUM all-reduce per dtype."""
        out: list[Any] = [None] * len(tensors)
        nbytes = calls = 0
        by_dtype: dict[Any, list[int]] = {}
        for i, t in enumerate(tensors):
            by_dtype.setdefault(t.dtype, []).append(i)
        for idx in by_dtype.values():
            flat = torch.cat([tensors[i].reshape(-1) for i in idx])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.process_group)
            nbytes += flat.numel() * flat.element_size()
            calls += 1
            flat = flat / self.world_size
            for i, piece in zip(idx, torch.split(flat, [tensors[i].numel() for i in idx]), strict=True):
                out[i] = piece.reshape(tensors[i].shape)
        return out, nbytes, calls

    # -- torch.optim.Optimizer API ----------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One data-parallel Dion step on every rank (collective: all ranks must call it)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []  # (param group, its parameters that have a gradient)
        device = None
        for group in self.param_groups:
            params = self._with_grad(group)
            if device is None and params:
                device = params[0].device
            work.append((group, params))
        if device is None:
            device = next((p.device for g in self.param_groups for p in g["params"]),
                          torch.device("cpu"))
        control = self._check(device) if self.check_consistency else 0

        # local part of round 1: B_i Q for low-rank matrices, the gradient for the rest
        lowrank, dense = [], []  # entries: dicts
        for group, params in work:
            if not params:
                continue
            t = self._transform(group)
            self._init_fresh(t, params)
            for p in params:
                s = self._get(p)
                g = -p.grad if group["maximize"] else p.grad
                if p.ndim >= 2:
                    m, n = matrix_shape(p.shape)
                    r = s.Q.shape[-1]
                    if (m + n) * r < m * n:
                        B = s.momentum + g.reshape(m, n).to(s.momentum.dtype)
                        lowrank.append({"group": group, "p": p, "s": s, "B": B,
                                        "send": B @ s.Q})
                        continue
                    dt = s.momentum.dtype
                else:
                    dt = s.exp_avg.dtype
                dense.append({"group": group, "p": p, "s": s, "send": g.to(dt),
                              "t": t, "dense": g.numel() * g.element_size()})
        sent = [e["send"] for e in lowrank] + [e["send"] for e in dense]
        reduced, nbytes, calls = self._all_reduce_mean(sent) if sent else ([], 0, 0)
        for e, y in zip(lowrank + dense, reduced, strict=True):
            e["mean"] = y

        # round 2: P = orth(mean B_i Q) (identical on all ranks), all-reduce B_iᵀ P
        for e in lowrank:
            e["P"] = _dion._orth_p(e["mean"], e["s"], _array.array_namespace(e["mean"]),
                                   e["group"]["orthogonalize"])
        Rs, nb2, calls2 = self._all_reduce_mean([e["B"].mT @ e["P"] for e in lowrank]) \
            if lowrank else ([], 0, 0)
        nbytes, calls = nbytes + nb2, calls + calls2

        # finish: the low-rank matrices here, the rest through the single-process core
        for e, R in zip(lowrank, Rs, strict=True):
            xp = _array.array_namespace(R)
            u, st = _dion._finish(e["B"], e["P"], R, _array.normalize_columns(R, xp), e["s"],
                                  e["p"], e["group"], xp)
            e["p"].add_(u)
            self._put(e["p"], st)
        for group, _ in work:
            mine = [e for e in dense if e["group"] is group]
            if not mine:
                continue
            ps = [e["p"] for e in mine]
            updates, new = mine[0]["t"].update([e["mean"] for e in mine], [e["s"] for e in mine], ps)
            for p, u, s in zip(ps, updates, new, strict=True):
                p.add_(u)
                self._put(p, s)

        dense_bytes = sum(e["p"].grad.numel() * e["p"].grad.element_size() for e in lowrank) \
            + sum(e["dense"] for e in dense)
        c = self._counts
        c.update(steps=c["steps"] + 1, bytes_last_step=nbytes, plain_bytes_last_step=dense_bytes,
                 control_bytes_last_step=control, collectives_last_step=calls + (1 if control else 0),
                 bytes_total=c["bytes_total"] + nbytes,
                 plain_bytes_total=c["plain_bytes_total"] + dense_bytes)
        return loss
