"""Griffe extension: the Sphinx markup of docstrings, rendered in the API reference.

Roles: a docstring may say ``:func:`xpmat.msign```, ``:mod:`xpmat.optim.muon``` or, relative to its
own module (or class, for ``:meth:`` / ``:attr:``), ``:func:`update```; ``~`` shows the last
component only.  Each becomes an *optional* mkdocs-autorefs cross-reference: a link where the
target has an API entry, plain code otherwise (never raw ``:func:`` text, never a broken link).

Display math: ``.. math:: formula`` (continued on more indented lines) becomes a ``$$`` block
that MathJax typesets.
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:py:)?(func|meth|class|mod|data|attr|obj|exc|const):`(~?)([^`]+)`")
_OWN_MEMBER = {"meth", "attr"}
MATH = re.compile(r"^([ \t]*)\.\. math::[ \t]*(.*)\n((?:\1[ \t]+\S.*(?:\n|$))*)", re.M)


def _identifier(kind: str, target: str, obj) -> str:
    target = target.rstrip("()")
    if target.startswith("xpmat") or target.split(".")[0] in {"torch", "numpy", "scipy"}:
        return target
    if kind in _OWN_MEMBER and obj.is_class:
        return f"{obj.path}.{target}"
    return f"{obj.module.path}.{target}"


def convert(text: str, obj) -> str:
    """``text`` with every Sphinx role replaced by an optional autorefs reference."""

    def link(match: re.Match) -> str:
        kind, short, target = match.groups()
        title = target.rsplit(".", 1)[-1] if short else target
        ident = html.escape(_identifier(kind, target, obj), quote=True)
        return f'<autoref identifier="{ident}" optional><code>{html.escape(title)}</code></autoref>'

    return ROLE.sub(link, text)


def _display_math(match: re.Match) -> str:
    indent, first, rest = match.groups()
    lines = [line.strip() for line in [first, *rest.splitlines()] if line.strip()]
    return "".join(f"{indent}{line}\n" for line in ["$$", *lines, "$$"])


class SphinxMarkup(griffe.Extension):
    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = convert(MATH.sub(_display_math, obj.docstring.value), obj)
