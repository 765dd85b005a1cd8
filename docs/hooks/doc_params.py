"""Griffe extension: the torch classes and their shared parameter paragraphs in the API reference.

The torch classes are built at run time from each method's ``SPEC``
(``xpmat.optim._spec.MethodSpec``; ``torch_optim.class_for``), so griffe, which reads the
source, finds no class statement for them.  This extension adds them to the module
``xpmat.optim.torch_optim`` from the specs, each with the docstring ``help()`` shows and its
``__init__`` signature, after the module's own members.  It imports ``xpmat.optim._catalog``
from the package being documented (the specs; no torch).

A docstring names a shared paragraph by a line ``%(name)s`` (SciPy's ``doccer`` pattern,
``xpmat.optim._docs``): every docstring griffe reads is filled with the same ``fill_doc`` and
``PARAMS``.  It runs before ``sphinx_markup`` (mkdocs.yml lists it first), so the filled text's
roles become links too.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import griffe

CATALOG = "xpmat.optim.torch_optim"


def _xpmat_optim(mod):
    """``(fill_doc, SPECS)`` of the package that ``mod`` belongs to (its ``src`` put first on
    ``sys.path``)."""
    src = str(Path(mod.package.filepath).parent.parent)
    if src not in sys.path:
        sys.path.insert(0, src)
    docs = importlib.import_module("xpmat.optim._docs")
    return docs.fill_doc, importlib.import_module("xpmat.optim._catalog").SPECS


def fill(text: str, obj) -> str:
    """``text`` (a docstring of ``obj``) with its ``%(name)s`` lines filled; unchanged without."""
    if "%(" not in text:
        return text
    return _xpmat_optim(obj)[0](text)


def _parameters(spec) -> griffe.Parameters:
    kinds = {"POSITIONAL_OR_KEYWORD": griffe.ParameterKind.positional_or_keyword,
             "KEYWORD_ONLY": griffe.ParameterKind.keyword_only,
             "VAR_KEYWORD": griffe.ParameterKind.var_keyword}
    out = []
    for p in spec.signature().parameters.values():
        default = None if p.default is p.empty else repr(p.default)
        annotation = None if p.annotation is p.empty else p.annotation
        out.append(griffe.Parameter(p.name, kind=kinds[p.kind.name], default=default, annotation=annotation))
    return griffe.Parameters(*out)


def add_catalog_classes(mod) -> None:
    """The classes of ``torch_optim`` from the specs, as griffe objects of ``mod``."""
    fill_doc, specs = _xpmat_optim(mod)
    last = len(mod.lines)  # after the module's own members (members_order: source)
    for i, spec in enumerate(specs, start=1):
        base = next((s.class_name for s in specs if s.name == spec.parent), "XpmatOptimizer")
        cls = griffe.Class(spec.class_name, lineno=last + i, endlineno=last + i, bases=[base])
        cls.docstring = griffe.Docstring(fill_doc(spec.class_doc()).strip("\n"), parent=cls)
        init = griffe.Function("__init__", lineno=last + i, endlineno=last + i, parameters=_parameters(spec),
                               returns="None")
        cls.set_member("__init__", init)
        mod.set_member(spec.class_name, cls)


class DocParams(griffe.Extension):
    def on_module_members(self, *, mod, **kwargs) -> None:
        if mod.path == CATALOG:
            add_catalog_classes(mod)

    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fill(obj.docstring.value, obj)
