"""Where a ``DTensor``'s blocks live, for the sharded optimizer steps (imports torch).

Geometry only, no communication: the :class:`Layout` of a parameter and of its state
(:func:`state_layout`, :func:`local_state_layout`), the block a mesh coordinate holds
(:func:`box`, torch.chunk's cut), a method's rule for stepping a local shard
(:data:`LOCAL_RULES`, :func:`local_ok`), the owner of each whole-matrix step (:func:`owners`),
and a mesh's ranks, coordinates and process group, read once (:func:`mesh_info`).  Used by
:mod:`xpmat.optim.torch_shard_comm` and :mod:`xpmat.optim.torch_sharded`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from xpmat._optional import require

torch = require("torch", "Sharded parameters in xpmat.optim")
dist = torch.distributed

__all__ = ["LOCAL_RULES", "Layout", "box", "has_empty_block", "is_dtensor", "layout_of", "local_ok",
           "local_state_layout", "mesh_info", "owners", "row_split_dim", "sharded_dims", "slices",
           "state_layout", "to_dtensor"]


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


def slices(b: tuple[tuple[int, int], ...]) -> tuple[slice, ...]:
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
    if sharded_dims(lay) <= {0} and v.shape[0] == p.to_local().shape[0]:
        return state_layout(lay, (p.shape[0], *v.shape[1:]))
    raise RuntimeError(f"a state block of shape {tuple(v.shape)} made from a shard "
                       f"{tuple(p.to_local().shape)} "
                       f"of a parameter {tuple(p.shape)} with placements {lay.placements}: not elementwise")


def sharded_dims(layout: Layout) -> frozenset[int]:
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
    if has_empty_block(lay):
        return False  # an empty shard would hold no state: its owner keeps the keys symmetric
    fn = LOCAL_RULES[rule] if isinstance(rule, str) else rule
    return bool(fn(h, p.ndim, sharded_dims(lay)))


def has_empty_block(layout: Layout) -> bool:
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


# ----------------------------------------------------------------------------- meshes
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


def row_split_dim(layout: Layout) -> int | None:
    """The mesh dim of a layout sharded by rows on exactly one mesh dim (``Shard(0)``; the others
    ``Replicate``: FSDP2, HSDP), else None."""
    _, _, Shard = _dtensor_types()
    shards = [i for i, pl in enumerate(layout.placements) if type(pl) is Shard]
    if len(shards) == 1 and layout.placements[shards[0]].dim == 0:
        return shards[0]
    return None
