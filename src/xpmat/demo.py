"""The demo: train a small MLP on scikit-learn's bundled digits with every registered optimizer.

``run_demo()`` (wired to ``python -m xpmat demo``) prints a table (final training loss, test
accuracy, time per step) and writes ``loss_curves.png`` into ``demo-out/``.  Everything runs
on torch CPU in well under a minute on two cores; the data ship with scikit-learn (no download).

:func:`train_digits` trains one optimizer and is what the tests call.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["digits_data", "loss_closure", "make_mlp", "run_demo", "train_digits"]


def digits_data(seed: int = 0):
    """``(x_train, y_train, x_test, y_test)`` torch tensors: 8×8 digits scaled to [0, 1], a
    seeded 75 / 25 split (1347 / 450 samples)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(y))
    x = torch.tensor(x[perm] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[perm], dtype=torch.int64)
    n = int(0.75 * len(y))
    return x[:n], y[:n], x[n:], y[n:]


def make_mlp(hidden: int = 128, seed: int = 0):
    """64 → hidden → hidden → 10 ReLU MLP with seeded initialization."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    )


def train_digits(name: str, *, steps: int = 300, batch: int = 128, hidden: int = 128,
                 seed: int = 0, hyper: dict[str, Any] | None = None, loss: str = "mean") -> dict[str, Any]:
    """Train the digits MLP with registered optimizer ``name`` (its ``demo`` settings, updated
    by ``hyper``) for ``steps`` minibatch steps.

    ``loss`` is what the closure hands the optimizer: ``"mean"`` (the batch's mean
    cross-entropy, after ``backward()`` unless called with ``backward=False``, as LRE's Hessian
    curvatures do), ``"per_sample"`` (the per-sample cross-entropies
    ``ℓ_j``, no backward: LRE's ``curvature="fisher"``) or ``"residuals"`` (``r_j = √(2 ℓ_j)``,
    so that ``½ Σ r_j²`` is the summed cross-entropy: LRE's ``"gauss_newton"``).

    Returns a dict: ``name``, ``losses`` (per step), ``final_loss`` (mean of the last 20
    steps), ``test_accuracy``, ``time_per_step`` (seconds, optimizer + forward/backward).
    """
    import torch

    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, and fair on a shared machine
    try:
        return _train(name, steps=steps, batch=batch, hidden=hidden, seed=seed, hyper=hyper, loss=loss)
    finally:
        torch.set_num_threads(threads)


_LOSSES = ("mean", "per_sample", "residuals")


def loss_closure(opt, model, x, y, loss):
    """The step's closure for a classifier ``model`` on the batch ``(x, y)``: ``loss="mean"``
    (cross-entropy, with ``zero_grad`` and ``backward`` unless called with ``backward=False``),
    ``"per_sample"`` (per-sample cross-entropies) or ``"residuals"`` (``√(2 CE)``, for LRE's
    Gauss–Newton curvature); see :func:`train_digits`."""
    import torch

    def closure(backward=True):
        if loss == "mean":
            out = torch.nn.functional.cross_entropy(model(x), y)
            if backward:
                opt.zero_grad()
                out.backward()
            return out
        ce = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        return ce if loss == "per_sample" else torch.sqrt(2.0 * ce.clamp_min(1e-12))

    return closure


def _train(name, *, steps, batch, hidden, seed, hyper, loss):
    import torch

    from xpmat.optim import REGISTRY, torch_class

    info = REGISTRY[name]
    kwargs = dict(info.demo)
    kwargs.update(hyper or {})
    xtr, ytr, xte, yte = digits_data(seed)
    model = make_mlp(hidden, seed)
    opt = torch_class(name)(model.parameters(), **kwargs)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(ytr), (batch,), generator=gen)
        value = float(opt.step(loss_closure(opt, model, xtr[idx], ytr[idx], loss)).detach())
        losses.append(value if loss == "mean" else value / batch)  # the mean cross-entropy
    dt = (time.perf_counter() - t0) / steps
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    tail = losses[-20:]
    return {"name": name, "losses": losses, "final_loss": sum(tail) / len(tail),
            "test_accuracy": acc, "time_per_step": dt}


def run_demo(out_dir: str = "demo-out", *, steps: int = 300, names: list[str] | None = None,
             print_fn=print) -> list[dict[str, Any]]:
    """Train the digits MLP with every registered optimizer (or ``names``), print a table and
    write ``<out_dir>/loss_curves.png``.  Returns the per-optimizer result dicts."""
    import torch

    from xpmat.optim import REGISTRY

    names = list(REGISTRY) if names is None else names
    results = []
    print_fn(f"digits MLP (64-128-128-10), {steps} steps of batch 128, "
             f"torch {torch.__version__} CPU, 1 thread")
    width = max([16, *(len(n) for n in names)])
    print_fn(f"{'optimizer':<{width}} {'final loss':>10} {'test acc':>9} {'ms/step':>8}")
    for name in names:
        r = train_digits(name, steps=steps)
        results.append(r)
        print_fn(f"{name:<{width}} {r['final_loss']:>10.4f} {r['test_accuracy']:>9.3f} "
                 f"{1e3 * r['time_per_step']:>8.2f}")
    os.makedirs(out_dir, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        ls = r["losses"]
        k = 10  # running mean over 10 steps, for readability
        smooth = [sum(ls[max(0, i - k + 1):i + 1]) / len(ls[max(0, i - k + 1):i + 1])
                  for i in range(len(ls))]
        ax.plot(smooth, label=f"{r['name']} (acc {r['test_accuracy']:.3f})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (10-step mean)")
    ax.set_title("digits MLP: xpmat optimizers")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, "loss_curves.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print_fn(f"loss curves: {path}")
    return results


if __name__ == "__main__":
    run_demo()
