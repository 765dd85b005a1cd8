"""CPU step time of xpmat's AdamW and Muon against torch.optim's on the parameters of a real client.

``python docs/scripts/optim_step_cpu.py [REPS]`` builds the parameter shapes of the 4-layer,
d = 128 character-level GPT of issue 25 (vocabulary 96, context 128: token and position
embeddings, head, per layer qkv 3d×d / proj d×d / fc 4d×d / fc2 d×4d, 9 LayerNorms; 0.83M
parameters) with gradients, on ONE thread, and prints the min and median over REPS steps
(interleaved) of the step's CPU time (``time.thread_time``: on a shared machine the wall
clock mostly measures the other processes) and the min wall time, of:

- AdamW: ``xpmat.optim.AdamW`` vs ``torch.optim.AdamW`` (its CPU default, the per-parameter
  loop, and ``foreach=True``);
- Muon on the 16 layer matrices, with embeddings, head and LayerNorms in an
  ``algorithm="adamw"`` group: ``xpmat.optim.Muon`` with float32 and with bf16 Newton–Schulz
  vs ``torch.optim.Muon`` (bf16 Newton–Schulz) + ``torch.optim.AdamW`` for the rest;
- the accuracy of the bf16 Newton–Schulz: the relative distance of one Muon update from the
  float32 one, and of each from the exact polar factor ``U Vᵀ`` (float64 SVD).
"""

import statistics
import sys
import time

import torch

import xpmat.optim as xo

D, LAYERS, VOCAB, CTX = 128, 4, 96, 128
HYPER = {"lr": 0.02, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True}


def params():
    """(matrices, others) with gradients: the GPT's layer matrices, and everything else."""
    gen = torch.Generator().manual_seed(0)

    def p(*shape):
        t = (torch.randn(shape, generator=gen) * 0.02).requires_grad_()
        t.grad = torch.randn(shape, generator=gen)
        return t

    mats = [p(*s) for _ in range(LAYERS) for s in ((3 * D, D), (D, D), (4 * D, D), (D, 4 * D))]
    others = [p(VOCAB, D), p(CTX, D), p(VOCAB, D)] + [p(D) for _ in range(2 * (2 * LAYERS + 1))]
    return mats, others


def variants():
    """name -> a step function, each over its own copy of the parameters."""
    out = {}
    adamw = torch.optim.AdamW
    for name, make in (("xpmat AdamW", lambda ps: [xo.AdamW(ps, lr=1e-3)]),
                       ("torch AdamW (default: for-loop)", lambda ps: [adamw(ps, lr=1e-3)]),
                       ("torch AdamW foreach=True", lambda ps: [adamw(ps, lr=1e-3, foreach=True)]),
                       ("torch AdamW fused=True", lambda ps: [adamw(ps, lr=1e-3, fused=True)])):
        mats, others = params()
        out[name] = make(mats + others)
    for cdt in ("auto", None, "bfloat16"):  # "auto": the default (bf16 where the CPU has native bf16)
        mats, others = params()
        groups = [{"params": mats}, {"params": others, "algorithm": "adamw", "lr": 1e-3}]
        out[f"xpmat Muon, NS {cdt or 'float32'}"] = [xo.Muon(groups, compute_dtype=cdt, **HYPER)]
    mats, others = params()
    out["torch Muon (bf16 NS) + AdamW"] = [torch.optim.Muon(mats, **HYPER), adamw(others, lr=1e-3)]
    return {k: (lambda opts=v: [o.step() for o in opts]) for k, v in out.items()}


def accuracy():
    """Relative Frobenius distances of one Muon update (bf16 NS, float32 NS, exact polar)."""
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(4 * D, D, generator=gen)
    ups = {}
    for cdt in (None, "bfloat16"):
        p = torch.zeros(4 * D, D, requires_grad=True)
        p.grad = g.clone()
        xo.Muon([p], compute_dtype=cdt, lr=1.0, momentum=0.0, nesterov=False, adjust_lr_fn="none").step()
        ups[cdt or "float32"] = -p.detach().double()
    u, _, vh = torch.linalg.svd(g.double(), full_matrices=False)
    polar = u @ vh

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    print(f"  bf16 NS vs float32 NS: {rel(ups['bfloat16'], ups['float32']):.2e};  vs exact polar: "
          f"float32 {rel(ups['float32'], polar):.2e}, bf16 {rel(ups['bfloat16'], polar):.2e}")


def main(reps=30):
    torch.set_num_threads(1)
    runs = variants()
    times, walls = {k: [] for k in runs}, {k: [] for k in runs}
    for f in runs.values():
        f()
        f()  # state made, warm
    for _ in range(reps):
        for k, f in runs.items():
            t, w = time.thread_time(), time.perf_counter()
            f()
            times[k].append(time.thread_time() - t)
            walls[k].append(time.perf_counter() - w)
    print(f"{D=} {LAYERS=} {VOCAB=} {CTX=}, 1 thread, {reps} steps (ms: CPU min, CPU median, wall min)")
    for k, ts in times.items():
        print(f"  {k:36s} {1e3 * min(ts):7.2f} {1e3 * statistics.median(ts):7.2f} {1e3 * min(walls[k]):7.2f}")
    accuracy()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
