"""PowerSGD vs PowerSGD+ on the 2×2 counterexample of Xie, Chen, Yuan (2025), Theorem 1, eq. 10.

f(X) = ψ(Dᵀ X D), D = (1, −1), ψ(x) = x² for |x| ≤ 1 else 2|x| − 1; stochastic gradient
g = ∇f + ξ (σ B − ∇f) with B the all-ones matrix, σ = 1, ξ₀ = 1 then ξ_t = ±1 at random.
X₀ = [[2, 0], [0, 0]] (Dᵀ X₀ D = 2, so ‖∇f‖_F = 4 while stalled), rank 1, η_t = 0.1/√(t+1),
momentum SGD base (μ = 0 and 0.9), PowerSGD+ with τ = 10.  Run on NumPy and PyTorch float64;
prints the first step with ‖∇f‖ < 4 (the escape) and the mean ‖∇f‖ over the last 100 steps,
and plots ‖∇f‖ per step.

Run: ``python docs/scripts/powersgd_counterexample.py`` (writes
``docs/img/powersgd_counterexample.png``).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from xpmat.optim import apply_updates, powersgd

A = np.array([[1.0, -1.0], [-1.0, 1.0]])
B = np.ones((2, 2))
D = np.array([1.0, -1.0])


def psi_prime(x):
    return 2 * x if abs(x) <= 1 else 2 * np.sign(x)


def run(lib, tau, momentum, steps=1000, seed=0):
    conv = (lambda a: torch.tensor(a, dtype=torch.float64)) if lib == "torch" else (lambda a: a)
    back = (lambda t: t.numpy()) if lib == "torch" else np.asarray
    rng = np.random.default_rng(seed)
    X = [conv(np.array([[2.0, 0.0], [0.0, 0.0]]))]
    h = {"rank": 1, "momentum": momentum, "restart_every": tau}
    st = powersgd.init(X, **h)
    out = []
    for t in range(steps):
        grad_f = psi_prime(D @ back(X[0]) @ D) * A
        xi = 1.0 if t == 0 else rng.choice([-1.0, 1.0])
        g = grad_f + xi * (B - grad_f)
        u, st = powersgd.update([conv(g)], st, X, lr=0.1 / np.sqrt(t + 1), **h)
        X = apply_updates(X, u)
        out.append(np.linalg.norm(grad_f))
    return np.array(out)


if __name__ == "__main__":
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    print(f"{'run':<34} {'escape step':>11} {'mean |grad f| (last 100)':>25}")
    for ax, mom in zip(axes, (0.0, 0.9), strict=True):
        for lib in ("numpy", "torch"):
            for tau, name in ((None, "PowerSGD"), (10, "PowerSGD+ (tau=10)")):
                g = run(lib, tau, mom)
                esc = int(np.argmax(g < 4.0)) if (g < 4.0).any() else None
                label = f"{name}, {lib}, mu={mom}"
                print(f"{label:<34} {esc!s:>11} {g[-100:].mean():>25.4f}")
                ax.plot(np.maximum(g, 1e-6), label=f"{name}, {lib}", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"momentum {mom}")
        ax.set_xlabel("step")
    axes[0].set_ylabel("‖∇f(X_t)‖_F (stall = 4)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(__file__).resolve().parents[1] / "img" / "powersgd_counterexample.png"
    fig.savefig(out, dpi=110)
    print("wrote", out)
