"""The asv suite covers every public primitive, in the file of its module, with one framework.

A new name in ``xpmat.__all__`` needs a benchmark beside its anchor in the benchmark file of the
module that defines it (``bench_<module>.py`` in ``asv_benchmarks/benchmarks/``) and a row in the
coverage table of ``asv_benchmarks/README.md`` naming that file.  Optimizers need nothing:
``bench_optim_steps.OptimizerStep`` reads ``xpmat.optim.REGISTRY``.  The framework (backends,
``SkipNotImplemented``, the ``Benchmark`` base and its mixins, input and error helpers) is
``common.py``'s alone: no file defines a function or class that another file defines too.
"""

import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import xpmat

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "asv_benchmarks"
BENCH = ROOT / "benchmarks"
SRC = REPO / "src" / "xpmat"

pytestmark = pytest.mark.skipif(not BENCH.is_dir(), reason="no asv_benchmarks/ (installed package)")


def _files():
    return sorted(BENCH.glob("bench_*.py"))


def _sources():
    return "\n".join(p.read_text(encoding="utf-8") for p in _files())


def _bench_file(name):
    """``bench_<module>.py`` for the module that defines ``xpmat.<name>``."""
    module = getattr(xpmat, name).__module__  # e.g. "xpmat.kron"
    return BENCH / f"bench_{module.rsplit('.', 1)[-1]}.py"


@pytest.mark.parametrize("name", xpmat.__all__)
def test_every_public_name_is_benchmarked(name):
    assert re.search(rf"\b{name}\(", _sources()), f"no asv benchmark calls xpmat.{name}"


@pytest.mark.parametrize("name", xpmat.__all__)
def test_every_public_name_is_benchmarked_in_the_file_of_its_module(name):
    path = _bench_file(name)
    assert path.is_file(), f"xpmat.{name}: no {path.name} for {getattr(xpmat, name).__module__}"
    assert re.search(rf"\b{name}\(", path.read_text(encoding="utf-8")), (
        f"{path.name} (the file of {getattr(xpmat, name).__module__}) does not call {name}")


@pytest.mark.parametrize("name", xpmat.__all__)
def test_every_public_name_is_in_the_readme_table(name):
    rows = [line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
            if line.startswith(f"| `{name}` |")]
    assert rows, f"asv_benchmarks/README.md: no coverage row for {name}"
    stem = _bench_file(name).stem
    assert any(f"({stem})" in row for row in rows), f"README row of {name} does not name {stem}"


def _source_module(path):
    """The source file or package a benchmark file times (``None``: no such module)."""
    stem = path.stem.removeprefix("bench_")
    if stem == "optim_steps":  # every registered method's step: xpmat.optim.REGISTRY
        return SRC / "optim" / "__init__.py"
    candidates = [SRC / f"{stem}.py", SRC / f"_{stem}.py", SRC / stem / "__init__.py",
                  SRC / f"_{stem}" / "__init__.py"]
    if stem.startswith("optim_"):
        candidates.append(SRC / "optim" / f"{stem.removeprefix('optim_')}.py")
    return next((c for c in candidates if c.is_file()), None)


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_one_file_per_source_module(path):
    assert _source_module(path) is not None, (
        f"{path.name} names no module of src/xpmat (bench_<module>.py, bench_optim_<method>.py)")


def _top_level_names(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]


def test_nothing_is_copied_between_files():
    where = defaultdict(list)
    for path in [BENCH / "common.py", *_files()]:
        for name in _top_level_names(path):
            where[name].append(path.name)
    twice = {name: files for name, files in where.items() if len(files) > 1}
    assert not twice, f"defined in more than one benchmark file (put it in common.py): {twice}"
    for path in _files():
        text = path.read_text(encoding="utf-8")
        assert "SkipNotImplemented =" not in text and "import SkipNotImplemented" not in text, (
            f"{path.name}: SkipNotImplemented comes from common")


def test_optimizer_steps_read_the_registry():
    src = (BENCH / "bench_optim_steps.py").read_text(encoding="utf-8")
    assert "METHODS = sorted(REGISTRY)" in src


def test_the_framework_holds_no_benchmark(monkeypatch):
    """asv finds benchmarks only in the bench files' own classes: the abstract ``Benchmark`` and
    its mixins, imported into every file, add none (a mixin that stopped being abstract would
    add ``bench_x.TimeMixin.time_ours`` to every file that imports it)."""
    discovery = pytest.importorskip("asv_runner.discovery")
    monkeypatch.setenv("XPMAT_BENCH_PREIMPORT", "0")
    monkeypatch.setenv("XPMAT_BENCH_FAST", "1")
    monkeypatch.syspath_prepend(str(ROOT))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    names = [b.name for b in discovery.disc_benchmarks(str(BENCH))]
    assert names
    framework = {"Benchmark", "TimeMixin", "MemoryMixin", "TrackMixin"}
    leaked = [n for n in names if n.startswith("common.") or n.split(".")[1] in framework]
    assert not leaked, leaked
    files = {n.split(".")[0] for n in names}
    assert files == {p.stem for p in _files()}, "every bench file holds benchmarks"
