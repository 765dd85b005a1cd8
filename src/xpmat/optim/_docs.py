"""The parameter paragraphs several torch classes share, written once (SciPy's ``doccer`` pattern).

A torch class's docstring (written in its method's ``SPEC``, :mod:`xpmat.optim._spec`) names
shared paragraphs by a line of placeholders (``%(schedule)s %(state_dtype)s %(maximize)s``),
usually in its ``Parameters`` section; :func:`fill_doc` puts the paragraphs of :data:`PARAMS`
there, one after the other, at the line's indentation.  Two readers see the filled text:

* ``help(cls)`` and ``inspect.getdoc(cls)``: ``XpmatOptimizer.__init_subclass__`` fills
  ``cls.__doc__`` when the class is created;
* the API reference: griffe reads the source, not ``__doc__``, so the griffe extension
  ``docs/hooks/doc_params.py`` builds the classes' entries from the specs and fills them with
  this same :func:`fill_doc` (``tests/test_docs.py`` checks that both give the same text).

Each paragraph is a numpydoc entry (``name : type`` and its indented description) that stands
on its own: a class's ``help()`` never says "as in another class" for these.  This module
imports nothing (no torch).
"""

from __future__ import annotations

import re

__all__ = ["PARAMS", "fill_doc"]

PARAMS: dict[str, str] = {
    "schedule": """\
schedule : float >= 0
    Multiplies ``lr`` (and the decay); with torch, schedule ``lr`` instead.""",
    # the methods whose decay is added to the gradient (or that have none)
    "schedule_lr_only": """\
schedule : float >= 0
    Multiplies ``lr``; with torch, schedule ``lr`` instead.""",
    "state_dtype": """\
state_dtype : dtype or name, optional
    Optimizer state dtype (default: the parameter's; float32 for bf16 / fp16 ones).""",
    "maximize": """\
maximize : bool
    Ascend instead of descend.""",
    # the matrix methods (``matrix_only``): the four arguments of their AdamW fallback
    "adamw_fallback": """\
adamw_lr_ratio, adamw_betas, adamw_eps, adamw_weight_decay
    The AdamW fallback of parameters with ``ndim < 2`` (and of groups with
    ``algorithm="adamw"``): learning rate ``lr × adamw_lr_ratio``, then :class:`AdamW`'s
    ``betas``, ``eps``, ``weight_decay``.""",
    # PowerSGD and PowerSGD+: the update (a literal block, then a sentence) and their entries but
    # ``restart_every`` (the one they word differently; PowerSGD lists it between the two)
    "powersgd_update": """\
    Δ = G + e;  P̃, Q = PowerIter1(Δ; Q)  (PowerSGD+: SVD when t mod τ = 0, t from 0);  Δ̂ = P̃ Qᵀ
    e ← Δ − Δ̂;  m ← μ m + Δ̂;  X ← X − s η m − s η λ X     (base="adamw": Adam on Δ̂)

1-D parameters go to AdamW.""",
    "powersgd_params": """\
lr : float >= 0 or 1-element tensor
    η, the learning rate.
momentum : float in [0, 1) or 1-element tensor
    μ of eq. (7c) (``base="sgd"``).
rank : int >= 1 or float in (0, 1]
    r of the compression: absolute, or a fraction of ``min(m, n)`` (rounded up); capped
    at ``min(m, n)`` per matrix (an int that fits no matrix is a ``ValueError``).
rank_multiple_of : int >= 1
    Round the rank up to a multiple of this (before the cap).""",
    "powersgd_compression": """\
svd : {"full", "randomized"}
    The restart's SVD (``"randomized"``: :func:`xpmat.randomized_svd` seeded ``seed + t``).
base : {"sgd", "adamw"}
    What consumes the compressed ``Δ̂``: heavy-ball momentum (eq. 7c) or Adam.
betas, eps
    Adam's, for ``base="adamw"`` (the torch class then has no ``momentum``; with
    ``base="sgd"`` no ``betas`` / ``eps``).
weight_decay : float >= 0 or 1-element tensor
    λ, decoupled (times ``s η``).
orthogonalize : {"auto", "householder", "cholesky_qr2"}
    How the power iteration's ``P`` is orthonormalized (:func:`xpmat.orthonormalize`).
seed : int >= 0
    The initial ``Q`` (parameter ``i`` from ``seed + i``).""",
}

_LINE = re.compile(r"^([ \t]*)((?:%\(\w+\)s[ \t]*)+)$", re.M)  # a line of placeholders only
_NAME = re.compile(r"%\((\w+)\)s")


def fill_doc(doc: str, params: dict[str, str] | None = None) -> str:
    """``doc`` with each line of placeholders ``%(name)s`` (one, or several separated by spaces)
    replaced by the paragraphs ``params[name]`` (default :data:`PARAMS`) in that order, every
    line of them indented as the placeholder line was.

    Only lines that hold placeholders and nothing else are filled: other ``%`` and ``{}`` text
    is left alone (no ``%``-formatting of the whole docstring).  An unknown name raises
    ``KeyError``, so a misspelt placeholder fails when the class is created, not in ``help()``.
    """
    table = PARAMS if params is None else params

    def paragraphs(match: re.Match) -> str:
        indent, names = match.group(1), _NAME.findall(match.group(2))
        unknown = [n for n in names if n not in table]
        if unknown:
            raise KeyError(f"docstring placeholder %({unknown[0]})s: no such paragraph in "
                           f"xpmat.optim._docs.PARAMS ({', '.join(sorted(table))})")
        lines = "\n".join(table[n] for n in names).splitlines()
        return "\n".join(indent + line if line else line for line in lines)

    return _LINE.sub(paragraphs, doc)
