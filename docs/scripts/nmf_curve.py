"""I-divergence per iteration: xpmat.nmf (blockwise EM) beside scikit-learn's KL multiplicative updates.

Same data (a 300×200 Poisson matrix of rank 8), same start, same iterations.  scikit-learn does
not report its objective per iteration, so it is re-run with ``max_iter = k`` at checkpoints
(deterministic with ``init="custom"``).  Writes ``docs/img/nmf_curve.png``.

Run from the repository root: ``python docs/scripts/nmf_curve.py``.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import NMF

import xpmat as xm

m, n, r, iters = 300, 200, 8, 300
rng = np.random.default_rng(0)
C = rng.poisson(rng.random((m, r)) @ rng.random((r, n)) * 3).astype(float)
A0, B0 = rng.random((m, r)) + 0.1, rng.random((r, n)) + 0.1

res = xm.nmf(C, r, iters=iters, init=(A0, B0), history=True)
ours = np.asarray(res.divergence)

checkpoints = [1, 2, 3, 5, 10, 20, 30, 50, 100, 150, 200, 300]
theirs = []
for k in checkpoints:
    model = NMF(r, beta_loss="kullback-leibler", solver="mu", init="custom", max_iter=k, tol=0)
    W = model.fit_transform(C, W=A0.copy(), H=B0.copy())
    theirs.append(float(xm.i_divergence(C, W @ model.components_)))

# the simultaneous form printed as eq. (124) (B updated from the old A), for contrast
A, B, simul = A0.copy(), B0.copy(), [float(xm.i_divergence(C, A0 @ B0))]
for _ in range(iters):
    R = C / np.maximum(A @ B, 1.1920928955078125e-07)
    A, B = A * (R @ B.T) / B.sum(1)[None, :], B * (A.T @ R) / A.sum(0)[:, None]
    simul.append(float(xm.i_divergence(C, A @ B)))

fig, ax = plt.subplots(figsize=(6.4, 4.0))
ax.plot(np.arange(iters + 1), ours, label="xpmat.nmf (blockwise EM)", lw=2)
ax.plot(checkpoints, theirs, "o", label="sklearn NMF(kullback-leibler, mu)", ms=6, mfc="none")
ax.plot(np.arange(iters + 1), simul, "--", label="simultaneous form, eq. (124) as printed", lw=1)
ax.set_xscale("symlog", linthresh=1)
ax.set_yscale("log")
ax.set_xlabel("iteration")
ax.set_ylabel("I-divergence(C, AB)")
ax.set_title("NMF on a 300×200 Poisson matrix, rank 8, same start")
ax.legend()
fig.tight_layout()
out = Path(__file__).resolve().parents[1] / "img" / "nmf_curve.png"
fig.savefig(out, dpi=110)
print(f"final: ours {ours[-1]:.1f}, sklearn {theirs[-1]:.1f}, simultaneous {simul[-1]:.1f} -> {out}")
