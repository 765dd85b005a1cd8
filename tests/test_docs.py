"""Every ```python block in README.md and docs/*.md runs, standalone, in a fresh interpreter."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def _blocks():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for i, match in enumerate(FENCE.finditer(page.read_text())):
            yield pytest.param(match.group(1), id=f"{page.relative_to(ROOT)}#{i}")


BLOCKS = list(_blocks())


@pytest.mark.parametrize("code", BLOCKS if BLOCKS else [pytest.param("", marks=pytest.mark.skip(
    reason="no python blocks in the docs yet"))])
def test_doc_example_runs(code, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, f"example failed:\n{code}\n--- stderr ---\n{res.stderr[-3000:]}"


# Internal notes are not part of the project: user-facing text cites public sources instead
# (docs/writing-docs.md).  These are the notes' names and the words that pointed at them.
INTERNAL = re.compile(
    r"adaptive-learning-methods|powersgd-plus|lre-low-rank-eigenbasis|dion-vs-powersgd"
    r"|manifold-dual-gradient-descent|ERRATA|\bseeds?/|\b[Ss]eed\s+(?:documents?|sections?|notes?)\b"
    r"|\b[Ss]eed['’]s\b|\bSeed:|\b[Tt]he\s+seed\b")
USER_FACING = ["src", "docs", "README.md", "asv_benchmarks", "backends"]
TEXT_SUFFIXES = {".py", ".md", ".yml", ".yaml", ".json", ".js", ".txt", ".toml", ".cfg"}


def _user_facing_files():
    for name in USER_FACING:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        yield from (f for f in files if f.suffix in TEXT_SUFFIXES and "results" not in f.parts)


def test_no_internal_note_names_in_user_facing_text():
    found = []
    for f in _user_facing_files():
        text = f.read_text(errors="replace")
        found += [f"{f.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
                  for m in INTERNAL.finditer(text)]
    assert not found, "cite the public source (docs/references.md) instead:\n" + "\n".join(found)


def _load_hook(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sphinx_markup_becomes_links_and_math():
    pytest.importorskip("griffe", reason="the docs extra is not installed: pip install 'xpmat[docs]'")
    markup = _load_hook("sphinx_markup")

    class Obj:  # the two attributes the conversion reads from a griffe object
        path, is_class = "xpmat.optim.muon.update", False
        module = type("M", (), {"path": "xpmat.optim.muon"})

    text = markup.convert(":func:`~xpmat.msign` and :data:`DEFAULTS`", Obj)
    assert text == ('<autoref identifier="xpmat.msign" optional><code>msign</code></autoref> and '
                    '<autoref identifier="xpmat.optim.muon.DEFAULTS" optional><code>DEFAULTS</code>'
                    '</autoref>')
    doc = "Notes\n-----\n.. math:: a = b,\n          c = d\n\nafter"
    assert markup.MATH.sub(markup._display_math, doc) == "Notes\n-----\n$$\na = b,\nc = d\n$$\n\nafter"


def test_shared_parameter_paragraphs_in_help_and_api_page():
    """A torch class's docstring names shared parameter paragraphs by ``%(name)s`` lines (SciPy's
    doccer pattern): the class fills them for ``help()``, and griffe, which reads the source,
    gets the very same text and the class itself (built at run time from its method's spec)
    through the docs hook ``doc_params`` (else the API page would show neither)."""
    griffe = pytest.importorskip("griffe", reason="the docs extra is not installed: pip install "
                                 "'xpmat[docs]'")
    pytest.importorskip("torch")
    import inspect

    import xpmat.optim as xo
    from xpmat.optim import torch_optim

    hook = _load_hook("doc_params")
    static = griffe.load("xpmat.optim.torch_optim", search_paths=[str(ROOT / "src")])
    filled = griffe.load("xpmat.optim.torch_optim", search_paths=[str(ROOT / "src")],
                         extensions=griffe.load_extensions(hook.DocParams()))
    specs = list({id(i.spec): i.spec for i in xo.REGISTRY.values()}.values())
    names = [s.class_name for s in specs]
    assert sum("%(" in s.class_doc() for s in specs) >= 10  # the pattern is in use
    assert not set(names) & set(static.members)  # built at run time: griffe alone sees none
    for name in names:
        assert filled[name].docstring.value == inspect.getdoc(getattr(torch_optim, name)), name
        assert "%(" not in filled[name].docstring.value, name
        params = [p.name for p in filled[name].members["__init__"].parameters]
        assert params == list(inspect.signature(getattr(torch_optim, name).__init__).parameters), name
    with pytest.raises(KeyError, match="no_such_paragraph"):  # a misspelt name fails at import
        type("Bad", (xo.XpmatOptimizer,), {"__doc__": "Bad.\n\n    %(no_such_paragraph)s\n"})
