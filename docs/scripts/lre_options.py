"""Train the digits MLP with every LRE option: test accuracy and time per step.

``python docs/scripts/lre_options.py [STEPS [HIDDEN [LABEL ...]]]`` (defaults 300 steps,
hidden width 128: the demo's MLP, batch 128, one thread) trains ``xpmat.optim.LRE`` once per
entry of :data:`OPTIONS` — the demo's settings (``lr=0.03, rank=16``) updated by the entry's
— and prints a Markdown table (final loss = mean cross-entropy of the last 20 steps, test
accuracy, ms per step including forward and backward).  LABELs restrict the run.

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
    main(int(a[0]) if a else 300, int(a[1]) if len(a) > 1 else 128, tuple(a[2:]))
