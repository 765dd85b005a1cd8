"""Where the GPU time of the launch-bound rows goes: kernels, launches, GPU busy vs wall.

``python tools/gpu_profile.py [DEVICE]`` profiles (torch.profiler) one GPT-2-small Muon step
(bf16 Newton–Schulz), 20 KL-NMF iterations at 2000×1000 rank 20, one ``orthonormalize`` of
65536×128 and one Newton ``inv_root`` of 1024², and prints for each: wall time, summed
kernel time (GPU busy), number of kernel launches and host synchronisations, and the five
kernels that take the most GPU time.  Wall ≫ GPU busy means launch- or host-bound.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import xpmat
import xpmat.optim as xo


def _gpt2_muon(dev):
    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(12):
        for s in ((768, 3072), (3072, 768), (768, 2304), (768, 768)):
            p = (torch.randn(s, generator=gen) * 0.02).to(dev).requires_grad_()
            p.grad = torch.randn(s, generator=gen).to(dev)
            params.append(p)
    opt = xo.Muon(params, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.1, ns_steps=5,
                  compute_dtype="bfloat16")
    return opt.step


def _nmf(dev):
    rng = np.random.default_rng(7)
    C = torch.as_tensor(rng.random((2000, 20)) @ rng.random((20, 1000)), dtype=torch.float32,
                        device=dev)
    A = torch.as_tensor(rng.random((2000, 20)), dtype=torch.float32, device=dev)
    B = torch.as_tensor(rng.random((20, 1000)), dtype=torch.float32, device=dev)
    return lambda: xpmat.nmf(C, 20, iters=20, init=(A, B))


def _orth(dev):
    X = torch.randn(65536, 128, device=dev)
    return lambda: xpmat.orthonormalize(X)


def _inv_root(dev):
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((1024, 1024)))
    A = torch.as_tensor((Q * np.logspace(-3, 0, 1024)) @ Q.T, dtype=torch.float32, device=dev)
    return lambda: xpmat.inv_root(A, 4, method="newton")


def _sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def report(name: str, fn, dev) -> None:
    for _ in range(3):
        fn()
    _sync(dev)
    t = time.perf_counter()
    fn()
    _sync(dev)
    wall = time.perf_counter() - t
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        _sync(dev)
    # device-side events, less the user annotations (``Optimizer.step#…``) that span kernels
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and not getattr(e, "is_user_annotation", False) and "#" not in e.name]
    busy = sum(e.device_time for e in kernels) / 1e3
    syncs = sum(1 for e in prof.events() if "Synchronize" in e.name or e.name == "aten::item"
                or e.name == "aten::_local_scalar_dense")
    print(f"\n== {name}: wall {wall * 1e3:.2f} ms, GPU busy {busy:.2f} ms "
          f"({busy / (wall * 1e3):.0%}), {len(kernels)} kernels, {syncs} host reads/syncs")
    by = {}
    for e in kernels:
        k = e.name[:70]
        n, tt = by.get(k, (0, 0.0))
        by[k] = (n + 1, tt + e.device_time / 1e3)
    for k, (n, tt) in sorted(by.items(), key=lambda kv: -kv[1][1])[:5]:
        print(f"   {tt:8.3f} ms  {n:5d}×  {k}")


def main(device: str = "cuda") -> None:
    dev = torch.device(device)
    for name, make in (("Muon step, GPT-2 small, bf16 NS", _gpt2_muon), ("nmf 20 iterations", _nmf),
                       ("orthonormalize 65536×128", _orth), ("inv_root newton 1024²", _inv_root)):
        try:
            report(name, make(dev), dev)
        except Exception as exc:  # report and go on to the next
            print(f"\n== {name}: FAILED {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
