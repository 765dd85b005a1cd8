"""Every ``skip_xp_backends`` / ``xfail_xp_backends`` reason also stands (word for word) in the
``backends/<lib>.md`` page of each backend it names (the reason is documentation)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ALL_BACKENDS

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "numpy": "numpy.md", "array_api_strict": "array-api-strict.md", "cupy": "cupy.md",
    "torch": "torch-cpu.md", "torch:cuda": "torch-cuda.md", "jax": "jax.md", "dask": "dask.md",
}


def _reason(node: ast.Call, constants: dict[str, str]) -> str:
    """The ``reason=`` of a marker call: a string, or a module-level string constant's name."""
    value = next((k.value for k in node.keywords if k.arg == "reason"), None)
    if isinstance(value, ast.Constant):
        return value.value
    if isinstance(value, ast.Name):
        return constants.get(value.id, "")
    return ""


def _string_constants(tree: ast.Module) -> dict[str, str]:
    return {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
            and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
            for t in n.targets if isinstance(t, ast.Name)}


def _markers():
    """Every marker call in the test modules and in conftest (whose reason constants the
    modules import)."""
    shared = _string_constants(ast.parse((ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")))
    for path in [ROOT / "tests" / "conftest.py", *sorted((ROOT / "tests").rglob("test_*.py"))]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {**shared, **_string_constants(tree)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
                    "skip_xp_backends", "xfail_xp_backends"):
                names = [a.value for a in node.args if isinstance(a, ast.Constant)]
                for name in names:
                    yield pytest.param(name, _reason(node, constants), id=f"{path.stem}:{node.lineno}:{name}")


@pytest.mark.parametrize(("name", "reason"), list(_markers()))
def test_marker_reason_is_in_the_backend_page(name, reason):
    assert reason, "a skip/xfail marker needs a reason (a string or a module-level constant)"
    if not any(b == name or b.split(":")[0] == name for b in ALL_BACKENDS):
        pytest.skip(f"{name} is not in the test matrix (yet)")
    page = ROOT / "backends" / PAGES[name.split(":readonly")[0]]
    text = " ".join(page.read_text(encoding="utf-8").split())  # line breaks of the Markdown
    assert " ".join(reason.split()) in text, f"{page.name} does not say: {reason!r}"
