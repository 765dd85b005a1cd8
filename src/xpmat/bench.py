"""``python -m xpmat bench``: each primitive against its anchor, on every backend present.

For every case: our time, the anchor's time (best of a few repeats, devices synchronized with
:func:`xpmat._array.synchronize`), the ratio ours/anchor and the accuracy of both (relative
error against a float64 NumPy reference).  Inputs are float32, drawn once on the host with a
fixed seed and moved once to the backend.  The report is printed, and written to
``DIR/bench.md`` (Markdown) and ``DIR/bench.png`` (bar plot of the ratios).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from xpmat import _array

__all__ = ["run_bench"]

QUICK = {"n": 128, "tall": (1024, 32), "rank": 8, "nmf": (96, 64, 8, 30), "kron": (8, 8), "repeat": 3}
FULL = {"n": 512, "tall": (8192, 128), "rank": 16, "nmf": (400, 300, 16, 100), "kron": (24, 24),
        "repeat": 5}


def _host(x: Any) -> np.ndarray:
    """Host float64 copy of ``x`` (NumPy, torch or CuPy)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "get") and not isinstance(x, np.ndarray):
        x = x.get()
    return np.asarray(x, dtype=np.float64)


def _rel(x: Any, ref: np.ndarray) -> float:
    d = np.linalg.norm(ref)
    return float(np.linalg.norm(_host(x) - ref) / (d if d > 0 else 1.0))


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    out = fn()  # warm-up
    _array.synchronize(out if not isinstance(out, tuple) else out[0])
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        _array.synchronize(out if not isinstance(out, tuple) else out[0])
        best = min(best, time.perf_counter() - t0)
    return best, out


def _spectrum_matrix(m: int, n: int, s: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
    V, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
    return (U * s) @ V.T


def _sym_spectrum(n: int, s: np.ndarray, seed: int) -> np.ndarray:
    U, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return (U * s) @ U.T


def _proj(Q: np.ndarray) -> np.ndarray:
    return Q @ Q.T


Case = tuple[str, str, Callable, Callable, Callable]  # name, anchor name, ours, anchor, error


def _case_msign(put: Callable, xp: Any, lib: str, cfg: dict) -> Case:
    """msign (8 steps) vs the SVD polar factor."""
    import xpmat

    G64 = np.random.default_rng(0).standard_normal((cfg["n"], cfg["n"] // 2))
    U64, _, Vt64 = np.linalg.svd(G64, full_matrices=False)
    P64 = U64 @ Vt64
    G = put(G64)

    def polar_svd():
        U, _, Vt = _array.svd(G, xp)
        return U @ Vt

    return ("msign (8 steps)", "SVD polar",
            lambda: xpmat.msign(G, steps=8, normalize="spectral_estimate"), polar_svd,
            lambda out: _rel(out, P64))


def _case_orthonormalize(put: Callable, xp: Any, lib: str, cfg: dict) -> Case:
    """orthonormalize vs Householder QR (compared through the projector Q Qᵀ)."""
    import xpmat

    m, k = cfg["tall"]
    X64 = np.random.default_rng(1).standard_normal((m, k))
    Pq = _proj(np.linalg.qr(X64)[0])
    X = put(X64)
    return ("orthonormalize", "Householder QR", lambda: xpmat.orthonormalize(X),
            lambda: xp.linalg.qr(X)[0], lambda out: _rel(_proj(_host(out)), Pq))


def _case_orthogonal_iteration(put: Callable, xp: Any, lib: str, cfg: dict) -> Case:
    """One warm orthogonal_iteration step vs a full eigh."""
    import xpmat

    n, r = cfg["n"], cfg["rank"]
    s = np.concatenate([np.linspace(10.0, 5.0, r), np.linspace(1.0, 0.01, n - r)])
    A64 = _sym_spectrum(n, s, 2)
    w64, V64 = np.linalg.eigh(A64)
    top = w64[::-1][:r]
    Q0_64 = V64[:, ::-1][:, :r] + 1e-2 * np.random.default_rng(3).standard_normal((n, r))
    A, Q0 = put(A64), put(Q0_64)

    def eig_top():
        w, V = _array.eigh(A, xp, descending=True)
        return w[:r], V[:, :r]

    return ("orthogonal_iteration (1 step)", "full eigh",
            lambda: xpmat.orthogonal_iteration(A, Q0)[::-1], eig_top, lambda out: _rel(out[0], top))


def _case_randomized_svd(put: Callable, xp: Any, lib: str, cfg: dict) -> Case:
    """randomized_svd vs torch.svd_lowrank (torch), sklearn (NumPy) or a full SVD."""
    import xpmat

    n, r = cfg["n"], cfg["rank"]
    sv = np.geomspace(1.0, 1e-4, n)
    B = put(_spectrum_matrix(n, n, sv, 4))
    if lib == "torch":
        import torch

        anchor, aname = (lambda: torch.svd_lowrank(B, q=r + 10, niter=2)[1][:r]), "torch.svd_lowrank"
    elif lib == "numpy":
        from sklearn.utils.extmath import randomized_svd as sk_rsvd

        anchor, aname = (lambda: sk_rsvd(B, r, n_oversamples=10, n_iter=2, random_state=0)[1]), \
            "sklearn randomized_svd"
    else:
        anchor, aname = (lambda: _array.svd(B, xp)[1][:r]), "full SVD"
    return ("randomized_svd", aname,
            lambda: xpmat.randomized_svd(B, r, seed=0)[1], anchor, lambda out: _rel(out, sv[:r]))


def _case_lowrank_eigh_update(put: Callable, xp: Any, lib: str, cfg: dict) -> Case:
    """lowrank_eigh_update (k = 1) vs eigh of the explicit n × n matrix."""
    import xpmat

    n, r = cfg["n"], cfg["rank"]
    rng = np.random.default_rng(5)
    Ql64, _ = np.linalg.qr(rng.standard_normal((n, r)))
    L64 = np.linspace(5.0, 1.0, r)
    C64 = rng.standard_normal((n, 1))
    Mtop = np.linalg.eigvalsh((Ql64 * L64) @ Ql64.T + C64 @ C64.T)[::-1][:r]
    Ll, Ql, Cl = put(L64), put(Ql64), put(C64)

    def explicit():
        M = (Ql * Ll) @ _array.mT(Ql, xp) + Cl @ _array.mT(Cl, xp)
        return _array.eigh(M, xp, descending=True)[0][:r]

    return ("lowrank_eigh_update (k=1)", "eigh explicit",
            lambda: xpmat.lowrank_eigh_update(Ll, Ql, Cl, rank=r)[0], explicit,
            lambda out: _rel(out, Mtop))


def _case_inv_root(put: Callable, xp: Any, lib: str, cfg: dict) -> Case:
    """inv_root (p = 4) by Newton vs the eigh route."""
    import xpmat

    H64 = _sym_spectrum(cfg["n"], np.geomspace(1.0, 1e-2, cfg["n"]), 6)
    wh, Vh = np.linalg.eigh(H64)
    R64 = (Vh * wh ** -0.25) @ Vh.T
    H = put(H64)
    return ("inv_root (p=4)", "eigh route", lambda: xpmat.inv_root(H, 4, method="newton"),
            lambda: xpmat.inv_root(H, 4, method="eigh"), lambda out: _rel(out, R64))


def _case_nmf(put: Callable, xp: Any, lib: str, cfg: dict) -> Case | None:
    """nmf vs scikit-learn's NMF (KL, multiplicative updates); NumPy only."""
    if lib != "numpy":
        return None
    from sklearn.decomposition import NMF

    import xpmat

    mm, nn, rk, it = cfg["nmf"]
    rng = np.random.default_rng(7)
    C64 = rng.random((mm, rk)) @ rng.random((rk, nn)) + 0.01 * rng.random((mm, nn))
    Cn = put(C64)
    Cn32 = np.asarray(Cn)

    def sk_nmf():
        model = NMF(rk, solver="mu", beta_loss="kullback-leibler", init="random", max_iter=it,
                    tol=0.0, random_state=0)
        W = model.fit_transform(Cn32)
        return W @ model.components_

    def ours_nmf():
        res = xpmat.nmf(Cn, rk, iters=it, seed=0)
        return res[0] @ res[1]

    return ("nmf (I-div EM)", "sklearn NMF KL-MU", ours_nmf, sk_nmf, lambda out: _rel(out, C64))


def _case_nearest_kron(put: Callable, xp: Any, lib: str, cfg: dict) -> Case:
    """nearest_kron by power iteration vs the SVD route."""
    import xpmat

    a, b = cfg["kron"]
    rng = np.random.default_rng(8)
    K64 = np.kron(rng.standard_normal((a, a)), rng.standard_normal((b, b))) \
        + 0.05 * rng.standard_normal((a * b, a * b))
    A64k, B64k = xpmat.nearest_kron(K64, (a, a), (b, b))
    Kref = np.kron(A64k, B64k)
    K = put(K64)
    return ("nearest_kron (power)", "SVD route",
            lambda: xpmat.nearest_kron(K, (a, a), (b, b), method="power"),
            lambda: xpmat.nearest_kron(K, (a, a), (b, b), method="svd"),
            lambda out: _rel(np.kron(_host(out[0]), _host(out[1])), Kref))


_CASES = (_case_msign, _case_orthonormalize, _case_orthogonal_iteration, _case_randomized_svd,
          _case_lowrank_eigh_update, _case_inv_root, _case_nmf, _case_nearest_kron)


def _cases(xp: Any, dev: Any, lib: str, cfg: dict) -> list[Case]:
    """(name, anchor name, ours, anchor, error(result) for each) for one backend."""

    def put(a: np.ndarray) -> Any:
        return xp.asarray(np.ascontiguousarray(a, dtype=np.float32), device=dev)

    return [c for c in (build(put, xp, lib, cfg) for build in _CASES) if c is not None]


def _markdown(rows: list[dict], cmd: str) -> str:
    lines = [f"Command: `{cmd}`", "",
             "| backend | primitive | ours (ms) | anchor | anchor (ms) | ratio | err ours | err anchor |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['case']} | {r['ours'] * 1e3:.2f} | {r['anchor_name']} | "
                     f"{r['anchor'] * 1e3:.2f} | {r['ratio']:.2f} | {r['err_ours']:.1e} | "
                     f"{r['err_anchor']:.1e} |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = list(dict.fromkeys(r["backend"] for r in rows))
    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(cases) + 2))
    h = 0.8 / max(len(backends), 1)
    for j, bk in enumerate(backends):
        ys, vals = [], []
        for i, c in enumerate(cases):
            for r in rows:
                if r["backend"] == bk and r["case"] == c:
                    ys.append(i + j * h)
                    vals.append(r["ratio"])
        ax.barh(ys, vals, height=h, label=bk)
    ax.set_yticks([i + 0.4 - h / 2 for i in range(len(cases))], cases)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("time ours / anchor (< 1: faster)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_bench(backend: str | None = None, quick: bool = False, out: Any = "bench-out",
              *, sizes: dict | None = None, stream: Any = None) -> list[dict]:
    """Run every case on every backend present (or only ``backend``); print and save the report.

    Parameters
    ----------
    backend : str, optional
        A name from :func:`xpmat.backends.available_backends` (``"numpy"``, ``"torch:cpu"``, ...).
        ``array_api_strict`` and JAX (eager: every call dispatches op by op) are skipped
        unless named.
    quick : bool
        Small sizes (under a minute on 2 CPU cores).
    out : path
        Folder for ``bench.md`` and ``bench.png`` (created).
    sizes : dict, optional
        Override entries of the size table (tests use it).

    Returns
    -------
    list of dict
        One row per (backend, case): times in seconds, ratio, relative errors.
    """
    from xpmat.backends import available_backends

    stream = sys.stdout if stream is None else stream
    cfg = dict(QUICK if quick else FULL)
    cfg.update(sizes or {})
    found = available_backends()
    if backend is None:
        chosen = [b for b in found if b.name != "array_api_strict" and not b.name.startswith("jax")]
    else:
        chosen = [b for b in found if b.name == backend]
        if not chosen:
            raise ValueError(f"backend {backend!r} not available; found {[b.name for b in found]}")
    rows = []
    for b in chosen:
        lib = _array.library_name(b.xp)
        cases = _cases(b.xp, b.device, lib, cfg)
        for i, (name, aname, ours, anchor, err) in enumerate(cases):
            print(f"\r[{b.name}] {i + 1}/{len(cases)} {name:<32}", end="", file=sys.stderr, flush=True)
            t_o, r_o = _time(ours, cfg["repeat"])
            t_a, r_a = _time(anchor, cfg["repeat"])
            rows.append({"backend": b.name, "case": name, "anchor_name": aname, "ours": t_o, "anchor": t_a,
                         "ratio": t_o / t_a if t_a > 0 else math.inf, "err_ours": err(r_o),
                         "err_anchor": err(r_a)})
        print(file=sys.stderr)
    cmd = "python -m xpmat bench" + (f" --backend {backend}" if backend else "")
    cmd += " --quick" if quick else ""
    md = _markdown(rows, cmd)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench.md"), "w") as fh:
        fh.write(md)
    _plot(rows, os.path.join(out, "bench.png"))
    print(md, file=stream)
    print(f"written: {os.path.join(out, 'bench.md')}, {os.path.join(out, 'bench.png')}", file=stream)
    return rows
