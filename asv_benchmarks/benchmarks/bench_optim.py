"""One optimizer step on a GPT-2-small-shaped parameter set: our batched Muon vs torch.optim.Muon.

Parameter sets (``layers × [d×4d, 4d×d, d×3d, d×d]``, GPT-2 small is d = 768, 12 layers):
``tiny`` (1 layer, d = 256; the fast profile), ``layer`` (1 layer, d = 768), ``gpt2`` (12 layers,
d = 768).  Ours stacks same-shaped matrices and runs ONE batched ``msign`` per shape;
``torch.optim.Muon`` (the anchor) loops over parameters with a bf16 Newton–Schulz; the third
timing is a plain per-parameter loop over ``xpmat.msign`` (what batching saves).  Settings:
momentum 0.95 Nesterov, 5 NS steps, weight decay 0.1, "original" shape factor.  ``compute`` is
our NS precision (torch.optim.Muon always uses bf16).
"""

from __future__ import annotations

from .common import FAST, namespace

_SETS = {"tiny": (1, 256), "layer": (1, 768), "gpt2": (12, 768)}


def _shapes(name):
    layers, d = _SETS[name]
    return [s for _ in range(layers) for s in ((d, 4 * d), (4 * d, d), (d, 3 * d), (d, d))]


class MuonStep:
    params = [["torch:cpu", "torch:cuda"], ["tiny"] if FAST else ["tiny", "layer", "gpt2"],
              ["float32", "bfloat16"]]
    param_names = ["backend", "params", "compute"]
    timeout = 600
    number = 1
    repeat = (1, 5, 60.0)

    def setup(self, backend, pset, compute):
        import torch

        import xpmat.optim as xo

        _, dev = namespace(backend)
        if backend == "torch:cpu" and pset == "gpt2":
            raise NotImplementedError("12 GPT-2 layers take minutes per step on a CPU")
        if not hasattr(torch.optim, "Muon"):
            raise NotImplementedError("torch.optim.Muon needs torch >= 2.9")
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        gen = torch.Generator().manual_seed(0)
        self.params = []
        for s in _shapes(pset):
            p = (torch.randn(s, generator=gen) * 0.02).to(dev).requires_grad_()
            p.grad = torch.randn(s, generator=gen).to(dev)
            self.params.append(p)
        kw = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True}
        self.ours = xo.Muon(self.params, ns_steps=5, compute_dtype=compute, **kw)
        self.anchor = torch.optim.Muon(self.params, ns_steps=5, **kw)
        self.loop_kw = {"steps": 5, "compute_dtype": compute}
        self.dev = dev
        for _ in range(2):  # warm up (allocations, kernels, state)
            self.time_ours(backend, pset, compute)
            self.time_torch_muon_anchor(backend, pset, compute)
            self.time_per_param_loop(backend, pset, compute)

    def _sync(self):
        import torch

        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def time_ours(self, backend, pset, compute):
        self.ours.step()
        self._sync()

    def time_torch_muon_anchor(self, backend, pset, compute):
        self.anchor.step()
        self._sync()

    def time_per_param_loop(self, backend, pset, compute):
        import torch

        from xpmat import msign

        with torch.no_grad():
            for p in self.params:
                p.add_(msign(p.grad, **self.loop_kw), alpha=-0.02)
        self._sync()
