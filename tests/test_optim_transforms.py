"""The transform algebra of ``xpmat.optim.transforms``, from its docstrings: ``chain`` (one flat
state, the shared ``step`` counter, the ``state=`` type), ``route`` (the partition and the
states aligned with ``params``), ``skip_nonfinite`` (non-finite and zero-size parameters, the
``sanitize`` pass, ``flags``), ``per_parameter`` and ``as_matrix`` (the matrix views).

The algebra is the same code on every library, so its own tests run on NumPy and PyTorch (CPU)
(``nt_backend``); the blocks it composes run on every backend in the method tests.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from conftest import assert_array, assert_close, require_backend
from optim_helpers import gaussian_seq

import xpmat.optim as xo
from xpmat.optim import adamw, transforms

T = transforms


@pytest.fixture(params=["numpy", "torch"])
def nt_backend(request):
    """NumPy and PyTorch (CPU); skipped where the library is missing or not selected."""
    return require_backend(request.param)


def _ones(backend, shapes):
    return [backend.asarray(np.ones(s)) for s in shapes]


def _counting(field):
    """A block that counts steps in ``step`` and records the count it saw before the step in
    ``field`` (the rule the module doc gives every block that counts)."""
    state = NamedTuple(f"_{field}", [("step", Any), (field, Any)])

    def init_one(p, xp):
        return state(xp.zeros((), dtype=p.dtype), xp.zeros((), dtype=p.dtype))

    def update_one(g, s, p, xp):
        return g, state(s.step + 1, s.step)

    return T.per_parameter(init_one, update_one, state)


def _recording(shapes_seen, fn=None):
    """A stateless block that records the shapes of the gradients it sees and returns
    ``fn(g, xp)`` (default: ``g``)."""

    def update_one(g, s, p, xp):
        shapes_seen.append((tuple(g.shape), tuple(p.shape)))
        return (g if fn is None else fn(g, xp)), s

    return T.per_parameter(None, update_one)


# --------------------------------------------------------------------------------------------
# chain
def test_chain_and_route_compose(backend):
    """chain: momentum, then Adam with β = 0, ε = 0 (the sign), then the step size: every entry
    moves by exactly η per step; the chained state is one flat NamedTuple (the torch state keys).
    route: matrices to one transform, vectors to another."""
    T = transforms
    shapes = [(4, 3), (3,)]
    seq = gaussian_seq(shapes, 3)
    params0 = [np.ones(s) for s in shapes]
    t = xo.chain(T.momentum(0.9), T.scale_by_adam(betas=(0.0, 0.0), eps=0.0), T.scale_by_lr(0.25))
    params = [backend.asarray(p) for p in params0]
    st = t.init(params)
    assert st[0]._fields == ("momentum_buffer", "step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    for grads in seq:
        before = [backend.to_numpy(p) for p in params]
        ups, st = t.update([backend.asarray(g) for g in grads], st, params)
        params = xo.apply_updates(params, ups)
        for b, p in zip(before, params, strict=True):
            np.testing.assert_allclose(np.abs(backend.to_numpy(p) - b), 0.25, rtol=1e-12)
    assert_array(params[0], backend, shape=(4, 3), dtype="float64")
    assert backend.to_numpy(st[0].step) == 3
    with pytest.raises(ValueError, match="'exp_avg' appears in two chained transforms"):
        xo.chain(T.scale_by_adam(), T.scale_by_adam())
    r = xo.route(adamw.transform(lr=0.1), adamw.transform(lr=0.0))
    params = [backend.asarray(p) for p in params0]
    st = r.init(params)
    ups, st = r.update([backend.asarray(g) for g in seq[0]], st, params)
    assert_close(ups[1], np.zeros(3), backend, rtol=0, atol=0)
    assert float(np.abs(backend.to_numpy(ups[0])).max()) > 0.09


def test_chain_feeds_updates_forward(nt_backend):
    """Each block's updates are the next one's gradients: two step sizes multiply (and each
    carries the sign); stateless blocks chain to an empty state; no parameters, no work."""
    b = nt_backend
    g = np.arange(6.0).reshape(3, 2) - 2.5
    t = xo.chain(T.scale_by_lr(2.0), T.scale_by_lr(3.0), T.add_decayed_weights(0.0))
    params = [b.asarray(np.ones((3, 2)))]
    st = t.init(params)
    assert st[0]._fields == ()
    ups, st = t.update([b.asarray(g)], st, params)
    assert_array(ups[0], b, shape=(3, 2), dtype="float64")
    assert_close(ups[0], 6.0 * g, b, rtol=1e-15)
    assert t.init([]) == []
    assert t.update([], [], []) == ([], [])
    with pytest.raises(ValueError, match="at least one transform"):
        xo.chain()


def test_chain_shares_one_step_counter(nt_backend):
    """Blocks that count steps share ONE ``step``: each sees the count before the step and
    returns it plus one, so after k steps ``step`` is k (not k per block), and a debiased EMA
    divides by 1 − βᵗ with that t: on a constant gradient its output is the gradient exactly."""
    b = nt_backend
    g = np.array([[1.0, -2.0], [0.5, 4.0]])
    t = xo.chain(_counting("seen_a"), T.ema(0.5, debias=True), _counting("seen_b"))
    assert t.state._fields == ("step", "seen_a", "exp_avg", "seen_b")
    params = [b.asarray(np.zeros((2, 2)))]
    st = t.init(params)
    for k in range(1, 5):
        ups, st = t.update([b.asarray(g)], st, params)
        assert b.to_numpy(st[0].step) == k
        assert b.to_numpy(st[0].seen_a) == k - 1 and b.to_numpy(st[0].seen_b) == k - 1
        assert_close(ups[0], g, b, rtol=1e-15)  # M_k = (1 − 0.5ᵏ) g, divided by 1 − 0.5ᵏ
        assert_close(st[0].exp_avg, (1 - 0.5 ** k) * g, b, rtol=1e-15)


def test_chain_state_type(nt_backend):
    """``state=``: the merged state's type, which may have more fields (left None); one that
    lacks a field of the chain is a ValueError."""

    class Wide(NamedTuple):
        momentum_buffer: Any = None
        step: Any = None
        exp_avg: Any = None
        extra: Any = None

    class Narrow(NamedTuple):
        momentum_buffer: Any = None

    b = nt_backend
    t = xo.chain(T.momentum(0.9), T.ema(0.5), state=Wide)
    assert t.state is Wide
    params = _ones(b, [(2, 3), (4,)])
    st = t.init(params)
    assert [type(s) for s in st] == [Wide, Wide]
    assert st[0].extra is None
    assert_array(st[1].exp_avg, b, shape=(4,), dtype="float64")
    _, st = t.update([b.asarray(np.ones((2, 3))), b.asarray(np.ones(4))], st, params)
    assert type(st[0]) is Wide and st[0].extra is None
    assert_close(st[0].momentum_buffer, np.full((2, 3), 0.1), b, rtol=1e-15)
    with pytest.raises(ValueError, match=r"lacks the field\(s\) \['exp_avg', 'step'\]"):
        xo.chain(T.momentum(0.9), T.ema(0.5), state=Narrow)


# --------------------------------------------------------------------------------------------
# route
def test_route_partitions_and_aligns_states(nt_backend):
    """Parameters of ndim ≥ 2 go to ``main``, the rest to ``other``; each state is the state of
    the transform that owns its parameter, at the parameter's position; ``state`` is main's."""
    b = nt_backend
    shapes = [(3, 2), (4,), (2, 2, 2), (5,)]
    r = xo.route(T.momentum(0.9), T.ema(0.5))
    assert r.state is T.MomentumState
    params = _ones(b, shapes)
    st = r.init(params)
    assert [type(s) for s in st] == [T.MomentumState, T.EmaState, T.MomentumState, T.EmaState]
    assert_array(st[2].momentum_buffer, b, shape=(2, 2, 2), dtype="float64")
    assert_array(st[3].exp_avg, b, shape=(5,), dtype="float64")
    gs = gaussian_seq(shapes, 1, seed=3)[0]
    ups, st = r.update([b.asarray(g) for g in gs], st, params)
    for u, g, s, f in zip(ups, gs, shapes, (0.1, 0.5, 0.1, 0.5), strict=True):
        assert_array(u, b, shape=s, dtype="float64")  # momentum: (1 − 0.9) g; EMA: (1 − 0.5) g
        assert_close(u, f * g, b, rtol=1e-14)
    assert_close(st[0].momentum_buffer, 0.1 * gs[0], b, rtol=1e-14)
    assert_close(st[1].exp_avg, 0.5 * gs[1], b, rtol=1e-14)
    assert b.to_numpy(st[3].step) == 1


def test_route_custom_predicate_and_one_sided(nt_backend):
    """``is_main`` replaces the ndim rule; when every parameter falls on one side the other
    transform is never called."""
    b = nt_backend
    seen_main, seen_other = [], []
    r = xo.route(_recording(seen_main, lambda g, xp: 2 * g), _recording(seen_other, lambda g, xp: -g),
                 is_main=lambda p: p.shape[0] == 4)
    params = _ones(b, [(4, 2), (3, 2), (4,)])
    ups, st = r.update([b.asarray(np.ones(p.shape)) for p in params], r.init(params), params)
    assert seen_main == [((4, 2), (4, 2)), ((4,), (4,))] and seen_other == [((3, 2), (3, 2))]
    for u, want in zip(ups, (2.0, -1.0, 2.0), strict=True):
        assert_close(u, np.full(tuple(u.shape), want), b, rtol=0)
    seen_main.clear()
    seen_other.clear()
    vectors = _ones(b, [(4,), (3,)])
    r = xo.route(_recording(seen_main), _recording(seen_other))
    ups, st = r.update([b.asarray(np.ones(p.shape)) for p in vectors], r.init(vectors), vectors)
    assert seen_main == [] and [s for s, _ in seen_other] == [(4,), (3,)]
    assert len(ups) == len(st) == 2


# --------------------------------------------------------------------------------------------
# skip_nonfinite
def _guarded(sanitize=True, flags=None):
    """AdamW-like EMA guarded by ``skip_nonfinite``: state ``step``, ``exp_avg``."""
    return T.skip_nonfinite(xo.chain(T.ema(0.5), T.scale_by_lr(1.0)), sanitize=sanitize, flags=flags)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # NumPy's sum of 1e308s
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, "overflow"])
def test_skip_nonfinite_leaves_the_bad_parameter(nt_backend, bad):
    """A parameter whose gradient holds a NaN or ±Inf (or whose sum overflows) gets a zero
    update and keeps its state (``step`` included); its ``nonfinite_count`` grows by one; the
    others step as usual."""
    b = nt_backend
    t = _guarded()
    assert t.state._fields == ("step", "exp_avg", "nonfinite_count")
    params = _ones(b, [(3, 2), (4,)])
    g0, g1 = np.full((3, 2), 2.0), np.full(4, -1.0)
    _, st = t.update([b.asarray(g0), b.asarray(g1)], t.init(params), params)
    before = [b.to_numpy(st[0].exp_avg), b.to_numpy(st[1].exp_avg)]
    bad_g = g0.copy()
    if bad == "overflow":
        bad_g[:] = 1e308  # every entry finite, the sum is not
    else:
        bad_g[1, 0] = bad
    ups, st = t.update([b.asarray(bad_g), b.asarray(g1)], st, params)
    assert_close(ups[0], np.zeros((3, 2)), b, rtol=0, atol=0)
    assert_close(st[0].exp_avg, before[0], b, rtol=0)
    assert b.to_numpy(st[0].step) == 1 and b.to_numpy(st[0].nonfinite_count) == 1
    assert_close(ups[1], -(0.75 * g1), b, rtol=1e-15)  # M = ½ g, then ½ (½ g) + ½ g
    assert_close(st[1].exp_avg, 0.75 * g1, b, rtol=1e-15)
    assert b.to_numpy(st[1].step) == 2 and b.to_numpy(st[1].nonfinite_count) == 0
    ups, st = t.update([b.asarray(g0), b.asarray(g1)], st, params)  # finite again: it steps
    assert_close(st[0].exp_avg, 0.75 * g0, b, rtol=1e-15)
    assert b.to_numpy(st[0].step) == 2 and b.to_numpy(st[0].nonfinite_count) == 1


def test_skip_nonfinite_sanitize_and_flags(nt_backend):
    """``sanitize`` hands the inner block a zero gradient in place of a bad one (a block that
    raises on NaN, as a factorization does, never sees it); without it the block sees the NaN.
    ``flags(grads, params)`` overrides the per-parameter flags."""
    b = nt_backend

    def refuse_nan(g, xp):
        if not np.all(np.isfinite(b.to_numpy(g))):
            raise FloatingPointError("non-finite gradient")
        return g

    params = _ones(b, [(2, 2)])
    g = np.array([[1.0, np.nan], [0.0, 2.0]])
    t = T.skip_nonfinite(_recording([], refuse_nan))
    ups, st = t.update([b.asarray(g)], t.init(params), params)
    assert_close(ups[0], np.zeros((2, 2)), b, rtol=0, atol=0)
    assert b.to_numpy(st[0].nonfinite_count) == 1
    t = T.skip_nonfinite(_recording([], refuse_nan), sanitize=False)
    with pytest.raises(FloatingPointError):
        t.update([b.asarray(g)], t.init(params), params)

    def never(grads, ps):
        return [b.xp.asarray(False, device=b.device) for _ in grads]

    t = _guarded(flags=never)
    ups, st = t.update([b.asarray(np.ones((2, 2)))], t.init(params), params)
    assert_close(ups[0], np.zeros((2, 2)), b, rtol=0, atol=0)
    assert b.to_numpy(st[0].step) == 0 and b.to_numpy(st[0].nonfinite_count) == 1


def test_skip_nonfinite_zero_size(nt_backend):
    """Zero-size parameters get zero-size updates and no inner state (its fields are None);
    the others step as usual; all zero-size: nothing runs."""
    b = nt_backend
    seen = []
    t = T.skip_nonfinite(xo.chain(_recording(seen), T.ema(0.5)))
    params = _ones(b, [(0, 3), (2, 2), (0,)])
    st = t.init(params)
    assert st[0].step is None and st[0].exp_avg is None and st[2].exp_avg is None
    assert b.to_numpy(st[0].nonfinite_count) == 0
    assert_array(st[1].exp_avg, b, shape=(2, 2), dtype="float64")
    ups, st = t.update([b.asarray(np.ones(p.shape)) for p in params], st, params)
    assert seen == [((2, 2), (2, 2))]
    assert_array(ups[0], b, shape=(0, 3), dtype="float64")
    assert_array(ups[2], b, shape=(0,), dtype="float64")
    assert_close(ups[1], np.full((2, 2), 0.5), b, rtol=1e-15)
    assert st[0].exp_avg is None and b.to_numpy(st[0].nonfinite_count) == 0
    seen.clear()
    empty = _ones(b, [(0, 2)])
    ups, st = t.update([b.asarray(np.ones((0, 2)))], t.init(empty), empty)
    assert seen == [] and tuple(ups[0].shape) == (0, 2)


# --------------------------------------------------------------------------------------------
# per_parameter, as_matrix
def test_per_parameter(nt_backend):
    """``init_one(p, xp)`` and ``update_one(g, state, p, xp)`` run once per parameter with the
    parameters' namespace; ``init_one=None`` is stateless (EmptyState)."""

    class Acc(NamedTuple):
        total: Any

    b = nt_backend
    calls = []

    def init_one(p, xp):
        calls.append(xp)
        return Acc(xp.zeros(tuple(p.shape), dtype=p.dtype))

    def update_one(g, s, p, xp):
        return 2 * g + p, Acc(s.total + g)

    t = T.per_parameter(init_one, update_one, Acc)
    assert t.state is Acc
    params = _ones(b, [(2, 3), (4,)])
    st = t.init(params)
    assert len(calls) == 2 and all(xp is b.xp for xp in calls)
    gs = gaussian_seq([(2, 3), (4,)], 2, seed=4)
    for grads in gs:
        ups, st = t.update([b.asarray(g) for g in grads], st, params)
    for i, s in enumerate([(2, 3), (4,)]):
        assert_array(ups[i], b, shape=s, dtype="float64")
        assert_close(ups[i], 2 * gs[1][i] + 1, b, rtol=1e-15)
        assert_close(st[i].total, gs[0][i] + gs[1][i], b, rtol=1e-15)
    stateless = T.per_parameter(None, lambda g, s, p, xp: (g, s))
    assert stateless.state is T.EmptyState
    assert stateless.init(params) == [T.EmptyState(), T.EmptyState()]


def _center_rows(g, xp):
    return g - xp.mean(g, axis=-1, keepdims=True)


@pytest.mark.parametrize(("shape", "kw", "view"), [
    ((4, 2, 3, 3), {}, (4, 18)),
    ((3, 4, 5), {}, (3, 20)),
    ((3, 4, 5), {"flatten": False}, (3, 4, 5)),
    ((6, 5), {"num_heads": 2}, (2, 3, 5)),
    ((6, 5), {}, (6, 5)),
], ids=["conv", "3d", "experts", "heads", "matrix"])
def test_as_matrix_views(nt_backend, shape, kw, view):
    """``inner`` runs on the matrix view (conv kernels ``(out, in·k·k)``; ``flatten=False``:
    a batch over the leading axes; ``num_heads`` H: ``(H, d, n)``) and the updates come back in
    the parameter's shape; states are the views' states."""
    b = nt_backend
    seen = []
    t = T.as_matrix(_recording(seen, _center_rows), **kw)
    g = np.random.default_rng(5).standard_normal(shape)
    params = [b.asarray(np.ones(shape))]
    ups, _ = t.update([b.asarray(g)], t.init(params), params)
    assert seen == [(view, view)]
    gv = g.reshape(view)
    assert_array(ups[0], b, shape=shape, dtype="float64")
    assert_close(ups[0], (gv - gv.mean(axis=-1, keepdims=True)).reshape(shape), b, rtol=1e-13, atol=1e-15)
    st = T.as_matrix(T.momentum(0.9), **kw).init(params)
    assert_array(st[0].momentum_buffer, b, shape=view, dtype="float64")


def test_as_matrix_refuses_vectors_and_bad_heads(nt_backend):
    b = nt_backend
    t = T.as_matrix(T.momentum(0.9))
    with pytest.raises(ValueError, match="not a matrix"):
        t.init(_ones(b, [(3,)]))
    with pytest.raises(ValueError, match="num_heads=4"):
        T.as_matrix(T.momentum(0.9), num_heads=4).init(_ones(b, [(6, 5)]))
