"""One step of every registered optimizer (``xpmat.optim.REGISTRY``) beside ``torch.optim.AdamW``.

``OptimizerStep`` is ``backend × size × method``; the method list is read from the registry at
import, so a method registered later is benchmarked without editing this file.  Each method
runs with its registry ``demo`` hyper-parameters (the ones the digits demo uses; the torch
classes' AdamW-fallback settings such as ``adamw_lr_ratio`` are dropped: every parameter here is a
matrix).

Parameter sets, GPT-2-small shaped (``layers × [d×4d, 4d×d, d×3d, d×d]``; the 1-D LayerNorm and
bias parameters go to AdamW in every method and are left out): ``small`` 1 layer d = 256,
``medium`` 1 layer d = 768, ``large`` 12 layers d = 768 (GPU only: minutes per step on a CPU).
Parameters are float32, gradients fixed (seeded), one warm-up step in ``setup`` (state
allocation, first-step paths; none with ``XPMAT_BENCH_FAST=1``, where a quick run's single
sample then includes the first step).

* torch rows run the torch class (``xpmat.optim.torch_class(name)``, what users call);
  NumPy / CuPy rows run the functional core (``core(name).transform(**hyper)``, one
  ``update`` + ``apply_updates``).
* ``time_adamw_anchor``: ``torch.optim.AdamW`` (torch defaults, ``foreach`` as torch picks)
  on the same parameters (torch rows).
* ``peakmem_*`` in ``OptimizerStepMemory`` (CPU rows; no warm-up step of the other side).
* ``track_update_err`` in ``OptimizerStepAccuracy``: the first step's update from a fresh
  state in float32 against the same step computed by the functional core in float64 on the
  host (NumPy) from the same data: ``‖Δ − Δ*‖_F / ‖Δ*‖_F`` over all parameters (small and
  medium sets).  Seeded methods (Dion, PowerSGD, AdamNMF) draw their random state on the
  host, so both sides start from the same numbers.

A step's cost varies between steps for methods with periodic work (Shampoo's
``precondition_every``, PowerSGD+'s restarts): asv's repeats sample whichever steps fall in
the timed window.

``_Step`` keeps its own ``setup`` rather than ``common.Benchmark``'s: asv's benchmark version is
a hash of that source, and rewriting it would restart the history of every method's step.
"""

from __future__ import annotations

import numpy as np

from xpmat.optim import REGISTRY, apply_updates, core, torch_class

from .common import (
    BACKENDS,
    CPU_BACKENDS,
    FAST,
    Benchmark,
    SkipNotImplemented,
    gpt2_shapes,
    host,
    namespace,
    sizes,
    to_device,
)

METHODS = sorted(REGISTRY)
_SETS = {"small": (1, 256), "medium": (1, 768), "large": (12, 768)}


def _host_data(pset):
    """Seeded float64 (params, grads) on the host."""
    rng = np.random.default_rng(0)
    shapes = gpt2_shapes(*_SETS[pset])
    params = [0.02 * rng.standard_normal(s) for s in shapes]
    grads = [rng.standard_normal(s) for s in shapes]
    return params, grads


def hyper(name):
    """The registry's demo hyper-parameters that the functional core knows."""
    defaults = core(name).DEFAULTS
    return {k: v for k, v in REGISTRY[name].demo.items() if k in defaults}


def functional_step(name, params, grads):
    """One step of the functional core from a fresh state: the updates (a list of arrays)."""
    t = core(name).transform(**hyper(name))
    updates, _ = t.update(grads, t.init(params), params)
    return updates


class _Step:
    params = [BACKENDS, sizes("small", "medium", "large"), METHODS]
    param_names = ["backend", "params", "method"]
    timeout = 600
    number = 1
    repeat = (1, 5, 60.0)
    warm = not FAST  # smoke profile: no warm-up step (the quick run's single sample includes it)

    def setup(self, backend, pset, method):
        try:
            self.xp, self.dev = namespace(backend)
        except NotImplementedError as exc:
            raise SkipNotImplemented(str(exc)) from exc
        if method not in REGISTRY:  # an older commit (asv run A..B) without this method
            raise SkipNotImplemented(f"{method!r} is not registered in this version of xpmat")
        if pset == "large" and backend in ("numpy", "torch:cpu"):
            raise SkipNotImplemented("12 GPT-2 layers take minutes per step on a CPU")
        self.backend, self.method = backend, method
        self.torch = backend.startswith("torch")
        p_host, g_host = _host_data(pset)
        self.params = [to_device(p, self.xp, self.dev) for p in p_host]
        self.grads = [to_device(g, self.xp, self.dev) for g in g_host]
        if self.torch:
            import torch

            for p, g in zip(self.params, self.grads):
                p.requires_grad_(True)
                p.grad = g
            self.opt = torch_class(method)(self.params, **hyper(method))
            self.anchor = torch.optim.AdamW(self.params)
        else:
            self.t = core(method).transform(**hyper(method))
            self.state = self.t.init(self.params)
        if self.warm:  # one step each: allocates the state, takes the first-step paths
            self._step()
            if self.torch:
                self._anchor_step()

    def _sync(self):
        from xpmat._array import synchronize

        synchronize(self.params[0])

    def _step(self):
        if self.torch:
            self.opt.step()
        else:
            updates, self.state = self.t.update(self.grads, self.state, self.params)
            self.params = apply_updates(self.params, updates)
        self._sync()

    def _anchor_step(self):
        if not self.torch:
            raise SkipNotImplemented("torch.optim.AdamW anchor: torch rows only")
        self.anchor.step()
        self._sync()


class OptimizerStep(_Step):
    """time_ of one step (ours) beside ``torch.optim.AdamW`` on the same parameters."""

    def time_step(self, backend, pset, method):
        self._step()

    def time_adamw_anchor(self, backend, pset, method):
        self._anchor_step()


class OptimizerStepAccuracy(_Step):
    """track_ of the first step's update in float32 against float64 (module docstring)."""

    warm = False

    def track_update_err(self, backend, pset, method):
        if pset == "large":
            raise SkipNotImplemented("the float64 host reference of 12 layers takes minutes")
        p_host, g_host = _host_data(pset)
        ref = functional_step(method, p_host, g_host)
        if self.torch:
            import torch

            params = [to_device(p, self.xp, self.dev).requires_grad_(True) for p in p_host]
            for p, g in zip(params, g_host):
                p.grad = to_device(g, self.xp, self.dev)
            before = [p.detach().clone() for p in params]
            opt = torch_class(method)(params, **hyper(method))
            with torch.no_grad():
                opt.step()
            got = [p.detach() - b for p, b in zip(params, before)]
        else:
            got = functional_step(method, [to_device(a, self.xp, self.dev) for a in p_host],
                                  [to_device(a, self.xp, self.dev) for a in g_host])
        num = sum(float(np.sum((host(u) - r) ** 2)) for u, r in zip(got, ref))
        den = sum(float(np.sum(r**2)) for r in ref)
        return float(np.sqrt(num / den))

    track_update_err.unit = "relative error"


class OptimizerStepMemory(_Step):
    """peakmem_ of one step beside ``torch.optim.AdamW``'s (CPU rows; the first step, which
    allocates the optimizer state: setup does no warm-up step, so neither side's state from a
    warm-up counts in the other's peak RSS)."""

    params = [CPU_BACKENDS, sizes("small", "medium", "large"), METHODS]
    warm = False

    def peakmem_step(self, backend, pset, method):
        self._step()

    def peakmem_adamw_anchor(self, backend, pset, method):
        self._anchor_step()


_COUNTED = {"adamw": ("AdamW", {"lr": 1e-3}), "sgd": ("SGD", {"lr": 1e-3, "momentum": 0.9}),
            "muon": ("Muon", {})}


def _storages(opt, params):
    import torch

    return [t.untyped_storage().data_ptr() for p in params for t in opt.state[p].values()
            if torch.is_tensor(t)]


class OptimizerStepCounts:
    """track_ of what one eager step launches and replaces, ours beside torch.optim's (issue
    25): ``track_aten_ops`` (ATen ops at the dispatcher, on the backend's own path: the CPU
    path on the CPU, the device path on a GPU), ``track_aten_ops_gated`` and
    ``track_aten_ops_fused`` (the gated kernels', the device path's, on any backend: an op is
    a launch or a view, except a foreach call off CUDA's fast route, one launch per tensor:
    ``docs/scripts/optim_launches.py``) and ``track_storage_changes`` (state tensors whose
    storage differs after the step: 0 keeps CUDA graphs replayable), on the issue's 48
    GPT-like matrices (12 × [d×4d, 4d×d, 3d×d, d×d], d = 64), the third step.  The anchors:
    ``torch.optim.AdamW(foreach=True)``, ``torch.optim.SGD(foreach=True)``,
    ``torch.optim.Muon``, same hyper-parameters."""

    params = [["torch:cpu", "torch:cuda"], sorted(_COUNTED)]
    param_names = ["backend", "method"]
    timeout = 120

    def setup(self, backend, method):
        try:
            self.xp, self.dev = namespace(backend)
        except NotImplementedError as exc:
            raise SkipNotImplemented(str(exc)) from exc

    def _counts(self, ours, method):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        import xpmat.optim as xo

        class Ops(TorchDispatchMode):
            n = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                self.n += 1
                return func(*args, **(kwargs or {}))

        gen = np.random.default_rng(0)
        ps = [to_device(gen.standard_normal(s), self.xp, self.dev).requires_grad_(True)
              for _ in range(12) for s in ((64, 256), (256, 64), (192, 64), (64, 64))]
        for p in ps:
            p.grad = torch.randn_like(p)
        name, kw = _COUNTED[method]
        cls = getattr(xo, name) if ours else getattr(torch.optim, name)
        opt = cls(ps, **kw, **({"foreach": True} if not ours and method != "muon" else {}))
        opt.step()
        opt.step()
        ptrs = _storages(opt, ps)
        mode = Ops()
        with mode:
            opt.step()
        return mode.n, sum(a != b for a, b in zip(ptrs, _storages(opt, ps)))

    def track_aten_ops(self, backend, method):
        return self._counts(True, method)[0]

    def _on_path(self, path, method):
        from xpmat.optim import torch_foreach

        torch_foreach.EAGER_PATH = path
        try:
            return self._counts(True, method)[0]
        finally:
            torch_foreach.EAGER_PATH = "auto"

    def track_aten_ops_gated(self, backend, method):
        """Ours on the gated kernels (what a compiled step runs) on any backend
        (``torch_foreach.EAGER_PATH = "gated"``)."""
        return self._on_path("gated", method)

    def track_aten_ops_fused(self, backend, method):
        """Ours on the per-parameter fused path (what an eager step runs on a GPU) on any
        backend (``torch_foreach.EAGER_PATH = "fused"``)."""
        return self._on_path("fused", method)

    def track_aten_ops_anchor(self, backend, method):
        return self._counts(False, method)[0]

    def track_storage_changes(self, backend, method):
        return self._counts(True, method)[1]

    def track_storage_changes_anchor(self, backend, method):
        return self._counts(False, method)[1]

    track_aten_ops.unit = track_aten_ops_anchor.unit = track_aten_ops_gated.unit = \
        track_aten_ops_fused.unit = "ATen ops per step"
    track_storage_changes.unit = track_storage_changes_anchor.unit = "state tensors"


def _compile_check():
    """``docs/scripts/compile_check.py`` (the counts of docs/optim.md's ``torch.compile`` table)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "scripts" / "compile_check.py"
    spec = importlib.util.spec_from_file_location("xpmat_compile_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OptimizerStepCompile(Benchmark):
    """track_ of ``torch.compile(step)`` per torch class (rows by class name; torch.optim's
    AdamW and SGD as anchor rows), counted by ``docs/scripts/compile_check.py`` (the numbers of
    docs/optim.md's table) on its tiny model under ``LambdaLR`` with tensor hyper-parameters,
    4 steps, Dynamo's ``eager`` backend (Dynamo's counts without Inductor's code generation):
    ``track_recompiles``, graphs made after the first compiled step (step 1 eager; 0: the run
    compiles once); ``track_graph_breaks``, the breaks met when step 1 is compiled too (state
    creation included).  CPU only: the counts do not depend on the device."""

    params = [["torch:cpu"], [*sorted({torch_class(m).__name__ for m in REGISTRY}), "torch.optim.AdamW",
                              "torch.optim.SGD"]]
    param_names = ["backend", "cls"]
    warm = False
    timeout = 600

    def make(self, cls):
        if FAST and cls not in ("AdamW", "Muon", "torch.optim.AdamW"):
            raise SkipNotImplemented("XPMAT_BENCH_FAST: AdamW, Muon and torch.optim.AdamW only")
        self.cls, self.check = cls, _compile_check()

    def ours(self, eager_first=True):
        """``(graphs, breaks)`` after each of 4 steps (cumulative)."""
        graphs, breaks, _ = self.check.run(self.cls, "lambda", 4, "eager", eager_first=eager_first)
        return graphs, breaks

    def track_recompiles(self, backend, cls):
        graphs, _ = self.ours()
        return graphs[-1] - graphs[1]

    def track_graph_breaks(self, backend, cls):
        return self.ours(eager_first=False)[1][-1]

    track_recompiles.unit = "graphs"
    track_graph_breaks.unit = "breaks"
