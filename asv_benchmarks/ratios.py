"""Markdown table of every anchor ratio in one stored asv run.

Usage::

    python asv_benchmarks/ratios.py [RESULTS_DIR] [--machine M] [--commit C] [--out FILE]

``RESULTS_DIR`` (default: ``results/`` beside this file) is asv's ``results_dir``: it holds
``benchmarks.json`` (parameter names) and one folder per machine with ``<commit>-<env>.json``
result files.  The run read is the newest result file (by its ``date``) of ``--machine`` (needed
when there are several) whose commit hash starts with ``--commit`` (default: any).  A path to
one result file is accepted for ``RESULTS_DIR`` as well.

For each benchmark class with a ``time_*_anchor`` benchmark, one table: for each parameter
combination (backend, size, ...) and each of our ``time_*`` benchmarks (the non-anchor ones),
our time, each anchor's time and the ratio ours / anchor (below 1: we are faster), then the
class's ``track_*`` values (accuracy), including those of a sibling ``<Class>Accuracy`` class
with the same parameters.  Skipped cases (asv stores NaN) read ``n/a``, failed ones (``null``)
``failed``; a row whose times are all skipped (a GPU backend on a CPU machine) is left out.

Format read (asv 0.6, results API version 2): ``result_columns`` names the columns of each row
of ``results[name]``; the ``result`` column is a flat list over ``itertools.product(*params)``
of the ``params`` column (values are ``repr`` strings); trailing ``None`` columns are dropped.

Standard library only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from collections import defaultdict
from pathlib import Path

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


class RatiosError(Exception):
    """A clear, user-facing error (no results, ambiguous machine, unknown commit)."""


# --------------------------------------------------------------------------- loading

def _machines(results_dir):
    return sorted(p.name for p in results_dir.iterdir()
                  if p.is_dir() and any(f.name != "machine.json" for f in p.glob("*.json")))


def find_result_file(results_dir, machine=None, commit=None):
    """Return the newest result file of ``machine`` whose commit starts with ``commit``."""
    results_dir = Path(results_dir)
    if results_dir.is_file():
        return results_dir
    if not results_dir.is_dir():
        raise RatiosError(f"RESULTS_DIR {str(results_dir)!r} does not exist; run asv first "
                          "(see asv_benchmarks/README.md), e.g. `cd asv_benchmarks && "
                          "../.venv/bin/asv run --python=same --quick "
                          "--set-commit-hash $(git rev-parse HEAD)`")
    machines = _machines(results_dir)
    if machine is None:
        if not machines:
            raise RatiosError(f"no asv results under {str(results_dir)!r}: `asv run --python=same` "
                              "stores none unless given --set-commit-hash $(git rev-parse HEAD)")
        if len(machines) > 1:
            raise RatiosError(f"several machines under {str(results_dir)!r}: {machines}; "
                              "pick one with --machine")
        machine = machines[0]
    elif machine not in machines:
        raise RatiosError(f"--machine {machine!r}: no results under {str(results_dir)!r} "
                          f"(machines with results: {machines})")
    best = None
    for path in sorted((results_dir / machine).glob("*.json")):
        if path.name == "machine.json":
            continue
        data = _load_json(path)
        if commit and not str(data.get("commit_hash", "")).startswith(commit):
            continue
        key = (data.get("date") or 0, path.name)
        if best is None or key > best[0]:
            best = (key, path)
    if best is None:
        raise RatiosError(f"--commit {commit!r}: no result file for machine {machine!r} "
                          f"under {str(results_dir)!r}")
    return best[1]


def _load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)  # asv writes NaN / Infinity, which json reads back
    except (OSError, ValueError) as exc:
        raise RatiosError(f"cannot read {str(path)!r}: {exc}") from exc


def load_run(path):
    """Read one result file into ``{name: (params, values)}`` plus its header.

    ``values`` maps a tuple of parameter values (``repr`` strings, one per parameter) to the
    stored number (``float``, NaN for skipped, ``None`` for failed).
    """
    data = _load_json(path)
    if data.get("version") != 2 or "result_columns" not in data:
        raise RatiosError(f"{str(path)!r} is not an asv 0.6 result file "
                          "(results API version 2 with result_columns)")
    cols = data["result_columns"]
    i_res, i_par = cols.index("result"), cols.index("params")
    runs = {}
    for name, row in data.get("results", {}).items():
        row = list(row) + [None] * (len(cols) - len(row))
        result, params = row[i_res], row[i_par] or []
        combos = list(itertools.product(*params))
        if result is None:
            result = [None] * len(combos)
        elif not isinstance(result, list):
            result = [result]
        runs[name] = (params, dict(zip(combos, result)))
    return data, runs


def load_param_names(results_dir):
    """``{benchmark name: [param names]}`` from asv's ``benchmarks.json`` (empty if absent)."""
    path = Path(results_dir) / "benchmarks.json"
    if not path.is_file():
        return {}
    data = _load_json(path)
    return {k: v.get("param_names", []) for k, v in data.items() if isinstance(v, dict)}


# --------------------------------------------------------------------------- formatting

def _skipped(v):
    return isinstance(v, float) and math.isnan(v)


def fmt_time(t):
    if t is None:
        return "failed"
    if isinstance(t, float) and math.isnan(t):
        return "n/a"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(t) >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t * 1e9:.3g} ns"


def fmt_track(v):
    if v is None:
        return "failed"
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if isinstance(v, float) and v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        return f"{v:.2e}"
    return f"{v:.3g}"


def fmt_ratio(ours, anchor):
    ok = [isinstance(x, (int, float)) and math.isfinite(x) for x in (ours, anchor)]
    if not all(ok) or anchor <= 0:
        return "–"
    r = ours / anchor
    return f"**{r:.2g}**" if r < 1 else f"{r:.2g}"


def _param(v):
    v = str(v)
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        v = v[1:-1]
    return v.replace("|", "\\|")


# --------------------------------------------------------------------------- the table

def ratios_markdown(runs, param_names, header=None, heading="###"):
    """Markdown for every class with a ``time_*_anchor`` benchmark (see the module docstring)."""
    classes = defaultdict(dict)  # (module, class) -> {method: name}
    for name in runs:
        parts = name.rsplit(".", 2)
        if len(parts) == 3:
            classes[(parts[0], parts[1])][parts[2]] = name

    out = [] if header is None else [header, ""]
    shown, skipped = 0, []
    for (module, cls), methods in sorted(classes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        times = sorted(m for m in methods if m.startswith("time_"))
        anchors = [m for m in times if m.endswith("_anchor")]
        ours = [m for m in times if not m.endswith("_anchor")]
        if not anchors or not ours:
            if times:
                skipped.append(cls)
            continue
        sibling = classes.get((module, cls + "Accuracy"), {})
        tracks = [(m, group[m]) for group in (methods, sibling) for m in group if m.startswith("track_")]
        tracks.sort(key=lambda t: (t[0].endswith("_anchor"), t[0]))  # ours first, then anchors
        # parameter combinations, in asv's order, from the first of our benchmarks
        params = runs[methods[ours[0]]][0]
        names = param_names.get(methods[ours[0]]) or [f"param{i + 1}" for i in range(len(params))]
        if len(names) != len(params):
            names = [f"param{i + 1}" for i in range(len(params))]
        combos = list(itertools.product(*params))

        out += [f"{heading} `{cls}` ({module})", ""]
        cols = [*names, "ours", "time"]
        for a in anchors:
            cols += [f"`{a}`", "ratio"]
        cols += [f"`{t}`" for t, _ in tracks]
        out.append("| " + " | ".join(cols) + " |")
        align = ["---"] * (len(names) + 1) + ["---:"] * (len(cols) - len(names) - 1)
        out.append("|" + "|".join(align) + "|")
        for combo in combos:
            for o in ours:
                t_ours = runs[methods[o]][1].get(combo, math.nan)
                t_all = [t_ours] + [runs[methods[a]][1].get(combo, math.nan) for a in anchors]
                if all(_skipped(t) for t in t_all):
                    continue  # skipped on this machine (e.g. a torch:cuda row without a GPU)
                row = [_param(v) for v in combo] + [f"`{o}`", fmt_time(t_ours)]
                for a in anchors:
                    t_anchor = runs[methods[a]][1].get(combo, math.nan)
                    row += [fmt_time(t_anchor), fmt_ratio(t_ours, t_anchor)]
                for _, full in tracks:
                    row.append(fmt_track(runs[full][1].get(combo, math.nan)))
                out.append("| " + " | ".join(row) + " |")
        out.append("")
        shown += 1
    if not shown:
        raise RatiosError("the result file holds no class with both a time_*_anchor and another "
                          "time_* benchmark (was the run restricted with --bench?)")
    if skipped:
        out += ["Classes timed without an anchor (not shown): "
                + ", ".join(f"`{c}`" for c in sorted(set(skipped))) + ".", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", nargs="?", default=str(DEFAULT_RESULTS),
                   help="asv results_dir (default: asv_benchmarks/results) or one result file")
    p.add_argument("--machine", help="machine name (a folder of RESULTS_DIR)")
    p.add_argument("--commit", help="commit hash or prefix (default: the newest result file)")
    p.add_argument("--out", help="write the Markdown here instead of stdout")
    args = p.parse_args(argv)
    try:
        path = find_result_file(args.results_dir, args.machine, args.commit)
        data, runs = load_run(path)
        names_dir = path.parent.parent if Path(args.results_dir).is_file() else args.results_dir
        machine = data.get("params", {}).get("machine", path.parent.name)
        header = (f"asv results: machine `{machine}`, commit `{str(data.get('commit_hash'))[:8]}`, "
                  f"file `{path.name}`. ratio = ours / anchor (bold: below 1, we are faster).")
        text = ratios_markdown(runs, load_param_names(names_dir), header=header)
    except RatiosError as exc:
        print(f"ratios.py: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
