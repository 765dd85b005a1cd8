"""One spec per optimizer: what a method module declares once, and what is derived from it.

A method module (``xpmat/optim/sgd.py``, ...) declares ``SPEC = MethodSpec(...)``: its
hyper-parameters with their defaults (in the torch class's signature order), its documentation
(the class docstring's summary and its own parameter entries; the shared paragraphs of
:mod:`xpmat.optim._docs` are named by ``%(name)s`` lines, SciPy's ``doccer`` pattern), its
source for the docs table, and the facts the torch class needs (``matrix_only``,
``complex_as_real``, ...).  Everything else is derived from it:

* ``DEFAULTS`` of the module (:attr:`MethodSpec.defaults`, the same dict);
* the :data:`xpmat.optim.REGISTRY` entries and ``xpmat.optim.__all__``
  (:meth:`MethodSpec.infos`; ``xpmat.optim._catalog`` finds the modules by their ``SPEC``);
* the torch class of :mod:`xpmat.optim.torch_optim`: its explicit signature
  (:meth:`MethodSpec.signature`, seen by ``inspect.signature`` and ``help()``) and its
  docstring with every parameter (:meth:`MethodSpec.class_doc`);
* the rows of the methods table of docs/optim.md (:func:`methods_table`, checked by
  ``tests/test_optim_spec.py``).

Validation stays where both the functional core and the torch class run it: the core's
``transform`` checks its hyper-parameters (a ``ValueError`` naming the argument and range).

This module imports no torch (it is on the methods floor, docs/architecture.md).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FALLBACK_DEFAULTS", "NS_DEFAULTS", "MethodInfo", "MethodSpec", "insert_after", "methods_table"]

# The AdamW fallback of the matrix methods (their lr ratio is per method: ``fallback_lr_ratio``)
FALLBACK_DEFAULTS: dict[str, Any] = {"adamw_betas": (0.9, 0.95), "adamw_eps": 1e-8, "adamw_weight_decay": 0.0}

# The Newton–Schulz settings of the msign methods (Muon, Dion2, NorMuon, SteepestDescent), in
# signature order; compute_dtype "auto": bf16 where the device runs it natively (docs/optim.md)
NS_DEFAULTS: dict[str, Any] = {"ns_steps": 5, "ns_schedule": "polar_express", "ns_normalize": "fro",
                               "compute_dtype": "auto", "eps": 1e-7}

_TYPES = {bool: "bool", int: "int", float: "float", str: "str", tuple: "tuple[float, float]"}


@dataclass(frozen=True)
class MethodInfo:
    """One :data:`xpmat.optim.REGISTRY` entry: its functional core module, its torch class,
    demo settings (derived from a :class:`MethodSpec`, or written by hand for ``register``)."""

    name: str
    module: str  # functional core, e.g. "xpmat.optim.adamw"
    torch_class: str  # class name in xpmat.optim.torch_optim
    matrix_only: bool = False
    demo: dict[str, Any] = field(default_factory=dict)  # hyper-parameters for the digits MLP demo
    doc: str = ""
    spec: MethodSpec | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class MethodSpec:
    """What a method declares once (see the module doc).

    ``defaults`` lists the core's hyper-parameters in signature order, the first
    ``positional`` of them positional-or-keyword (torch's order), the rest keyword-only; the
    class adds ``maximize`` and, if ``matrix_only``, the AdamW fallback's four ``adamw_*``.
    ``types`` gives the annotations that the defaults do not show (``"int | None"``).
    ``parameters`` holds the numpydoc entries of the method's own parameters; ``params``,
    ``schedule``, ``state_dtype``, ``maximize`` and the fallback's entries are added.
    ``parent`` names the spec whose class this one's subclasses (PowerSGD+ of PowerSGD);
    ``also`` adds registry entries ``(name, demo, doc)`` that run the same class.
    """

    name: str  # registry name, and the param-group ``algorithm`` of a matrix method
    class_name: str  # the torch class
    module: str  # the functional core (the declaring module's ``__name__``)
    defaults: dict[str, Any]
    summary: str = field(repr=False)  # the class docstring's head: the math, what it equals
    parameters: str = field(repr=False)  # numpydoc entries of its own parameters
    title: str = ""  # the docs table's name (default: class_name)
    source: str = ""  # the docs table's source cell (Markdown references)
    doc: str = ""  # one line: the registry's and the demo's
    demo: dict[str, Any] = field(default_factory=dict)
    notes: str = field(default="", repr=False)  # the class docstring's Notes section
    positional: int = 1
    types: dict[str, str] = field(default_factory=dict)
    matrix_only: bool = False  # 1-D parameters (and algorithm="adamw" groups) go to AdamW
    fallback_lr_ratio: float = 0.1  # the default adamw_lr_ratio of a matrix method
    complex_as_real: bool = False  # complex parameters step as real views (elementwise methods)
    reuse_state: bool = False  # the core may overwrite its state's buffers (torch's in-place)
    decay_follows_lr: bool = True  # ``schedule`` multiplies the decay too (else lr only)
    renamed: dict[str, str] = field(default_factory=dict)  # old argument -> its new name
    parent: str = ""
    also: tuple[tuple[str, dict[str, Any], str], ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.class_name.isidentifier():
            raise ValueError(f"MethodSpec: name and class_name must be set, got {self.name!r}, "
                             f"{self.class_name!r}")
        if not 1 <= self.positional <= len(self.defaults) or next(iter(self.defaults), None) != "lr":
            raise ValueError(f"MethodSpec {self.name!r}: defaults must start with 'lr' and hold "
                             f"the {self.positional} positional arguments")
        unknown = set(self.types) - set(self.class_defaults())
        if unknown:
            raise ValueError(f"MethodSpec {self.name!r}: types of unknown arguments {sorted(unknown)}")

    def class_defaults(self) -> dict[str, Any]:
        """Every keyword argument of the torch class and its default, in signature order."""
        out = {**self.defaults, "maximize": False}
        if self.matrix_only:
            out.update(adamw_lr_ratio=self.fallback_lr_ratio, **FALLBACK_DEFAULTS)
        return out

    def annotation(self, name: str) -> str:
        """The annotation of argument ``name``: ``types`` or the type of its default."""
        default = self.class_defaults()[name]
        return self.types.get(name) or _TYPES.get(type(default), "Any")

    def signature(self) -> inspect.Signature:
        """The torch class's ``__init__`` signature: ``(self, params, lr, ..., *, ..., **kwargs)``."""
        P = inspect.Parameter
        out = [P("self", P.POSITIONAL_OR_KEYWORD), P("params", P.POSITIONAL_OR_KEYWORD, annotation="Any")]
        for i, (k, v) in enumerate(self.class_defaults().items()):
            kind = P.POSITIONAL_OR_KEYWORD if i < self.positional else P.KEYWORD_ONLY
            out.append(P(k, kind, default=v, annotation=self.annotation(k)))
        out.append(P("kwargs", P.VAR_KEYWORD, annotation="Any"))
        return inspect.Signature(out, return_annotation="None")

    def class_doc(self) -> str:
        """The torch class's docstring, its shared paragraphs as ``%(name)s`` placeholders
        (filled by :func:`xpmat.optim._docs.fill_doc` when the class is created)."""
        shared = ["schedule" if self.decay_follows_lr else "schedule_lr_only", "state_dtype", "maximize"]
        shared += ["adamw_fallback"] if self.matrix_only else []
        parts = [self.summary.strip("\n"), "", "Parameters", "----------",
                 "params : iterable of tensors or param-group dicts", self.parameters.strip("\n"),
                 " ".join(f"%({s})s" for s in shared)]
        if self.notes:
            parts += ["", "Notes", "-----", self.notes.strip("\n")]
        return "\n".join(parts) + "\n"

    def infos(self) -> list[MethodInfo]:
        """The registry entries: the method's, then those of ``also``."""
        first = MethodInfo(self.name, self.module, self.class_name, self.matrix_only, dict(self.demo),
                           self.doc, self)
        return [first] + [MethodInfo(n, self.module, self.class_name, self.matrix_only, dict(demo), doc, self)
                          for n, demo, doc in self.also]


def insert_after(defaults: dict[str, Any], key: str, **new: Any) -> dict[str, Any]:
    """A copy of ``defaults`` with the entries ``new`` right after ``key`` (a method's defaults
    built on another's, in signature order: NorMuon's ``beta2`` after Muon's ``nesterov``)."""
    out: dict[str, Any] = {}
    for k, v in defaults.items():
        out[k] = v
        if k == key:
            out.update(new)
    if key not in defaults:
        raise KeyError(f"insert_after: no argument {key!r} in the defaults")
    return out


def methods_table(specs: list[MethodSpec]) -> str:
    """The Markdown table of docs/optim.md: one row per torch class (PowerSGD+ shares
    PowerSGD's row), in ``specs`` order."""
    rows = ["| name | core module | torch class | source |", "|---|---|---|---|"]
    children = {s.parent: s for s in specs if s.parent}
    for s in specs:
        if s.parent:
            continue
        classes = ", ".join(f"`{c.class_name}`" for c in (s, children.get(s.name)) if c)
        rows.append(f"| {s.title or s.class_name} | `{s.module}` | {classes} | {s.source} |")
    return "\n".join(rows)
