"""No hidden host round trips, shown without a GPU: every call documented as synchronisation-free
runs on PyTorch ``meta`` tensors (shapes and dtypes, no data: any ``.item()`` / ``bool()`` /
``float()`` raises), and every call documented as reading the host does raise there.

The documented synchronisations are the table "Host synchronisations" of ``docs/backends.md``;
``primitive_calls.CALLS`` marks the calls that hit one (``syncs=True``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import require_backend
from primitive_calls import CALLS

require_backend("torch")
import torch  # noqa: E402  (after require_backend: skipped cleanly where torch is absent)

DOC = Path(__file__).resolve().parents[1] / "docs" / "backends.md"


def _meta(a):
    return torch.empty(a.shape, dtype=torch.float64, device="meta")


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for x in out for t in _tensors(x)] if isinstance(out, tuple) else []


@pytest.mark.parametrize("case", list(CALLS))
def test_meta_tensors(case):
    call = CALLS[case]
    args = [_meta(a) for a in call.args]
    if call.syncs:
        with pytest.raises(RuntimeError, match="meta"):  # "Tensor.item() cannot be called on meta"
            call.fn(*args)
        return
    out = _tensors(call.fn(*args))
    ref = _tensors(call.fn(*(torch.asarray(a) for a in call.args)))
    assert [t.device.type for t in out] == ["meta"] * len(ref)
    assert [(tuple(t.shape), t.dtype) for t in out] == [(tuple(t.shape), t.dtype) for t in ref]


def _documented_syncs() -> set[str]:
    """Primitive names in the first column of the "Host synchronisations" table."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Host synchronisations", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`(\w+)", row.split("|")[1])}


def test_sync_table_lists_exactly_the_syncing_primitives():
    syncing = {call.name for call in CALLS.values() if call.syncs}
    assert _documented_syncs() == syncing
