"""Griffe extension: the shared parameter paragraphs of the torch classes, in the API reference.

A torch class's docstring names a shared paragraph by a line ``%(name)s`` (SciPy's ``doccer``
pattern, :mod:`xpmat.optim._docs`).  At run time ``XpmatOptimizer.__init_subclass__`` fills
``__doc__``, but griffe reads docstrings from the source and would show the placeholder.  This
extension fills them with the same ``fill_doc`` and ``PARAMS``, loaded from the ``_docs.py``
of the package being documented (by its path: no import of xpmat, nor torch, at docs build).
It runs before ``sphinx_markup`` (mkdocs.yml lists it first), so the filled text's roles become
links too.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import griffe


@cache
def _fill_doc(path: Path):
    spec = importlib.util.spec_from_file_location("_xpmat_optim_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill_doc


def fill(text: str, obj) -> str:
    """``text`` (a docstring of ``obj``) with its ``%(name)s`` lines filled; unchanged without."""
    if "%(" not in text:
        return text
    return _fill_doc(Path(obj.package.filepath).parent / "optim" / "_docs.py")(text)


class DocParams(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fill(obj.docstring.value, obj)
