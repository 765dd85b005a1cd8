"""Gram Newton–Schulz against the plain loop on CPU: time, product FLOPs and agreement.

For docs/orthogonalize.md ("Gram Newton–Schulz").  float32 (and bfloat16 on torch), 5 steps of
the default schedule, ``torch.set_num_threads(2)``, best of ``--repeat`` runs; both methods
timed on the same inputs in the same run, interleaved.

Run: ``PYTHONPATH=src python docs/scripts/gram_ns_timing.py`` (about a minute on 2 cores);
``--device cuda`` times torch on a GPU (synchronized; NumPy rows left out), as
``tools/gpu_session.sh`` does.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from xpmat import msign
from xpmat.orthogonalize import ns_flops

SHAPES = [(4096, 256), (256, 4096), (2048, 512), (3072, 768), (1024, 1024)]


def _timed(G, **kw) -> float:
    sync = torch.cuda.synchronize if isinstance(G, torch.Tensor) and G.is_cuda else (lambda: None)
    sync()
    s = time.perf_counter()
    msign(G, **kw)
    sync()
    return time.perf_counter() - s


def best_pair(G, repeat: int, **kw) -> tuple[float, float]:
    """Best times (ms) of the plain and the Gram loop, interleaved so load hits both alike."""
    _timed(G, **kw)
    _timed(G, gram=True, **kw)
    plain = gram = np.inf
    for _ in range(repeat):
        plain = min(plain, _timed(G, **kw))
        gram = min(gram, _timed(G, gram=True, **kw))
    return plain * 1e3, gram * 1e3


def rel(a, b) -> float:
    a, b = (x.double().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in (a, b))
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="torch device (cuda: GPU rows only)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    print("| shape | FLOPs gram / plain | library | plain (ms) | gram (ms) | time gram / plain "
          "| rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for m, n in SHAPES:
        G = rng.standard_normal((m, n)).astype(np.float32)
        fl = ns_flops(m, n, 5, gram=True) / ns_flops(m, n, 5)
        Gt = torch.from_numpy(G).to(args.device)
        cases = [("NumPy float32", G, {})] if args.device == "cpu" else []
        cases.append((f"torch float32 ({args.device})", Gt, {}))
        if (m, n) == (4096, 256):
            cases.append(("torch bf16 compute", Gt, {"compute_dtype": "bfloat16"}))
        for name, X, kw in cases:
            p, g = best_pair(X, args.repeat, **kw)
            d = rel(msign(X, gram=True, **kw), msign(X, **kw))
            print(f"| {m}×{n} | {fl:.2f} | {name} | {p:.1f} | {g:.1f} | {g / p:.2f} | {d:.1e} |")


if __name__ == "__main__":
    main()
