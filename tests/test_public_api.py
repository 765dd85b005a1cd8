"""`xpmat.__all__` holds the public names of DESIGN.md, sorted, each with a docstring."""

import re
from pathlib import Path

import pytest

import xpmat

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT.parent / "shared" / "DESIGN.md"

# Names DESIGN.md's list lacks, added by the primitive issues (each noted in its issue).
EXTRA = {
    "msign_many": "msign of many matrices, batched by shape (issue 29: moved down from optim)",
    "adafactor_factors": "Adafactor's rank-1 factored second moment, EMA of row/col sums, eq. (52) (issue 6)",
    "adafactor_second_moment": "the rank-1 matrix of eq. (52) from those factors (issue 6)",
    "nmf_online_init": "AdamNMF's factor initialization, appendix L.2 (issue 6)",
    "nmf_online_step": "AdamNMF's warm-started EM step on a new G², appendix L.2 (issue 6)",
    "shampoo_factors": "running E[G Gᵀ], E[Gᵀ G] of a gradient stream, section 6.2 (issue 6)",
    "shampoo_kron": "Shampoo's Kronecker approximation of E[g gᵀ], eq. (64) (issue 6)",
}


def _design_names() -> set[str]:
    text = DESIGN.read_text()
    block = text.split("## Public API", 1)[1].split("```", 2)[1]
    return set(re.findall(r"xm\.([a-z_0-9]+)\(", block))


def test_all_is_sorted_and_exported():
    assert list(xpmat.__all__) == sorted(xpmat.__all__)
    for name in xpmat.__all__:
        assert callable(getattr(xpmat, name)), name
        assert getattr(xpmat, name).__doc__, f"{name} has no docstring"


@pytest.mark.skipif(not DESIGN.exists(), reason="../shared/DESIGN.md is not beside this checkout")
def test_all_matches_design():
    design = _design_names()
    assert design, "no names parsed from DESIGN.md"
    assert design - set(xpmat.__all__) == set(), "DESIGN names missing from xpmat.__all__"
    assert set(xpmat.__all__) - design <= set(EXTRA), "names not in DESIGN.md nor in EXTRA"
