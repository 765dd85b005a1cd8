"""Worker functions of tests/test_sharded.py (module level, so spawned ranks can pickle them).

Each compares an xpmat optimizer stepping DTensor parameters (FSDP2-style ``Shard(0)``, uneven,
HSDP, tensor-parallel ``Shard(1)``) mixed with a plain tensor against the same class stepping
the same parameters unsharded, with the same gradients on every rank.
"""

from __future__ import annotations

import os
import tempfile

import torch

# name -> (shape, placement kind): uneven rows (7 over 2 or 4 ranks), a conv kernel, a stack of
# expert matrices, fewer rows than ranks (empty shards), a vector, a tensor-parallel column split
SHAPES = {
    "w_in": ((7, 5), "fsdp"),
    "conv": ((6, 3, 3), "fsdp"),
    "experts": ((3, 4, 6), "fsdp"),
    "tiny": ((1, 4), "fsdp"),
    "bias": ((7,), "fsdp"),
    "w_tp": ((6, 10), "tp"),
    "w_out": ((4, 7), "fsdp"),
}
PLAIN = (5, 6)  # a plain (unsharded) matrix parameter in the same optimizer

# class -> constructor arguments for the test (small ranks so every matrix has a low-rank form)
CLASSES = {
    "AdamW": {}, "SGD": {"momentum": 0.9}, "AdaGrad": {}, "AdaGrad_full": {"preconditioner": "full"},
    "Muon": {}, "Dion": {"rank": 2}, "PowerSGD": {"rank": 2}, "PowerSGDPlus": {"rank": 2},
    "Shampoo": {}, "Adafactor": {}, "AdamNMF": {}, "LRE": {"rank": 2}, "ManifoldMuon": {},
    "SteepestDescent": {}, "SphereSGD": {}, "ExponentiatedGradient": {"mirror": "hypentropy"},
    "NorMuon": {}, "Dion2": {}, "Muon_cwd": {"cautious_weight_decay": True, "weight_decay": 0.1},
    # tensor hyper-parameters (what a compiled or graphed step uses) on each sharded path
    "AdamW_tensor": {"lr": torch.tensor(1e-3, dtype=torch.float64)},
    "Muon_tensor": {"lr": torch.tensor(0.02, dtype=torch.float64), "weight_decay": 0.1},
    "Dion_tensor": {"rank": 2, "lr": torch.tensor(0.01, dtype=torch.float64), "weight_decay": 0.1},
}
# whole-matrix steps of the local classes: the parameter with an empty shard (tiny), and for
# the row-wise ones the vector (one row) and the Shard(1) matrix (rows cut)
LOCAL_OWNED = {"AdamW": 1, "AdamW_tensor": 1, "SGD": 1, "AdaGrad": 1, "SphereSGD": 3,
               "ExponentiatedGradient": 3}


def _optimizer(name: str, params: list) -> torch.optim.Optimizer:
    import xpmat.optim as xo

    cls = getattr(xo, name.split("_")[0])
    return cls(params, **CLASSES[name])


def _mesh(ws: int, hsdp: bool, device: str = "cpu"):
    from torch.distributed.device_mesh import init_device_mesh

    if hsdp:
        return init_device_mesh(device, (2, ws // 2), mesh_dim_names=("replicate", "shard"))
    return init_device_mesh(device, (ws,))


def _placements(kind: str, mesh) -> list:
    from torch.distributed.tensor import Replicate, Shard

    sh = Shard(1) if kind == "tp" else Shard(0)
    return [Replicate(), sh] if mesh.ndim == 2 else [sh]


def _full_params(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {k: torch.randn(s, generator=g) * 0.5 for k, (s, _) in SHAPES.items()}
    out["plain"] = torch.randn(PLAIN, generator=g) * 0.5
    return out


def _grads(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    out = {k: torch.randn(s, generator=g) for k, (s, _) in SHAPES.items()}
    out["plain"] = torch.randn(PLAIN, generator=g)
    return out


def _sharded_params(full: dict, mesh) -> dict[str, torch.nn.Parameter]:
    from torch.distributed.tensor import distribute_tensor

    out = {k: torch.nn.Parameter(distribute_tensor(full[k].clone(), mesh, _placements(kind, mesh)))
           for k, (_, kind) in SHAPES.items()}
    out["plain"] = torch.nn.Parameter(full["plain"].clone())
    return out


def _set_grads(params: dict, grads: dict) -> None:
    from torch.distributed.tensor import DTensor, distribute_tensor

    for k, p in params.items():
        g = grads[k].clone()
        p.grad = distribute_tensor(g, p.device_mesh, p.placements) if isinstance(p, DTensor) else g


def _whole(p) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return (p.full_tensor() if isinstance(p, DTensor) else p).detach()


def _host_reads(on: bool | str) -> None:
    """The torch step's CPU path (finite flags read on the host, torch's fused AdamW / SGD
    kernels) or, off, the gated kernels a compiled step runs — bitwise the functional core, so
    that sharded and unsharded runs compare bitwise; a string: that path
    (xpmat.optim.torch_foreach.EAGER_PATH, e.g. ``"fused"``, a GPU's device path)."""
    from xpmat.optim import torch_foreach

    torch_foreach.EAGER_PATH = on if isinstance(on, str) else "auto" if on else "gated"


def compare(rank: int, ws: int, names: list[str], steps: int = 3, hsdp: bool = False,
            nan_at: int | None = None, device: str = "cpu", host_reads: bool | str = False) -> dict:
    """Per class: max |sharded − unsharded| per parameter after ``steps`` steps, the step
    statistics of this rank (whole-matrix steps, bytes sent), and the state keys per parameter.
    ``nan_at``: at that step the last row of ``w_in``'s gradient (on the last rank's shard) is
    NaN.  ``device="cuda"``: one GPU per rank (NCCL).  ``host_reads``: :func:`_host_reads`."""
    _host_reads(host_reads)
    if device == "cuda":
        torch.cuda.set_device(rank % torch.cuda.device_count())
        torch.backends.cuda.matmul.allow_tf32 = False
    mesh = _mesh(ws, hsdp, device)
    out = {}
    for name in names:
        full = {k: v.to(device) for k, v in _full_params().items()}
        ref = {k: torch.nn.Parameter(v.clone()) for k, v in full.items()}
        sh = _sharded_params(full, mesh)
        o_ref, o_sh = _optimizer(name, list(ref.values())), _optimizer(name, list(sh.values()))
        stats = []
        for t in range(steps):
            grads = {k: v.to(device) for k, v in _grads(t).items()}
            if t == nan_at:
                grads["w_in"][-1, 0] = float("nan")
            _set_grads(ref, grads)
            _set_grads(sh, grads)
            o_ref.step()
            o_sh.step()
            stats.append(o_sh.sharded_stats)
        diff = {k: float((ref[k].detach() - _whole(p)).abs().max()) for k, p in sh.items()}
        keys = {k: sorted(o_sh.state[p]) for k, p in sh.items()}
        out[name] = {"diff": diff, "stats": stats, "keys": keys,
                     "finite": all(bool(torch.isfinite(_whole(p)).all()) for p in sh.values()),
                     "moved": float((full["w_in"] - _whole(sh["w_in"])).abs().max())}
    return out


# ----------------------------------------------------------------------------- checkpoints
class Net(torch.nn.Module):
    """The parameters of SHAPES (all FSDP-sharded) as a module, for DCP's state-dict helpers."""

    def __init__(self) -> None:
        super().__init__()
        full = _full_params()
        for k, (_, kind) in SHAPES.items():
            if kind == "fsdp":
                self.register_parameter(k, torch.nn.Parameter(full[k].clone()))


def _net(mesh):
    from torch.distributed.fsdp import fully_shard

    net = Net()
    fully_shard(net, mesh=mesh)
    return net


def _train(net, opt, steps: range) -> None:
    for t in steps:
        grads = _grads(t)
        _set_grads(dict(net.named_parameters()), grads)
        opt.step()


def _full_state(net) -> dict[str, torch.Tensor]:
    return {k: p.full_tensor().detach().clone() for k, p in net.named_parameters()}


def dcp_round_trip(rank: int, ws: int, names: list[str], ckpt: str) -> dict:
    """Per class, :func:`_round_trip` with the checkpoint in ``ckpt/<name>``."""
    _host_reads(False)
    return {name: _round_trip(ws, name, os.path.join(ckpt, name)) for name in names}


def dcp_reshard(rank: int, ws: int, names: list[str], ckpt: str) -> dict:
    """Per class, :func:`_reshard` from ``ckpt/<name>``."""
    _host_reads(False)
    return {name: _reshard(ws, name, os.path.join(ckpt, name)) for name in names}


def _round_trip(ws: int, name: str, ckpt: str) -> dict:
    """3 steps, DCP save, fresh model and optimizer load, 3 steps — against 6 straight steps.
    Also writes the checkpoint at step 3 to ``ckpt`` (for the resharding test)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    mesh = _mesh(ws, False)
    straight = _net(mesh)
    o = _optimizer(name, list(straight.parameters()))
    _train(straight, o, range(6))

    first = _net(mesh)
    o1 = _optimizer(name, list(first.parameters()))
    _train(first, o1, range(3))
    msd, osd = get_state_dict(first, o1)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=ckpt)
    keys = sorted(osd["state"]) if "state" in osd else sorted(osd)

    second = _net(mesh)
    o2 = _optimizer(name, list(second.parameters()))
    msd2, osd2 = get_state_dict(second, o2)
    sd = {"model": msd2, "optim": osd2}
    dcp.load(sd, checkpoint_id=ckpt)
    set_state_dict(second, o2, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    _train(second, o2, range(3, 6))
    a, b = _full_state(straight), _full_state(second)
    next_step = _full_state(first)
    _train(first, o1, range(3, 4))
    return {"diff": max(float((a[k] - b[k]).abs().max()) for k in a), "keys": keys,
            "after4": {k: v.tolist() for k, v in _full_state(first).items()},
            "at3": {k: v.tolist() for k, v in next_step.items()}}


def _reshard(ws: int, name: str, ckpt: str) -> dict:
    """Load the checkpoint written by :func:`_round_trip` on another world size, take one
    step; the parameters after it (the 2-rank run's step 4 is the reference)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    net = _net(_mesh(ws, False))
    o = _optimizer(name, list(net.parameters()))
    msd, osd = get_state_dict(net, o)
    sd = {"model": msd, "optim": osd}
    dcp.load(sd, checkpoint_id=ckpt)
    set_state_dict(net, o, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    _train(net, o, range(3, 4))
    return {k: v.tolist() for k, v in _full_state(net).items()}


def tmpdir() -> str:
    return tempfile.mkdtemp(prefix="xpmat-dcp-", dir=os.environ.get("TMPDIR"))
