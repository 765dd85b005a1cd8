"""The asv suite covers every public primitive, and its README table lists each one.

A new name in ``xpmat.__all__`` needs a benchmark beside its anchor in
``asv_benchmarks/benchmarks/`` and a row in the coverage table of ``asv_benchmarks/README.md``.
Optimizers need nothing: ``bench_optim_steps.OptimizerStep`` reads ``xpmat.optim.REGISTRY``.
"""

import re
from pathlib import Path

import pytest

import xpmat

ROOT = Path(__file__).resolve().parents[1] / "asv_benchmarks"
BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.skipif(not BENCH.is_dir(), reason="no asv_benchmarks/ (installed package)")


def _sources():
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(BENCH.glob("bench_*.py")))


@pytest.mark.parametrize("name", xpmat.__all__)
def test_every_public_name_is_benchmarked(name):
    assert re.search(rf"\b{name}\(", _sources()), f"no asv benchmark calls xpmat.{name}"


@pytest.mark.parametrize("name", xpmat.__all__)
def test_every_public_name_is_in_the_readme_table(name):
    rows = [line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
            if line.startswith(f"| `{name}` |")]
    assert rows, f"asv_benchmarks/README.md: no coverage row for {name}"


def test_optimizer_steps_read_the_registry():
    src = (BENCH / "bench_optim_steps.py").read_text(encoding="utf-8")
    assert "METHODS = sorted(REGISTRY)" in src
