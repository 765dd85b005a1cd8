"""``asv_benchmarks/ratios.py`` on a small hand-written asv 0.6 results folder.

The fixture copies the layout and the row format ``asv run`` writes (results API version 2:
``result_columns``, parameter values as ``repr`` strings, NaN for a skipped case, ``null`` for
a failed one, trailing ``null`` columns dropped).
"""

import importlib.util
import json
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "asv_benchmarks" / "ratios.py"
pytestmark = pytest.mark.skipif(not PATH.is_file(), reason="no asv_benchmarks/ (installed package)")

COLUMNS = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a",
           "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat",
           "samples", "profile"]
BN = [["'numpy'", "'torch:cpu'"], ["256", "1024"]]  # backend x n, product order
COMMIT_OLD, COMMIT_NEW = "1111111aaaa", "2222222bbbb"


@pytest.fixture(scope="module")
def ratios():
    spec = importlib.util.spec_from_file_location("xpmat_asv_ratios", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(result, params):
    # what asv writes for a --quick time benchmark (stats of one sample), truncated after stats
    return [result, params, "v" * 8, 1795442816996, 0.14, None, None, result, result,
            [1] * len(result), [1] * len(result)]


def _write_results(root, machine, commit, date, results):
    d = root / machine
    d.mkdir(parents=True, exist_ok=True)
    (d / "machine.json").write_text(json.dumps({"machine": machine, "version": 1}))
    data = {"commit_hash": commit, "env_name": "existing-py", "date": date,
            "params": {"machine": machine, "num_cpu": "2"}, "python": "3.11", "requirements": {},
            "env_vars": {}, "result_columns": COLUMNS, "results": results, "durations": {},
            "version": 2}
    path = d / f"{commit[:8]}-existing-py.json"
    path.write_text(json.dumps(data))  # json.dumps writes NaN as asv does
    return path


def _benchmarks_json(root):
    bj = {"version": 2}
    for name in ("m.Msign.time_msign", "m.Msign.time_fast", "m.Msign.time_svd_anchor",
                 "m.Msign.time_scipy_anchor", "m.Msign.track_err", "m.MsignAccuracy.track_err_anchor",
                 "m.MsignMemory.peakmem_ours", "m.MsignMemory.peakmem_anchor"):
        bj[name] = {"name": name, "param_names": ["backend", "n"], "params": BN, "type": "time"}
    bj["m.Schedule.time_schedule"] = {"name": "m.Schedule.time_schedule", "param_names": [],
                                      "params": [], "type": "time"}
    (root / "benchmarks.json").write_text(json.dumps(bj))


@pytest.fixture
def results_dir(tmp_path):
    root = tmp_path / "results"
    root.mkdir()
    _benchmarks_json(root)
    nan = float("nan")
    new = {
        # our time 1 ms vs anchors 4 ms and 0.5 ms; numpy/1024 of ours failed (null)
        "m.Msign.time_msign": _row([1e-3, None, 2e-3, 8e-3], BN),
        "m.Msign.time_fast": _row([5e-4, 5e-4, 5e-4, 5e-4], BN),
        "m.Msign.time_svd_anchor": _row([4e-3, 4e-3, 1e-3, 2e-3], BN),
        # SciPy anchor skipped on torch rows (NaN)
        "m.Msign.time_scipy_anchor": _row([5e-4, 1e-3, nan, nan], BN),
        "m.Msign.track_err": [[1.5e-7, 2e-7, 3e-7, 4e-7], BN, "v"],
        "m.MsignAccuracy.track_err_anchor": [[9e-8, 9e-8, 9e-8, 9e-8], BN, "v"],
        "m.MsignMemory.peakmem_ours": [[1e8, 1e8, 1e8, 1e8], BN, "v"],
        "m.MsignMemory.peakmem_anchor": [[2e8, 2e8, 2e8, 2e8], BN, "v"],
        "m.Schedule.time_schedule": _row([3e-6], []),
        # a GPU row skipped on a CPU machine (all NaN) is left out
        "m.Gpu.time_ours": _row([2e-3, nan], [["'numpy'", "'torch:cuda'"]]),
        "m.Gpu.time_anchor": _row([1e-3, nan], [["'numpy'", "'torch:cuda'"]]),
    }
    old = {"m.Msign.time_msign": _row([9.0] * 4, BN), "m.Msign.time_svd_anchor": _row([1.0] * 4, BN)}
    _write_results(root, "vm", COMMIT_NEW, 1795442701000, new)
    _write_results(root, "vm", COMMIT_OLD, 1795442000000, old)
    return root


def _rows(text, prefix):
    return [[c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith(prefix)]


def test_table_every_ratio_and_track(ratios, results_dir, tmp_path):
    out = tmp_path / "r" / "ratios.md"
    assert ratios.main([str(results_dir), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "commit `2222222b`" in text  # the newest file by date
    assert "### `Msign` (m)" in text
    header = _rows(text, "| backend |")[0]
    assert header == ["backend", "n", "ours", "time", "`time_scipy_anchor`", "ratio",
                      "`time_svd_anchor`", "ratio", "`track_err`", "`track_err_anchor`"]
    rows = {(r[0], r[1], r[2]): r for r in _rows(text, "| numpy |") + _rows(text, "| torch:cpu |")
            if len(r) == 10}  # the Msign rows
    assert len(rows) == 8  # 4 parameter combinations x 2 of our time_ benchmarks
    r = rows[("numpy", "256", "`time_msign`")]
    assert r[3:] == ["1 ms", "500 µs", "2", "4 ms", "**0.25**", "1.50e-07", "9.00e-08"]
    r = rows[("numpy", "1024", "`time_msign`")]
    assert r[3:8] == ["failed", "1 ms", "–", "4 ms", "–"]
    r = rows[("torch:cpu", "1024", "`time_msign`")]
    assert r[3:8] == ["8 ms", "n/a", "–", "2 ms", "4"]
    r = rows[("torch:cpu", "256", "`time_fast`")]
    assert r[3:8] == ["500 µs", "n/a", "–", "1 ms", "**0.5**"]
    assert _rows(text, "| numpy | `time_ours` |") == [["numpy", "`time_ours`", "2 ms", "1 ms", "2"]]
    assert "torch:cuda" not in text
    assert "| param1 | ours | time |" in text  # not in benchmarks.json: generic parameter names
    # peakmem classes are not time ratios; a class timed without an anchor is named
    assert "MsignMemory" not in text
    assert "Classes timed without an anchor (not shown): `Schedule`." in text


def test_commit_and_machine_selection(ratios, results_dir, capsys):
    assert ratios.main([str(results_dir), "--commit", "1111", "--machine", "vm"]) == 0
    text = capsys.readouterr().out
    assert "commit `1111111a`" in text
    assert "| numpy | 256 | `time_msign` | 9 s | 1 s | 9 |" in text
    # a result file given directly
    path = results_dir / "vm" / f"{COMMIT_OLD[:8]}-existing-py.json"
    assert ratios.main([str(path)]) == 0
    assert "| numpy | 256 | `time_msign` | 9 s | 1 s | 9 |" in capsys.readouterr().out


def test_clear_errors(ratios, results_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ratios.main([str(empty)]) == 2
    assert "no asv results" in capsys.readouterr().err
    assert ratios.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert ratios.main([str(results_dir), "--commit", "ffff"]) == 2
    assert "--commit 'ffff'" in capsys.readouterr().err
    _write_results(results_dir, "gpu", COMMIT_NEW, 1, {})
    assert ratios.main([str(results_dir)]) == 2
    assert "several machines" in capsys.readouterr().err
    assert ratios.main([str(results_dir), "--machine", "nope"]) == 2
    assert "--machine 'nope'" in capsys.readouterr().err
    # a run holding no anchored class (e.g. asv run --bench Schedule)
    assert ratios.main([str(results_dir), "--machine", "gpu"]) == 2
    assert "no class with both" in capsys.readouterr().err
