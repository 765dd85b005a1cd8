"""Design the "polar_express" Newton–Schulz schedule: minimax odd quintics, step by step.

Polar Express (Amsel, Persson, Musco, Gower 2025, "The Polar Express: Optimal Matrix Sign
Methods and Their Application to the Muon Algorithm"): at step t choose the odd quintic
p(x) = a x + b x³ + c x⁵ minimizing max_{x in [l, u]} |1 − p(x)| (Remez exchange, written
here from scratch), then [l, u] <- [min p, max p] over [l, u].  Start l = 1e-3, u = 1.
Every step but the converged tail is made robust to rounding by the 1.01 safety factor
p(x) <- p(x / 1.01), i.e. (a / 1.01, b / 1.01³, c / 1.01⁵).  Once the interval is within
``TAIL`` of 1 the schedule ends at the osculating quintic (15/8, −5/4, 3/8) of Q.3.1.

Run: ``python tools/design_polar_express.py`` (rewrites src/xpmat/data/polar_express.json).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

L0, U0, SAFETY, STEPS, TAIL = 1e-3, 1.0, 1.01, 12, 1e-4
OUT = pathlib.Path(__file__).resolve().parents[1] / "src" / "xpmat" / "data" / "polar_express.json"


def _p(coef, x):
    a, b, c = coef
    x2 = x * x
    return x * (a + x2 * (b + c * x2))


def remez(l: float, u: float, iters: int = 60, grid: int = 200001):
    """Minimax odd quintic for the constant 1 on [l, u]: (a, b, c) and the error E."""
    # grid dense near l (log) and uniform elsewhere
    xs = np.unique(np.concatenate([np.geomspace(l, u, grid // 2), np.linspace(l, u, grid // 2)]))
    # initial reference: 4 Chebyshev-like points incl. the endpoints
    ref = l + (u - l) * (1 - np.cos(np.pi * np.arange(4) / 3)) / 2
    coef = None
    for _ in range(iters):
        A = np.stack([ref, ref**3, ref**5, (-1.0) ** np.arange(4)], axis=1)
        sol = np.linalg.solve(A, np.ones(4))
        coef = sol[:3]
        err = 1 - _p(coef, xs)
        # local extrema of err (endpoints included), then keep 4 alternating ones
        idx = [0] + [i for i in range(1, len(xs) - 1)
                     if (err[i] - err[i - 1]) * (err[i + 1] - err[i]) <= 0] + [len(xs) - 1]
        idx = np.array(sorted(set(idx)))
        # merge runs of equal sign keeping the largest |err|
        pts = []
        for i in idx:
            if pts and np.sign(err[i]) == np.sign(err[pts[-1]]):
                if abs(err[i]) > abs(err[pts[-1]]):
                    pts[-1] = i
            else:
                pts.append(i)
        while len(pts) > 4:  # drop the smaller end
            pts = pts[1:] if abs(err[pts[0]]) < abs(err[pts[-1]]) else pts[:-1]
        if len(pts) < 4:
            break
        new = xs[pts]
        if np.allclose(new, ref, rtol=0, atol=1e-15):
            break
        ref = new
    emax = float(np.abs(1 - _p(coef, xs)).max())
    return tuple(float(v) for v in coef), emax, xs


def design(l: float = L0, u: float = U0, steps: int = STEPS):
    rows = []
    for _ in range(steps):
        if 1 - l < TAIL and u - 1 < TAIL:
            rows.append({"a": 15 / 8, "b": -5 / 4, "c": 3 / 8, "l": l, "u": u, "minimax_error": None})
            continue
        (a, b, c), E, xs = remez(l, u)
        a, b, c = a / SAFETY, b / SAFETY**3, c / SAFETY**5
        px = _p((a, b, c), xs)
        rows.append({"a": a, "b": b, "c": c, "l": l, "u": u, "minimax_error": E})
        l, u = float(px.min()), float(px.max())
    return rows


def main() -> None:
    rows = design()
    doc = {
        "description": "Polar Express Newton-Schulz schedule designed by tools/design_polar_express.py: "
                       "per-step minimax odd quintic a x + b x^3 + c x^5 for 1 on [l, u], "
                       "start [1e-3, 1], safety factor 1.01, tail (15/8, -5/4, 3/8).",
        "reference": "Amsel, Persson, Musco, Gower (2025), The Polar Express: Optimal Matrix Sign "
                     "Methods and Their Application to the Muon Algorithm, arXiv:2505.16932",
        "l0": L0, "u0": U0, "safety": SAFETY, "tail_tol": TAIL,
        "steps": rows,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    for r in rows:
        print(f"({r['a']:.5f}, {r['b']:.5f}, {r['c']:.5f})  on [{r['l']:.3e}, {r['u']:.6f}]  "
              f"E={r['minimax_error']}")


if __name__ == "__main__":
    main()
