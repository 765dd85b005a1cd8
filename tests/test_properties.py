"""Property-based test (hypothesis) of every public primitive's input policy.

Each example draws a shape (1 × 1, wide, tall, square, empty; alone or a batch of two), a
spectrum (random, zero, rank-deficient, repeated, tiny gaps), a scale (1, 1e-150, 1e150), an
optional NaN / Inf in one batch member, and a memory layout (contiguous, read-only,
non-contiguous).  Every primitive then must:

- raise nothing but a ``ValueError`` naming an argument, and that only for empty or
  non-finite input (never a ``LinAlgError``, ``IndexError``, ...);
- keep its NaN / Inf policy (``primitive_specs.Spec.nan``): the bad member's outputs all NaN
  and the other member's untouched, NaN where arithmetic takes it, or the ``ValueError``;
- return finite outputs for finite input (unless the output's scale ``t**k`` overflows);
- be scale-equivariant (``t**k`` times the unscaled outputs) and give the same outputs for
  every layout, where the outputs are unique (a random spectrum; a zero one);
- leave its inputs unchanged.

Profiles: the default one (``ci``, 25 derandomized examples per primitive and backend, no
example database) keeps the file under about 30 s on NumPy + PyTorch;
``HYPOTHESIS_PROFILE=long pytest tests/test_properties.py`` runs 400 random examples each.

Backends: NumPy and PyTorch only (``XPMAT_TEST_BACKENDS`` still selects).  The same code path
runs on the other backends, whose per-call cost (JAX compiles every new shape, Dask builds a
graph per call) would make hundreds of draws cost minutes; ``tests/test_policy.py`` holds
every backend to the same policies on fixed draws.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from conftest import ALL_BACKENDS, Backend, get_backend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from primitive_specs import SPECS, SPECTRA, Draw, Spec
from test_policy import NAMES, floating, outputs

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_CHOSEN = os.environ.get("XPMAT_TEST_BACKENDS") or ",".join(ALL_BACKENDS)  # as conftest reads it
BACKENDS = [b for b in ("numpy", "torch") if b in {n.strip() for n in _CHOSEN.split(",")}]
UNIQUE = ("random", "zero")  # spectra whose outputs are unique (no free basis of a subspace)


@st.composite
def examples(draw: Any) -> dict:
    kind = draw(st.sampled_from(["1x1", "wide", "tall", "square", "empty"]))
    a, b = draw(st.integers(2, 4)), draw(st.integers(1, 3))
    m, n = {"1x1": (1, 1), "wide": (a, a + b), "tall": (a + b, a), "square": (a, a),
            "empty": draw(st.sampled_from([(0, a), (a, 0)]))}[kind]
    return {
        "draw": Draw(m, n, draw(st.sampled_from([(), (2,)])), draw(st.sampled_from(SPECTRA)),
                     draw(st.integers(0, 2**16))),
        "scale": draw(st.sampled_from([1.0, 1e-150, 1e150])),
        "bad": draw(st.sampled_from([None, None, float("nan"), float("inf")])),
        "layout": draw(st.sampled_from(["contiguous", "readonly", "strided"])),
    }


def to_backend(backend: Backend, a: np.ndarray, layout: str) -> Any:
    """``a`` on ``backend`` in ``layout``: read-only (NumPy) or with a stride of 2 on its
    last axis (a view of a larger array)."""
    if layout == "readonly" and backend.lib == "numpy":
        a = np.array(a)
        a.flags.writeable = False
        return a
    if layout == "strided" and a.ndim:
        big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]))
        big[..., ::2] = a
        return backend.asarray(big)[..., ::2]
    return backend.asarray(a)


def call(spec: Spec, backend: Backend, args: tuple, layout: str = "contiguous") -> list:
    """Outputs of ``spec`` on the host; checks that the inputs come back unchanged."""
    inputs = [to_backend(backend, a, layout) for a in args]
    out = outputs(spec.call(*inputs))
    for x, a in zip(inputs, args, strict=True):
        np.testing.assert_array_equal(backend.to_numpy(x), a, err_msg=f"{spec.name} wrote to its input")
    return [backend.to_numpy(o) if floating(backend, o) else o for o in out]


def same(out: np.ndarray, ref: np.ndarray, tk: float) -> bool:
    """``out == tk · ref`` to ``1e-6`` relative, ``1e-9`` absolute in the unit scale of the
    draws (``out / tk``; an absolute floor: a divergence or a null-space entry that is 0 at
    scale 1 comes back as rounding at scale ``t``)."""
    return bool(np.allclose(out / tk, ref, rtol=1e-6, atol=1e-9))


def representable(t: float, k: float | None) -> bool:
    """Whether the output scale ``t**k`` is a finite float64 (``k`` None: not scaled)."""
    return k is not None and abs(k * np.log10(t)) <= 300


def check_bad(spec: Spec, out: list, ref: list | None, t: float, isolated: bool) -> None:
    """The NaN / Inf policy on the outputs of a call whose first batch member holds one;
    ``ref``: the unscaled outputs of a clean call (for the other member), or None."""
    arrays = [(o, r, k) for o, r, k in zip(out, ref or [None] * len(out), spec.out_degrees,
                                            strict=True) if k is not None]
    if spec.nan == "ieee":
        assert any(not np.all(np.isfinite(o)) for o, _, _ in arrays), "a finite-looking answer"
    elif spec.nan == "member":
        for o, r, k in arrays:
            assert np.all(np.isnan(o[0] if isolated else o)), "the bad member's output is not all NaN"
            if isolated and r is not None and representable(t, k):
                assert same(o[1], r[1], t**k), "NaN in one member changed another"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's "invalid value" on Inf - Inf
@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("name", NAMES)
@PROFILE
@given(ex=examples())
def test_primitive_properties(backend_name: str, name: str, ex: dict) -> None:
    backend = get_backend(backend_name)
    if backend is None:
        pytest.skip(f"backend {backend_name} not available here")
    spec, d, t, bad = SPECS[name], ex["draw"], ex["scale"], ex["bad"]
    clean = spec.build(d)
    args = tuple(a * t**k for a, k in zip(clean, spec.degrees, strict=True))
    empty = any(a.size == 0 for a in clean)
    if bad is not None and args[spec.bad_arg].size:
        a = np.array(args[spec.bad_arg])
        a[(0,) * a.ndim] = bad
        args = (*args[:spec.bad_arg], a, *args[spec.bad_arg + 1:])
    else:
        bad = None
    try:
        ref = call(spec, backend, clean)
        out = call(spec, backend, args, ex["layout"])
    except ValueError as exc:  # only for empty / non-finite input, naming the argument
        assert (empty or bad is not None) and "`" in str(exc), f"{name}: {exc}"
        return
    if bad is not None:
        if spec.nan == "unread" or (spec.nan == "ieee" and empty):  # a sum over nothing is 0
            return
        unbatched = spec.build(replace(d, batch=()))[spec.bad_arg]
        check_bad(spec, out, ref if d.spectrum in UNIQUE else None, t,
                  isolated=args[spec.bad_arg].ndim > unbatched.ndim)
        return
    for o, r, k in zip(out, ref, spec.out_degrees, strict=True):
        if not (representable(t, k) and isinstance(o, np.ndarray)):
            continue
        assert np.all(np.isfinite(o)), f"{name}: a non-finite output from finite input"
        if d.spectrum in UNIQUE:
            assert same(o, r, t**k), f"{name}: not t^{k} × the unscaled output"
