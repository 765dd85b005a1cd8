"""Spectrum tracking of a low-rank eigenbasis (LRE) on a noisy quadratic -> docs/img/lowrank_tracking.png.

The curvature is the EMA of gradient outer products, kept as Q diag(L) Qᵀ with rank 10
(lowrank_eigh_update, decay 0.95, one correction per step).  For reference only, the
explicit 100 x 100 EMA matrix is formed beside it and eigendecomposed every step.

Run: .venv/bin/python docs/scripts/lowrank_tracking.py   (about 5 s)
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import xpmat as xm

n, r, steps, decay = 100, 10, 400, 0.95
rng = np.random.default_rng(0)
V, _ = np.linalg.qr(rng.standard_normal((n, n)))
h = np.r_[np.logspace(2, 1, r), np.logspace(-1, -2, n - r)]  # a gap after the 10th eigenvalue
H = (V * h) @ V.T
H_half = (V * np.sqrt(h)) @ V.T
x_star = rng.standard_normal(n)


def grad(x):
    """Gradient of ½ (x − x*)ᵀ H (x − x*) plus noise with covariance 0.1·H (Fisher ≈ Hessian)."""
    return H @ (x - x_star) + np.sqrt(0.1) * H_half @ rng.standard_normal(n)


def loss(x):
    d = x - x_star
    return 0.5 * d @ H @ d


# --- tracking: LRE state beside the explicit EMA matrix (reference only)
L, Q = np.zeros(r), np.linalg.qr(rng.standard_normal((n, r)))[0]
A = np.zeros((n, n))
x = np.zeros(n)
hist_L, hist_ref, hist_sin, hist_lost = [], [], [], []
for _ in range(steps):
    g = grad(x)
    A = decay * A + (1 - decay) * np.outer(g, g)
    L, Q = xm.lowrank_eigh_update(L, Q, g[:, None], decay=decay)
    w, W = np.linalg.eigh(A)
    top = W[:, ::-1][:, :r]
    hist_L.append(L.copy())
    hist_ref.append(w[::-1][:r])
    hist_sin.append(np.linalg.norm(top - Q @ (Q.T @ top), 2))
    hist_lost.append(np.abs(np.linalg.eigvalsh(A - (Q * L) @ Q.T)).sum() / np.abs(w).sum())
    x = x - 1e-3 * g  # the iterate follows plain SGD: the gradients change over time

fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
t = np.arange(1, steps + 1)
hist_L, hist_ref = np.array(hist_L), np.array(hist_ref)
for i in range(r):
    ax[0].semilogy(t, hist_ref[:, i], color="0.6", lw=3, label="exact top-10 of EMA" if i == 0 else None)
    ax[0].semilogy(t, np.maximum(hist_L[:, i], 1e-6), color=f"C{i}", lw=1,
                   label="tracked L (rank 10)" if i == 0 else None)
ax[0].set(title="eigenvalues of the EMA of g gᵀ", xlabel="step", ylim=(1e-2, None))
ax[0].legend(fontsize=8)
ax[1].semilogy(t, hist_sin, label="sin of largest principal angle\n(tracked Q vs exact top-10)")
ax[1].semilogy(t, hist_lost, label="‖A − Q L Qᵀ‖* / ‖A‖*  (discarded)")
ax[1].set(title="subspace error", xlabel="step")
ax[1].legend(fontsize=8)
ax[2].semilogy(np.arange(1, n + 1), w[::-1], "o", color="0.6", ms=3, label="exact EMA matrix (all 100)")
ax[2].semilogy(np.arange(1, r + 1), L, "x", color="C3", ms=7, label="tracked L (rank 10)")
ax[2].set(title=f"spectrum at step {steps}", xlabel="index")
ax[2].legend(fontsize=8)
fig.tight_layout()
out = Path(__file__).resolve().parents[1] / "img" / "lowrank_tracking.png"
fig.savefig(out, dpi=110)
print(f"final sin(angle) {hist_sin[-1]:.3g}, max after step 50 {max(hist_sin[50:]):.3g}; "
      f"discarded/total {hist_lost[-1]:.3g}")
print(f"wrote {out}")
