"""Train the digits MLP with every LRE option: test accuracy and time per step.

``python docs/scripts/lre_options.py [STEPS [HIDDEN [LABEL ...]]]`` (defaults 300 steps,
hidden width 128: the demo's MLP, batch 128, one thread) trains ``xpmat.optim.LRE`` once per
entry of :data:`OPTIONS` — the demo's settings (``lr=0.03, rank=16``) updated by the entry's
— and prints a Markdown table (final loss = mean cross-entropy of the last 20 steps, test
accuracy, ms per step including forward and backward).  LABELs restrict the run.

``python docs/scripts/lre_options.py --setting probe [LABEL ...]`` is the second setting of
the docs: a 64-32-10 tanh MLP, ``rank=8``, 15 epochs of batch 100 (a fresh shuffle per
epoch, about 210 steps), every entry of :data:`PROBE_OPTIONS` at each learning rate of
:data:`PROBE_LRS`; it prints the test accuracy at each ``lr`` and the best.  ``--seeds N``
averages N seeds (0, 1, ...; default 1).

``tests/test_optim_lre.py`` trains every entry for a few steps on a smaller MLP, so the table
and the tests cover the same options.
"""

import sys

# (label, settings on top of the demo's, closure kind of xpmat.demo.train_digits)
OPTIONS = [
    ("covariance (default)", {}, "mean"),
    ("covariance, max_dim=64", {"max_dim": 64}, "mean"),
    ("curvature=hutchinson", {"curvature": "hutchinson", "max_dim": 64}, "mean"),
    ("curvature=bfgs", {"curvature": "bfgs", "max_dim": 64}, "mean"),
    ("curvature=sr1", {"curvature": "sr1", "max_dim": 64}, "mean"),
    ("curvature=fisher", {"curvature": "fisher"}, "per_sample"),
    ("curvature=gauss_newton", {"curvature": "gauss_newton"}, "residuals"),
    ("basis=ggt", {"basis": "ggt"}, "mean"),
    ("basis=randomized", {"basis": "randomized"}, "mean"),
    ("basis=nystrom", {"basis": "nystrom"}, "mean"),
    ("basis=hebbian", {"basis": "hebbian"}, "mean"),
    ("basis=random", {"basis": "random", "lr": 0.1}, "mean"),
    ("basis=full", {"basis": "full", "max_dim": 64}, "mean"),
    ("inner=precondition", {"inner": "precondition", "lr": 0.1, "eps": 1e-4}, "mean"),
    ("inner=inverse", {"curvature": "gauss_newton", "inner": "inverse", "lr": 0.01, "eps": 1e-2},
     "residuals"),
    ("inner=lion", {"inner": "lion", "betas": (0.9, 0.99)}, "mean"),
    ("inner=[adam, cautious]", {"inner": ["adam", "cautious"]}, "mean"),
    ("inner=full_adam", {"inner": "full_adam"}, "mean"),
    ("inner=[hutchinson_adam, clip_norm]", {"curvature": "hutchinson", "lr": 0.3, "max_dim": 64,
                                             "inner": ["hutchinson_adam", "clip_norm"]}, "mean"),
    ("inner=full_bfgs_adam", {"curvature": "hutchinson", "inner": "full_bfgs_adam", "lr": 0.1,
                              "eps": 1e-3, "max_dim": 64}, "mean"),
    ("inner=[precondition, ema]", {"inner": ["precondition", "ema"], "lr": 0.1, "eps": 1e-4}, "mean"),
    ("inner=[adam, normalize_by_ema]", {"inner": ["adam", "normalize_by_ema"]}, "mean"),
    ("clip_norm=1", {"clip_norm": 1.0}, "mean"),
    ("clip_value=0.2", {"clip_value": 0.2, "lr": 0.1}, "mean"),
]


# the probe setting: (label, settings on top of rank=8, closure kind)
PROBE_OPTIONS = [
    ("covariance (default)", {}, "mean"),
    ("curvature=fisher", {"curvature": "fisher"}, "per_sample"),
    ("curvature=fisher, rank=32", {"curvature": "fisher", "rank": 32}, "per_sample"),
    ("curvature=fisher, beta=0.5", {"curvature": "fisher", "beta": 0.5}, "per_sample"),
    ("covariance, rank=32", {"rank": 32}, "mean"),
    ("curvature=gauss_newton", {"curvature": "gauss_newton"}, "residuals"),
    ("inner=lion", {"inner": "lion"}, "mean"),
    ("inner=lion, betas=(0.9, 0.99)", {"inner": "lion", "betas": (0.9, 0.99)}, "mean"),
    ("inner=[adam, cautious]", {"inner": ["adam", "cautious"]}, "mean"),
]
PROBE_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)


def train_probe(hyper, loss, lr, *, seed=0, epochs=15, batch=100, hidden=32):
    """Test accuracy of ``LRE(lr=lr, rank=8, **hyper)`` on the 64-``hidden``-10 tanh MLP after
    ``epochs`` shuffled passes over the digits training split in batches of ``batch``
    (``loss``: the closure kind of :func:`xpmat.demo.train_digits`)."""
    import torch

    from xpmat.demo import digits_data, loss_closure
    from xpmat.optim import LRE

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xtr, ytr, xte, yte = digits_data(seed)
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 10))
        opt = LRE(model.parameters(), lr=lr, **{"rank": 8, **hyper})
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            perm = torch.randperm(len(ytr), generator=gen)
            for i in range(0, len(ytr), batch):
                x, y = xtr[perm[i:i + batch]], ytr[perm[i:i + batch]]

                opt.step(loss_closure(opt, model, x, y, loss))
        with torch.no_grad():
            return float((model(xte).argmax(1) == yte).float().mean())
    finally:
        torch.set_num_threads(threads)


def main_probe(labels=(), seeds=1, lrs=PROBE_LRS):
    print(f"digits MLP 64-32-10 tanh, rank=8, 15 epochs of batch 100, test accuracy "
          f"(mean of {seeds} seed(s)) per lr")
    print("| option | settings | " + " | ".join(f"lr={lr:g}" for lr in lrs) + " | best |")
    print("|---|---|" + "---|" * (len(lrs) + 1))
    for label, hyper, loss in PROBE_OPTIONS:
        if labels and label not in labels:
            continue
        accs = [sum(train_probe(hyper, loss, lr, seed=s) for s in range(seeds)) / seeds for lr in lrs]
        shown = ", ".join(f"{k}={v!r}" for k, v in hyper.items()) or "—"
        best = max(range(len(lrs)), key=lambda i: accs[i])
        print(f"| {label} | `{shown}` | " + " | ".join(f"{a:.3f}" for a in accs)
              + f" | {accs[best]:.3f} (lr={lrs[best]:g}) |", flush=True)


def main(steps=300, hidden=128, labels=()):
    from xpmat.demo import train_digits

    print(f"digits MLP 64-{hidden}-{hidden}-10, {steps} steps of batch 128, LRE lr=0.03 rank=16 "
          "unless set")
    print("| option | settings | final loss | test acc | ms/step |")
    print("|---|---|---|---|---|")
    for label, hyper, loss in OPTIONS:
        if labels and label not in labels:
            continue
        r = train_digits("lre", steps=steps, hidden=hidden, hyper=hyper, loss=loss)
        shown = ", ".join(f"{k}={v!r}" for k, v in hyper.items()) or "—"
        print(f"| {label} | `{shown}` | {r['final_loss']:.3f} | {r['test_accuracy']:.3f} | "
              f"{1e3 * r['time_per_step']:.1f} |", flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[:2] == ["--setting", "probe"]:
        rest = a[2:]
        n = 1
        if "--seeds" in rest:
            j = rest.index("--seeds")
            n = int(rest[j + 1])
            rest = rest[:j] + rest[j + 2:]
        main_probe(tuple(rest), n)
        sys.exit(0)
    main(int(a[0]) if a else 300, int(a[1]) if len(a) > 1 else 128, tuple(a[2:]))
