"""The input policy of every public primitive, on every backend (table "Input policy" of
``docs/backends.md``; each primitive's policy is its ``Spec`` in ``primitive_specs.py``).

- NaN / Inf: NaN in the outputs of the matrix that holds it ("member"), NaN where arithmetic
  takes it ("ieee"), or a ``ValueError`` naming the argument ("error"); never the backend's
  ``LinAlgError`` and never a finite-looking answer.
- Empty input: results of the right shapes without NaN ("empty"), or a ``ValueError`` naming
  the argument ("error").
- float16 / bfloat16: results in the input's dtype, close to the float64 result.
- Scale: ``t`` times the input gives ``t**degree`` times each output, from 1e-30 to 1e30.

One small draw per case (a 5 × 4 matrix, or 3 × 0 / 0 × 3), so the file stays cheap on every
backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DASK_LONG_LOOP, Backend
from primitive_specs import SPECS, Draw, Spec

import xpmat as xm

NAMES = sorted(SPECS)

# Why the dask column skips a test (the same words stand in backends/dask.md)


def outputs(result: Any) -> list[Any]:
    """The results of a call as a flat list (tuples and named tuples opened)."""
    if isinstance(result, tuple):
        return [o for r in result for o in outputs(r)]
    return [result]


def floating(backend: Backend, x: Any) -> bool:
    return hasattr(x, "dtype") and backend.xp.isdtype(x.dtype, "real floating")


def run(spec: Spec, backend: Backend, args: tuple[np.ndarray, ...], dtype: str = "float64") -> list:
    """``spec`` called on ``args`` moved to ``backend`` in ``dtype``; outputs on the host
    (float64 NumPy arrays, or the Python objects that are not arrays)."""
    out = outputs(spec.call(*(backend.asarray(a, dtype) for a in args)))
    return [backend.to_numpy(o) if floating(backend, o) else o for o in out]


def arg_name(spec: Spec, i: int) -> str:
    """The name of argument ``i`` (the spec's ``call`` is a lambda named after the primitive's)."""
    return spec.call.__code__.co_varnames[i]


def with_bad(args: tuple[np.ndarray, ...], i: int, value: float) -> tuple[np.ndarray, ...]:
    bad = np.array(args[i], copy=True)
    bad[(0,) * bad.ndim] = value
    return (*args[:i], bad, *args[i + 1:])


# ----------------------------------------------------------------------------- NaN / Inf

@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's "invalid value" on Inf - Inf
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_input(backend: Backend, name: str, value: float) -> None:
    spec = SPECS[name]
    args = with_bad(spec.build(Draw(5, 4)), spec.bad_arg, value)
    if spec.nan == "error" and backend.lib != "dask":
        with pytest.raises(ValueError, match=f"`{arg_name(spec, spec.bad_arg)}`"):
            run(spec, backend, args)
        return
    out = run(spec, backend, args)
    if spec.nan == "unread":
        return
    arrays = [o for o, k in zip(out, spec.out_degrees, strict=True) if k is not None]
    if spec.nan == "member":
        for o in arrays:
            assert np.all(np.isnan(o)), f"{name}: an output of a matrix holding {value} is not all NaN"
    else:
        assert any(not np.all(np.isfinite(o)) for o in arrays), (
            f"{name}: {value} in `{arg_name(spec, spec.bad_arg)}` gives a finite-looking answer")


# ----------------------------------------------------------------------------- empty

@pytest.mark.parametrize("name", NAMES)
def test_empty_input(backend: Backend, name: str) -> None:
    spec = SPECS[name]
    for draw in (Draw(0, 3), Draw(3, 0)):
        args = spec.build(draw)
        if spec.empty == "error":
            if any(a.size == 0 for a in args):
                with pytest.raises(ValueError, match="`"):
                    run(spec, backend, args)
            continue
        for o in run(spec, backend, args):
            if isinstance(o, np.ndarray):
                assert np.all(np.isfinite(o)), f"{name}: NaN/Inf from the empty input {draw}"


# ----------------------------------------------------------------------------- low precision

#: Relative distance to the float64 result allowed in half precision: a few hundred ulp (2^-11
#: for float16, 2^-8 for bfloat16), for primitives that run Newton-Schulz steps or EM
#: iterations natively in bfloat16 (msign, polar's Newton-Schulz, kron_matmul).
LOW_TOL = {"float16": 0.1, "bfloat16": 0.3}


def _low_dtypes(backend: Backend) -> list[str]:
    names = ["float16", "bfloat16"] if backend.has_bfloat16 else ["float16"]
    return [n for n in names if hasattr(backend.xp, n)]


@pytest.mark.parametrize("name", NAMES)
def test_low_precision(backend: Backend, name: str) -> None:
    spec = SPECS[name]
    args = spec.build(Draw(5, 4))
    ref = run(spec, backend, args)
    for low in _low_dtypes(backend):
        res = outputs(spec.call(*(backend.asarray(a, low) for a in args)))
        for o, r, k in zip(res, ref, spec.out_degrees, strict=True):
            if k is None or not floating(backend, o):
                continue
            assert o.dtype == backend.dtype(low), f"{name}: {low} input gave {o.dtype}"
            err = np.linalg.norm(backend.to_numpy(o) - r) / max(np.linalg.norm(r), 1e-30)
            assert err < LOW_TOL[low], f"{name}: {low} result off the float64 one by {err:.2g}"


# ----------------------------------------------------------------------------- scale

@pytest.mark.parametrize("t", [1e-30, 1e30])
@pytest.mark.parametrize("name", NAMES)
def test_scale_equivariance(backend: Backend, name: str, t: float) -> None:
    spec = SPECS[name]
    args = spec.build(Draw(5, 4))
    ref = run(spec, backend, args)
    scaled = tuple(a * t**k for a, k in zip(args, spec.degrees, strict=True))
    for o, r, k in zip(run(spec, backend, scaled), ref, spec.out_degrees, strict=True):
        if k is None or not isinstance(o, np.ndarray):
            continue
        want = r * t**k
        err = np.linalg.norm(o - want) / max(np.linalg.norm(want), 1e-300)
        assert err < 1e-6, f"{name}: output off t^{k} times the unscaled one by {err:.2g} (t = {t})"


# ----------------------------------------------------------------------------- named cases of issue 16

@pytest.mark.skip_xp_backends("dask", reason=DASK_LONG_LOOP)
def test_nmf_small_scale_float32(backend: Backend) -> None:
    """A positive 6 × 5 matrix times 1e-8 (squared gradients live there): same fit as at 1."""
    C = np.random.default_rng(0).random((6, 5)) + 0.1
    fits = []
    for t in (1.0, 1e-8, 1e-10):
        A, B, div, _ = xm.nmf(backend.asarray(C * t, "float32"), 2, iters=30, seed=0)
        M = backend.to_numpy(A) @ backend.to_numpy(B)
        fits.append(np.linalg.norm(M - C * t) / np.linalg.norm(C * t))
        assert np.all(np.isfinite(backend.to_numpy(div)))
    assert fits[1] < 2 * fits[0] + 1e-3 and fits[2] < 2 * fits[0] + 1e-3, fits


def test_adafactor_no_overflow(backend: Backend) -> None:
    """``V̂`` of ``1e150 · ones`` is 1e300: representable, so not Inf."""
    G = backend.asarray(np.full((3, 4), 1e150))
    V = backend.to_numpy(xm.adafactor_second_moment(xm.adafactor_factors(G, beta2=0.5)))
    np.testing.assert_allclose(V, np.full((3, 4), 1e300), rtol=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Inf · 0, and "did not converge": the point
def test_inv_root_inf_diagonal_is_nan(backend: Backend) -> None:
    A = np.eye(3)
    A[1, 1] = np.inf
    for method in ("newton", "eigh"):
        X = backend.to_numpy(xm.inv_root(backend.asarray(A), 2, method=method))
        assert np.all(np.isnan(X)), method


# ----------------------------------------------------------------------------- the documented table

_NAN_WORDS = {"member": "NaN (the matrix)", "ieee": "NaN (as arithmetic)", "error": "`ValueError` (eager)",
              "unread": "values not read"}
_EMPTY_WORDS = {"empty": "empty result", "error": "`ValueError`"}


def test_docs_policy_table_matches_specs() -> None:
    """Each row of the table "Input policy" in docs/backends.md says what the tests hold."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "backends.md").read_text(encoding="utf-8")
    section = page.split("## Input policy", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4:
            rows[cells[0].strip("`")] = cells[1:3]
    assert sorted(rows) == NAMES
    for name, (nan, empty) in rows.items():
        assert nan == _NAN_WORDS[SPECS[name].nan], name
        assert empty == _EMPTY_WORDS[SPECS[name].empty], name


@pytest.mark.parametrize("solver", ["eigh", "svd"])
def test_solvers_never_see_nonfinite_matrices(monkeypatch, solver: str) -> None:
    """cuSOLVER raises on a matrix holding NaN where LAPACK returns NaN (seen on an H200, issue
    of the GPU run): the policy keeps non-finite matrices away from the solver, so a solver that
    raises on them changes nothing.  Checked here with a NumPy solver made as strict."""
    import array_api_compat.numpy as cnp

    real = getattr(cnp.linalg, solver)

    def strict(a, *args, **kwargs):
        if not np.all(np.isfinite(a)):
            raise np.linalg.LinAlgError(f"{solver}: non-finite input reached the solver")
        return real(a, *args, **kwargs)

    monkeypatch.setattr(cnp.linalg, solver, strict)
    A = np.stack([np.eye(3), np.eye(3)])
    A[0, 0, 1] = A[0, 1, 0] = np.nan
    out = xm.inv_root(A, 2) if solver == "eigh" else xm.polar(A)[0]
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1], np.eye(3), atol=1e-12)
