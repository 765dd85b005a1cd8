"""Where Dask's time goes, before and after: xpmat on Dask against NumPy and Dask's own linalg.

    python docs/scripts/dask_speed.py                    # the table of docs/dask.md, "Speed"
    python docs/scripts/dask_speed.py --rows 100000      # smaller tall-skinny arrays
    python docs/scripts/dask_speed.py --before 34473a6   # the "before" code: a git revision
    python docs/scripts/dask_speed.py --only polar inv_root   # only the rows naming these
    python docs/scripts/dask_speed.py --newton-sizes 1200 2400 3600   # Newton: one task vs blocked

The "before" column imports the package as it was at ``--before`` (``git archive`` of ``src/``
renamed to ``xpmat_before``), so both versions run in the same process on the same persisted
arrays, interleaved: each round times every row once, in order, and the table reports the
median over ``--reps`` rounds.  The threaded scheduler (the default of ``dask.array``); the Dask
rows run with BLAS limited to one thread per task (``threadpoolctl``: Dask already runs one task
per core, see docs/dask.md), the ``default BLAS`` column with the BLAS pool left alone, NumPy
with its default pool and, beside it, with one BLAS thread (on a busy machine NumPy's own BLAS
threads spin-wait too).  Each Dask timing is a ``dask.persist`` of all results (every chunk
computed, nothing gathered to the client); task counts are those of the persisted graphs.
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[2]


def before_package(rev: str) -> object:
    """xpmat as of git revision ``rev``, imported as ``xpmat_before`` from a temporary copy."""
    out = Path(tempfile.mkdtemp(prefix="xpmat_before_"))
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src/xpmat"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(out, filter="data")
    pkg = out / "src" / "xpmat"
    target = out / "xpmat_before"
    pkg.rename(target)
    for f in target.rglob("*.py"):
        text = f.read_text().replace("from xpmat", "from xpmat_before")
        f.write_text(text.replace("import xpmat", "import xpmat_before").replace('"xpmat.', '"xpmat_before.'))
    sys.path.insert(0, str(out))
    return importlib.import_module("xpmat_before")


def tasks(*arrays) -> int:
    """Tasks of the graph Dask runs for ``arrays`` (after its own optimization)."""
    return len(dict(dask.base.collections_to_expr(dask.optimize(*arrays)).__dask_graph__()))


def cases(rows: int, chunk: int, after, before):
    """Rows of the table: (case, {column: callable}, {column: task count})."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((rows, 64))
    X = da.from_array(A, chunks=(chunk, 64)).persist()
    G = rng.standard_normal((1200, 1200)).astype(np.float32)
    Gd = da.from_array(G, chunks=400).persist()
    out = []

    def row(name, numpy_call, dask_call, anchor=None):
        cols = {"NumPy": numpy_call}
        graphs = {}
        for label, pkg in (("before", before), ("after", after)):
            if pkg is not None:
                cols[label] = (lambda f=dask_call, p=pkg: dask.persist(*f(p)))
                graphs[label] = tasks(*dask_call(pkg))
        if anchor is not None:
            cols["Dask's own"] = lambda: dask.persist(*anchor())
            graphs["Dask's own"] = tasks(*anchor())
        out.append((name, cols, graphs))

    row(f"orthonormalize {rows}×64 f64, chunks of {chunk} rows",
        lambda: after.orthonormalize(A), lambda p: (p.orthonormalize(X),),
        lambda: da.linalg.tsqr(X))
    row("randomized_svd(k=8), same array", lambda: after.randomized_svd(A, 8, seed=0),
        lambda p: p.randomized_svd(X, 8, seed=0),
        lambda: da.linalg.svd_compressed(X, 8, n_power_iter=2, seed=0))
    row("msign(steps=12) 1200² f32, 400² chunks", lambda: after.msign(G, steps=12),
        lambda p: (p.msign(Gd, steps=12),))
    half = rows // 2
    C = np.abs(A[:half])
    A0, B0 = rng.random((half, 5)), rng.random((5, 64))
    Cd = da.from_array(C, chunks=(chunk, 64)).persist()
    A0d, B0d = da.from_array(A0, chunks=(chunk, 5)).persist(), da.from_array(B0).persist()
    row(f"nmf(rank 5, 20 iters) {half}×64 f64, chunks of {chunk} rows",
        lambda: after.nmf(C, 5, iters=20, init=(A0, B0)),
        lambda p: p.nmf(Cd, 5, iters=20, init=(A0d, B0d))[:3])
    square_rows(row, G, Gd, after)
    lowrank_row(row, rows, chunk, after, rng)
    return out


def square_rows(row, G, Gd, after) -> None:
    """``polar`` and Newton ``inv_root`` of the 1200² float32 matrix in 400² chunks; the Newton
    iteration runs all ``iters`` steps on Dask (no host read), so it is also timed with the
    number of steps NumPy took (``return_info``): the same work."""
    row("polar (SVD) 1200² f32, 400² chunks", lambda: after.polar(G), lambda p: p.polar(Gd))
    S = (G @ G.T) / G.shape[0] + np.eye(G.shape[0], dtype=G.dtype)
    Sd = da.from_array(S, chunks=Gd.chunks).persist()
    steps = int(after.inv_root(S, 4, method="newton", return_info=True)[1].iters)
    row("inv_root(p=4, Newton, 100 steps on Dask), SPD 1200² f32",
        lambda: after.inv_root(S, 4, method="newton"), lambda p: (p.inv_root(Sd, 4, method="newton"),))
    row(f"inv_root(p=4, Newton, iters={steps}: NumPy's count)",
        lambda: after.inv_root(S, 4, method="newton", iters=steps),
        lambda p: (p.inv_root(Sd, 4, method="newton", iters=steps),))


def lowrank_row(row, rows, chunk, after, rng) -> None:
    """``lowrank_eigh_update(decay=0.9)`` of a ``rows × 32`` basis in 2 column chunks (2-D
    chunked) with 8 corrections, both chunked by rows."""
    Q = np.linalg.qr(rng.standard_normal((rows, 32)))[0]
    L, C = np.sort(rng.random(32))[::-1].copy(), rng.standard_normal((rows, 8))
    Qd = da.from_array(Q, chunks=(chunk, 16)).persist()
    Cd, Ld = da.from_array(C, chunks=(chunk, 8)).persist(), da.from_array(L)
    row(f"lowrank_eigh_update {rows}×32 + 8, chunks of {chunk}×16",
        lambda: after.lowrank_eigh_update(L, Q, C, decay=0.9),
        lambda p: p.lowrank_eigh_update(Ld, Qd, Cd, decay=0.9))


def measure(rows, reps, after, before, only=None, default_blas=True):
    table = [r for r in cases(rows, rows // 8, after, before) if not only or any(o in r[0] for o in only)]
    extra = ["default BLAS", "NumPy, 1 BLAS thread"] if default_blas else ["NumPy, 1 BLAS thread"]
    times = {(name, c): [] for name, cols, _ in table for c in [*cols, *extra]}
    for _ in range(reps):
        for name, cols, _ in table:
            with threadpool_limits(1, "blas"):
                t0 = time.perf_counter()
                cols["NumPy"]()
                times[(name, "NumPy, 1 BLAS thread")].append(time.perf_counter() - t0)
            for col, fn in cols.items():
                if col == "NumPy":
                    t0 = time.perf_counter()
                    fn()
                else:
                    with threadpool_limits(1, "blas"):
                        t0 = time.perf_counter()
                        fn()
                times[(name, col)].append(time.perf_counter() - t0)
            if default_blas:
                t0 = time.perf_counter()
                cols["after"]()
                times[(name, "default BLAS")].append(time.perf_counter() - t0)
    return table, {k: float(np.median(v)) for k, v in times.items() if v}


def newton_sizes(sizes, reps, after) -> None:
    """Newton ``inv_root(p=4)`` (default ``iters=100``) of an SPD ``n × n`` float32 matrix in a
    3 × 3 grid of chunks, per size: one task (``xpmat._dask.ONE_TASK_BYTES`` as shipped) against
    the blocked path (the threshold set to 0), NumPy beside; interleaved medians of ``reps``."""
    from xpmat import _dask

    shipped, cases = _dask.ONE_TASK_BYTES, []
    for n in sizes:
        G = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        S = G @ G.T / n + np.eye(n, dtype=np.float32)
        cases.append((n, S, da.from_array(S, chunks=-(-n // 3)).persist()))
    cols = {"NumPy": lambda S, Sd: after.inv_root(S, 4, method="newton"),
            "NumPy, 1 BLAS thread": lambda S, Sd: after.inv_root(S, 4, method="newton"),
            "one task": lambda S, Sd: dask.persist(after.inv_root(Sd, 4, method="newton")),
            "blocked": lambda S, Sd: dask.persist(after.inv_root(Sd, 4, method="newton"))}
    times = {(n, c): [] for n, *_ in cases for c in cols}
    for _ in range(reps):
        for n, S, Sd in cases:
            for col, fn in cols.items():
                _dask.ONE_TASK_BYTES = 0 if col == "blocked" else shipped
                limit = 1 if col != "NumPy" else None
                with threadpool_limits(limit, "blas"):
                    t0 = time.perf_counter()
                    fn(S, Sd)
                    times[(n, col)].append(time.perf_counter() - t0)
    _dask.ONE_TASK_BYTES = shipped
    print(f"| n (MiB) | {' | '.join(cols)} |")
    print("|---" * (len(cols) + 1) + "|")
    for n, S, _ in cases:
        cells = [f"{float(np.median(times[(n, c)])):.2f} s" for c in cols]
        print(f"| {n} ({S.nbytes / 2**20:.0f}) | {' | '.join(cells)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--before", default=None, help="git revision of the 'before' column")
    ap.add_argument("--only", nargs="*", default=None, help="rows whose name contains one of these")
    ap.add_argument("--no-default-blas", action="store_true", help="skip the 'default BLAS' column")
    ap.add_argument("--newton-sizes", type=int, nargs="*", default=None,
                    help="only the one-task / blocked Newton inv_root table, for these n")
    args = ap.parse_args()
    import xpmat

    if args.newton_sizes:
        newton_sizes(args.newton_sizes, args.reps, xpmat)
        return

    before = before_package(args.before) if args.before else None
    table, med = measure(args.rows, args.reps, xpmat, before, args.only, not args.no_default_blas)
    cols = ["NumPy", "NumPy, 1 BLAS thread", *(["before"] if before else []), "after",
            *([] if args.no_default_blas else ["default BLAS"]), "Dask's own"]
    counted = ", ".join(c for c in cols if not c.startswith(("NumPy", "default BLAS")))
    print(f"| call | {' | '.join(cols)} | tasks ({counted}) |")
    print("|---" * (len(cols) + 2) + "|")
    for name, _, graphs in table:
        cells = []
        for c in cols:
            t = med.get((name, c))
            ratio = "" if c.startswith("NumPy") or t is None else f" ({t / med[(name, 'NumPy')]:.1f}×)"
            cells.append("–" if t is None else f"{t:.2f} s{ratio}")
        counts = ", ".join(str(graphs[c]) for c in cols if c in graphs)
        print(f"| {name} | {' | '.join(cells)} | {counts} |")


if __name__ == "__main__":
    main()
