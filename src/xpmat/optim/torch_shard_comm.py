"""The collectives of the sharded optimizer steps (imports torch).

:class:`OwnerExchange`: the two all-to-alls of bytes (any dtypes in one buffer) that move each
whole-matrix item's blocks to its owner and the results back; :class:`RowComm`: the all-gather
of row blocks and the all-reduce of a row-sharded algorithm (Dion).  What moves is planned from
shapes alone, alike on every rank (:mod:`xpmat.optim.torch_shard_layout`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xpmat.optim.torch_shard_layout import Layout, box, dist, mesh_info, slices, torch

__all__ = ["Item", "OwnerExchange", "RowComm"]

_ALIGN = 8  # every piece of a byte buffer starts at a multiple of 8: views of any dtype


@dataclass
class Item:
    """One whole-matrix step: its owner and the layouts / dtypes of what moves.  ``scatter`` is
    known before the step, except for a fresh state (then the owner tells, see ShardedStep)."""

    owner: int                             # global rank
    gather: list[Layout | None]            # grad, param, state fields (None: 0-d, owner's own)
    dtypes_in: list[Any]
    scatter: list[Layout | None] = field(default_factory=list)   # update, new state fields
    dtypes_out: list[Any] = field(default_factory=list)


def _nbytes(b: tuple[tuple[int, int], ...], dtype: Any) -> int:
    n = math.prod(z - a for a, z in b) * torch.empty((), dtype=dtype).element_size()
    return -(-n // _ALIGN) * _ALIGN




class OwnerExchange:
    """The two all-to-alls of one step for the whole-matrix parameters of one mesh.

    ``items``: per parameter the owner and the layouts / dtypes of what moves (the same list,
    in the same order, on every rank).  :meth:`start_gather` sends this rank's blocks of each
    item's gradient, parameter and state to its owner (asynchronously); :meth:`gathered` waits
    and returns, for the items this rank owns, the whole tensors; :meth:`scatter` sends the
    update and new state of each owned item back and returns this rank's blocks of every item.
    ``bytes_sent`` counts what this rank sent to other ranks in both (not its own blocks)."""

    def __init__(self, mesh: Any, items: list[Item]) -> None:
        self.m = mesh_info(mesh)
        self.items = items
        self.bytes_sent = 0
        self._work = None

    # -- plans: sizes only, computed alike on every rank -----------------------------------
    def _gather_plan(self, src: int, dst: int) -> list[tuple[int, int, tuple]]:
        """``(item, tensor, box)`` pieces ``src`` sends ``dst`` in the gather, in order."""
        out = []
        for i, it in enumerate(self.items):
            if it.owner != dst:
                continue
            for k, lay in enumerate(it.gather):
                if lay is not None and src in self.m.sources(lay, dst):
                    out.append((i, k, box(lay, self.m.coord[src])))
        return out

    def _scatter_plan(self, src: int, dst: int) -> list[tuple[int, int, tuple]]:
        out = []
        for i, it in enumerate(self.items):
            if it.owner != src:
                continue
            for k, lay in enumerate(it.scatter):
                out.append((i, k, () if lay is None else box(lay, self.m.coord[dst])))
        return out

    def _size(self, plan: list, dtypes: Callable[[int, int], Any]) -> int:
        return sum(_nbytes(b, dtypes(i, k)) for i, k, b in plan)

    # -- byte buffers ---------------------------------------------------------------------------
    @staticmethod
    def _pack(pieces: list[Any], device: Any) -> Any:
        flat = []
        for t in pieces:
            v = t.contiguous().reshape(-1).view(torch.uint8)
            pad = -v.numel() % _ALIGN
            flat.append(v)
            if pad:
                flat.append(torch.zeros(pad, dtype=torch.uint8, device=device))
        return torch.cat(flat) if flat else torch.empty(0, dtype=torch.uint8, device=device)

    def _exchange(self, pieces_for: dict[int, list[Any]], recv_sizes: list[int], device: Any,
                  async_op: bool) -> tuple[Any, list[int], Any]:
        order = sorted(self.m.ranks, key=lambda r: self.m.index[r])
        send_parts = [self._pack(pieces_for.get(r, []), device) for r in order]
        send = torch.cat(send_parts) if send_parts else torch.empty(0, dtype=torch.uint8)
        recv = torch.empty(sum(recv_sizes), dtype=torch.uint8, device=device)
        self.bytes_sent += sum(p.numel() for r, p in zip(order, send_parts, strict=True) if r != self.m.me)
        work = dist.all_to_all_single(recv, send, recv_sizes, [p.numel() for p in send_parts],
                                      group=self.m.group, async_op=async_op)
        return recv, order, work

    @staticmethod
    def _read(recv: Any, offset: int, b: tuple, dtype: Any) -> tuple[Any, int]:
        shape = tuple(z - a for a, z in b)
        n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        t = recv[offset:offset + n].view(dtype).reshape(shape)
        return t, offset + -(-n // _ALIGN) * _ALIGN

    # -- the two phases -------------------------------------------------------------------------
    def start_gather(self, local: list[list[Any]], device: Any) -> None:
        """``local[i]``: this rank's blocks of item i's gathered tensors (None for 0-d ones)."""
        me = self.m.me
        pieces = {d: [local[i][k] for i, k, _ in self._gather_plan(me, d)] for d in self.m.ranks}
        order = sorted(self.m.ranks, key=lambda r: self.m.index[r])
        sizes = [self._size(self._gather_plan(s, me), lambda i, k: self.items[i].dtypes_in[k])
                 for s in order]
        self._gather = (*self._exchange(pieces, sizes, device, async_op=True), device)

    def gathered(self) -> dict[int, list[Any]]:
        """Item index -> whole tensors (gathered order; 0-d entries None) of the owned items."""
        recv, order, work, device = self._gather
        work.wait()
        me, out, off = self.m.me, {}, 0
        for i, it in enumerate(self.items):
            if it.owner == me:
                out[i] = [None if lay is None else torch.empty(lay.shape, dtype=dt, device=device)
                          for lay, dt in zip(it.gather, it.dtypes_in, strict=True)]
        for s in order:
            for i, k, b in self._gather_plan(s, me):
                t, off = self._read(recv, off, b, self.items[i].dtypes_in[k])
                out[i][k][slices(b)] = t
        return out

    def scatter(self, results: dict[int, list[Any]], device: Any) -> dict[int, list[Any]]:
        """``results[i]``: whole update and new state of owned item i (scatter order).  Returns
        this rank's block of each of them for every item."""
        me = self.m.me
        pieces = {d: [results[i][k] if not b else results[i][k][slices(b)]
                      for i, k, b in self._scatter_plan(me, d)] for d in self.m.ranks}
        order = sorted(self.m.ranks, key=lambda r: self.m.index[r])
        sizes = [self._size(self._scatter_plan(s, me), lambda i, k: self.items[i].dtypes_out[k])
                 for s in order]
        recv, order, _ = self._exchange(pieces, sizes, device, async_op=False)
        out: dict[int, list[Any]] = {i: [None] * len(it.scatter) for i, it in enumerate(self.items)}
        off = 0
        for s in order:
            for i, k, b in self._scatter_plan(s, me):
                t, off = self._read(recv, off, b, self.items[i].dtypes_out[k])
                out[i][k] = t.clone()  # its own storage: state outlives the buffer
        return out


class RowComm:
    """The collectives of a row-sharded step over the ranks that share a matrix's rows (one
    mesh dim): ``gather_rows`` (all-gather of row blocks, padded to equal sizes) and ``sum_all``
    (all-reduce), each one collective per dtype for all the matrices of the call.  ``rows``:
    this rank's row range of each matrix.  ``bytes_sent``: all-gather ``(W−1)·L`` and ring
    all-reduce ``2 (W−1)/W · L`` bytes for a local buffer of ``L`` bytes."""

    def __init__(self, mesh: Any, dim: int, layouts: list[Layout]) -> None:
        info = mesh_info(mesh)
        self.group = mesh.get_group(mesh_dim=dim)
        me = info.coord[info.me]
        coords = [tuple(j if d == dim else c for d, c in enumerate(me)) for j in range(info.shape[dim])]
        at = {c: r for r, c in info.coord.items()}
        ranks = {at[c]: c for c in coords}
        order = sorted(ranks, key=lambda r: dist.get_group_rank(self.group, r))
        self.spans = [[box(lay, ranks[r])[0] for r in order] for lay in layouts]   # per matrix, per rank
        self.rows = [box(lay, me)[0] for lay in layouts]
        self.world = len(order)
        self.bytes_sent = 0

    def gather_rows(self, blocks: list[Any]) -> list[Any]:
        """Whole ``(m, r)`` arrays from every rank's ``(m_l, r)`` blocks, in row order."""
        out: list[Any] = [None] * len(blocks)
        for ks in _by_dtype(blocks).values():
            pad = [max(b - a for a, b in self.spans[k]) for k in ks]
            flat = torch.cat([torch.nn.functional.pad(blocks[k], (0, 0, 0, n - blocks[k].shape[0]))
                              .reshape(-1) for k, n in zip(ks, pad, strict=True)])
            parts = [torch.empty_like(flat) for _ in range(self.world)]
            dist.all_gather(parts, flat, group=self.group)
            self.bytes_sent += (self.world - 1) * flat.numel() * flat.element_size()
            for j, k in enumerate(ks):
                off = sum(pad[q] * blocks[ks[q]].shape[1] for q in range(j))
                r = blocks[k].shape[1]
                out[k] = torch.cat([parts[w][off:off + pad[j] * r].view(pad[j], r)[:b - a]
                                    for w, (a, b) in enumerate(self.spans[k])])
        return out

    def sum_all(self, arrays: list[Any]) -> list[Any]:
        """The sum over the ranks of each array (one all-reduce per dtype)."""
        out: list[Any] = [None] * len(arrays)
        for ks in _by_dtype(arrays).values():
            flat = torch.cat([arrays[k].reshape(-1) for k in ks])
            dist.all_reduce(flat, group=self.group)
            self.bytes_sent += 2 * (self.world - 1) * flat.numel() * flat.element_size() // self.world
            off = 0
            for k in ks:
                n = arrays[k].numel()
                out[k] = flat[off:off + n].view(arrays[k].shape)
                off += n
        return out


def _by_dtype(arrays: list[Any]) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = {}
    for k, a in enumerate(arrays):
        out.setdefault(a.dtype, []).append(k)
    return out
