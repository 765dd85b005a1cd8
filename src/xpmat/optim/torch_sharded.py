"""Sharded (``DTensor``) parameters in the xpmat torch optimizers: local shards and owner ranks.

Every :class:`xpmat.optim.XpmatOptimizer` steps FSDP2 / DTensor parameters with no other class
or argument; this module is the machinery it calls (imports torch; its geometry is in
:mod:`xpmat.optim.torch_shard_layout`, its collectives in :mod:`xpmat.optim.torch_shard_comm`).
Four paths, chosen per parameter from what the method's module declares (``LOCAL_SHARDS``,
``sharded_parts``, ``row_sharded``) and the parameter's placements:

Local
    A method whose step is elementwise (AdamW, SGD, AdaGrad diagonal), or row-wise where the
    shards cut no row (SphereSGD under ``Shard(0)``, ExponentiatedGradient on whole last-axis
    rows), runs on the local shard (``to_local()``) with no communication of data; its state is
    kept as DTensors with the parameter's placements.  Only the non-finite flags are agreed (one
    tiny all-reduce a step), so a NaN in one shard skips the whole parameter, as unsharded.
Split
    A method with ``sharded_parts`` (Muon) runs its elementwise phases (momentum, decay) on the
    local shard; only the direction goes to the matrix's owner, which orthogonalizes it (the
    same-shaped matrices it owns in one batched call) and sends the blocks back: the floor.
Rows
    A method with ``row_sharded`` (Dion) runs its own sharded algorithm on ``Shard(0)`` row
    blocks, with an all-gather and an all-reduce of its low-rank factors: nothing whole moves.
Owner
    Every other method (Shampoo, Adafactor, PowerSGD, LRE, NorMuon, ...) steps each matrix
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
from typing import Any

from xpmat.optim.torch_shard_comm import Item, OwnerExchange, RowComm
from xpmat.optim.torch_shard_layout import (
    Layout,
    dist,
    has_empty_block,
    is_dtensor,
    layout_of,
    local_ok,
    local_state_layout,
    mesh_info,
    owners,
    row_split_dim,
    sharded_dims,
    state_layout,
    to_dtensor,
    torch,
)

__all__ = ["ShardedStep", "is_dtensor", "layout_of", "local_state_layout", "to_dtensor"]


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
        """``"plain"``, ``"local"``, ``"split"``, ``"rows"`` or ``"owner"`` for ``run.params[i]``
        (a ``"rows"`` parameter is also listed in ``self.rows``)."""
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
        rows = p.ndim == 2 or sharded_dims(lay) <= {0}
        if hasattr(module, "sharded_parts") and rows and not has_empty_block(lay):
            if id(run) not in self.split_parts:
                kw = {"reuse_state": True} if self.opt.reuse_state else {}
                self.split_parts[id(run)] = module.sharded_parts(**kw, **h)
            if self.split_parts[id(run)] is not None:
                return "split"
        if hasattr(module, "row_sharded") and row_split_dim(lay) is not None and not has_empty_block(lay):
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
        was_fresh = set(run.fresh)
        fresh = [k for k, i in enumerate(idx) if i in was_fresh]
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
            comm = RowComm(mesh, row_split_dim(lays[0]), lays)
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
