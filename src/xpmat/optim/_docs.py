"""The parameter paragraphs several torch classes share, written once (SciPy's ``doccer`` pattern).

A class docstring of :mod:`xpmat.optim.torch_optim` names a shared paragraph by a line
``%(name)s`` of its own in its ``Parameters`` section; :func:`fill_doc` puts the paragraph of
:data:`PARAMS` there, at the placeholder's indentation.  Two readers see the filled text:

* ``help(cls)`` and ``inspect.getdoc(cls)``: ``XpmatOptimizer.__init_subclass__`` fills
  ``cls.__doc__`` when the class is created;
* the API reference: griffe reads docstrings from the source, not ``__doc__``, so the griffe
  extension ``docs/hooks/doc_params.py`` fills them with this same :func:`fill_doc`
  (``tests/test_docs.py`` checks that both give the same text).

Each paragraph is a numpydoc entry (``name : type`` and its indented description) that stands
on its own: a class's ``help()`` never says "as in another class" for these.  This module
imports nothing, so the docs hook can load it by its path.
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
    # PowerSGD and PowerSGD+ (their entries but ``restart_every``, which sits between the two)
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

_PLACEHOLDER = re.compile(r"^([ \t]*)%\((\w+)\)s[ \t]*$", re.M)


def fill_doc(doc: str, params: dict[str, str] | None = None) -> str:
    """``doc`` with each line ``%(name)s`` replaced by ``params[name]`` (default
    :data:`PARAMS`), every line of it indented as the placeholder was.

    Only whole-line placeholders are filled: other ``%`` and ``{}`` text is left alone (no
    ``%``-formatting of the whole docstring).  An unknown name raises ``KeyError``, so a
    misspelt placeholder fails at import rather than reaching ``help()``.
    """
    table = PARAMS if params is None else params

    def paragraph(match: re.Match) -> str:
        indent, name = match.groups()
        if name not in table:
            raise KeyError(f"docstring placeholder %({name})s: no such paragraph in "
                           f"xpmat.optim._docs.PARAMS ({', '.join(sorted(table))})")
        return "\n".join(indent + line if line else line for line in table[name].splitlines())

    return _PLACEHOLDER.sub(paragraph, doc)
