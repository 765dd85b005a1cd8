"""What one eager optimizer step would launch on a GPU, estimated on the CPU.

``python docs/scripts/optim_launches.py [D]`` steps the 48 GPT-like matrices of issue 25
(12 × [d×4d, 4d×d, 3d×d, d×d], d = D, default 64) once to make the state, then counts, for
the second step of each optimizer (xpmat's three eager paths, ``torch_foreach.EAGER_PATH``, and
torch.optim's ``foreach`` and ``fused``), at the dispatcher:

- **ATen ops**: every op (what ``tests/test_optim_inplace.py`` bounds);
- **launches (est.)**: the kernels a CUDA device would start.  Views and metadata ops start
  none; a ``torch._fused_*`` call one (its multi-tensor kernel; more only past ~100 tensors
  per launch); a ``torch._foreach_*`` call one where CUDA's *fast route* applies — every
  tensor list of the call with the same dtype and device, and at each index the same sizes
  and strides in every list (ATen's ``can_use_fast_route``) — and otherwise one per tensor
  (the slow route: a loop of single-tensor ops), e.g. a list of 0-d per-parameter factors
  against the parameters; any other op one;
- **`.item()` reads** at the dispatcher (a GPU synchronization each where the tensor is on
  the GPU; ``.tolist()`` of a CPU tensor does not pass the dispatcher).

An estimate from ATen's routing rules, not a GPU measurement (none here): it says which path
to measure first, and why per-parameter fused calls beat foreach calls with per-parameter
0-d factors on a device.
"""

import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import xpmat.optim as xo
from xpmat.optim import torch_foreach


class Launches(TorchDispatchMode):
    """Counts ATen ops, estimated CUDA launches and host reads (module docstring)."""

    def __init__(self):
        super().__init__()
        self.ops = self.launches = self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.launches += _launches(func, list(args) + list((kwargs or {}).values()))
        self.reads += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def _launches(func, args) -> int:
    name = func.__name__
    if func.is_view or name.startswith(("detach", "alias", "_unsafe_view", "_reshape_alias", "lift_fresh",
                                        "_local_scalar_dense", "_record_function")):
        return 0
    if name.startswith("_fused_"):
        return 1
    if not name.startswith("_foreach_"):
        return 1
    lists = [a for a in args if isinstance(a, (list, tuple)) and a and all(torch.is_tensor(t) for t in a)]
    first = lists[0]
    same = all(t.dtype == first[0].dtype and t.device == first[0].device for ts in lists for t in ts)
    same = same and all(ts[i].shape == first[i].shape and ts[i].stride() == first[i].stride()
                        for ts in lists[1:] for i in range(len(first)))
    return 1 if same else len(first)


def gpt_matrices(d):
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s, generator=gen)) for _ in range(12)
          for s in ((d, 4 * d), (4 * d, d), (3 * d, d), (d, d))]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=gen)
    return ps


def count(make, d, path="auto"):
    torch_foreach.EAGER_PATH = path
    try:
        opt = make(gpt_matrices(d))
        opt.step()
        with Launches() as mode:
            opt.step()
    finally:
        torch_foreach.EAGER_PATH = "auto"
    return mode.ops, mode.launches, mode.reads


def measure(d=64):
    """``{(method, step): (ATen ops, launches, reads)}`` of the module docstring's steps."""
    out = {}
    for method, ours, foreach, fused in (
            ("AdamW", lambda ps: xo.AdamW(ps, lr=1e-3),
             lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
             lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True)),
            ("SGD", lambda ps: xo.SGD(ps, lr=1e-3, momentum=0.9),
             lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, foreach=True),
             lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, fused=True)),
            ("Muon", lambda ps: xo.Muon(ps), lambda ps: torch.optim.Muon(ps), None)):
        for path in ("gated", "fused", "host"):
            out[method, path] = count(ours, d, path)
        out[method, "torch foreach" if fused is not None else "torch"] = count(foreach, d)
        if fused is not None:
            out[method, "torch fused"] = count(fused, d)
    return out


def main(d=64):
    print(f"48 GPT-like matrices (d = {d}), one eager step after the first")
    print("| method | step | ATen ops | launches on a GPU (est.) | `.item()` reads |")
    print("|---|---|---|---|---|")
    for (method, step), r in measure(d).items():
        print(f"| {method} | {step} | " + " | ".join(str(x) for x in r) + " |")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
