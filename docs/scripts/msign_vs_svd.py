"""The home page figure: msign by Newton–Schulz against the SVD, accuracy versus time.

For a 2048 × 1024 float32 matrix with singular values spread over [1e-3, 1] (a gradient-like
spectrum), ``xpmat.msign`` (Polar Express schedule, ``normalize="spectral_estimate"``) with 1 to
10 Newton–Schulz steps is timed on NumPy and PyTorch (CPU) and compared with the exact ``U Vᵀ``.
The SVD route (``numpy.linalg.svd`` and ``torch.linalg.svd`` in float32, then ``U @ Vh``) is the
anchor.  Every point is timed once per round, best of 5 rounds.

Writes docs/img/msign_vs_svd.png.  Run: ``python docs/scripts/msign_vs_svd.py``
(a few minutes on two CPU cores).
"""

from __future__ import annotations

import pathlib
import time

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import xpmat as xm

OUT = pathlib.Path(__file__).resolve().parents[1] / "img" / "msign_vs_svd.png"
M, N, REPEATS = 2048, 1024, 5
STEPS = range(1, 11)


def test_matrix(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``G`` (float32) with singular values log-spaced in [1e-3, 1], and its exact ``U Vᵀ``."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((M, N)))
    v, _ = np.linalg.qr(rng.standard_normal((N, N)))
    g = (u * np.geomspace(1.0, 1e-3, N)) @ v.T
    return g.astype(np.float32), u @ v.T


def error(o, exact: np.ndarray) -> float:
    o = np.asarray(o, dtype=np.float64)
    return float(np.linalg.norm(o - exact) / np.linalg.norm(exact))


def jobs(g: np.ndarray) -> list[tuple[str, object, object]]:
    """``(curve, call, to_host)`` for every point: msign with 1..10 steps, and the SVD route."""
    import torch

    torch.set_num_threads(2)
    found = []
    for name, x, host in (("NumPy", g, np.asarray), ("PyTorch", torch.from_numpy(g), lambda a: a.numpy())):
        for s in STEPS:
            found.append((f"xpmat.msign, {name}",
                          lambda s=s, x=x: xm.msign(x, steps=s, normalize="spectral_estimate"), host))
    found.append(("SVD, NumPy", lambda: _svd_polar(np.linalg.svd, g), np.asarray))
    found.append(("SVD, PyTorch", lambda: _svd_polar(torch.linalg.svd, torch.from_numpy(g)),
                  lambda a: a.numpy()))
    return found


def _svd_polar(svd, g):
    u, _, vh = svd(g, full_matrices=False)
    return u @ vh


def curves(g: np.ndarray, exact: np.ndarray) -> dict[str, tuple[list, list]]:
    """Round-robin timing (every point once per round, best of REPEATS rounds), so that load
    from other jobs on a shared machine falls on all points alike."""
    todo = jobs(g)
    best = [float("inf")] * len(todo)
    outputs: list = [None] * len(todo)
    for _ in range(REPEATS):
        for i, (_, call, _) in enumerate(todo):
            start = time.perf_counter()
            outputs[i] = call()
            best[i] = min(best[i], time.perf_counter() - start)
    found: dict[str, tuple[list, list]] = {}
    for (label, _, host), seconds, out in zip(todo, best, outputs):
        times, errors = found.setdefault(label, ([], []))
        times.append(seconds)
        errors.append(error(host(out), exact))
    return found


def main() -> None:
    g, exact = test_matrix()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for label, (times, errors) in curves(g, exact).items():
        if label.startswith("SVD"):
            ax.plot(times, errors, "*", ms=16, label=f"{label} (then U @ Vh)")
            continue
        line, = ax.plot(times, errors, "o-", ms=4, label=f"{label}, 1 to {len(STEPS)} steps")
        for steps, t, e in zip(STEPS, times, errors):
            if steps in (1, 3, 5, 7, 10):
                ax.annotate(str(steps), (t, e), textcoords="offset points", xytext=(4, 4),
                            fontsize=8, color=line.get_color())
    ax.set(xscale="log", yscale="log", xlabel="seconds (best of 5, two CPU cores)",
           ylabel="relative distance to U Vᵀ",
           title=f"msign(G) = U Vᵀ of a {M}×{N} float32 G, σ in [1e-3, 1]: Newton–Schulz vs SVD")
    ax.set_xticks([0.1, 0.2, 0.5, 1, 2, 5, 10])
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
