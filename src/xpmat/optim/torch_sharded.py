"""Sharded (``DTensor``) parameters in the xpmat torch optimizers: local shards and owner ranks.

Every :class:`xpmat.optim.XpmatOptimizer` steps FSDP2 / DTensor parameters with no other class
or argument; this module is the machinery it calls (imports torch).  Two paths, chosen per
parameter from the method's :data:`LOCAL_SHARDS` rule (its spec) and the parameter's placements:

Local
    A method whose step is elementwise (AdamW, SGD, AdaGrad diagonal), or row-wise where the
    shards cut no row (SphereSGD under ``Shard(0)``, ExponentiatedGradient on whole last-axis
    rows), runs on the local shard (``to_local()``) with no communication of data; its state is
    kept as DTensors with the parameter's placements.  Only the non-finite flags are agreed (one
    tiny all-reduce a step), so a NaN in one shard skips the whole parameter, as unsharded.
Owner
    Every other method (Muon, Shampoo, Adafactor, Dion, PowerSGD, LRE, ...) steps each matrix
    whole, once in the world: an owner rank (greedy by ``m·n·min(m, n)``, the least loaded
    first) receives the shards of its gradient, parameter and state in ONE all-to-all of bytes
    per mesh, runs the method's functional core on all the matrices it owns (same-shaped ones
    batched as on one device), and sends every rank its shard of the update and of the new state
    in a second all-to-all.  The gather is started before the local path runs, so the two
    overlap.  Under HSDP (a replicate × shard mesh) the owner gathers from its own replica group
    and scatters to every replica.

State layout (what ``state_dict`` and DCP see, the same keys on every rank)
    A state tensor of the parameter's shape has its placements; any other state of ndim ≥ 1
    (a matrix view, Kronecker factors) is split along dim 0 over the mesh dims the parameter is
    sharded on (``Shard(0)``); 0-d state (counters) is a plain tensor, equal on every rank.
    So a checkpoint saved on N ranks loads on M (DCP reshards DTensors).

Supported placements: ``Replicate`` and ``Shard(d)`` (FSDP2's ``Shard(0)``, uneven shards,
tensor-parallel ``Shard(1)``, HSDP).  ``Partial`` parameters and ``_StridedShard`` raise
``NotImplementedError``.  All ranks of a mesh must call ``step`` with the same parameters (SPMD).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from xpmat._optional import require

torch = require("torch", "Sharded parameters in xpmat.optim")
dist = torch.distributed

__all__ = ["LOCAL_RULES", "Item", "Layout", "OwnerExchange", "ShardedStep", "box", "is_dtensor", "layout_of",
           "local_ok", "local_state_layout", "owners", "state_layout", "to_dtensor"]

_ALIGN = 8  # every piece of a byte buffer starts at a multiple of 8: views of any dtype


def _dtensor_types() -> tuple[type, type, type]:
    from torch.distributed.tensor import DTensor, Replicate, Shard

    return DTensor, Replicate, Shard


def is_dtensor(t: Any) -> bool:
    """``t`` is a ``torch.distributed.tensor.DTensor``."""
    return dist.is_available() and isinstance(t, _dtensor_types()[0])


class Layout(NamedTuple):
    """Where a global tensor lives: its device mesh, placements and global shape."""

    mesh: Any
    placements: tuple[Any, ...]
    shape: tuple[int, ...]


def _check_placements(placements: Sequence[Any], name: str) -> None:
    _, Replicate, Shard = _dtensor_types()
    for pl in placements:
        if type(pl) is not Shard and not isinstance(pl, Replicate):
            raise NotImplementedError(
                f"{name}: placement {pl} is not supported by xpmat's sharded optimizers (Replicate "
                "and Shard(d) are; redistribute Partial tensors before the step)")


def layout_of(t: Any, name: str = "parameter") -> Layout:
    """The :class:`Layout` of a DTensor (``NotImplementedError`` for unsupported placements)."""
    _check_placements(t.placements, name)
    return Layout(t.device_mesh, tuple(t.placements), tuple(t.shape))


def state_layout(param: Layout, shape: Sequence[int]) -> Layout | None:
    """The layout of a state tensor of global ``shape`` kept for ``param`` (module doc): the
    parameter's placements for its own shape, ``Shard(0)`` on its sharded mesh dims otherwise,
    None (a plain replicated tensor) for 0-d state."""
    shape = tuple(shape)
    if not shape:
        return None
    if shape == param.shape:
        return Layout(param.mesh, param.placements, shape)
    _, Replicate, Shard = _dtensor_types()
    pls = tuple(pl if isinstance(pl, Replicate) else Shard(0) for pl in param.placements)
    return Layout(param.mesh, pls, shape)


def box(layout: Layout, coord: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``(start, stop)`` per dimension of the block the mesh coordinate ``coord`` holds.

    ``Shard(d)`` on mesh dim ``i`` cuts the current range of dim ``d`` into ``mesh.size(i)``
    pieces of ``ceil(len / size)`` (the last ones shorter or empty), as ``torch.chunk`` and
    DTensor do; mesh dims apply in order (nested sharding of one dim)."""
    _, _, Shard = _dtensor_types()
    rng = [[0, n] for n in layout.shape]
    sizes = mesh_info(layout.mesh).shape
    for i, pl in enumerate(layout.placements):
        if type(pl) is Shard:
            lo, hi = rng[pl.dim]
            step = -(-(hi - lo) // sizes[i]) if hi > lo else 0
            a = min(hi, lo + step * coord[i])
            rng[pl.dim] = [a, min(hi, a + step)]
    return tuple((a, b) for a, b in rng)


def _slices(b: tuple[tuple[int, int], ...]) -> tuple[slice, ...]:
    return tuple(slice(a, z) for a, z in b)


def _contiguous_stride(shape: Sequence[int]) -> tuple[int, ...]:
    out, acc = [], 1
    for n in reversed(tuple(shape)):
        out.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(out))


def to_dtensor(local: Any, layout: Layout | None) -> Any:
    """``local`` (this rank's block) as a DTensor of ``layout`` (``layout=None``: ``local``)."""
    if layout is None:
        return local
    DTensor = _dtensor_types()[0]
    return DTensor.from_local(local, layout.mesh, layout.placements, run_check=False,
                              shape=torch.Size(layout.shape), stride=_contiguous_stride(layout.shape))


def local_state_layout(p: Any, v: Any) -> Layout | None:
    """The layout of ``v``, a state block a method made from DTensor ``p``'s local block: the
    parameter's for its block's shape, ``Shard(0)`` rows for a matrix view of a row-sharded
    parameter (conv kernels), None for 0-d; anything else is a ``RuntimeError``."""
    lay = layout_of(p)
    if not v.ndim:
        return None
    if tuple(v.shape) == tuple(p.to_local().shape):
        return lay
    if _sharded_dims(lay) <= {0} and v.shape[0] == p.to_local().shape[0]:
        return state_layout(lay, (p.shape[0], *v.shape[1:]))
    raise RuntimeError(f"a state block of shape {tuple(v.shape)} made from a shard "
                       f"{tuple(p.to_local().shape)} "
                       f"of a parameter {tuple(p.shape)} with placements {lay.placements}: not elementwise")


def _sharded_dims(layout: Layout) -> frozenset[int]:
    _, _, Shard = _dtensor_types()
    return frozenset(pl.dim for pl in layout.placements if type(pl) is Shard)


# ----------------------------------------------------------------------------- the method's rule
def _elementwise(h: dict[str, Any], ndim: int, dims: frozenset[int]) -> bool:
    return True


def _whole_rows(h: dict[str, Any], ndim: int, dims: frozenset[int]) -> bool:
    return ndim >= 2 and dims <= {0}


def _whole_last_axis(h: dict[str, Any], ndim: int, dims: frozenset[int]) -> bool:
    return ndim - 1 not in dims


LOCAL_RULES: dict[str, Callable[[dict[str, Any], int, frozenset[int]], bool]] = {
    "elementwise": _elementwise,     # every entry on its own (AdamW, SGD)
    "rows": _whole_rows,             # rows of the matrix view on their own (SphereSGD)
    "last_axis": _whole_last_axis,   # last-axis rows on their own (ExponentiatedGradient)
}


def local_ok(rule: Any, h: dict[str, Any], p: Any) -> bool:
    """Whether the method's ``LOCAL_SHARDS`` rule (a name of :data:`LOCAL_RULES`, a callable
    ``(hyper, ndim, sharded_dims) -> bool``, or None: whole matrices only) lets DTensor ``p``
    step on its local shard."""
    if rule is None:
        return False
    lay = layout_of(p)
    if _has_empty_block(lay):
        return False  # an empty shard would hold no state: its owner keeps the keys symmetric
    fn = LOCAL_RULES[rule] if isinstance(rule, str) else rule
    return bool(fn(h, p.ndim, _sharded_dims(lay)))


def _has_empty_block(layout: Layout) -> bool:
    """Some rank holds an empty block of a non-empty tensor (fewer rows than ranks: 5 rows on 4
    ranks are cut 2, 2, 1, 0)."""
    if not math.prod(layout.shape):
        return False
    return any(any(a == z for a, z in box(layout, c)) for c in mesh_info(layout.mesh).coord.values())


# ----------------------------------------------------------------------------- owners
def _cost(shape: Sequence[int]) -> int:
    """Work of a whole-matrix step on the matrix view ``(out, prod(rest))``: ``m·n·min(m, n)``."""
    m = shape[0] if shape else 1
    n = math.prod(shape[1:]) if len(shape) > 1 else 1
    return m * n * max(1, min(m, n))


def owners(shapes: Sequence[Sequence[int]], ranks: Sequence[int]) -> list[int]:
    """An owner among ``ranks`` for each matrix: the largest first, each to the least-loaded
    rank (ties: the lower rank).  Deterministic: every rank computes the same answer."""
    load = {r: 0 for r in ranks}
    out = [0] * len(shapes)
    for i in sorted(range(len(shapes)), key=lambda i: (-_cost(shapes[i]), i)):
        r = min(ranks, key=lambda r: (load[r], r))
        out[i] = r
        load[r] += _cost(shapes[i])
    return out


# ----------------------------------------------------------------------------- the exchange
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


_MESHES: dict[int, tuple[Any, Any]] = {}


def mesh_info(mesh: Any) -> _Mesh:
    """The :class:`_Mesh` of ``mesh``, made once per mesh (reading a mesh's ranks is not free)."""
    got = _MESHES.get(id(mesh))
    if got is None or got[0] is not mesh:
        got = _MESHES[id(mesh)] = (mesh, _Mesh(mesh))
    return got[1]


class _Mesh:
    """A mesh's ranks, coordinates and the process group spanning it."""

    def __init__(self, mesh: Any) -> None:
        self.mesh = mesh
        grid = mesh.mesh
        self.shape = tuple(grid.shape)
        self.ranks = [int(r) for r in grid.reshape(-1).tolist()]
        self.coord = {r: tuple(int(c) for c in idx) for r, idx in
                      zip(self.ranks, torch.cartesian_prod(*[torch.arange(s) for s in grid.shape])
                          .reshape(len(self.ranks), grid.ndim).tolist(), strict=True)}
        if grid.ndim == 1:
            self.group = mesh.get_group()
        elif mesh.size() == dist.get_world_size():
            self.group = dist.group.WORLD
        else:
            self.group = mesh._flatten().get_group()
        self.me = dist.get_rank()
        self.index = {r: dist.get_group_rank(self.group, r) for r in self.ranks}

    def sources(self, layout: Layout, owner: int) -> list[int]:
        """Ranks whose blocks make up the whole tensor: those of the owner's replica group."""
        _, Replicate, _ = _dtensor_types()
        oc = self.coord[owner]
        return [r for r in self.ranks
                if all(c == o or not isinstance(pl, Replicate)
                       for c, o, pl in zip(self.coord[r], oc, layout.placements, strict=True))]


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
                out[i][k][_slices(b)] = t
        return out

    def scatter(self, results: dict[int, list[Any]], device: Any) -> dict[int, list[Any]]:
        """``results[i]``: whole update and new state of owned item i (scatter order).  Returns
        this rank's block of each of them for every item."""
        me = self.m.me
        pieces = {d: [results[i][k] if not b else results[i][k][_slices(b)]
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


# ----------------------------------------------------------------------------- one step
def _local(v: Any) -> Any:
    return v.to_local() if is_dtensor(v) else v


def _state_layout_of(v: Any, name: str) -> Layout | None:
    if is_dtensor(v):
        return layout_of(v, name)
    if v.ndim:
        raise RuntimeError(f"{name}: a state tensor of a sharded parameter is a plain tensor of "
                           f"shape {tuple(v.shape)} (xpmat keeps such state as DTensors)")
    return None


class ShardedStep:
    """The sharded part of one ``XpmatOptimizer.step`` (see the module doc).

    Built from the step's runs (each with ``group``, ``params``, ``grads``, ``types`` and the
    index list ``here`` of what this rank steps itself), it sorts each DTensor parameter into
    one of four paths: *local* (left in ``here``), *split* (the method's ``sharded_parts``:
    its elementwise phases on the blocks, only the direction travels — Muon), *rows* (the
    method's ``row_sharded``: a sharded algorithm on row blocks with its own collectives —
    Dion) and *owner* (the whole core on an owner).  Then it agrees on the non-finite flags of
    the local, split and row-sharded ones, runs the split methods' first phase and starts the
    gathers.  :meth:`localize` gives the local blocks of ``here``; :meth:`finish` runs the
    owned and row-sharded work and scatters the owned work back.
    """

    def __init__(self, opt: Any, runs: list[Any]) -> None:
        self.opt = opt
        self.meshes: dict[Any, list[tuple[Any, int]]] = {}    # mesh -> [(run, param index)]
        self.flag_params: list[tuple[Any, int]] = []
        self.split: dict[int, dict[str, Any]] = {}            # id(run) -> the split phase's work
        self.rows: dict[int, dict[str, Any]] = {}             # id(run) -> the row-sharded work
        self.split_parts: dict[int, Any] = {}                 # id(run) -> sharded_parts or None
        for run in runs:
            keep = []
            for i in run.here:
                path = self._path(run, i)
                if path == "local" or path == "plain":
                    keep.append(i)
                if path in ("local", "split", "rows"):
                    self.flag_params.append((run, i))
                if path in ("split", "owner"):
                    self.meshes.setdefault(run.params[i].device_mesh, []).append((run, i))
                if path == "split":
                    self.split.setdefault(id(run), {"idx": []})["idx"].append(i)
            run.here[:] = keep
        self._agree_flags()
        for run in runs:
            if id(run) in self.split:
                self._split_in(run, self.split[id(run)])
        self.exchanges = [self._start(mesh, work) for mesh, work in self.meshes.items()]

    def _path(self, run: Any, i: int) -> str:
        """``"plain"``, ``"local"``, ``"split"`` or ``"owner"`` for ``run.params[i]``."""
        p, g = run.params[i], run.grads[i]
        if not is_dtensor(p):
            return "plain"
        lay = layout_of(p, f"parameter of shape {tuple(p.shape)}")
        if not is_dtensor(g):
            raise TypeError(f"parameter of shape {tuple(p.shape)} is a DTensor but its gradient is a "
                            "plain tensor")
        if tuple(g.placements) != lay.placements:
            run.grads[i] = g.redistribute(lay.mesh, lay.placements)
        module, h = self.opt._method_of(run.group, p)
        if local_ok(getattr(module, "LOCAL_SHARDS", None), h, p):
            return "local"
        rows = p.ndim == 2 or _sharded_dims(lay) <= {0}
        if hasattr(module, "sharded_parts") and rows and not _has_empty_block(lay):
            if id(run) not in self.split_parts:
                kw = {"reuse_state": True} if self.opt.reuse_state else {}
                self.split_parts[id(run)] = module.sharded_parts(**kw, **h)
            if self.split_parts[id(run)] is not None:
                return "split"
        if hasattr(module, "row_sharded") and _row_split_dim(lay) is not None and not _has_empty_block(lay):
            parts = module.row_sharded(**h)
            if parts is not None:
                self.rows.setdefault(id(run), {"run": run, "parts": parts, "idx": []})["idx"].append(i)
                return "rows"
        return "owner"

    def _is_split(self, run: Any, i: int) -> bool:
        return id(run) in self.split and i in self.split[id(run)]["idx"]

    def _split_in(self, run: Any, work: dict[str, Any]) -> None:
        """The split method's first phase on this rank's blocks (states made if fresh)."""
        idx = work["idx"]
        ps = [run.params[i].to_local() for i in idx]
        gs = [self.local_grads[(id(run), i)] for i in idx]
        fresh = [k for k, i in enumerate(idx) if i in set(run.fresh)]
        states = [None if k in fresh else self.opt._get(run.params[i], run.types[id(run.params[i])])
                  for k, i in enumerate(idx)]
        if fresh:
            made = self.opt._init_states(run, [idx[k] for k in fresh], [ps[k] for k in fresh])
            for k, st in zip(fresh, made, strict=True):
                states[k] = st
        parts = self.split_parts[id(run)]
        carry, Us = parts.local_in(gs, states)
        work.update(run=run, parts=parts, params=ps, states=states, carry=carry,
                    Us=dict(zip(idx, Us, strict=True)))

    # -- the local path --------------------------------------------------------------------------
    def _agree_flags(self) -> None:
        """One all-reduce (MIN) of the local DTensors' finite flags per mesh; a gradient that is
        not finite somewhere is made NaN here, so every shard of it skips the step."""
        from xpmat.optim.transforms import finite

        by_mesh: dict[Any, list[tuple[Any, int]]] = {}
        for run, i in self.flag_params:
            by_mesh.setdefault(run.params[i].device_mesh, []).append((run, i))
        self.local_grads: dict[tuple[int, int], Any] = {}
        self.flag_meshes = len(by_mesh)
        for mesh, work in by_mesh.items():
            gs = [run.grads[i].to_local() for run, i in work]
            flags = torch.stack([finite(g, torch).to(torch.float32) for g in gs])
            dist.all_reduce(flags, op=dist.ReduceOp.MIN, group=mesh_info(mesh).group)
            ok = flags > 0
            for k, ((run, i), g) in enumerate(zip(work, gs, strict=True)):
                self.local_grads[(id(run), i)] = torch.where(ok[k], g, float("nan"))

    def localize(self, run: Any) -> tuple[list[Any], list[Any]]:
        """``(params, grads)`` of ``run.here`` as plain tensors (local blocks of DTensors)."""
        ps = [_local(run.params[i]) for i in run.here]
        gs = [self.local_grads.get((id(run), i)) for i in run.here]
        gs = [_local(run.grads[i]) if g is None else g for g, i in zip(gs, run.here, strict=True)]
        return ps, gs

    # -- the owner path --------------------------------------------------------------------------
    def _start(self, mesh: Any, work: list[tuple[Any, int]]) -> tuple[Any, list, list]:
        ranks = mesh_info(mesh).ranks
        own = owners([tuple(run.params[i].shape) for run, i in work], ranks)
        items, blocks, fields = [], [], []
        for (run, i), o in zip(work, own, strict=True):
            p = run.params[i]
            if self._is_split(run, i):
                U = self.split[id(run)]["Us"][i]
                ulay = local_state_layout(p, U)
                items.append(Item(o, [ulay], [U.dtype], [ulay], [U.dtype]))
                blocks.append([U])
                fields.append([])
                continue
            g, st = run.grads[i], self.opt.state[p]
            lay = layout_of(p)
            fields.append([f for f in run.types[id(p)]._fields if f in st])
            lays = [_state_layout_of(st[f], f"state {f!r}") for f in fields[-1]]
            items.append(Item(o, [lay, lay, *lays], [g.dtype, p.dtype, *(st[f].dtype for f in fields[-1])]))
            blocks.append([g.to_local(), p.to_local(), *(None if la is None else st[f].to_local()
                                                          for f, la in zip(fields[-1], lays, strict=True))])
            if st:  # known state: it comes back with the same layouts
                items[-1].scatter = [lay, *lays]
                items[-1].dtypes_out = [_update_dtype(p), *(st[f].dtype for f in fields[-1])]
        ex = OwnerExchange(mesh, items)
        ex.start_gather(blocks, _device(work))
        return ex, work, fields

    def finish(self) -> dict[str, int]:
        """Run the owned steps, scatter them back, apply the updates; returns the traffic."""
        stats = {"bytes_sent": 0, "whole_matrix_steps": 0, "collectives": self.flag_meshes}
        for ex, work, fields in self.exchanges:
            full = ex.gathered()
            results, names = self._compute(ex, work, fields, full)
            results.update(self._whole_split(work, full))
            if any(not it.scatter for it in ex.items):
                self._fresh_layouts(ex, work, results, names)
            blocks = ex.scatter(results, _device(work))
            for k, (run, i) in enumerate(work):
                if self._is_split(run, i):
                    self.split[id(run)].setdefault("Os", {})[i] = blocks[k][0]
                else:
                    self._apply(run.params[i], blocks[k], ex.items[k], names[k])
            stats["bytes_sent"] += ex.bytes_sent
            stats["whole_matrix_steps"] += len(results)
            stats["collectives"] += 2
        for work in self.split.values():
            self._split_out(work)
        for work in self.rows.values():
            stats["bytes_sent"] += self._rows_step(work)
            stats["collectives"] += 2
        return stats

    def _whole_split(self, work: list, full: dict[int, list[Any]]) -> dict[int, list[Any]]:
        """The split methods' whole-matrix phase on the matrices this rank owns, run by run."""
        out: dict[int, list[Any]] = {}
        by_run: dict[int, list[int]] = {}
        for k, (run, i) in enumerate(work):
            if k in full and self._is_split(run, i):
                by_run.setdefault(id(run), []).append(k)
        for rid, ks in by_run.items():
            Os = self.split[rid]["parts"].whole([full[k][0] for k in ks])
            for k, O in zip(ks, Os, strict=True):
                if O.dtype != full[k][0].dtype:
                    raise RuntimeError(f"sharded_parts.whole returned {O.dtype} for {full[k][0].dtype}")
                out[k] = [O]
        return out

    def _split_out(self, work: dict[str, Any]) -> None:
        """The split method's last phase on this rank's blocks; updates applied, state kept."""
        run, idx = work["run"], work["idx"]
        ups, new = work["parts"].local_out([work["Os"][i] for i in idx], work["carry"], work["states"],
                                           work["params"])
        for i, block, u, st in zip(idx, work["params"], ups, new, strict=True):
            block.add_(u)
            self.opt._put(run.params[i], st)

    # -- the row-sharded path (a method's own sharded algorithm: Dion) --------------------------
    def _rows_step(self, work: dict[str, Any]) -> int:
        """One step of the run's row-sharded parameters, mesh by mesh; returns the bytes sent."""
        run, parts, sent = work["run"], work["parts"], 0
        by_mesh: dict[Any, list[int]] = {}
        for i in work["idx"]:
            by_mesh.setdefault(run.params[i].device_mesh, []).append(i)
        for mesh, idx in by_mesh.items():
            ps = [run.params[i] for i in idx]
            lays = [layout_of(p) for p in ps]
            comm = _RowComm(mesh, _row_split_dim(lays[0]), lays)
            states = [self._row_state(run, i, parts.rows, comm.rows[k]) for k, i in enumerate(idx)]
            blocks = [p.to_local() for p in ps]
            ups, new = parts.update([self.local_grads[(id(run), i)] for i in idx], states, blocks,
                                    [(p.shape[0], math.prod(p.shape[1:])) for p in ps], comm.rows,
                                    comm.gather_rows, comm.sum_all)
            for p, lay, block, u, st in zip(ps, lays, blocks, ups, new, strict=True):
                block.add_(u)
                self.opt.state[p] = {f: to_dtensor(v, state_layout(lay, (p.shape[0], *v.shape[1:])))
                                     if f in parts.rows else v
                                     for f, v in st._asdict().items() if v is not None}
            sent += comm.bytes_sent
        return sent

    def _row_state(self, run: Any, i: int, rows: tuple[str, ...], span: tuple[int, int]) -> Any:
        """A row-sharded parameter's state: its blocks; when fresh, the core's initial state of
        the whole matrix (one at a time, drawn by position as unsharded) cut to this rank's rows."""
        p = run.params[i]
        cls = run.types[id(p)]
        if self.opt.state[p]:
            return self.opt._get(p, cls)
        whole = torch.zeros(p.shape, dtype=p.dtype, device=p.to_local().device)
        st = self.opt._init_states(run, [i], [whole])[0]
        a, b = span
        return st._replace(**{f: getattr(st, f)[a:b].clone() for f in rows if getattr(st, f) is not None})

    def _compute(self, ex: OwnerExchange, work: list, fields: list, full: dict[int, list[Any]]):
        """The method's core on the whole matrices this rank owns, run by run (one call list
        per run: same-shaped matrices batched as on one device)."""
        results: dict[int, list[Any]] = {}
        names: dict[int, list[str]] = {k: fields[k] for k in range(len(work))}
        by_run: dict[int, list[int]] = {}
        for k, (run, i) in enumerate(work):
            if k in full and not self._is_split(run, i):
                by_run.setdefault(id(run), []).append(k)
        for ks in by_run.values():
            run = work[ks[0]][0]
            t = run.transform
            gs = [full[k][0] for k in ks]
            ps = [full[k][1] for k in ks]
            states = [self._whole_state(work[k], fields[k], full[k]) for k in ks]
            fresh = [j for j, s in enumerate(states) if s is None]
            if fresh:
                inits = self.opt._init_states(run, [work[ks[j]][1] for j in fresh], [ps[j] for j in fresh])
                for j, s in zip(fresh, inits, strict=True):
                    states[j] = s
            for call in self.opt._calls(ps, run.group):
                ups, new = t.update([gs[j] for j in call], [states[j] for j in call], [ps[j] for j in call])
                for j, u, s in zip(call, ups, new, strict=True):
                    k = ks[j]
                    got = [f for f, v in s._asdict().items() if v is not None]
                    if ex.items[k].scatter and got != names[k]:
                        raise RuntimeError(f"state fields changed from {names[k]} to {got}: the sharded "
                                           "step keeps a fixed state layout")
                    names[k] = got
                    p = work[k][0].params[work[k][1]]
                    results[k] = [u.to(_update_dtype(p)), *(getattr(s, f) for f in got)]
        return results, names

    def _whole_state(self, item: tuple[Any, int], fields: list[str], full: list[Any]) -> Any:
        run, i = item
        st = self.opt.state[run.params[i]]
        if not st:
            return None
        cls = run.types[id(run.params[i])]
        vals = {f: (st[f] if v is None else v) for f, v in zip(fields, full[2:], strict=True)}
        return cls(**{f: vals.get(f) for f in cls._fields})

    def _fresh_layouts(self, ex: OwnerExchange, work: list, results: dict, names: dict) -> None:
        """A fresh state's layout is what the owner's ``init`` made: the owners tell (one
        object all-gather, on the first step only)."""
        mine = {k: (names[k], [(tuple(v.shape), str(v.dtype)) for v in r[1:]])
                for k, r in results.items() if not ex.items[k].scatter}
        told: list[Any] = [None] * dist.get_world_size(ex.m.group)
        dist.all_gather_object(told, mine, group=ex.m.group)
        for d in told:
            for k, (fs, specs) in d.items():
                p = work[k][0].params[work[k][1]]
                lay = layout_of(p)
                names[k] = fs
                ex.items[k].scatter = [lay, *(state_layout(lay, s) for s, _ in specs)]
                ex.items[k].dtypes_out = [_update_dtype(p), *(getattr(torch, dt.split(".")[-1])
                                                              for _, dt in specs)]

    def _apply(self, p: Any, blocks: list[Any], item: Item, names: list[str]) -> None:
        p.to_local().add_(blocks[0])
        self.opt.state[p] = {f: to_dtensor(b, lay) for f, b, lay in
                             zip(names, blocks[1:], item.scatter[1:], strict=True)}


def _update_dtype(p: Any) -> Any:
    """The dtype updates travel in: the parameter's, at least float32 (as the cores return)."""
    return torch.promote_types(p.dtype, torch.float32)


def _device(work: list[tuple[Any, int]]) -> Any:
    run, i = work[0]
    return run.params[i].to_local().device


def _row_split_dim(layout: Layout) -> int | None:
    """The mesh dim of a layout sharded by rows on exactly one mesh dim (``Shard(0)``; the others
    ``Replicate``: FSDP2, HSDP), else None."""
    _, _, Shard = _dtensor_types()
    shards = [i for i, pl in enumerate(layout.placements) if type(pl) is Shard]
    if len(shards) == 1 and layout.placements[shards[0]].dim == 0:
        return shards[0]
    return None


class _RowComm:
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
        ranks = {info.ranks[[info.coord[r] for r in info.ranks].index(c)]: c for c in coords}
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
