"""Does ``torch.compile(opt.step)`` compile once for a whole run?  One row per torch class.

``python docs/scripts/compile_check.py [CLASS ...] [--scheduler onecycle|lambda|cosine]
[--steps N] [--backend inductor|eager]`` builds each class on a tiny model (an 8 × 4 matrix and
a 4-vector, float32, CPU, one thread) with tensor hyper-parameters (``lr`` and, where the class
takes them, ``momentum``, ``betas``, ``weight_decay`` and the AdamW fallback's ones: 1-element
tensors, as torch.optim's ``capturable`` convention), compiles its step and runs N steps
(default 5) under the scheduler (default ``OneCycleLR`` cycling ``momentum`` / ``betas[0]``,
which moves every hyper-parameter each step).  It prints the docs/optim.md table:

- ``graphs``: Dynamo graphs made in the two warm-up steps (step 1 creates the state, step 2 is the
  first step with state: two compiles of the frame, as torch.optim's compiled step);
- ``recompiles``: graphs made after the warm-up (0: the run compiles once);
- ``breaks``: graph breaks Dynamo met, warm-up included;
- ``fullgraph``: whether ``torch.compile(step, fullgraph=True)`` runs the same steps.

The step compiled is the optimizer's own (``type(opt).step.__get__(opt)``): a scheduler wraps
``opt.step`` in a function of ``torch/optim/lr_scheduler.py``, a file Dynamo never traces, which
adds one break before the step's frame (torch.optim's classes alike) and makes ``fullgraph=True``
fail whatever the step.  Counts come from ``torch._dynamo.utils.counters``.  ``--backend eager``
(Dynamo only, no Inductor code generation) gives the same counts in a fraction of the time.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any, NamedTuple

import torch

import xpmat.optim as xo
from xpmat.optim import torch_optim

# constructor arguments a class needs on the tiny model (everything else: defaults)
EXTRA = {"PowerSGD": {"rank": 2}, "PowerSGDPlus": {"rank": 2}, "Dion": {"rank": 2}, "Shampoo": {"precondition_every": 2}}
TENSOR_KEYS = ("lr", "momentum", "betas", "weight_decay", "adamw_betas", "adamw_weight_decay")


class Row(NamedTuple):
    name: str
    graphs: int
    recompiles: int
    breaks: int
    fullgraph: bool | None  # None: not tried
    note: str


def _tensor(v: Any) -> Any:
    if isinstance(v, tuple):
        return tuple(e if e is None else torch.tensor(float(e)) for e in v)
    return torch.tensor(float(v))


def build(name: str, seed: int = 0) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    """Class ``name`` on an 8 × 4 matrix and a 4-vector, with its scheduler-moved
    hyper-parameters as 1-element tensors (those it refuses as tensors stay floats)."""
    cls = getattr(xo, name)
    gen = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(8, 4, generator=gen)), torch.nn.Parameter(torch.randn(4, generator=gen))]
    base = cls(ps, **EXTRA.get(name, {})).defaults
    hyper = {k: _tensor(base[k]) for k in TENSOR_KEYS if k in base and base[k] is not None}
    for k in list(hyper):
        try:
            cls(ps, **EXTRA.get(name, {}), **hyper)
            break
        except ValueError as exc:  # a hyper-parameter the method needs as a number
            bad = next((h for h in hyper if str(exc).startswith(f"{h} as a Tensor")), k)
            hyper.pop(bad)
    return cls(ps, **EXTRA.get(name, {}), **hyper), ps


def scheduler(opt: torch.optim.Optimizer, kind: str) -> Any:
    """The learning-rate scheduler ``kind`` on ``opt``."""
    s = torch.optim.lr_scheduler
    if kind == "onecycle":
        return s.OneCycleLR(opt, max_lr=0.05, total_steps=100, cycle_momentum="momentum" in opt.defaults
                            or "betas" in opt.defaults)
    if kind == "lambda":
        return s.LambdaLR(opt, lambda e: 1.0 / (1 + e))
    if kind == "cosine":
        return s.CosineAnnealingLR(opt, T_max=10)
    raise ValueError(f"scheduler must be 'onecycle', 'lambda' or 'cosine', got {kind!r}")


def _run(name: str, kind: str, steps: int, backend: str, fullgraph: bool) -> tuple[int, int, int]:
    """``(graphs in the warm-up, graphs after it, graph breaks)`` of one compiled run."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    opt, ps = build(name)
    step = torch.compile(type(opt).step.__get__(opt), backend=backend, fullgraph=fullgraph)
    sched = scheduler(opt, kind)
    gen = torch.Generator().manual_seed(1)
    warm = 0
    for k in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen)
        step()
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": the
            warnings.simplefilter("ignore")  # compiled step is not the wrapper it watches
            sched.step()
        if k == 1:
            warm = counters["stats"]["unique_graphs"]
    return warm, counters["stats"]["unique_graphs"] - warm, sum(counters["graph_break"].values())


def check(name: str, kind: str = "onecycle", steps: int = 5, backend: str = "inductor",
          fullgraph: bool = True) -> Row:
    """One row of the table: class ``name`` under scheduler ``kind`` for ``steps`` steps."""
    graphs, recompiles, breaks = _run(name, kind, steps, backend, False)
    ok, note = None, ""
    if fullgraph:
        try:
            _run(name, kind, steps, backend, True)
            ok = True
        except Exception as exc:  # the reason Dynamo gives, in a line
            ok, note = False, " ".join(str(exc).split())[:90]
    return Row(name, graphs, recompiles, breaks, ok, note)


def table(rows: list[Row]) -> str:
    """The markdown table of docs/optim.md."""
    out = ["| class | graphs (warm-up) | recompiles after | graph breaks | fullgraph=True |",
           "|---|---|---|---|---|"]
    for r in rows:
        fg = "—" if r.fullgraph is None else "yes" if r.fullgraph else "no"
        out.append(f"| {r.name} | {r.graphs} | {r.recompiles} | {r.breaks} | {fg} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("classes", nargs="*", default=[c for c in torch_optim.__all__ if c != "XpmatOptimizer"])
    ap.add_argument("--scheduler", default="onecycle", choices=("onecycle", "lambda", "cosine"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--no-fullgraph", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in a.classes:
        rows.append(check(name, a.scheduler, a.steps, a.backend, not a.no_fullgraph))
        print(rows[-1], flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
