"""Does ``torch.compile(opt.step)`` compile once for a whole run?  One row per torch class.

``python docs/scripts/compile_check.py [CLASS ...] [--scheduler onecycle|lambda|cosine]
[--steps N] [--backend inductor|eager]`` builds each class on a tiny model (an 8 × 4 matrix and
a 4-vector, float32, CPU, one thread) with tensor hyper-parameters (``lr`` and, where the class
takes them, ``momentum``, ``betas``, ``weight_decay`` and the AdamW fallback's ones: 1-element
tensors, as torch.optim's ``capturable`` convention), compiles its step and runs N steps
(default 5) under the scheduler (default ``OneCycleLR`` cycling ``momentum`` / ``betas[0]``,
which moves every hyper-parameter each step).  It prints the docs/optim.md table:

- ``graphs at step 1, 2``: Dynamo graphs made by the first step (it creates the state) and by
  the second (the first with state: a second compile of the frame, as torch.optim's compiled
  step makes when its state is created lazily);
- ``recompiles after``: graphs made after step 2 (0: the run compiles once);
- ``breaks at step 1, later``: graph breaks Dynamo met while tracing step 1, steps 2..N;
- ``fullgraph=True``: whether ``torch.compile(step, fullgraph=True)`` runs the same steps from
  step 1, or only after an eager step 1 (seeded host draws at state creation), or not at all.

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
EXTRA = {"PowerSGD": {"rank": 2}, "PowerSGDPlus": {"rank": 2}, "Dion": {"rank": 2},
         "Shampoo": {"precondition_every": 2}, "SGD": {"momentum": 0.9}, "torch.optim.SGD": {"momentum": 0.9}}
ANCHORS = ("torch.optim.AdamW", "torch.optim.SGD")  # torch's own classes, the same run
CLASSES = [c for c in torch_optim.__all__ if c != "XpmatOptimizer"]
TENSOR_KEYS = ("lr", "momentum", "betas", "weight_decay", "adamw_betas", "adamw_weight_decay")


class Row(NamedTuple):
    name: str
    graphs: tuple[int, int]  # Dynamo graphs made at step 1 (creates the state), at step 2
    recompiles: int  # graphs made after step 2
    breaks: tuple[int, int]  # graph breaks met at step 1, at steps 2..N
    fullgraph: str  # "yes", "after an eager step 1", "no" or "—" (not tried)
    note: str


def _tensor(v: Any) -> Any:
    if isinstance(v, tuple):
        return tuple(e if e is None else torch.tensor(float(e)) for e in v)
    return torch.tensor(float(v))


def build(name: str, seed: int = 0) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    """Class ``name`` (of :mod:`xpmat.optim`, or ``torch.optim.<name>``) on an 8 × 4 matrix and a
    4-vector, its scheduler-moved hyper-parameters 1-element tensors (floats where it refuses
    a tensor: a method whose structure depends on the value)."""
    module, _, short = name.rpartition(".")
    cls = getattr(torch.optim if module == "torch.optim" else xo, short)
    gen = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(*shape, generator=gen)) for shape in ((8, 4), (4,))]
    extra = EXTRA.get(name, {})
    base = cls(ps, **extra).defaults
    hyper = {k: _tensor(base[k]) for k in TENSOR_KEYS if k in base and base[k] is not None}
    while True:
        try:
            return cls(ps, **extra, **hyper), ps
        except ValueError as exc:  # "<key> as a Tensor is not supported ...": that key a float
            bad = [k for k in hyper if str(exc).startswith(f"{k} as a Tensor")]
            if not bad:
                raise
            hyper.pop(bad[0])


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


def run(name: str, kind: str, steps: int, backend: str | None, fullgraph: bool = False,
        eager_first: bool = False) -> tuple[list[int], list[int], list[torch.Tensor]]:
    """Class ``name`` stepped ``steps`` times under scheduler ``kind``, compiled with ``backend``
    (None: eager), step 1 eager if ``eager_first``: the cumulative Dynamo graph and graph-break
    counts after each step, and the parameters at the end."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    opt, ps = build(name)
    step = opt.step if backend is None else torch.compile(type(opt).step.__get__(opt), backend=backend,
                                                          fullgraph=fullgraph)
    sched = scheduler(opt, kind)
    gen = torch.Generator().manual_seed(1)
    graphs, breaks = [], []
    for k in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen)
        (opt.step if k == 0 and eager_first else step)()
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": the
            warnings.simplefilter("ignore")  # compiled step is not the wrapper it watches
            sched.step()
        graphs.append(counters["stats"]["unique_graphs"])
        breaks.append(sum(counters["graph_break"].values()))
    return graphs, breaks, [p.detach().clone() for p in ps]


def _fullgraph(name: str, kind: str, steps: int, backend: str) -> tuple[str, str]:
    """Whether ``fullgraph=True`` runs from step 1, or only after an eager step 1; and why not."""
    note = ""
    for eager_first, answer in ((False, "yes"), (True, "after an eager step 1")):
        try:
            run(name, kind, steps, backend, True, eager_first)
            return answer, note
        except Exception as exc:  # the reason Dynamo gives, in a line
            note = note or " ".join(str(exc).split())[:120]
    return "no", note


def check(name: str, kind: str = "onecycle", steps: int = 5, backend: str = "inductor",
          fullgraph: bool = True) -> Row:
    """One row of the table: class ``name`` under scheduler ``kind`` for ``steps`` steps."""
    g, b, _ = run(name, kind, steps, backend)
    fg, note = _fullgraph(name, kind, steps, backend) if fullgraph else ("—", "")
    return Row(name, (g[0], g[1] - g[0]), g[-1] - g[1], (b[0], b[-1] - b[0]), fg, note)


def table(rows: list[Row]) -> str:
    """The markdown table of docs/optim.md."""
    out = ["| class | graphs at step 1, 2 | recompiles after | breaks at step 1, later | fullgraph=True |",
           "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.name} | {r.graphs[0]}, {r.graphs[1]} | {r.recompiles} "
                   f"| {r.breaks[0]}, {r.breaks[1]} | {r.fullgraph} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("classes", nargs="*", default=[*CLASSES, *ANCHORS])
    ap.add_argument("--scheduler", default="onecycle", choices=("onecycle", "lambda", "cosine"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--no-fullgraph", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in a.classes:
        rows.append(check(name, a.scheduler, a.steps, a.backend, not a.no_fullgraph))
        print(rows[-1], flush=True)  # the note: why fullgraph=True fails
    print(table(rows))


if __name__ == "__main__":
    main()
