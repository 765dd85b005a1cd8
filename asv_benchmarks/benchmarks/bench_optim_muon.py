"""Muon (``xpmat/optim/muon.py``): one step on a GPT-2-small-shaped parameter set, our batched
Muon vs ``torch.optim.Muon``.

Parameter sets (``common.gpt2_shapes``: ``layers × [d×4d, 4d×d, d×3d, d×d]``, GPT-2 small is
d = 768, 12 layers): ``tiny`` (1 layer, d = 256; the fast profile), ``layer`` (1 layer, d = 768),
``gpt2`` (12 layers, d = 768).  Ours stacks same-shaped matrices and runs ONE batched ``msign``
per shape; ``torch.optim.Muon`` (the anchor) loops over parameters with a bf16 Newton–Schulz;
the third timing is a plain per-parameter loop over ``xpmat.msign`` (what batching saves).
Settings: momentum 0.95 Nesterov, 5 NS steps, weight decay 0.1, "original" shape factor.
``compute`` is our NS precision (torch.optim.Muon always uses bf16).
"""

from __future__ import annotations

from .common import FAST, Benchmark, SkipNotImplemented, gpt2_shapes

_SETS = {"tiny": (1, 256), "layer": (1, 768), "gpt2": (12, 768)}


class MuonStep(Benchmark):
    params = [["torch:cpu", "torch:cuda"], ["tiny"] if FAST else ["tiny", "layer", "gpt2"],
              ["float32", "bfloat16"]]
    param_names = ["backend", "params", "compute"]
    timeout = 600
    number = 1
    repeat = (1, 5, 60.0)

    def make(self, pset, compute):
        import torch

        import xpmat.optim as xo

        if self.backend == "torch:cpu" and pset == "gpt2":
            raise SkipNotImplemented("12 GPT-2 layers take minutes per step on a CPU")
        if not hasattr(torch.optim, "Muon"):
            raise SkipNotImplemented("torch.optim.Muon needs torch >= 2.9")
        if self.dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        gen = torch.Generator().manual_seed(0)
        self.params = []
        for s in gpt2_shapes(*_SETS[pset]):
            p = (torch.randn(s, generator=gen) * 0.02).to(self.dev).requires_grad_()
            p.grad = torch.randn(s, generator=gen).to(self.dev)
            self.params.append(p)
        kw = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True}
        self.opt = xo.Muon(self.params, ns_steps=5, compute_dtype=compute, **kw)
        self.anchor_opt = torch.optim.Muon(self.params, ns_steps=5, **kw)
        self.loop_kw = {"steps": 5, "compute_dtype": compute}

    def first_calls(self, *params):
        for _ in range(2):  # warm up (allocations, kernels, state)
            super().first_calls(*params)

    def _sync(self):
        import torch

        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    def ours(self):
        self.opt.step()
        self._sync()

    def anchor(self):
        self.anchor_opt.step()
        self._sync()

    def time_ours(self, backend, pset, compute):
        self.ours()

    def time_torch_muon_anchor(self, backend, pset, compute):
        self.anchor()

    def time_per_param_loop(self, backend, pset, compute):
        import torch

        from xpmat import msign

        with torch.no_grad():
            for p in self.params:
                p.add_(msign(p.grad, **self.loop_kw), alpha=-0.02)
        self._sync()
