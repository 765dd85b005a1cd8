"""Scalar maps of the Newton–Schulz schedules on [0, 1]: x -> p_K(...p_1(x)) after K steps.

Writes docs/img/ns_schedules.png.  Run: ``python docs/scripts/ns_schedules.py``.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from xpmat import ns_schedule

OUT = pathlib.Path(__file__).resolve().parents[1] / "img" / "ns_schedules.png"


def compose(name, steps, x):
    for a, b, c in ns_schedule(name, steps):
        x = a * x + b * x**3 + c * x**5
    return x


def main() -> None:
    x = np.linspace(0, 1, 4001)
    xl = np.geomspace(1e-4, 1, 4001)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, style in (("polar_express", "-"), ("jordan", "--"), ("quintic", "-."), ("cubic", ":")):
        axes[0].plot(x, compose(name, 5, x), style, label=f"{name}, 5 steps")
        err = np.maximum(np.abs(1 - compose(name, 8, xl)), 1e-16)
        axes[1].semilogx(xl, err, style, label=f"{name}, 8 steps")
    axes[0].set(xlabel="normalized singular value x", ylabel="p_5(...p_1(x))", title="after 5 steps")
    axes[1].set(xlabel="normalized singular value x", ylabel="|1 - p_8(...p_1(x))|", yscale="log",
                title="error after 8 steps")
    axes[1].axvline(1e-3, color="grey", lw=0.8)
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)


if __name__ == "__main__":
    main()
