"""``torch.compile`` of the torch classes' step (docs/optim.md, "torch.compile"): under a
scheduler that moves the tensor hyper-parameters every step, the compiled step (after an eager
first step, which creates the state) makes one graph and no other, meets no more graph breaks
than the docs table says, and equals the eager run.

The table is printed by ``docs/scripts/compile_check.py`` (every class); this module checks the
rows of three classes with the script's core and Dynamo's ``eager`` backend (the graphs, breaks
and recompiles of Inductor, without its code generation), counted by
``torch._dynamo.utils.counters``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import NamedTuple

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def _script():
    path = ROOT / "docs" / "scripts" / "compile_check.py"
    spec = importlib.util.spec_from_file_location("compile_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Documented(NamedTuple):
    """A row of docs/optim.md's table (``docs/scripts/compile_check.py``'s ``table``)."""

    first: tuple[int, int]
    steady: tuple[int, int]
    recompiles: tuple[int, int, int]
    fullgraph: str


def _docs_table() -> dict[str, Documented]:
    """``class -> row`` of docs/optim.md's ``torch.compile`` table (xpmat's classes)."""
    text = (ROOT / "docs" / "optim.md").read_text()
    pair = r"(\d+), (\d+)"
    rows = re.findall(rf"^\| (\w+) \| {pair} \| {pair} \| {pair}, (\d+|fails) \| ([^|]+) \|$", text, re.M)
    return {r[0]: Documented((int(r[1]), int(r[2])), (int(r[3]), int(r[4])),
                             (int(r[5]), int(r[6]), -1 if r[7] == "fails" else int(r[7])), r[8].strip())
            for r in rows}


cc = _script()
TABLE = _docs_table()


def test_docs_table_lists_every_class():
    assert sorted(TABLE) == sorted(cc.CLASSES)


@pytest.mark.slow  # 5–8 s each on 2 shared CPU cores (Dynamo traces the step twice)
@pytest.mark.parametrize(("name", "kind"), [("AdamW", "onecycle"), ("SGD", "lambda"), ("Muon", "cosine")])
def test_compiles_once_under_a_scheduler(name, kind):
    """After an eager first step (it creates the state), the compiled step is one graph (with
    ``fullgraph=True`` where the table says so) and recompiles never: under LambdaLR and cosine
    annealing (tensor ``lr`` filled in place), and under OneCycleLR (its float momentum) with
    ``dynamic=True``; it equals the eager run."""
    row = TABLE[name]
    onecycle = kind == "onecycle"
    graphs, breaks, got = cc.run(name, kind, 4, "eager", fullgraph=row.fullgraph != "no", eager_first=True,
                                 dynamic=True if onecycle else None)
    *_, want = cc.run(name, kind, 4, None)
    torch._dynamo.reset()
    assert graphs[1] <= row.steady[0] and breaks[-1] <= row.steady[1], (graphs, breaks)
    assert graphs[-1] == graphs[1] and row.recompiles[2 if onecycle else 0] == 0, f"graphs per step {graphs}"
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.slow  # 3–5 s each on 2 shared CPU cores
@pytest.mark.parametrize(("name", "kind", "backend", "dynamic"), [("Dion", "lambda", "eager", None),
                                                                 ("Shampoo", "onecycle", "eager", True)])
def test_compiled_first_step_is_the_one_graph(name, kind, backend, dynamic):
    """Compiled from step 1 with ``fullgraph=True``: the state is made in ``_init_group``, which
    Dynamo runs eagerly (Dion's seeded host draws stay out of the graph), so the whole run is one
    graph with no break and no recompile at step 2 — Shampoo under ``OneCycleLR`` with
    ``dynamic=True`` too (its integer ``root`` stays static inside the refresh's ``torch.cond``,
    which runs at step 2); it equals the eager run."""
    graphs, breaks, got = cc.run(name, kind, 3, backend, fullgraph=True, dynamic=dynamic)
    *_, want = cc.run(name, kind, 3, None)
    torch._dynamo.reset()
    assert graphs == [1, 1, 1] and breaks == [0, 0, 0], (graphs, breaks)
    assert TABLE[name].first == (1, 0) and TABLE[name].fullgraph == "yes", TABLE[name]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_float_beta_stays_a_graph_input():
    """``adam_direction`` with a float β₁ (Shampoo's, LRE's grafting) compiled with
    ``dynamic=True`` by ``aot_eager``, whose AOTAutograd turns a float into a constant where it
    meets a tensor in an op that takes no tensor there (``β₁ ** t``, a ``lerp`` weight), as
    Inductor does: one graph for three values of β₁, equal to the eager results."""
    from array_api_compat import array_namespace
    from torch._dynamo.utils import counters

    from xpmat.optim.transforms import AdamState, adam_direction

    def direction(g, s, h):
        return adam_direction(g, s, array_namespace(g), betas=(h["b1"], 0.999), eps=1e-8)[0]

    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(direction, backend="aot_eager", dynamic=True)
    g, z = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    for t, b1 in enumerate((0.95, 0.9497, 0.9488)):
        s, h = AdamState(torch.tensor(float(t), dtype=torch.float64), z + 0.1, z + 0.2), {"b1": b1}
        torch.testing.assert_close(step(g, s, h), direction(g, s, h), rtol=1e-12, atol=0)
    graphs = counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert graphs == 1
