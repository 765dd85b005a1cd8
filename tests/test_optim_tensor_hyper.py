"""torch.optim conventions the torch classes follow: tensor hyper-parameters, torch.optim's
implementation switches (``foreach``, ``fused``, ``capturable``, ``differentiable``) and complex
parameters stepped as real views.

Tensor hyper-parameters: the same steps with float and with tensor ``lr`` / ``momentum`` /
``betas`` / ``weight_decay`` give the same parameters — bitwise for float64 tensors (the scalar
arithmetic, ``1 − β`` or ``s η``, runs in the tensor's float64 as the float path runs it in
Python's double, and meets the parameter-sized arrays as the same rounded value), to float32
rounding for float32 tensors (their values are float32(0.01), not 0.01).  The step never reads
them on the host (counted at the dispatcher: ``aten._local_scalar_dense``), and torch's
schedulers, which ``fill_`` a tensor ``lr`` in place, drive them.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import xpmat.optim as xo
from xpmat.optim import adamw, sgd, torch_foreach

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402


def _t(v, dtype=torch.float64):
    return torch.tensor(v, dtype=dtype)


# class -> (extra float kwargs, hyper-parameters given as tensors in the tensor run)
CASES = {
    "AdamW": ({"weight_decay_mode": "decoupled"}, {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 0.1}),
    "AdamW-l2": ({"weight_decay_mode": "l2", "amsgrad": True, "nesterov": True},
                 {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.05}),
    "SGD": ({"nesterov": True}, {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1}),
    "AdaGrad": ({"lr_decay": 0.01}, {"lr": 1e-2, "momentum": 0.5, "weight_decay": 0.1}),
    "Muon": ({"compute_dtype": None}, {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1,
                                       "adamw_betas": (0.9, 0.95), "adamw_weight_decay": 0.01}),
    "Muon-bf16": ({"compute_dtype": "bfloat16"}, {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1}),
    "Dion": ({}, {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1}),
    "PowerSGD": ({"rank": 2}, {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1}),
    "PowerSGD-adamw": ({"rank": 2, "base": "adamw"}, {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 0.1}),
    "SteepestDescent": ({}, {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1}),
    "SphereSGD": ({}, {"lr": 1e-2, "momentum": 0.9}),
    "ExponentiatedGradient": ({"mirror": "hypentropy"}, {"lr": 1e-2, "momentum": 0.9}),
    "ManifoldMuon": ({}, {"lr": 1e-2, "momentum": 0.5}),
    "Shampoo": ({"precondition_every": 2}, {"lr": 1e-2, "weight_decay": 0.1}),
    "Adafactor": ({}, {"lr": 1e-2, "weight_decay": 0.1}),
    "AdamNMF": ({}, {"lr": 1e-2, "weight_decay": 0.1}),
    "LRE": ({}, {"lr": 1e-2, "weight_decay": 0.1}),
    "NorMuon": ({}, {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1}),
    "Dion2": ({"compute_dtype": None}, {"lr": 1e-2, "weight_decay": 0.1}),
}
# Muon and Dion2 with float32 Newton–Schulz (their default "auto" is bf16 on bf16-capable CPUs,
# where one rounding more is 2^-8, not 2^-24: that is the "Muon-bf16" case)


# Where float64 tensors do not give the float run bitwise, and why.
NOT_BITWISE = {
    "Muon": ("a float lr is folded into the last Newton–Schulz step (its GEMMs take host floats); "
             "a tensor lr multiplies the result after it: one more rounding", {"rtol": 1e-6, "atol": 1e-7}),
    "Muon-bf16": ("as Muon, the extra rounding in bfloat16 (2^-8)", {"rtol": 3e-2, "atol": 1e-3}),
    "Dion2": ("as Muon: a float lr is folded into the last Newton–Schulz step", {"rtol": 1e-6, "atol": 1e-7}),
}


def _as_tensors(hyper, dtype):
    return {k: tuple(_t(e, dtype) for e in v) if isinstance(v, tuple) else _t(v, dtype)
            for k, v in hyper.items()}


def _run(cls_name, hyper, extra, steps=4, dtype=torch.float32, make=None):
    cls = getattr(xo, cls_name.split("-")[0])
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(6, 4, generator=gen, dtype=dtype)),
          torch.nn.Parameter(torch.randn(4, generator=gen, dtype=dtype))]
    opt = cls(ps, **extra, **hyper)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
        opt.step()
    return [p.detach().clone() for p in ps], opt


@pytest.mark.parametrize("name", list(CASES))
def test_tensor_hyperparameters_equal_the_float_run(name):
    extra, hyper = CASES[name]
    want, _ = _run(name, hyper, extra)
    got64, opt = _run(name, _as_tensors(hyper, torch.float64), extra)
    for a, b in zip(got64, want, strict=True):  # float64 tensors: bitwise (module doc)
        if name in NOT_BITWISE:
            torch.testing.assert_close(a, b, **NOT_BITWISE[name][1])
        else:
            assert torch.equal(a, b), (name, float((a - b).abs().max()))
    got32, _ = _run(name, _as_tensors(hyper, torch.float32), extra)
    tol = NOT_BITWISE[name][1] if name == "Muon-bf16" else {"rtol": 1e-5, "atol": 1e-6}
    for a, b in zip(got32, want, strict=True):  # float32(0.01) is not 0.01: to rounding
        torch.testing.assert_close(a, b, **tol)
    assert torch.is_tensor(opt.param_groups[0]["lr"])  # kept as given: a scheduler fills it


def test_one_element_tensor_of_any_shape_is_a_scalar():
    extra, hyper = CASES["AdamW"]
    want, _ = _run("AdamW", hyper, extra)
    got, _ = _run("AdamW", {**hyper, "lr": torch.tensor([1e-2], dtype=torch.float64)}, extra)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        xo.AdamW(p, lr=torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"Tensor betas\[0\] must be 1-element"):
        xo.AdamW(p, betas=(torch.zeros(2), 0.9))
    with pytest.raises(TypeError, match="Tensor lr must have a real floating dtype"):
        xo.SGD(p, lr=torch.tensor(1))


def test_tensor_ranges_checked_when_the_group_is_added():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match=r"lr must lie in \[0, inf\)"):
        xo.AdamW(p, lr=torch.tensor(-1.0))
    with pytest.raises(ValueError, match=r"momentum must lie in \[0, 1\)"):
        xo.SGD(p, momentum=torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"betas\[1\] must lie in \[0, 1\)"):
        xo.AdamW(p, betas=(0.9, torch.tensor(float("nan"))))
    opt = xo.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match=r"weight_decay must lie in \[0, inf\)"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))],
                             "weight_decay": torch.tensor(-0.5)})
    # a tensor on a device is not read by the per-step check: tests/test_optim_base.py


def test_tensor_refused_where_the_method_needs_the_number():
    p = [torch.nn.Parameter(torch.zeros(4, 3))]
    for cls in (xo.Shampoo, xo.Adafactor, xo.AdamNMF, xo.LRE):
        with pytest.raises(ValueError, match=r"betas as a Tensor is not supported by \w+: .*pass a float"):
            cls(p, betas=(torch.tensor(0.9), 0.99) if cls is not xo.AdamNMF else (torch.tensor(0.5), None))
    with pytest.raises(ValueError, match="eps as a Tensor is not supported"):
        xo.AdamW(p, eps=torch.tensor(1e-8))
    with pytest.raises(ValueError, match="adamw_lr_ratio as a Tensor is not supported"):
        xo.Muon(p, adamw_lr_ratio=torch.tensor(0.1))


class _HostReads(TorchDispatchMode):
    """Counts ``aten._local_scalar_dense`` (``.item()``, ``float()``, ``bool()`` of a tensor,
    and a tensor passed where torch takes a number) outside the per-step range check of a
    host-resident tensor (``_base._host_value``, documented: free on the host, skipped on a
    device and under ``torch.compile``) and the ``allowed`` functions."""

    def __init__(self, allowed=("_host_value",)):
        super().__init__()
        self.reads, self.allowed = [], allowed

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and not any(
                f.function in self.allowed for f in inspect.stack()):
            self.reads.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["AdamW", "AdamW-l2", "SGD", "AdaGrad", "Muon", "NorMuon", "Dion2",
                                  "SteepestDescent",
                                  "SphereSGD", "ExponentiatedGradient", "ManifoldMuon", "Adafactor"])
def test_step_never_reads_tensor_hyperparameters(name, monkeypatch):
    """No host read in the steps a GPU or a compiled step runs (the foreach twins' gated
    kernels; the per-parameter fused path, whose hyper-parameters here are CPU tensors: read
    where free); on the CPU path, reads only in the two documented places where a CPU read is
    free (the finite flags, the fused kernels' hyper-parameters)."""
    extra, hyper = CASES[name]
    _, opt = _run(name, _as_tensors(hyper, torch.float32), extra, steps=1)
    monkeypatch.setattr(torch_foreach, "EAGER_PATH", "gated")
    mode = _HostReads()
    with mode:
        opt.step()
    assert mode.reads == []
    monkeypatch.setattr(torch_foreach, "EAGER_PATH", "fused")
    with _HostReads(("_host_value", "_host_floats")) as fused:
        opt.step()
    assert fused.reads == []
    monkeypatch.setattr(torch_foreach, "EAGER_PATH", "auto")
    with _HostReads(("_host_value", "host_flags", "_host_floats")) as cpu:
        opt.step()
    assert cpu.reads == []
    with mode:  # the counter sees a read
        float(torch.tensor(0.5) * 2)
    assert len(mode.reads) == 1


def _lambda_run(cls, lr, **kw):
    gen = torch.Generator().manual_seed(1)
    p = torch.nn.Parameter(torch.randn(5, 3, generator=gen, dtype=torch.float64))
    opt = cls([p], lr=lr, **kw)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 / (1 + e))
    for _ in range(6):
        p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        opt.step()
        sched.step()
    return p.detach(), opt


def test_lambda_lr_fills_tensor_lr_in_place():
    lr = _t(0.05)
    got, opt = _lambda_run(xo.AdamW, lr)
    assert opt.param_groups[0]["lr"] is lr  # the scheduler filled it, never replaced it
    torch.testing.assert_close(lr, _t(0.05 / 7), rtol=1e-15, atol=0)
    want, _ = _lambda_run(xo.AdamW, 0.05)
    assert torch.equal(got, want)
    ref, _ = _lambda_run(torch.optim.AdamW, _t(0.05))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cls", ["AdamW", "SGD"])
def test_one_cycle_cycling_momentum_with_tensor_lr(cls):
    """OneCycleLR fills the tensor lr and sets ``betas[0]`` / ``momentum`` each step; xpmat and
    torch.optim stay equal under it."""
    out = []
    for mod in (xo, torch.optim):
        gen = torch.Generator().manual_seed(2)
        p = torch.nn.Parameter(torch.randn(5, 3, generator=gen, dtype=torch.float64))
        kw = {"momentum": 0.9} if cls == "SGD" else {}
        opt = getattr(mod, cls)([p], lr=_t(0.01), weight_decay=0.01, **kw)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10, cycle_momentum=True)
        lrs, moms = [], []
        for _ in range(10):
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            opt.step()
            sched.step()
            g = opt.param_groups[0]
            lrs.append(float(g["lr"]))
            moms.append(float(g["betas"][0] if cls == "AdamW" else g["momentum"]))
        assert torch.is_tensor(opt.param_groups[0]["lr"])
        out.append((p.detach(), lrs, moms))
    (a, lra, ma), (b, lrb, mb) = out
    assert lra == lrb and ma == mb and len(set(ma)) > 3  # momentum really cycled
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_state_dict_with_tensor_lr_resumes_identically():
    extra, hyper = CASES["AdamW"]
    gen = torch.Generator().manual_seed(3)
    p = torch.nn.Parameter(torch.randn(4, 3, generator=gen))
    opt = xo.AdamW([p], **extra, **_as_tensors(hyper, torch.float32))
    p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    sd = opt.state_dict()
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = xo.AdamW([q], **extra, **_as_tensors(hyper, torch.float32))
    opt2.load_state_dict(sd)
    g = torch.randn(p.shape, generator=gen)
    p.grad, q.grad = g.clone(), g.clone()
    opt.step()
    opt2.step()
    assert torch.equal(p, q)


@pytest.mark.parametrize("core", [adamw, sgd])
def test_numpy_core_takes_0d_arrays_and_keeps_the_dtype(core):
    rng = np.random.default_rng(0)
    p = [rng.standard_normal((3, 2)).astype(np.float32)]
    gs = [[rng.standard_normal((3, 2)).astype(np.float32)] for _ in range(3)]
    own = {"betas": (0.9, 0.99)} if core is adamw else {"momentum": 0.9}
    hyper = {"lr": 0.01, "weight_decay": 0.1, **own}
    arrays = {k: tuple(np.asarray(e) for e in v) if isinstance(v, tuple) else np.asarray(v)
              for k, v in hyper.items()}
    out = []
    for h in (hyper, arrays):
        ps, st = list(p), core.init(p, **h)
        for g in gs:
            u, st = core.update(g, st, ps, **h)
            assert u[0].dtype == np.float32  # a float64 0-d array does not promote the update
            ps = xo.apply_updates(ps, u)
        out.append(ps[0])
    np.testing.assert_array_equal(out[1], out[0])
    with pytest.raises(ValueError, match=r"lr must lie in \[0, inf\)"):
        core.update(gs[0], st, p, lr=np.asarray(-1.0))


# -------------------------------------------------------------------------- torch.optim switches
@pytest.mark.parametrize("cls", [xo.AdamW, xo.SGD, xo.Muon])
def test_torch_flags_accepted_where_they_describe_the_step(cls):
    p = [torch.nn.Parameter(torch.zeros(3, 2))]
    opt = cls(p, foreach=None, fused=None, capturable=False, differentiable=False)
    opt = cls(p, foreach=False, fused=False)
    assert not set(opt.defaults) & {"foreach", "fused", "capturable", "differentiable"}
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "foreach": None,
                         "differentiable": False})


@pytest.mark.parametrize(("flag", "says"), [
    ("foreach", "runs its elementwise work per parameter, as torch's foreach=False"),
    ("fused", "picks its kernels itself"),
    ("capturable", "CUDA graph cannot replay"),
    ("differentiable", "under torch.no_grad"),
])
def test_torch_flags_refused_say_what_xpmat_does(flag, says):
    p = [torch.nn.Parameter(torch.zeros(3, 2))]
    with pytest.raises(ValueError, match=rf"AdamW: {flag}=True is not supported: .*{says}"):
        xo.AdamW(p, **{flag: True})
    with pytest.raises(TypeError, match=rf"Muon: {flag} must be a bool"):
        xo.Muon(p, **{flag: "yes"})
    opt = xo.SGD(p)
    with pytest.raises(ValueError, match=rf"SGD: {flag}=True is not supported"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], flag: True})
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['foreachh'\]"):
        xo.AdamW(p, foreachh=True)


# -------------------------------------------------------------------------- complex parameters
@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
@pytest.mark.parametrize(("ours", "ref", "kw"), [
    (xo.AdamW, torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
    (xo.AdamW, torch.optim.AdamW, {"lr": 1e-2, "nesterov": False, "maximize": True}),
    (xo.SGD, torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (xo.AdaGrad, torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01,
                                       "initial_accumulator_value": 0.1}),
], ids=["adamw", "adamw-maximize", "sgd", "adagrad"])
def test_complex_parameters_step_as_torch_optim(ours, ref, kw, dtype):
    if ours is xo.AdamW:
        kw = {k: v for k, v in kw.items() if k != "nesterov"}  # xpmat's flag (torch has none)
    gen = torch.Generator().manual_seed(4)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    p0 = [torch.randn(4, 3, generator=gen, dtype=dtype), torch.randn(3, generator=gen, dtype=real)]
    a = [p.clone().requires_grad_() for p in p0]
    b = [p.clone().requires_grad_() for p in p0]
    oa, ob = ours(a, **kw), ref(b, **kw)
    for _ in range(5):
        for x, y in zip(a, b, strict=True):
            x.grad = torch.randn(x.shape, generator=gen, dtype=x.dtype)
            y.grad = x.grad.clone()
        oa.step()
        ob.step()
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.complex128 else {"rtol": 1e-5, "atol": 1e-6}
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype
        torch.testing.assert_close(x, y, **tol)


def test_complex_state_dict_resumes_identically():
    gen = torch.Generator().manual_seed(5)
    p = torch.nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.complex64))
    opt = xo.AdamW([p], lr=1e-2)
    p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
    opt.step()
    assert opt.state[p]["exp_avg"].shape == (4, 3, 2)  # the real view's state
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = xo.AdamW([q], lr=1e-2)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[q]["exp_avg"].dtype == torch.float32
    g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
    p.grad, q.grad = g.clone(), g.clone()
    opt.step()
    opt2.step()
    assert torch.equal(p, q)


@pytest.mark.parametrize(("cls", "kw", "says"), [
    (xo.Muon, {}, "works on whole matrices"),
    (xo.Dion, {}, "works on whole matrices"),
    (xo.AdaGrad, {"preconditioner": "full"}, "preconditioner='full' couples entries"),
    (xo.SteepestDescent, {}, "AdamW, SGD and AdaGrad \\(diagonal\\) step complex parameters"),
])
def test_complex_refused_naming_the_parameter(cls, kw, says):
    ps = [torch.nn.Parameter(torch.zeros(4, 3)), torch.nn.Parameter(torch.zeros(4, 3, dtype=torch.complex64))]
    opt = cls(ps, **kw)
    for p in ps:
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match=rf"does not support complex parameters: parameter 1 of param "
                                           rf"group 0 has shape \(4, 3\) and dtype torch.complex64.*{says}"):
        opt.step()


@pytest.mark.slow
def test_compiled_step_with_tensor_lr_compiles_once_under_a_scheduler():
    """A tensor lr is a graph input, not a constant: ``torch.compile(opt.step)`` under
    ``LambdaLR`` (a new lr every step) makes one graph, and equals the eager run (SGD: AdamW
    compiles the same way, 80 s of CPU on the test machine, checked by hand)."""
    from torch._dynamo.utils import counters

    out = []
    for compiled in (False, True):
        torch._dynamo.reset()
        counters.clear()
        gen = torch.Generator().manual_seed(6)
        ps = [torch.nn.Parameter(torch.randn(8, 4, generator=gen)),
              torch.nn.Parameter(torch.randn(4, generator=gen))]
        opt = xo.SGD(ps, lr=torch.tensor(0.05), momentum=torch.tensor(0.9), weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 / (1 + e))
        step = torch.compile(opt.step) if compiled else opt.step
        for k in range(5):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen)
            (opt.step if k == 0 else step)()  # the first step creates the state eagerly
            sched.step()
        out.append([p.detach().clone() for p in ps])
    assert counters["stats"]["unique_graphs"] == 1
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by hand on a GPU)")
@pytest.mark.parametrize("where", ["cuda", "cpu"])
@pytest.mark.parametrize("name", ["AdamW", "SGD", "Muon", "AdaGrad"])
def test_cuda_parameters_with_tensor_hyperparameters(name, where):
    """CUDA parameters, tensor hyper-parameters on the device or in host memory: the float
    run's result, and no ``_local_scalar_dense`` in the step (on CUDA that would be a sync)."""
    extra, hyper = CASES[name]
    out = []
    for tensors in (False, True):
        gen = torch.Generator().manual_seed(7)
        ps = [torch.nn.Parameter(torch.randn(6, 4, generator=gen).cuda()),
              torch.nn.Parameter(torch.randn(4, generator=gen).cuda())]
        h = {k: tuple(_t(e).to(where) for e in v) if isinstance(v, tuple) else _t(v).to(where)
             for k, v in hyper.items()} if tensors else hyper
        opt = getattr(xo, name)(ps, **extra, **h)
        mode = _HostReads()
        for k in range(3):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=gen).cuda()
            if k == 0 or not tensors:
                opt.step()
            else:
                with mode:
                    opt.step()
        assert mode.reads == []
        out.append([p.detach().cpu() for p in ps])
    for a, b in zip(*out, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
