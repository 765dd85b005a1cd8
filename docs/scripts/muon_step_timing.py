"""Time one Muon step on a GPT-2-shaped parameter set: ours (batched) vs torch.optim.Muon.

``python docs/scripts/muon_step_timing.py D LAYERS REPS`` builds ``LAYERS × [D×4D, 4D×D, D×3D,
D×D]`` float32 parameters with gradients and times ``step()`` of ``torch.optim.Muon`` (bf16
Newton–Schulz, per parameter), ``xpmat.optim.Muon`` with float32 and bf16 NS (one batched
Newton–Schulz call per shape), the same bf16 Muon with one param group per matrix (so nothing is
batched), and a plain per-parameter ``msign`` loop; prints min and median over REPS steps.
Same settings everywhere: lr 0.02, momentum 0.95 Nesterov, weight decay 0.1, 5 NS steps.
An optional fourth argument DEVICE (``cuda``) runs on that device, timing each step between
``torch.cuda.synchronize()`` calls (CPU runs use 2 threads).  A fifth argument ``compile`` times
``torch.compile(step)`` of both optimizers instead (default mode), ``cudagraphs`` the same with
``mode="reduce-overhead"`` (CUDA graphs); the compile time of the first call is printed, and an
optimizer whose compiled step fails is reported and left out.
"""

import sys
import time

import torch

import xpmat.optim as xo
from xpmat import msign


def _compiled(runs, dev, mode):
    """The two optimizer steps under ``torch.compile``; prints each one's first-call time."""
    out = {k: runs[k] for k in ("torch.optim.Muon (bf16 NS)", "xpmat Muon, bf16 NS")}
    for name in ("torch.optim.Muon (bf16 NS)", "xpmat Muon, bf16 NS"):
        f = torch.compile(runs[name], mode=mode)
        t = time.perf_counter()
        try:
            for _ in range(3):  # the first two calls compile (fresh state, then steady state)
                f()
        except Exception as exc:  # reported, and this variant left out
            print(f"  compile {name}: FAILED {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            continue
        if dev.type == "cuda":
            torch.cuda.synchronize()
        print(f"  compile {name}: {time.perf_counter() - t:.1f} s (mode={mode})", flush=True)
        out[name + ", compiled"] = f
    return out


def main(d=256, layers=1, reps=10, device="cpu", compiled=""):
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(2)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(layers):
        for s in ((d, 4 * d), (4 * d, d), (d, 3 * d), (d, d)):
            p = (torch.randn(s, generator=gen) * 0.02).to(dev).requires_grad_()
            p.grad = torch.randn(s, generator=gen).to(dev)
            params.append(p)
    kw = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True}
    runs = {
        "torch.optim.Muon (bf16 NS)": torch.optim.Muon(params, ns_steps=5, **kw).step,
        "xpmat Muon, float32 NS": xo.Muon(params, ns_steps=5, compute_dtype=None, **kw).step,
        "xpmat Muon, bf16 NS": xo.Muon(params, ns_steps=5, compute_dtype="bfloat16", **kw).step,
        # one param group per matrix: the same code, one Newton–Schulz call per matrix
        "xpmat Muon, bf16, unbatched": xo.Muon([{"params": [p]} for p in params], ns_steps=5,
                                               compute_dtype="bfloat16", **kw).step,
    }

    def loop():
        with torch.no_grad():
            for p in params:
                p.add_(msign(p.grad, steps=5), alpha=-0.02)

    runs["per-parameter msign loop"] = loop
    if compiled in ("compile", "cudagraphs"):
        runs = _compiled(runs, dev, "reduce-overhead" if compiled == "cudagraphs" else "default")
    res = {}
    for _ in range(2):  # warm up
        for f in runs.values():
            f()
    for _ in range(reps):  # interleaved, so load changes hit every variant alike
        for name, f in runs.items():
            sync()
            t = time.perf_counter()
            f()
            sync()
            res.setdefault(name, []).append(time.perf_counter() - t)
    base = sorted(res["torch.optim.Muon (bf16 NS)"])[reps // 2]
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU, 2 threads"
    print(f"d={d}, layers={layers}, {len(params)} matrices, torch {torch.__version__}, {where}")
    for name, ts in res.items():
        med = sorted(ts)[reps // 2]
        print(f"  {name:<29} min {min(ts) * 1e3:8.1f} ms  median {med * 1e3:8.1f} ms  "
              f"torch/this {base / med:5.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]), *sys.argv[4:6])
