"""The torch classes behave like torch.optim: schedulers, param groups, names, faults, compile.

Every registered class: an lr scheduler reaches every parameter (``LambdaLR(0)`` moves nothing;
``OneCycleLR`` / ``CyclicLR`` with momentum cycling run), per-group routing to AdamW, unknown and
renamed arguments raise ``TypeError``, signatures match the cores' ``DEFAULTS``, bad values
raise ``ValueError`` at construction, a non-finite gradient moves nothing, odd shapes work, and
(six methods) ``torch.compile(opt.step)`` traces without graph breaks.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from conftest import assert_close

import xpmat.optim as xo
from xpmat.optim import muon, transforms

torch = pytest.importorskip("torch")

NAMES = sorted(xo.REGISTRY)
FALLBACK = ("adamw_lr_ratio", "adamw_betas", "adamw_eps", "adamw_weight_decay")


def _params(seed=0, shapes=((10, 8), (5, 2, 2), (4,))):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]


def _grads(params, step):
    gen = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)


def _make(name, params, **kw):
    return xo.torch_class(name)(params, **{**xo.REGISTRY[name].demo, **kw})


def _state_copy(opt, params):
    return [{k: v.clone() for k, v in opt.state[p].items()} for p in params]


# --------------------------------------------------------------------------------------------
# schedulers
@pytest.mark.parametrize("name", NAMES)
def test_lambda_lr_zero_moves_nothing(name):
    """Every parameter follows its group's lr: with LambdaLR(lambda e: 0) nothing moves (the
    matrix parameters, and the 1-D ones the matrix methods hand to AdamW)."""
    ps = _params()
    opt = _make(name, ps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.0)
    before = [p.detach().clone() for p in ps]
    for k in range(2):
        _grads(ps, k)
        opt.step()
        sched.step()
    for p, b in zip(ps, before, strict=True):
        assert torch.equal(p.detach(), b)


@pytest.mark.parametrize("kind", ["one_cycle", "cyclic"])
@pytest.mark.parametrize("name", NAMES)
def test_schedulers_cycle_lr_and_momentum(name, kind):
    """OneCycleLR / CyclicLR with cycle_momentum=True find ``momentum`` or ``betas`` in every
    class that has a momentum coefficient, change it, and the steps go on (finite).  Dion2 has
    none (its momentum is a plain sum): there torch's scheduler refuses cycle_momentum=True,
    and with cycle_momentum=False it cycles the learning rate."""
    ps = _params()
    opt = _make(name, ps)
    lr = opt.param_groups[0]["lr"]

    def make(**kw):
        if kind == "one_cycle":
            return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=6, **kw)
        return torch.optim.lr_scheduler.CyclicLR(opt, base_lr=lr / 10, max_lr=lr, step_size_up=2, **kw)

    if "betas" not in opt.defaults and "momentum" not in opt.defaults:
        assert name == "dion2"
        with pytest.raises(ValueError, match="momentum"):
            make()
        sched, key = make(cycle_momentum=False), "lr"
    else:
        sched = make()
        key = "betas" if "betas" in opt.defaults else "momentum"
    seen = set()
    for k in range(4):
        _grads(ps, k)
        opt.step()
        sched.step()
        g = opt.param_groups[0]
        seen.add(g[key][0] if key == "betas" else g[key])
    assert len(seen) > 1
    assert all(torch.isfinite(p).all() for p in ps)


# --------------------------------------------------------------------------------------------
# param groups and names
@pytest.mark.parametrize("name", [n for n in NAMES if xo.REGISTRY[n].matrix_only])
def test_algorithm_adamw_group_routes_to_adamw(name):
    """A group with ``algorithm="adamw"`` (an embedding, say) runs AdamW on its matrices with
    its own lr; it equals the AdamW core (to rounding); its keys are AdamW's."""
    ps = _params()
    emb = torch.randn(7, 3, dtype=torch.float64).requires_grad_()
    cls = xo.torch_class(name)
    opt = cls([{"params": ps}, {"params": [emb], "algorithm": "adamw", "lr": 0.01}])
    g = opt.param_groups[1]
    assert g["algorithm"] == "adamw" and "momentum" not in g and "rank" not in g
    assert g["betas"] == opt.defaults["adamw_betas"]
    core = xo.core("adamw")
    ref = [emb.detach().clone()]
    st = core.init(ref, lr=0.01, betas=g["betas"], eps=g["eps"], weight_decay=g["weight_decay"])
    for k in range(3):
        _grads([*ps, emb], k)
        opt.step()
        u, st = core.update([emb.grad], st, ref, lr=0.01, betas=g["betas"], eps=g["eps"],
                            weight_decay=g["weight_decay"])
        ref = xo.apply_updates(ref, u)
    # to rounding: on the CPU the torch step runs torch's fused AdamW kernel (torch_foreach)
    torch.testing.assert_close(emb.detach(), ref[0], rtol=1e-13, atol=1e-15)
    assert set(opt.state[emb]) == {"step", "exp_avg", "exp_avg_sq", "nonfinite_count"}
    with pytest.raises(ValueError, match="algorithm must be"):
        cls([{"params": [emb], "algorithm": "sgd"}])


@pytest.mark.parametrize("name", NAMES)
def test_unknown_and_renamed_arguments_raise_type_error(name):
    cls = xo.torch_class(name)
    with pytest.raises(TypeError, match="unknown argument"):
        cls(_params(), learning_rate=0.1)
    with pytest.raises(TypeError, match="unknown argument"):
        cls([{"params": _params(), "learning_rate": 0.1}])
    renamed = {**getattr(cls, "renamed", {})}
    if xo.REGISTRY[name].matrix_only:
        renamed["adamw_lr"] = "adamw_lr_ratio"
        renamed["fallback"] = "algorithm"
    for old, new in renamed.items():
        with pytest.raises(TypeError, match=f"`{old}` was renamed: {new.split()[0].split('=')[0]}"):
            cls(_params(), **{old: 0.5})
        with pytest.raises(TypeError, match=f"`{old}` was renamed"):
            cls([{"params": _params(), old: 0.5}])


def test_renamed_names_of_the_issue():
    """The names the migration note lists raise a TypeError that names the new one."""
    p = _params()
    for cls, old, new in ((xo.Dion, "mu", "momentum"), (xo.Shampoo, "beta1", "betas"),
                          (xo.Adafactor, "decay_rate", "beta2_decay"), (xo.Adafactor, "clip_threshold", "d"),
                          (xo.AdamNMF, "beta", "betas"), (xo.Muon, "adamw_lr", "adamw_lr_ratio")):
        with pytest.raises(TypeError, match=new):
            cls(p, **{old: 0.5})
    # PowerSGD keeps only the keys its base reads (so schedulers cycle the right one)
    assert "momentum" in xo.PowerSGD(p).defaults and "betas" not in xo.PowerSGD(p).defaults
    assert "betas" in xo.PowerSGD(p, base="adamw").defaults
    with pytest.raises(TypeError, match="momentum has no effect with base='adamw'"):
        xo.PowerSGD(p, base="adamw", momentum=0.5)


@pytest.mark.parametrize("name", NAMES)
def test_signature_matches_core_defaults_and_is_documented(name):
    """Explicit keyword signatures: the core's DEFAULTS (+ maximize, + the AdamW fallback for
    matrix methods) with the same defaults, each named in the class docstring."""
    cls = xo.torch_class(name)
    core = xo.core(name)
    sig = inspect.signature(cls.__init__)
    got = {k: v.default for k, v in sig.parameters.items() if k not in ("self", "params", "kwargs")}
    want = dict(core.DEFAULTS, maximize=False)
    if name == "powersgd+":
        want["restart_every"] = 100
    fb = {k: got.pop(k) for k in FALLBACK if k in got}
    assert got == want
    assert bool(fb) == xo.REGISTRY[name].matrix_only
    # every parameter has its own entry in the class's numpydoc Parameters section
    # (``help(cls)`` stands alone: no "the same arguments as ..."), and no stale entry
    documented = _documented_parameters(inspect.getdoc(cls) or "")
    named = {k for k in sig.parameters if k not in ("self", "kwargs")}
    assert named - documented == set(), (name, "undocumented", sorted(named - documented))
    assert documented - named == set(), (name, "documented but not in the signature",
                                         sorted(documented - named))


def _documented_parameters(doc: str) -> set[str]:
    """The names of a numpydoc ``Parameters`` section: its unindented lines ``name : type`` or
    ``name1, name2`` (entries grouped on one line count each), up to the next section."""
    lines = doc.splitlines()
    if "Parameters" not in lines:
        return set()
    start = lines.index("Parameters") + 2
    names: set[str] = set()
    for i, line in enumerate(lines[start:], start):
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"}:
            break  # the next section's header
        if line and not line[0].isspace():
            names.update(n.strip().lstrip("*") for n in line.split(" : ")[0].split(","))
    return names


def test_documented_parameters_reader():
    """The reader of the test above, on a docstring with a missing and a grouped entry."""
    doc = "Title.\n\nParameters\n----------\nlr : float\n    η.\nbetas, eps\n    Adam's.\n\n" \
          "Returns\n-------\nx : float\n"
    assert _documented_parameters(doc) == {"lr", "betas", "eps"}
    assert _documented_parameters("No sections.") == set()


def test_all_and_dir_list_the_classes():
    for n in ("Muon", "AdamW", "Dion", "PowerSGD", "PowerSGDPlus", "Shampoo", "LRE", "Adafactor",
              "AdamNMF", "ManifoldMuon", "SGD", "AdaGrad", "ExponentiatedGradient", "SteepestDescent",
              "SphereSGD"):
        assert n in xo.__all__ and n in dir(xo)


# --------------------------------------------------------------------------------------------
# faults
_BAD = {"lr": [float("nan"), -1.0], "weight_decay": [-1.0], "momentum": [1.0, -0.1, float("nan")],
        "betas": [(1.5, 0.999), (0.9, float("nan"))], "eps": [-1.0], "rank": [0, -2, 1.5],
        "radius": [0.0], "precondition_every": [0], "d": [0.0], "beta2_decay": [0.5],
        "adamw_lr_ratio": [-1.0], "state_dtype": ["bogus", 3], "compute_dtype": ["float8"]}


@pytest.mark.parametrize("name", NAMES)
def test_bad_values_raise_value_error_at_construction(name):
    cls = xo.torch_class(name)
    keys = cls(_params()).defaults
    tried = 0
    for key, values in _BAD.items():
        if key not in keys or (key == "eps" and name == "adafactor"):
            continue
        for v in values:
            with pytest.raises(ValueError, match=key):
                cls(_params(), **{key: v})
            tried += 1
    assert tried >= 3
    if "rank" in keys and xo.REGISTRY[name].matrix_only:  # an int rank that fits no matrix (6×4, 5×4)
        with pytest.raises(ValueError, match="rank=100 exceeds min"):
            cls(_params(), rank=100)
        cls(_params(shapes=((6, 4), (8, 6))), rank=5)  # fits the 8×6; capped at 4 for the 6×4


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_gradient_moves_nothing(name):
    """A NaN in one gradient entry, ±Inf in another parameter's: those parameters and their
    state stay as they were (``nonfinite_count`` 1), the clean one steps; training goes on."""
    ps = _params()
    opt = _make(name, ps)
    _grads(ps, 0)
    opt.step()
    before, state = [p.detach().clone() for p in ps], _state_copy(opt, ps)
    _grads(ps, 1)
    ps[0].grad[1, 2] = float("nan")
    ps[2].grad[0] = float("inf")
    opt.step()
    for i in (0, 2):
        assert torch.equal(ps[i].detach(), before[i])
        st = opt.state[ps[i]]
        assert float(st["nonfinite_count"]) == 1
        for k, v in state[i].items():
            if k != "nonfinite_count":
                assert torch.equal(st[k], v), (name, k)
    assert not torch.equal(ps[1].detach(), before[1]) or name == "manifold_muon"
    for k in range(2, 4):
        _grads(ps, k)
        opt.step()
    assert all(torch.isfinite(p).all() for p in ps)


@pytest.mark.parametrize("name", NAMES)
def test_odd_shapes(name):
    """Zero-size, 1×1, 1×n and n×1 parameters (and 0-d / empty vectors) step without error."""
    shapes = [(0, 4), (4, 0), (1, 1), (1, 5), (5, 1), (3, 0, 2), (0,), (2,)]
    ps = _params(shapes=shapes)
    rank = xo.REGISTRY[name].demo.get("rank")
    opt = _make(name, ps, **({"rank": 1} if isinstance(rank, int) and name != "lre" else {}))
    for k in range(3):
        _grads(ps, k)
        opt.step()
    for p, s in zip(ps, shapes, strict=True):
        assert tuple(p.shape) == s and torch.isfinite(p).all()


@pytest.mark.parametrize("name", NAMES)
def test_sparse_gradients_refused(name):
    ps = _params(shapes=((10, 8),))
    opt = _make(name, ps)
    ps[0].grad = torch.zeros(10, 8, dtype=torch.float64).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_muon_fused_equals_composition(backend):
    """Muon's fused fast path and its chain of transforms are the same method (to rounding)."""
    rng = np.random.default_rng(3)
    shapes = [(8, 5), (8, 5), (5, 8), (3, 2, 2, 2)]
    params = [backend.asarray(rng.standard_normal(s)) for s in shapes]
    h = {"lr": 0.1, "weight_decay": 0.01, "momentum": 0.9}
    fused, chained = muon.transform(**h), muon.composed(**h)
    a, b = fused.init(params), chained.init(params)
    assert type(a[0]) is type(b[0]) is muon.MuonState
    for _ in range(3):
        grads = [backend.asarray(rng.standard_normal(s)) for s in shapes]
        ua, a = fused.update(grads, a, params)
        ub, b = chained.update(grads, b, params)
        for x, y in zip(ua, ub, strict=True):
            assert_close(x, backend.to_numpy(y), backend, rtol=1e-12, atol=1e-14)


def test_skip_nonfinite_functional(backend):
    """The policy in the functional form: the update of the bad parameter is 0, its state the
    old one, ``step`` not advanced."""
    t = transforms.skip_nonfinite(transforms.chain(transforms.scale_by_adam(), transforms.scale_by_lr(0.1)))
    params = [backend.asarray(np.ones((2, 3))), backend.asarray(np.ones(3))]
    st = t.init(params)
    g = np.ones((2, 3))
    g[0, 0] = np.nan
    u, st2 = t.update([backend.asarray(g), backend.asarray(np.ones(3))], st, params)
    assert_close(u[0], np.zeros((2, 3)), backend, rtol=0, atol=0)
    assert_close(st2[0].exp_avg, np.zeros((2, 3)), backend, rtol=0, atol=0)
    assert float(backend.to_numpy(st2[0].step)) == 0 and float(backend.to_numpy(st2[1].step)) == 1
    assert float(backend.to_numpy(st2[0].nonfinite_count)) == 1
    assert float(np.abs(backend.to_numpy(u[1])).max()) == pytest.approx(0.1)


# --------------------------------------------------------------------------------------------
# torch.compile
COMPILED = ["adamw", "muon", "dion", "powersgd", "powersgd+", "shampoo"]
COMPILED += ["adagrad_full", "exponentiated_gradient", "sphere_sgd"]  # SGD, SteepestDescent: by hand


@pytest.mark.slow  # about 6 s each on 2 CPU cores (dynamo tracing twice)
@pytest.mark.parametrize("name", COMPILED)
def test_compile_without_graph_breaks(name):
    """After a first eager step (state creation draws seeded random factors on the host),
    ``torch._dynamo.explain(opt.step)`` finds no graph break, and the compiled step equals the
    eager one without recompiling (PowerSGD+'s restart and Shampoo's refresh are torch.cond)."""
    import torch._dynamo.testing

    kw = {"shampoo": {"precondition_every": 2}, "powersgd+": {"restart_every": 2}}.get(name, {})
    ps, ref = _params(shapes=((10, 8), (8,))), _params(shapes=((10, 8), (8,)))
    opt, ref_opt = _make(name, ps, **kw), _make(name, ref, **kw)
    for o, q in ((opt, ps), (ref_opt, ref)):
        _grads(q, 0)
        o.step()
    _grads(ps, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explained = torch._dynamo.explain(opt.step)()
        assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]
        _grads(ref, 1)
        ref_opt.step()
        counter = torch._dynamo.testing.CompileCounter()
        step = torch.compile(opt.step, backend=counter)
        for k in range(2, 5):
            _grads(ps, k)
            _grads(ref, k)
            step()
            ref_opt.step()
    torch._dynamo.reset()
    assert counter.frame_count == 1
    for a, b in zip(ps, ref, strict=True):
        # Dion: eager "auto" takes CholeskyQR2 here, traced Householder (same Q to rounding)
        assert float((a.detach() - b.detach()).abs().max()) < 1e-12
