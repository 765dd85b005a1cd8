"""Does ``torch.compile(opt.step)`` compile once for a whole run?  One row per torch class.

``python docs/scripts/compile_check.py [CLASS ...] [--steps N] [--backend inductor|eager]
[--no-fullgraph] [--dynamic]`` builds each class on a tiny model (an 8 × 4 matrix and a 4-vector, float32,
CPU, one thread) with tensor hyper-parameters (``lr`` and, where the class takes them,
``momentum``, ``betas``, ``weight_decay`` and the AdamW fallback's ones: 1-element tensors, as
torch.optim's ``capturable`` convention), compiles its step, runs N steps (default 5) under a
scheduler and prints the docs/optim.md table:

- ``from step 1: graphs, breaks``: Dynamo graphs made and graph breaks met by the N steps of a
  run compiled from its first step (which creates the state: in ``_init_group``, which Dynamo
  runs eagerly, as torch.optim's classes do; 1, 0: one graph for the whole run);
- ``steady: graphs, breaks``: the same for the compiled steps after an eager first step (1, 0:
  one graph, no break), under ``LambdaLR`` (``lr`` filled in place each step);
- ``recompiles: LambdaLR, OneCycleLR, its dynamic=True``: graphs made after the first compiled
  step of that run, of the same run under ``OneCycleLR`` cycling ``momentum`` / ``betas[0]``
  (which it writes back as a Python float: Dynamo specializes on the first one, then makes it
  a graph input), and of that run compiled with ``dynamic=True`` (floats inputs from the start);
- ``fullgraph=True``: whether ``torch.compile(step, fullgraph=True)`` runs from step 1, only
  after an eager step 1, or not at all.

``--dynamic`` prints only the ``OneCycleLR`` run with ``dynamic=True`` (step 1 eager): the
cumulative graph and break counts after each step.  Run it one class per process with
``--backend inductor``: Inductor specializes floats that the ``eager`` backend keeps as graph
inputs, and ``aot_eager`` others than Inductor does (see docs/optim.md); in one process a class
run after another may count a recompile that a fresh process does not (AdamW after AdamNMF
did; torch 2.13).

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
         "Shampoo": {"precondition_every": 2}, "SGD": {"momentum": 0.9}, "torch.optim.SGD": {"momentum": 0.9},
         "ExponentiatedGradient": {"mirror": "hypentropy"}}
ANCHORS = ("torch.optim.AdamW", "torch.optim.SGD")  # torch's own classes, the same run
CLASSES = [c for c in torch_optim.__all__
           if c != "XpmatOptimizer" and isinstance(getattr(torch_optim, c), type)]  # not class_for
TENSOR_KEYS = ("lr", "momentum", "betas", "weight_decay", "adamw_betas", "adamw_weight_decay")


class Row(NamedTuple):
    name: str
    first: tuple[int, int]  # (graphs, breaks) of a run compiled from step 1
    steady: tuple[int, int]  # (graphs, breaks) of the compiled steps after an eager step 1
    recompiles: tuple[int, int, int]  # graphs after the first compiled step: LambdaLR, OneCycleLR,
    # OneCycleLR with dynamic=True (-1: that run fails)
    fullgraph: str  # "yes", "after an eager step 1", "no" or "—" (not tried)
    note: str


def _tensor(v: Any) -> Any:
    if isinstance(v, tuple):
        return tuple(e if e is None else torch.tensor(float(e)) for e in v)
    return torch.tensor(float(v))


def build(name: str, seed: int = 0, tensors: bool = True) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
    """Class ``name`` (of :mod:`xpmat.optim`, or ``torch.optim.<name>``) on an 8 × 4 matrix and a
    4-vector, its scheduler-moved hyper-parameters 1-element tensors (floats where it refuses
    a tensor: a method whose structure depends on the value); all floats unless ``tensors``."""
    module, _, short = name.rpartition(".")
    cls = getattr(torch.optim if module == "torch.optim" else xo, short)
    gen = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(*shape, generator=gen)) for shape in ((8, 4), (4,))]
    extra = EXTRA.get(name, {})
    base = cls(ps, **extra).defaults
    hyper = {k: _tensor(base[k]) for k in TENSOR_KEYS if k in base and base[k] is not None and tensors}
    while True:
        try:
            return cls(ps, **{**extra, **hyper}), ps
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
        eager_first: bool = False, tensors: bool = True, dynamic: bool | None = None,
        ) -> tuple[list[int], list[int], list[torch.Tensor]]:
    """Class ``name`` stepped ``steps`` times under scheduler ``kind``, compiled with ``backend``
    (None: eager; ``fullgraph``, ``dynamic`` as ``torch.compile``'s), step 1 eager if
    ``eager_first``, float hyper-parameters unless ``tensors``:
    the cumulative Dynamo graph and graph-break counts after each step, and the parameters."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    opt, ps = build(name, tensors=tensors)
    step = opt.step if backend is None else torch.compile(type(opt).step.__get__(opt), backend=backend,
                                                          fullgraph=fullgraph, dynamic=dynamic)
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


def check(name: str, steps: int = 5, backend: str = "inductor", fullgraph: bool = True) -> Row:
    """One row of the table (see the module doc) for class ``name``."""
    g1, b1, _ = run(name, "lambda", steps, backend)
    g, b, _ = run(name, "lambda", steps, backend, eager_first=True)
    gc, _, _ = run(name, "onecycle", steps, backend, eager_first=True)
    try:
        gd, _, _ = run(name, "onecycle", steps, backend, eager_first=True, dynamic=True)
        dyn, note = gd[-1] - gd[1], ""
    except Exception as exc:  # Dynamo's reason, in a line
        dyn, note = -1, "dynamic=True: " + " ".join(str(exc).split())[:120]
    fg, why = _fullgraph(name, "lambda", steps, backend) if fullgraph else ("—", "")
    return Row(name, (g1[-1], b1[-1]), (g[1], b[-1]), (g[-1] - g[1], gc[-1] - gc[1], dyn), fg, note or why)


def table(rows: list[Row]) -> str:
    """The markdown table of docs/optim.md."""
    out = ["| class | from step 1: graphs, breaks | steady: graphs, breaks | recompiles: LambdaLR, "
           "OneCycleLR, its dynamic=True | fullgraph=True |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.name} | {r.first[0]}, {r.first[1]} | {r.steady[0]}, {r.steady[1]} "
                   f"| {', '.join(str(n) if n >= 0 else 'fails' for n in r.recompiles)} | {r.fullgraph} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("classes", nargs="*", default=[*CLASSES, *ANCHORS])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--no-fullgraph", action="store_true")
    ap.add_argument("--dynamic", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.dynamic:
        for name in a.classes:
            graphs, breaks, _ = run(name, "onecycle", a.steps, a.backend, eager_first=True, dynamic=True)
            print(f"{name}: graphs {graphs}, breaks {breaks}", flush=True)
        return
    rows = []
    for name in a.classes:
        rows.append(check(name, a.steps, a.backend, not a.no_fullgraph))
        print(rows[-1], flush=True)  # the note: why fullgraph=True fails
    print(table(rows))


if __name__ == "__main__":
    main()
