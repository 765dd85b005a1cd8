"""MkDocs hooks: every asset of the site is served by the site itself (it works offline).

- MathJax 3 (``tex-chtml-full.js`` and its CHTML fonts) is copied from the ``mathjax``
  package that the ``django-static-mathjax`` wheel installs (the ``docs`` extra: a plain copy
  of the npm ``mathjax`` distribution, no Django needed) to ``assets/mathjax/``.
- ``assets/pygments.css`` colours the code blocks that Pygments highlighted at build time.
- In table cells, Python-Markdown keeps the ``\\|`` that escapes a ``|`` inside a code span;
  it is shown as ``|``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

MATHJAX_SCRIPT = "es5/tex-chtml-full.js"  # every TeX extension built in: nothing loaded later
MATHJAX_FONTS = "es5/output/chtml/fonts/woff-v2"
SITE_DIR = "assets/mathjax"
PYGMENTS_STYLE = "default"

_TABLE_CELL = re.compile(r"(<t[dh][^>]*>)(.*?)(</t[dh]>)", re.S)
_CODE = re.compile(r"<code>(.*?)</code>", re.S)


def mathjax_root() -> Path:
    """The MathJax distribution folder inside the installed ``mathjax`` package."""
    spec = importlib.util.find_spec("mathjax")
    root = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax" if spec else None
    if root is None or not (root / MATHJAX_SCRIPT).is_file():
        raise PluginError("the docs need MathJax from the 'django-static-mathjax' package: "
                          "pip install 'xpmat[docs]'")
    return root


def on_files(files: Files, config) -> Files:
    root = mathjax_root()
    sources = [root / MATHJAX_SCRIPT, *sorted((root / MATHJAX_FONTS).glob("*.woff"))]
    for src in sources:
        uri = f"{SITE_DIR}/{src.relative_to(root / 'es5').as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(src)))
    files.append(File.generated(config, "assets/pygments.css", content=_pygments_css()))
    return files


def _pygments_css() -> str:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(style=PYGMENTS_STYLE).get_style_defs(".highlight")


def _unescape_pipes(cell: re.Match) -> str:
    body = _CODE.sub(lambda code: "<code>" + code.group(1).replace("\\|", "|") + "</code>", cell.group(2))
    return cell.group(1) + body + cell.group(3)


def on_page_content(html: str, page, config, files) -> str:
    return _TABLE_CELL.sub(_unescape_pipes, html) if "\\|" in html else html
