"""``torch.compile`` of the torch classes' step (docs/optim.md, "torch.compile"): under a
scheduler that moves the tensor hyper-parameters every step, the compiled step makes its graphs
in the first two steps (state creation, then the first step with state) and none after, meets no
more graph breaks than the docs table says, and equals the eager run.

The table is printed by ``docs/scripts/compile_check.py`` (every class); this module runs the
script's core on three classes with Dynamo's ``eager`` backend (the same graphs, breaks and
recompiles as Inductor, without its code generation), counted by
``torch._dynamo.utils.counters``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def _script():
    path = ROOT / "docs" / "scripts" / "compile_check.py"
    spec = importlib.util.spec_from_file_location("compile_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docs_table() -> dict[str, tuple[int, int, str]]:
    """``class -> (breaks at step 1, breaks later, fullgraph)`` from docs/optim.md's table."""
    text = (ROOT / "docs" / "optim.md").read_text()
    rows = re.findall(r"^\| `?(\w+)`? \| \d+, \d+ \| \d+ \| (\d+), (\d+) \| ([^|]+) \|$", text, re.M)
    return {name: (int(b1), int(b2), fg.strip()) for name, b1, b2, fg in rows}


cc = _script()
TABLE = _docs_table()


def test_docs_table_lists_every_class():
    from xpmat.optim import torch_optim

    assert sorted(TABLE) == sorted(c for c in torch_optim.__all__ if c != "XpmatOptimizer")


@pytest.mark.slow  # 3–8 s each on 2 shared CPU cores (Dynamo traces the step twice)
@pytest.mark.parametrize(("name", "kind"), [("AdamW", "onecycle"), ("SGD", "lambda"), ("Muon", "cosine")])
def test_compiles_once_under_a_scheduler(name, kind):
    first, later, fullgraph = TABLE[name]
    graphs, breaks, got = cc.run(name, kind, 4, "eager", fullgraph=fullgraph == "yes")
    *_, want = cc.run(name, kind, 4, None)
    torch._dynamo.reset()
    assert graphs[-1] == graphs[1], f"recompiled after step 2: graphs per step {graphs}"
    assert breaks[0] <= first and breaks[-1] - breaks[0] <= later, breaks
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
