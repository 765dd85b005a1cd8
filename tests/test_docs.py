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
