"""A missing optional dependency stops with a message that names the extra to install.

The absence is simulated: ``sys.modules[name] = None`` makes ``import name`` fail and
``importlib.util.find_spec(name)`` return None, as on a machine without the package.
"""

from __future__ import annotations

import sys

import pytest

import xpmat.optim
from xpmat import cli


def _without(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_bench_without_scikit_learn(monkeypatch, capsys):
    _without(monkeypatch, "sklearn")
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "xpmat bench needs scikit-learn" in err and "pip install 'xpmat[bench]'" in err


def test_demo_without_torch(monkeypatch, capsys):
    _without(monkeypatch, "torch")
    assert cli.main(["demo"]) == 2
    captured = capsys.readouterr()
    assert "xpmat demo needs torch" in captured.err and "pip install 'xpmat[torch]'" in captured.err
    assert captured.out == ""  # stops before printing or training anything


def test_demo_without_torch_and_scikit_learn_names_both_extras(monkeypatch, capsys):
    _without(monkeypatch, "torch", "sklearn")
    assert cli.main(["demo"]) == 2
    assert "pip install 'xpmat[bench,torch]'" in capsys.readouterr().err


def test_info_needs_nothing_optional(monkeypatch, capsys):
    _without(monkeypatch, "sklearn", "matplotlib")
    assert cli.main(["info"]) == 0
    assert "backends:" in capsys.readouterr().out


def test_torch_optimizer_without_torch(monkeypatch):
    _without(monkeypatch, "torch")
    monkeypatch.delitem(sys.modules, "xpmat.optim.torch_optim", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'xpmat\[torch\]'") as info:
        xpmat.optim.Muon  # noqa: B018 (the attribute access is the test)
    assert info.value.name == "torch"
    with pytest.raises(ModuleNotFoundError, match=r"xpmat\.optim\.Muon"):
        xpmat.optim.torch_class("muon")


def test_functional_cores_need_no_torch(monkeypatch):
    _without(monkeypatch, "torch")
    import numpy as np

    from xpmat.optim import muon

    state = muon.init([np.ones((4, 3))])
    updates, _ = muon.update([np.ones((4, 3))], state, [np.ones((4, 3))])
    assert updates[0].shape == (4, 3)
