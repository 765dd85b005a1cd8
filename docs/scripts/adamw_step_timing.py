"""Time one eager AdamW step on GPT-2-small's parameters: xpmat's three paths vs torch.optim's.

``python docs/scripts/adamw_step_timing.py [DEVICE] [REPS] [D LAYERS VOCAB]`` (defaults
``cuda 20 768 12 50257``: GPT-2 small, 124M parameters, 148 tensors) builds the parameters
with gradients and times, interleaved, ``step()`` of ``xpmat.optim.AdamW`` on each eager path
(``torch_foreach.EAGER_PATH`` = ``"fused"`` — the device path, the default off the CPU —,
``"host"``, ``"gated"``) and of ``torch.optim.AdamW`` with ``foreach=True`` and ``fused=True``;
prints min and median ms over REPS steps (each between device synchronizations) and the
largest parameter difference from torch's fused step after all of them (the same settings:
lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.1; same starting values and gradients).
``cpu 5 64 2 256`` checks the script here.
"""

import statistics
import sys
import time

import torch

import xpmat.optim as xo
from xpmat.optim import torch_foreach

HYPER = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1}


def gpt2_shapes(d, layers, vocab, ctx=1024):
    per_layer = [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,),
                 (4 * d, d), (d,)]
    return [(vocab, d), (ctx, d)] + per_layer * layers + [(d,), (d,)]


def params(shapes, dev):
    gen = torch.Generator(device="cpu").manual_seed(0)
    out = []
    for s in shapes:
        p = torch.nn.Parameter((torch.randn(s, generator=gen) * 0.02).to(dev))
        p.grad = torch.randn(s, generator=gen).to(dev)
        out.append(p)
    return out


def variants(shapes, dev):
    runs = {}
    for path in ("fused", "host", "gated"):
        ps = params(shapes, dev)
        opt = xo.AdamW(ps, **HYPER)

        def step(opt=opt, path=path):
            torch_foreach.EAGER_PATH = path
            opt.step()
            torch_foreach.EAGER_PATH = "auto"
        runs[f"xpmat AdamW, EAGER_PATH={path!r}"] = (step, ps)
    for flag in ("foreach", "fused"):
        ps = params(shapes, dev)
        opt = torch.optim.AdamW(ps, **HYPER, **{flag: True})
        runs[f"torch AdamW {flag}=True"] = (opt.step, ps)
    return runs


def main(device="cuda", reps=20, d=768, layers=12, vocab=50257):
    dev = torch.device(device)
    shapes = gpt2_shapes(d, layers, vocab)
    n = sum(torch.Size(s).numel() for s in shapes)
    print(f"AdamW step, {len(shapes)} tensors, {n / 1e6:.1f}M parameters, {dev}")
    runs = variants(shapes, dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    times = {k: [] for k in runs}
    for _ in range(2):
        for step, _ in runs.values():
            step()
    for _ in range(reps):
        for k, (step, _) in runs.items():
            sync()
            t = time.perf_counter()
            step()
            sync()
            times[k].append(time.perf_counter() - t)
    ref = runs["torch AdamW fused=True"][1]
    for k, v in times.items():
        diff = max(float((a - b).detach().abs().max()) for a, b in zip(runs[k][1], ref, strict=True))
        print(f"  {k:34s} min {min(v) * 1e3:8.3f} ms  median {statistics.median(v) * 1e3:8.3f} ms"
              f"  max|p - p_torch_fused| {diff:.1e}")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(*(a[:1]), *(int(x) for x in a[1:5]))
