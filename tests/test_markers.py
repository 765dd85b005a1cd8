"""Every ``skip_xp_backends`` / ``xfail_xp_backends`` reason also stands (word for word) in the
``backends/<lib>.md`` page of each backend it names (the reason is documentation)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "numpy": "numpy.md", "array_api_strict": "array-api-strict.md", "cupy": "cupy.md",
    "torch": "torch-cpu.md", "torch:cuda": "torch-cuda.md", "jax": "jax.md", "dask": "dask.md",
}


def _markers():
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
                    "skip_xp_backends", "xfail_xp_backends"):
                names = [a.value for a in node.args if isinstance(a, ast.Constant)]
                reason = next((k.value.value for k in node.keywords if k.arg == "reason"), "")
                for name in names:
                    yield pytest.param(name.split(":readonly")[0], reason,
                                       id=f"{path.stem}:{node.lineno}:{name}")


@pytest.mark.parametrize(("name", "reason"), list(_markers()))
def test_marker_reason_is_in_the_backend_page(name, reason):
    assert reason, "a skip/xfail marker needs a reason"
    page = ROOT / "backends" / PAGES[name]
    text = " ".join(page.read_text(encoding="utf-8").split())  # line breaks of the Markdown
    assert " ".join(reason.split()) in text, f"{page.name} does not say: {reason!r}"
