"""``xpmat.bench``: the report runs, writes Markdown and PNG, and every number is finite."""

import math

from xpmat.bench import run_bench

SMALL = {"n": 48, "tall": (256, 8), "rank": 4, "nmf": (32, 24, 4, 10), "kron": (4, 4), "repeat": 1}


def test_run_bench_numpy_quick(tmp_path, capsys):
    rows = run_bench(backend="numpy", quick=True, out=tmp_path, sizes=SMALL)
    md = (tmp_path / "bench.md").read_text()
    png = (tmp_path / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    names = {r["case"] for r in rows}
    assert {"msign (8 steps)", "orthonormalize", "randomized_svd", "nmf (I-div EM)",
            "nearest_kron (power)", "inv_root (p=4)", "lowrank_eigh_update (k=1)",
            "orthogonal_iteration (1 step)"} == names
    for r in rows:
        assert r["backend"] == "numpy"
        for key in ("ours", "anchor", "ratio", "err_ours", "err_anchor"):
            assert math.isfinite(r[key]) and r[key] >= 0, (r["case"], key, r[key])
        assert r["err_ours"] < 0.5, r
        assert r["case"] in md
    assert md.count("\n| numpy |") == len(rows)
    assert "bench.md" in capsys.readouterr().out


def test_run_bench_unknown_backend(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="not available"):
        run_bench(backend="nope", quick=True, out=tmp_path)
