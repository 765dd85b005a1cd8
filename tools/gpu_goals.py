"""The GPU goals of docs/performance-gpu.md, each against its anchor in one process.

``python tools/gpu_goals.py OUTDIR [DEVICE] [SCALE]`` writes ``OUTDIR/goals.md`` (the table)
and ``OUTDIR/goals.json`` (every median), printing each row as it is measured.  DEVICE is
``cuda`` (default) or ``cpu`` (a quick check of the script here); SCALE (default 1) divides
every size, so ``SCALE=8`` runs in seconds on a CPU.

Each row times ours and its anchor interleaved (``REPS`` rounds after two warm-ups), on the
same inputs, between device synchronisations, and reports medians, the ratio anchor/ours and
the error of each against a float64 reference where one exists.  The first rows measure the
machine's GEMM rate, so every time can be read as a fraction of it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import xpmat

REPS = 7
ROWS: list[dict] = []


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()
    try:
        import cupy

        if dev.type == "cuda":
            cupy.cuda.Device().synchronize()
    except ImportError:
        pass


def interleaved(fns: dict, dev: torch.device, reps: int = REPS) -> dict:
    """Median seconds of each callable, run in turn ``reps`` times after two warm-ups."""
    times = {k: [] for k in fns}
    out = {}
    for _ in range(2):
        for k, f in fns.items():
            out[k] = f()
    _sync(dev)
    for _ in range(reps):
        for k, f in fns.items():
            _sync(dev)
            t = time.perf_counter()
            f()
            _sync(dev)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}, out


def row(work: str, ours: str, anchor: str, t: dict, goal: str, err: dict | None = None,
        flops: float | None = None, rate: float | None = None) -> None:
    r = {"work": work, "ours": ours, "anchor": anchor, "t_ours_ms": t[ours] * 1e3,
         "t_anchor_ms": t[anchor] * 1e3, "ratio": t[anchor] / t[ours], "goal": goal,
         "err": err or {}}
    if flops and rate:
        r["gemm_fraction"] = flops / t[ours] / rate
    ROWS.append(r)
    print(json.dumps(r), flush=True)


def gemm_rates(dev: torch.device, n: int) -> dict:
    rates = {}
    for dt in (torch.bfloat16, torch.float32):
        a = torch.randn(n, n, device=dev, dtype=dt)
        b = torch.randn(n, n, device=dev, dtype=dt)
        t, _ = interleaved({"mm": lambda a=a, b=b: a @ b}, dev)
        rates[str(dt)] = 2 * n**3 / t["mm"]
        print(f"GEMM {dt} {n}^3: {rates[str(dt)] / 1e12:.1f} TFLOP/s", flush=True)
    return rates


def _ns_plain(X: torch.Tensor, steps: int) -> torch.Tensor:
    """The hand-written loop people copy: Jordan et al.'s quintic, Frobenius scaling."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X


def _polar_ref(G64: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(G64, full_matrices=False)
    return U @ Vt


def goal_msign(dev: torch.device, n: int, rates: dict) -> None:
    G = torch.randn(n, n, device=dev).to(torch.bfloat16)
    t, out = interleaved({
        "xpmat.msign(jordan, 5 steps)": lambda: xpmat.msign(G, steps=5, schedule="jordan"),
        "plain NS loop (5 steps)": lambda: _ns_plain(G, 5),
        "xpmat.msign(polar_express, 5)": lambda: xpmat.msign(G, steps=5),
        "SVD polar (float32)": lambda: (lambda u, s, v: u @ v)(*torch.linalg.svd(G.float(),
                                                                                full_matrices=False)),
    }, dev)
    ref = _polar_ref(G.double().cpu().numpy())
    err = {k: float(np.linalg.norm(v.double().cpu().numpy() - ref) / np.linalg.norm(ref))
           for k, v in out.items()}
    flops = 5 * 3 * 2 * n**3  # three n³ products a step
    row(f"msign {n}² bf16", "xpmat.msign(jordan, 5 steps)", "plain NS loop (5 steps)", t,
        "≥ 0.91 (within 1.1×)", err, flops, rates["torch.bfloat16"])
    row(f"msign {n}² bf16", "xpmat.msign(polar_express, 5)", "SVD polar (float32)", t,
        "", err, flops, rates["torch.bfloat16"])


def goal_orthonormalize(dev: torch.device, m: int, n: int, rates: dict) -> None:
    X = torch.randn(m, n, device=dev)
    fns = {"xpmat.orthonormalize": lambda: xpmat.orthonormalize(X),
           "torch.linalg.qr": lambda: torch.linalg.qr(X)[0]}
    cp = _cupy(dev)
    if cp is not None:
        Xc = cp.asarray(X)
        fns["xpmat.orthonormalize (cupy)"] = lambda: xpmat.orthonormalize(Xc)
        fns["cupy.linalg.qr"] = lambda: cp.linalg.qr(Xc)[0]
    t, out = interleaved(fns, dev)
    err = {k: float(np.abs(_np(v).T @ _np(v) - np.eye(n)).max()) for k, v in out.items()}
    flops = 2 * 2 * m * n * n + 2 * m * n * n  # two Gram products + two triangular applies
    row(f"orthonormalize {m}×{n} f32", "xpmat.orthonormalize", "torch.linalg.qr", t, "≥ 5",
        err, flops, rates["torch.float32"])
    if cp is not None:
        row(f"orthonormalize {m}×{n} f32", "xpmat.orthonormalize (cupy)", "cupy.linalg.qr", t,
            "≥ 5", err, flops, rates["torch.float32"])


def _spd(n: int, cond: float, dev: torch.device, batch: int = 1) -> tuple:
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((batch, n, n)))
    w = np.logspace(-np.log10(cond), 0, n)
    A64 = (Q * w[None, None, :]) @ Q.transpose(0, 2, 1)
    R64 = (Q * w[None, None, :] ** -0.25) @ Q.transpose(0, 2, 1)
    return torch.as_tensor(A64, dtype=torch.float32, device=dev), R64


def goal_inv_root(dev: torch.device, n: int, batch: int, rates: dict) -> None:
    A, R64 = _spd(n, 1e3, dev, batch)
    t, out = interleaved({
        "inv_root newton (tol 1e-3)": lambda: xpmat.inv_root(A, 4, method="newton", tol=1e-3),
        "inv_root newton (default tol)": lambda: xpmat.inv_root(A, 4, method="newton"),
        "inv_root eigh": lambda: xpmat.inv_root(A, 4, method="eigh"),
        "torch.linalg.eigh": lambda: torch.linalg.eigh(A),
    }, dev, reps=5)
    err = {k: float(np.linalg.norm(_np(v) - R64) / np.linalg.norm(R64))
           for k, v in out.items() if k != "torch.linalg.eigh"}
    row(f"inv_root p=4 {batch}×{n}² f32 (cond 1e3)", "inv_root newton (tol 1e-3)",
        "inv_root eigh", t, "≥ 5 at 1e-3", err)
    row(f"inv_root p=4 {batch}×{n}² f32 (cond 1e3)", "inv_root newton (default tol)",
        "inv_root eigh", t, "", err)


def goal_nmf(dev: torch.device, m: int, n: int, r: int, iters: int) -> None:
    from sklearn.decomposition import NMF

    rng = np.random.default_rng(7)
    C = (rng.random((m, r)) @ rng.random((r, n)) + 0.01 * rng.random((m, n))).astype(np.float32)
    A0 = rng.random((m, r)).astype(np.float32)
    B0 = rng.random((r, n)).astype(np.float32)

    def sk():
        mdl = NMF(r, solver="mu", beta_loss="kullback-leibler", init="custom", max_iter=iters,
                  tol=0.0)
        W = mdl.fit_transform(C, W=A0.copy(), H=B0.copy())
        return W @ mdl.components_

    Ct, At, Bt = (torch.as_tensor(a, device=dev) for a in (C, A0, B0))
    fns = {"xpmat.nmf (torch)": lambda: _prod(xpmat.nmf(Ct, r, iters=iters, init=(At, Bt))),
           "xpmat.nmf (torch, CUDA graph)": lambda: _prod(_graphed_nmf(Ct, r, iters, At, Bt)),
           "sklearn NMF KL-MU (CPU)": sk}
    cp = _cupy(dev)
    if cp is not None:
        Cc, Ac, Bc = (cp.asarray(a) for a in (C, A0, B0))
        fns["xpmat.nmf (cupy)"] = lambda: _prod(xpmat.nmf(Cc, r, iters=iters, init=(Ac, Bc)))
    t, out = interleaved(fns, dev, reps=3)
    C64 = C.astype(np.float64)
    err = {k: float(xpmat.i_divergence(C64, _np(v).astype(np.float64))) for k, v in out.items()}
    work = f"KL-NMF {m}×{n} r{r}, {iters} it, f32 (sklearn on {os.cpu_count()} CPU cores)"
    row(work, "xpmat.nmf (torch)", "sklearn NMF KL-MU (CPU)", t, "≥ 100", err)
    row(work, "xpmat.nmf (torch, CUDA graph)", "sklearn NMF KL-MU (CPU)", t, "≥ 100", err)
    if cp is not None:
        row(work, "xpmat.nmf (cupy)", "sklearn NMF KL-MU (CPU)", t, "≥ 100", err)


def _graphed_nmf(C, r, iters, A0, B0):
    """:func:`xpmat.nmf` with each step replayed from a CUDA graph (``xpmat._nmf_fused.CUDA_GRAPHS``,
    off by default until measured here)."""
    from xpmat import _nmf_fused

    _nmf_fused.CUDA_GRAPHS = True
    try:
        return xpmat.nmf(C, r, iters=iters, init=(A0, B0))
    finally:
        _nmf_fused.CUDA_GRAPHS = False


def goal_lowrank(dev: torch.device, n: int, r: int, k: int) -> None:
    rng = np.random.default_rng(11)
    Q64, _ = np.linalg.qr(rng.standard_normal((n, r)))
    L64 = np.sort(rng.random(r))[::-1] + 0.1
    C64 = rng.standard_normal((n, k)) / np.sqrt(n)
    M64 = (Q64 * L64) @ Q64.T + C64 @ C64.T
    ref = np.linalg.eigvalsh(M64)[::-1][:r]
    L, Q, C = (torch.as_tensor(a.copy(), dtype=torch.float32, device=dev) for a in (L64, Q64, C64))

    def explicit():
        M = (Q * L) @ Q.mT + C @ C.mT
        return torch.linalg.eigh(M)[0].flip(-1)[:r]

    t, out = interleaved({"lowrank_eigh_update": lambda: xpmat.lowrank_eigh_update(L, Q, C, rank=r)[0],
                          "eigh of explicit n×n": explicit}, dev)
    err = {k2: float(np.abs(_np(v) - ref).max() / ref[0]) for k2, v in out.items()}
    row(f"lowrank_eigh_update n={n} r={r} k={k} f32", "lowrank_eigh_update",
        "eigh of explicit n×n", t, "", err)


def _prod(res):
    return res[0] @ res[1]


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().double().cpu().numpy()
    if type(x).__module__.startswith("cupy"):
        return x.get().astype(np.float64)
    return np.asarray(x, dtype=np.float64)


def _cupy(dev: torch.device):
    if dev.type != "cuda":
        return None
    try:
        import cupy

        return cupy
    except ImportError:
        return None


def _markdown(rates: dict, dev: torch.device) -> str:
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU"
    lines = [f"Device: {name}; torch {torch.__version__}; medians of interleaved runs.", "",
             "GEMM rate: " + ", ".join(f"{k.split('.')[-1]} {v / 1e12:.1f} TFLOP/s"
                                       for k, v in rates.items()), "",
             "| work | ours | ms | anchor | ms | anchor/ours | goal | fraction of GEMM rate |",
             "|---|---|---:|---|---:|---:|---|---:|"]
    for r in ROWS:
        frac = f"{r['gemm_fraction']:.2f}" if "gemm_fraction" in r else ""
        lines.append(f"| {r['work']} | {r['ours']} | {r['t_ours_ms']:.2f} | {r['anchor']} | "
                     f"{r['t_anchor_ms']:.2f} | {r['ratio']:.2f} | {r['goal']} | {frac} |")
    return "\n".join(lines) + "\n"


def main(outdir: str, device: str = "cuda", scale: int = 1) -> None:
    dev = torch.device(device)
    s = int(scale)
    if dev.type == "cpu":
        torch.set_num_threads(min(4, os.cpu_count() or 1))
    rates = gemm_rates(dev, 8192 // s)
    steps = [
        lambda: goal_msign(dev, 4096 // s, rates),
        lambda: goal_orthonormalize(dev, 65536 // s, 128, rates),
        lambda: goal_inv_root(dev, 1024 // s, 1, rates),
        lambda: goal_inv_root(dev, 3072 // s, 1, rates),
        lambda: goal_lowrank(dev, 4096 // s, 64, 1),
        lambda: goal_nmf(dev, 2000 // s, 1000 // s, 20, 200),
    ]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for fn in steps:
        try:
            fn()
        except Exception as exc:  # keep measuring the others; the failure is reported
            print(f"FAILED: {type(exc).__name__}: {exc}", flush=True)
            ROWS.append({"work": "FAILED", "ours": repr(exc)[:200], "anchor": "", "t_ours_ms": 0,
                         "t_anchor_ms": 0, "ratio": 0, "goal": ""})
        (out / "goals.md").write_text(_markdown(rates, dev))
        (out / "goals.json").write_text(json.dumps({"rates": rates, "rows": ROWS}, indent=1))


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0] if a else "gpu-out", a[1] if len(a) > 1 else "cuda", int(a[2]) if len(a) > 2 else 1)
