"""nearest_kron(method="power"): distance to the SVD optimum per iteration, against the (σ₂/σ₁)^{2k} rate.

For three gaps σ₂/σ₁ ∈ {0.3, 0.7, 0.9} we build C = Σᵢ σᵢ Aᵢ ⊗ Bᵢ (orthonormal vec(Aᵢ), vec(Bᵢ),
so rearrange(C) has exactly the singular values σᵢ), run the power route for k = 1 … 40 rounds
from the same seeded start and plot ‖A_k ⊗ B_k − A* ⊗ B*‖_F / ‖A* ⊗ B*‖_F, where A* ⊗ B* is
the SVD route's answer.  Dashed: the predicted rate (σ₂/σ₁)^{2k}, scaled to the first point.
Writes ``docs/img/kron_power.png``.

Run from the repository root: ``python docs/scripts/kron_power.py``.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import xpmat as xm

m, d, n, l = 16, 12, 10, 8            # A: (16, 12), B: (10, 8); C: (160, 96)
rng = np.random.default_rng(0)
UA = np.linalg.qr(rng.standard_normal((m * d, 6)))[0]
UB = np.linalg.qr(rng.standard_normal((n * l, 6)))[0]

fig, ax = plt.subplots(figsize=(6.4, 4.0))
for gap, colour in zip([0.3, 0.7, 0.9], ["C0", "C1", "C2"]):
    sig = gap ** np.arange(6)
    C = sum(s * np.kron(UA[:, i].reshape(m, d), UB[:, i].reshape(n, l)) for i, s in enumerate(sig))
    A_opt, B_opt = xm.nearest_kron(C, (m, d), (n, l), method="svd")
    K_opt = np.kron(A_opt, B_opt)
    ks = np.arange(1, 41)
    errs = []
    for k in ks:
        A, B = xm.nearest_kron(C, (m, d), (n, l), method="power", iters=int(k), seed=0)
        errs.append(np.linalg.norm(np.kron(A, B) - K_opt) / np.linalg.norm(K_opt))
    errs = np.maximum(errs, 1e-17)
    ax.semilogy(ks, errs, "o-", ms=3, color=colour, label=f"σ₂/σ₁ = {gap}")
    ax.semilogy(ks, errs[0] * gap ** (2 * (ks - 1)), "--", color=colour, lw=1)
    print(f"gap {gap}: error after 5 / 20 / 40 rounds = {errs[4]:.1e} / {errs[19]:.1e} / {errs[39]:.1e}")
ax.set_ylim(1e-17, 2)
ax.set_xlabel("power rounds k")
ax.set_ylabel("‖A⊗B − A*⊗B*‖ / ‖A*⊗B*‖")
ax.set_title(r"nearest_kron, power route vs SVD optimum (dashed: $(\sigma_2/\sigma_1)^{2k}$)")
ax.legend()
fig.tight_layout()
out = Path(__file__).resolve().parents[1] / "img" / "kron_power.png"
fig.savefig(out, dpi=110)
print("wrote", out)
