"""In-place optimizer state on the torch path (issue 25, item 3): every state tensor of every
class keeps its storage across steps (what CUDA graphs replay into), and the foreach kernels
of the elementwise steps (item 4) stay within their ATen op budgets beside torch.optim's, counted
at the dispatcher on the 48 GPT-like matrices of the issue (d = 64)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import xpmat.optim as xo
from xpmat.optim import torch_foreach

torch = pytest.importorskip("torch")


def _params(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    shapes = [(12, 8), (12, 8), (6, 12), (12,), (4, 2, 3, 3)]
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype) * 0.5) for s in shapes]


def _storages(opt, params):
    return {(i, k): v.untyped_storage().data_ptr() for i, p in enumerate(params)
            for k, v in opt.state[p].items() if torch.is_tensor(v)}


def _step(opt, params, k):
    gen = torch.Generator().manual_seed(100 + k)
    for p in params:
        p.grad = (p.detach() * 0.3 + torch.randn(p.shape, generator=gen)).to(p.dtype)
    opt.step()


@pytest.mark.parametrize(("name", "dtype"), [(n, torch.float32) for n in sorted(xo.REGISTRY)]
                         + [(n, torch.bfloat16) for n in ("adamw", "sgd", "muon")])
def test_state_keeps_its_storage(name, dtype):
    """After the first step (which makes the state), three more steps leave every state
    tensor's storage where it was: updated in place, never replaced."""
    params = _params(dtype)
    opt = xo.torch_class(name)(params, **dict(xo.REGISTRY[name].demo))
    _step(opt, params, 0)
    before = _storages(opt, params)
    assert before
    for k in range(1, 4):
        _step(opt, params, k)
        assert _storages(opt, params) == before, f"step {k}"


# --------------------------------------------------------------------------------------------
# the foreach twins (xpmat.optim.torch_foreach) equal the functional cores bitwise
TWIN_CASES = {
    "adamw-lr": ("adamw", {"lr": 1e-2, "weight_decay": 0.1}),
    "adamw-decoupled": ("adamw", {"lr": 1e-2, "weight_decay": 1e-3, "weight_decay_mode": "decoupled",
                                  "schedule": 0.5}),
    "adamw-l2": ("adamw", {"lr": 1e-2, "weight_decay": 0.1, "weight_decay_mode": "l2", "betas": (0.8, 0.9)}),
    "sgd": ("sgd", {"lr": 1e-2}),
    "sgd-momentum": ("sgd", {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1}),
    "sgd-nesterov": ("sgd", {"lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
}


@pytest.mark.parametrize("path", ["gated", "host", "fused"])
@pytest.mark.parametrize(("dtype", "tensor_hyper"), [(torch.float64, False), (torch.float64, True),
                                                  (torch.bfloat16, True)],
                         ids=["float64-floats", "float64-tensors", "bfloat16-tensors"])
@pytest.mark.parametrize("case", sorted(TWIN_CASES))
def test_foreach_twin_equals_core(case, dtype, tensor_hyper, path, monkeypatch):
    """Five steps of the class (the foreach twin) and of the functional core give the same
    parameters, with a NaN gradient at step 2 (that parameter skipped by both) and, for bf16
    parameters, float32 state; tensor hyper-parameters (float64) as floats.  Bitwise for the
    gated kernels (what a compiled step runs; ``EAGER_PATH`` forced) and for the CPU path's composed
    kernels; to rounding where the CPU path or the GPU's per-parameter path (``"fused"``, run
    here on the CPU) runs torch's fused AdamW / SGD kernels (float64 parameters: state in
    their dtype)."""
    monkeypatch.setattr(torch_foreach, "EAGER_PATH", path)
    name, hyper = TWIN_CASES[case]
    core = xo.core(name)
    ps = [p.detach() for p in _params(dtype)]
    tp = [p.clone().requires_grad_() for p in ps]
    th = {k: torch.tensor(v, dtype=torch.float64) if tensor_hyper and isinstance(v, float) and k != "schedule"
          else v for k, v in hyper.items()}
    opt = xo.torch_class(name)(tp, **th)
    t, fp = core.transform(**hyper), [p.clone() for p in ps]
    st = t.init(fp)
    for k in range(5):
        gen = torch.Generator().manual_seed(7 + k)
        gs = [(p.float() * 0.3 + torch.randn(p.shape, generator=gen)).to(dtype) for p in fp]
        if k == 2:
            gs[1][0, 0] = float("nan")
        for p, g in zip(tp, gs, strict=True):
            p.grad = g.clone()
        opt.step()
        ups, st = t.update(gs, st, fp)
        fp = [(p + u).to(p.dtype) if p.dtype != u.dtype else p + u for p, u in zip(fp, ups, strict=True)]
    fused = path != "gated" and dtype == torch.float64
    tol = {"rtol": 1e-13, "atol": 1e-15} if fused else {"rtol": 0, "atol": 0}
    for a, b in zip(tp, fp, strict=True):
        torch.testing.assert_close(a.detach(), b, **tol)
    assert float(opt.state[tp[1]]["nonfinite_count"]) == 1
    assert [float(opt.state[p].get("step", 5 - (i == 1))) for i, p in enumerate(tp)] == [5, 4, 5, 5, 5]


@pytest.mark.parametrize("path", ["gated", "host", "fused"])
@pytest.mark.parametrize("case", ["adamw-lr", "sgd-momentum"])
def test_transposed_parameters_equal_core(case, path, monkeypatch):
    """A transposed (column-major) parameter, its gradient in either layout, row-major state:
    every path equals the core (the fused kernels walk memory in step, so such a group takes
    the foreach kernels; they once stepped the wrong entries: 0.3 off after three steps)."""
    monkeypatch.setattr(torch_foreach, "EAGER_PATH", path)
    name, hyper = TWIN_CASES[case]
    core = xo.core(name)
    gen = torch.Generator().manual_seed(3)
    ps = [torch.randn(6, 5, generator=gen, dtype=torch.float64).t() for _ in range(2)]
    tp = [torch.nn.Parameter(p.clone().t().contiguous().t()) for p in ps]  # column-major copies
    opt = xo.torch_class(name)(tp, **hyper)
    t, fp = core.transform(**hyper), [p.contiguous() for p in ps]
    st = t.init(fp)
    for k in range(3):
        gs = [torch.randn(5, 6, generator=gen, dtype=torch.float64) for _ in ps]
        for p, g in zip(tp, gs, strict=True):
            p.grad = g.t().contiguous().t() if k % 2 else g.clone()
        opt.step()
        ups, st = t.update(gs, st, fp)
        fp = [p + u for p, u in zip(fp, ups, strict=True)]
    assert tp[0].stride() == (1, 5)
    for a, b in zip(tp, fp, strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("path", ["gated", "host", "fused"])
@pytest.mark.parametrize("name", ["AdamW", "SGD", "Muon"])
def test_float16_gradient_summing_past_its_maximum_steps(name, path, monkeypatch):
    """A float16 gradient whose magnitudes sum past float16's maximum (256 entries of 300:
    76,800 > 65,504) is finite, and the core sums it in float32: every path steps it, as the
    core does (the gated flags once summed in float16 and skipped it, counted as non-finite)."""
    monkeypatch.setattr(torch_foreach, "EAGER_PATH", path)
    p = torch.nn.Parameter(torch.zeros(16, 16, dtype=torch.float16))
    opt = getattr(xo, name)([p], lr=1e-3)
    p.grad = torch.full((16, 16), 300.0, dtype=torch.float16)
    opt.step()
    assert float(opt.state[p]["nonfinite_count"]) == 0
    assert bool((p.detach() != 0).any())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("lr_on", ["float", "cpu", "cuda"])
@pytest.mark.parametrize("case", ["adamw-lr", "adamw-decoupled", "sgd-momentum"])
def test_device_path_cuda(case, lr_on):
    """On a GPU the default path is the device path (per-parameter fused calls: float32 step
    copies, float32 ``found_inf``, ``lr`` a float, a CPU tensor read, or a float32 device
    tensor): five steps with a NaN gradient at step 2 equal the CPU run to float32 rounding,
    the skipped parameter and its counters included."""
    name, hyper = TWIN_CASES[case]
    assert torch_foreach.eager_path([torch.ones(1, device="cuda")]) == "fused"
    runs = []
    for dev in ("cpu", "cuda"):
        h = dict(hyper)
        if lr_on != "float":
            h["lr"] = torch.tensor(hyper["lr"], device=dev if lr_on == "cuda" else "cpu")
        ps = [torch.nn.Parameter(p.detach().to(dev)) for p in _params()]
        opt = xo.torch_class(name)(ps, **h)
        for k in range(5):
            gen = torch.Generator().manual_seed(7 + k)
            for i, p in enumerate(ps):
                g = torch.randn(p.shape, generator=gen)
                g[(0,) * g.ndim] = float("nan") if (k, i) == (2, 1) else g[(0,) * g.ndim]
                p.grad = g.to(dev)
            opt.step()
        runs.append((ps, opt))
    (cp, co), (gp, go) = runs
    for a, b in zip(cp, gp, strict=True):
        torch.testing.assert_close(b.detach().cpu(), a.detach(), rtol=1e-5, atol=1e-6)
        assert {k: float(v) for k, v in go.state[b].items() if v.ndim == 0} == \
            {k: float(v) for k, v in co.state[a].items() if v.ndim == 0}


# --------------------------------------------------------------------------------------------
# ATen ops per eager step (what a GPU launches), counted at the dispatcher beside torch.optim's
def _launches_script():
    """``docs/scripts/optim_launches.py`` as a module: the one home of the 48 matrices and the
    dispatcher count (ATen ops, estimated GPU launches, ``.item()`` reads)."""
    path = Path(__file__).resolve().parents[1] / "docs" / "scripts" / "optim_launches.py"
    spec = importlib.util.spec_from_file_location("xpmat_docs_optim_launches", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ops_per_step(make, path="auto"):
    """ATen ops of the second eager step of ``make(params)`` on the issue's 48 GPT-like
    matrices (12 × [d×4d, 4d×d, 3d×d, d×d], d = 64; the first step makes the state), on the
    eager ``path``."""
    return _launches_script().count(make, 64, path)[0]


@pytest.mark.slow  # three optimizers × three steps × three paths on 48 matrices: 4–8 s on 2 shared cores
@pytest.mark.parametrize("path", ["gated", "host", "fused"])
def test_op_counts_against_torch_optim(path):
    """Every path: AdamW at or under torch's foreach AdamW, Muon at most 350 (the issue's
    bound, 4× fewer than torch.optim.Muon).  SGD: the CPU path (fused over the list) within
    the issue's 2× torch's foreach SGD; the device paths (no host read) within the bound they
    reach — one ``where`` (gated) or one fused call (fused) per parameter for the per-parameter
    non-finite skip (docs/optim.md)."""
    n = 48
    ours = ops_per_step(lambda ps: xo.AdamW(ps, lr=1e-3), path)
    theirs = ops_per_step(lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True))
    assert ours <= theirs, (ours, theirs)
    sgd = ops_per_step(lambda ps: xo.SGD(ps, lr=1e-3, momentum=0.9), path)
    if path == "host":
        assert sgd <= 2 * ops_per_step(lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, foreach=True))
    else:
        assert sgd <= n + 25
    assert ops_per_step(lambda ps: xo.Muon(ps), path) <= 350


@pytest.mark.slow  # 14 counted steps on 48 small matrices: 3–6 s on 2 shared cores
def test_docs_tables_are_the_counts():
    """docs/optim.md's two tables of one eager step (ATen ops per path; estimated GPU launches)
    hold what ``docs/scripts/optim_launches.py`` counts now (torch 2.13): each row's integers,
    in order, after the table's "before" column (ops: 1730, 722, 1096)."""
    got = _launches_script().measure(64)
    text = (Path(__file__).resolve().parents[1] / "docs" / "optim.md").read_text()
    ops_rows = {"AdamW": "| AdamW | 1730 |", "SGD": "| SGD (momentum) | 722 |", "Muon": "| Muon (default"}
    launch_rows = {"AdamW": "| AdamW | ", "SGD": "| SGD (momentum) | ", "Muon": "| Muon | "}
    start = text.index("An ATen op is not a kernel launch")
    for method, prefix in ops_rows.items():
        line = next(x for x in text.splitlines() if x.startswith(prefix))
        assert _integers(line.split("|", 3)[3]) == _row(got, method, 0), (method, line)
    for method, prefix in launch_rows.items():
        line = next(x for x in text[start:].splitlines() if x.startswith(prefix))
        assert _integers(line) == _row(got, method, 1), (method, line)


def _row(got: dict, method: str, what: int) -> list[int]:
    """The counts ``what`` (0: ATen ops, 1: launches) of ``method``'s steps in the tables'
    column order: gated, device path, CPU path, then torch.optim's."""
    steps = ("gated", "fused", "host", "torch foreach", "torch fused", "torch")
    return [got[method, k][what] for k in steps if (method, k) in got]


def _integers(cells: str) -> list[int]:
    """The integers of table cells, remarks in parentheses left out."""
    import re

    return [int(n) for n in re.findall(r"(?<![\w.])\d+(?![\w.])", re.sub(r"\([^)]*\)", "", cells))]


def test_host_flags_are_the_cores():
    """The CPU path's finite flags equal the core's (|Σ g| finite), including a gradient whose
    ‖g‖₂ overflows while its entries and sum are finite, and one whose sum overflows."""
    import array_api_compat

    from xpmat.optim.transforms import finite

    gs = [torch.full((4,), 3e19), torch.tensor([1.0, float("nan")]), torch.tensor([float("-inf"), 1.0]),
          torch.ones(3, dtype=torch.bfloat16), torch.full((3,), 3e38), torch.zeros(2, 2, dtype=torch.float64)]
    want = [bool(finite(g, array_api_compat.array_namespace(g))) for g in gs]
    assert torch_foreach.host_flags(gs) == want == [True, False, False, True, False, True]


def test_eager_path_choice(monkeypatch):
    """``"auto"``: the host path on CPU tensors; a forced path is taken as given; no gradients:
    gated; an unknown path is refused by name.  (Under ``torch.compile`` the gated path:
    tests/test_optim_compile.py's one-graph checks would see the host path's read.)"""
    gs = [torch.ones(2)]
    assert torch_foreach.eager_path(gs) == "host"
    assert torch_foreach.eager_path([]) == "gated"
    for path in ("host", "fused", "gated"):
        monkeypatch.setattr(torch_foreach, "EAGER_PATH", path)
        assert torch_foreach.eager_path(gs) == path
    monkeypatch.setattr(torch_foreach, "EAGER_PATH", "fast")
    with pytest.raises(ValueError, match="torch_foreach.EAGER_PATH"):
        torch_foreach.eager_path(gs)
