"""One spec per method (``xpmat.optim._spec``): a toy method module, written and imported here,
gets a registry entry and a working torch class from its ``SPEC`` alone (no file of the package
edited); every real spec gives its registry entry, class and row of the docs' methods table."""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import xpmat.optim as xo
from xpmat.optim._spec import MethodSpec, insert_after, methods_table

ROOT = Path(__file__).resolve().parents[1]
SPECS = list({id(i.spec): i.spec for i in xo.REGISTRY.values()}.values())  # every method's, in order

TOY = '''
"""A toy method: SGD with decay added to the gradient, d = g + λ w,  w ← w − s η d."""
from typing import Any

from xpmat.optim._base import check_common, resolve_hyper, step_size
from xpmat.optim._spec import MethodSpec
from xpmat.optim.transforms import add_decayed_weights, chain, scale_by_lr

SPEC = MethodSpec(
    name="toy_sgd", class_name="ToySGD", module=__name__,
    defaults={"lr": 0.1, "weight_decay": 0.0, "schedule": 1.0, "state_dtype": None},
    summary="Toy SGD over :mod:`toy_sgd`::\\n\\n    w ← w − s η (g + λ w)",
    parameters="lr : float >= 0\\nweight_decay : float >= 0\\n    λ, added to the gradient.",
    doc="toy SGD", demo={"lr": 0.05}, source="[a toy][toy]", matrix_only=MATRIX_ONLY,
    decay_follows_lr=False,
)
DEFAULTS: dict[str, Any] = SPEC.defaults


def transform(**hyper: Any):
    h = resolve_hyper(DEFAULTS, hyper, "toy_sgd")
    check_common(h)
    return chain(add_decayed_weights(h["weight_decay"]), scale_by_lr(step_size(h)))
'''


@pytest.fixture(params=[False, True], ids=["elementwise", "matrix_only"])
def toy(request, tmp_path, monkeypatch):
    """The toy module (importable as ``toy_sgd``), registered for the test and unregistered
    after it, so the public registry is left as it was."""
    (tmp_path / "toy_sgd.py").write_text(textwrap.dedent(TOY).replace("MATRIX_ONLY", str(request.param)))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("toy_sgd", None)
    mod = importlib.import_module("toy_sgd")
    before = dict(xo.REGISTRY)
    try:
        yield mod, xo.register(mod.SPEC)
    finally:
        xo.REGISTRY.clear()
        xo.REGISTRY.update(before)
        sys.modules.pop("toy_sgd", None)


def test_toy_spec_gives_registry_entry_and_torch_class(toy):
    torch = pytest.importorskip("torch")
    mod, info = toy
    assert xo.REGISTRY["toy_sgd"] is info and info.module == "toy_sgd" and xo.core("toy_sgd") is mod
    assert info.demo == {"lr": 0.05} and info.matrix_only == mod.SPEC.matrix_only
    cls = xo.torch_class("toy_sgd")
    assert cls.__name__ == "ToySGD" and issubclass(cls, xo.XpmatOptimizer) and cls.method is mod
    assert xo.torch_class("toy_sgd") is cls  # built once
    sig = inspect.signature(cls)
    fallback = ["adamw_lr_ratio", "adamw_betas", "adamw_eps", "adamw_weight_decay"][:4 * info.matrix_only]
    assert list(sig.parameters) == ["params", "lr", "weight_decay", "schedule", "state_dtype", "maximize",
                                    *fallback, "kwargs"]
    assert sig.parameters["lr"].default == 0.1
    assert sig.parameters["weight_decay"].kind is inspect.Parameter.KEYWORD_ONLY
    doc = inspect.getdoc(cls)
    assert "λ, added to the gradient." in doc and "Ascend instead of descend." in doc and "%(" not in doc
    assert ("AdamW fallback" in doc) == info.matrix_only
    with pytest.raises(TypeError, match="nesterov"):
        cls([torch.zeros(3, 2)], nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        cls([torch.zeros(3, 2)], lr=-1.0)
    # it trains: w ← w − η (g + λ w), against a float64 NumPy reference (1-D parameters: AdamW
    # when matrix_only, so a matrix here)
    gen = np.random.default_rng(0)
    w0, grads = gen.standard_normal((4, 3)), gen.standard_normal((3, 4, 3))
    w = torch.tensor(w0, requires_grad=True)
    opt = cls([w], lr=0.05, weight_decay=0.1)
    ref = w0.copy()
    for g in grads:
        w.grad = torch.tensor(g)
        opt.step()
        ref = ref - 0.05 * (g + 0.1 * ref)
    np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="already registered"):
        xo.register(mod.SPEC)


def test_every_spec_is_registered_with_its_class():
    torch_optim = pytest.importorskip("xpmat.optim.torch_optim")
    assert [s.module for s in SPECS] == sorted(s.module for s in SPECS)  # found in module-name order
    assert len(SPECS) >= 17
    for spec in SPECS:
        assert xo.REGISTRY[spec.name].spec is spec
        cls = xo.torch_class(spec.name)
        assert cls is getattr(torch_optim, spec.class_name) is getattr(xo, spec.class_name)
        assert cls.spec is spec and cls.algorithm == spec.name and cls.__module__ == "xpmat.optim.torch_optim"
        core = importlib.import_module(spec.module)
        assert core.DEFAULTS is (spec.defaults if not spec.parent else xo.REGISTRY[spec.parent].spec.defaults)
        assert spec.class_name in xo.__all__ and spec.class_name in torch_optim.__all__


def test_methods_table_of_the_docs_matches_the_specs():
    """docs/optim.md holds one row per torch class, each the row its spec gives (when a method is
    added, paste the row this test prints); no stale row."""
    page = (ROOT / "docs" / "optim.md").read_text()
    want = methods_table(SPECS).splitlines()
    start = page.index(want[0])
    have = page[start:page.index("\n\n", start)].splitlines()
    missing = [r for r in want if r not in have]
    assert not missing, "add these rows to the methods table of docs/optim.md:\n" + "\n".join(missing)
    assert sorted(have) == sorted(want), "rows no spec gives: " + "\n".join(set(have) - set(want))


def test_spec_checks_itself():
    ok = {"lr": 1e-3, "momentum": 0.9}
    with pytest.raises(ValueError, match="start with 'lr'"):
        MethodSpec("m", "M", "m", {"momentum": 0.9}, "s", "p")
    with pytest.raises(ValueError, match="positional"):
        MethodSpec("m", "M", "m", ok, "s", "p", positional=3)
    with pytest.raises(ValueError, match="unknown arguments"):
        MethodSpec("m", "M", "m", ok, "s", "p", types={"nesterov": "bool"})
    with pytest.raises(ValueError, match="class_name"):
        MethodSpec("m", "not a name", "m", ok, "s", "p")
    spec = MethodSpec("m", "M", "m", ok, "Summary.", "lr : float\nmomentum : float", matrix_only=True,
                      fallback_lr_ratio=0.5, types={"momentum": "float | None"})
    assert spec.class_defaults()["adamw_lr_ratio"] == 0.5 and spec.annotation("momentum") == "float | None"
    assert spec.class_doc().splitlines()[-1] == "%(schedule)s %(state_dtype)s %(maximize)s %(adamw_fallback)s"
    assert list(insert_after(ok, "lr", beta=0.5)) == ["lr", "beta", "momentum"]
    with pytest.raises(KeyError, match="nesterov"):
        insert_after(ok, "nesterov", beta=0.5)
