"""``xpmat._optional``: ``require`` translates only the absence of the module it was asked for;
``missing`` and ``install_message``.  The messages as users meet them (``xpmat demo``,
``xpmat.optim.Muon`` without torch): ``tests/test_optional_deps.py``."""

from __future__ import annotations

import sys

import pytest

from xpmat._optional import install_message, missing, require


def _without(monkeypatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_passes_other_import_errors_through(monkeypatch):
    assert require("numpy", "anything").__name__ == "numpy"
    _without(monkeypatch, "numpy.linalg_not_a_module")
    with pytest.raises(ModuleNotFoundError) as info:
        require("xpmat_no_such_package.sub", "a feature")
    assert info.value.name == "xpmat_no_such_package"  # not the module asked for: unchanged
    assert "pip install" not in str(info.value)


def test_missing_and_message():
    assert missing(["numpy", "xpmat_no_such_package"]) == ["xpmat_no_such_package"]
    assert install_message("x", ["matplotlib", "scipy"]) == (
        "x needs matplotlib, scipy, which is not installed: pip install 'xpmat[bench]'")
    assert install_message("x", ["foo"]).endswith("pip install foo")
