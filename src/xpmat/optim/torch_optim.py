"""``torch.optim.Optimizer`` adapters over the functional cores (imports torch; load it lazily).

:class:`XpmatOptimizer` is the one base class every method plugs into.  A subclass names its
functional core module (``method``) and whether it is matrix-only; the base class does the rest:

- hyper-parameters: ``defaults`` = the core's ``DEFAULTS`` + ``maximize`` (+ the AdamW
  fallback settings ``fallback``, ``adamw_lr``, ``adamw_betas``, ``adamw_eps``,
  ``adamw_weight_decay`` for matrix-only methods); param groups override any of them;
- ``step(closure=None)`` runs under ``torch.no_grad()`` and evaluates the closure under
  ``torch.enable_grad()``; it calls the core's ``update`` once per param group on the list of
  parameters that have a gradient (so a core can batch same-shaped matrices), then adds the
  updates in place;
- state: ``self.state[p]`` holds the core's per-parameter NamedTuple as a dict with stable keys
  (the field names; ``None`` fields are left out);
- matrix-only methods send parameters with ``ndim < 2`` to the AdamW core (``fallback="adamw"``,
  the default; ``fallback=None`` refuses them) and see conv kernels ``(out, in, kh, kw)`` as
  ``(out, in·kh·kw)`` matrices (done by the core);
- ``load_state_dict`` keeps the saved state dtypes: torch's loader casts floating state to
  the parameter's dtype, which would turn the float32 state of a bf16 parameter into bf16 and
  change the next step; here the saved tensors are restored as they were (moved to the
  parameter's device only).

Each class equals its functional core on the same inputs: the step is literally
``core.update`` followed by ``p.add_(u)`` (on a CPU Muon makes one such call per 8 MiB of
matrices, :func:`xpmat.optim.muon.calls`; any split gives the same result).
"""

from __future__ import annotations

from typing import Any, ClassVar

from xpmat._optional import require
from xpmat.optim import adafactor as _adafactor
from xpmat.optim import adamnmf as _adamnmf
from xpmat.optim import adamw as _adamw
from xpmat.optim import dion as _dion
from xpmat.optim import lre as _lre
from xpmat.optim import manifold_muon as _manifold_muon
from xpmat.optim import muon as _muon
from xpmat.optim import powersgd as _powersgd
from xpmat.optim import shampoo as _shampoo
from xpmat.optim._base import Transform, route

torch = require("torch", "The torch optimizers of xpmat.optim (xpmat.optim.Muon, AdamW, ...)")

__all__ = ["LRE", "Adafactor", "AdamNMF", "AdamW", "Dion", "ManifoldMuon",
           "Muon", "PowerSGD", "PowerSGDPlus", "Shampoo", "XpmatOptimizer"]

FALLBACK_DEFAULTS: dict[str, Any] = {
    "fallback": "adamw",
    "adamw_lr": 1e-3,
    "adamw_betas": (0.9, 0.95),
    "adamw_eps": 1e-8,
    "adamw_weight_decay": 0.0,
}


class XpmatOptimizer(torch.optim.Optimizer):
    """Base class: a ``torch.optim.Optimizer`` driven by a functional core (see module doc).

    Subclasses set ``method`` (a module with ``DEFAULTS``, ``State``, ``transform``) and
    ``matrix_only``.  Keyword arguments are the core's hyper-parameters (see ``DEFAULTS``),
    ``maximize``, and for matrix-only methods the AdamW fallback settings.
    """

    method: ClassVar[Any] = None
    matrix_only: ClassVar[bool] = False
    # the core's update may overwrite the state's buffers (its transform takes reuse_state):
    # this class never reads a state again after handing it to update
    reuse_state: ClassVar[bool] = False

    def __init__(self, params: Any, **hyper: Any) -> None:
        if self.method is None:
            raise TypeError("XpmatOptimizer is a base class: use a subclass that sets `method`")
        defaults = dict(self.method.DEFAULTS)
        defaults["maximize"] = False
        if self.matrix_only:
            defaults.update(FALLBACK_DEFAULTS)
        unknown = set(hyper) - set(defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown argument(s) {sorted(unknown)}; "
                            f"known: {sorted(defaults)}")
        defaults.update(hyper)
        super().__init__(params, defaults)
        for group in self.param_groups:
            self._transform(group)  # validates the hyper-parameters now, not at the first step
            if self.matrix_only and group["fallback"] is None:
                for p in group["params"]:
                    if p.ndim < 2:
                        raise ValueError(f"{type(self).__name__}: parameter of shape {tuple(p.shape)} "
                                         "is not a matrix and fallback=None; use fallback='adamw'")
            elif self.matrix_only and group["fallback"] != "adamw":
                raise ValueError(f"fallback must be 'adamw' or None, got {group['fallback']!r}")

    # -- the functional transform of a param group ---------------------------------------
    def _hyper(self, group: dict) -> dict[str, Any]:
        return {k: group[k] for k in self.method.DEFAULTS}

    def _fallback_hyper(self, group: dict) -> dict[str, Any]:
        return {"lr": group["adamw_lr"], "betas": group["adamw_betas"], "eps": group["adamw_eps"],
                "weight_decay": group["adamw_weight_decay"],
                "schedule": group.get("schedule", 1.0)}

    def _transform(self, group: dict) -> Transform:
        kw = {"reuse_state": True} if self.reuse_state else {}
        main = self.method.transform(**kw, **self._hyper(group))
        if not self.matrix_only or group["fallback"] is None:
            return main
        return route(main, _adamw.transform(**self._fallback_hyper(group)))

    def _state_type(self, p: torch.Tensor) -> Any:
        if self.matrix_only and p.ndim < 2:
            return _adamw.AdamWState
        return self.method.State

    def _get(self, p: torch.Tensor) -> Any:
        st = self.state[p]
        cls = self._state_type(p)
        return cls(**{f: st.get(f) for f in cls._fields})

    def _put(self, p: torch.Tensor, s: Any) -> None:
        self.state[p] = {k: v for k, v in s._asdict().items() if v is not None}

    # -- torch.optim.Optimizer API ----------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One optimization step; ``closure`` (re-evaluates the loss) runs with grad enabled."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = self._with_grad(group)
            if not params:
                continue
            grads = [-p.grad if group["maximize"] else p.grad for p in params]
            t = self._transform(group)
            self._init_fresh(t, params)
            for call in self._calls(params, group):
                ps = [params[i] for i in call]
                updates, new = t.update([grads[i] for i in call], [self._get(p) for p in ps], ps)
                for p, u, s in zip(ps, updates, new, strict=True):
                    p.add_(u)
                    self._put(p, s)
        return loss

    def _with_grad(self, group: dict) -> list[torch.Tensor]:
        """The group's parameters that have a gradient (sparse / complex ones are refused)."""
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if torch.is_complex(p):
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
        return params

    def _init_fresh(self, t: Transform, params: list[torch.Tensor]) -> None:
        """State for the parameters that have none yet (one ``init`` call for all of them)."""
        fresh = [p for p in params if not self.state[p]]
        if fresh:
            for p, s in zip(fresh, t.init(fresh), strict=True):
                self._put(p, s)

    def _calls(self, params: list[torch.Tensor], group: dict) -> list[list[int]]:
        """Index lists of ``params`` handed to the core's ``update`` one after another (each
        call's updates are applied before the next): all of them in one call by default."""
        return [list(range(len(params)))]

    def load_state_dict(self, state_dict: dict) -> None:
        """Load state; floating state keeps its saved dtype (torch's loader would cast it).

        The tensors are copied, so a state_dict taken from a live optimizer is never shared
        with this one (whose steps may update its buffers in place)."""
        saved = {k: dict(v) for k, v in state_dict["state"].items()}
        ids = {}
        for g_saved, g in zip(state_dict["param_groups"], self.param_groups, strict=True):
            ids.update(zip(g_saved["params"], g["params"], strict=True))
        super().load_state_dict(state_dict)
        for k, st in saved.items():
            p = ids[k]
            for key, v in st.items():
                if torch.is_tensor(v):
                    self.state[p][key] = v.to(device=p.device, copy=True)


class AdamW(XpmatOptimizer):
    """AdamW (§4, Fig. 1) over :mod:`xpmat.optim.adamw`; equals ``torch.optim.AdamW`` with
    default flags, adds AMSGrad-after-bias-correction, Nesterov, atan2 and decay modes."""

    method = _adamw


class Muon(XpmatOptimizer):
    """Muon (§7, Q.3) over :mod:`xpmat.optim.muon`: same-shaped matrices orthogonalized in one
    batched ``msign`` call; 1-D parameters go to AdamW (``adamw_*`` settings).

    ``Muon(params, ns_schedule="jordan", compute_dtype="bfloat16", adjust_lr_fn="original",
    weight_decay=0.1, lr=1e-3)`` is ``torch.optim.Muon``'s default update."""

    method = _muon
    matrix_only = True
    reuse_state = True  # momentum updated in place (torch.lerp(out=)), as torch.optim.Muon

    def _calls(self, params: list[torch.Tensor], group: dict) -> list[list[int]]:
        """The core calls of :func:`xpmat.optim.muon.calls` (on a CPU at most 8 MiB of
        matrices each, so only one chunk's updates are alive at a time); 1-D parameters (AdamW)
        join the first call."""
        mats = [i for i, p in enumerate(params) if p.ndim >= 2]
        rest = [i for i, p in enumerate(params) if p.ndim < 2]
        out = [[mats[j] for j in c]
               for c in _muon.calls([params[i] for i in mats], group["compute_dtype"])]
        return [out[0] + rest, *out[1:]] if out else [rest]


class ManifoldMuon(XpmatOptimizer):
    """Manifold Muon ([Su 2025][su-2025], [Stratos 2026, §8.2][stratos-2026]) over
    :mod:`xpmat.optim.manifold_muon`: matrices stay on the Stiefel manifold (or a spectral
    sphere); 1-D parameters go to AdamW."""

    method = _manifold_muon
    matrix_only = True


class Dion(XpmatOptimizer):
    """Dion ([Pethick 2025][pethick-2025]) over :mod:`xpmat.optim.dion`; 1-D parameters go to AdamW."""

    method = _dion
    matrix_only = True


class PowerSGD(XpmatOptimizer):
    """PowerSGD / PowerSGD+ ([Xie et al. 2025][xie-chen-yuan-2025] §3–4, Alg. 2) over
    :mod:`xpmat.optim.powersgd` (single process); ``restart_every=τ`` turns on PowerSGD+'s SVD restarts."""

    method = _powersgd
    matrix_only = True


class PowerSGDPlus(PowerSGD):
    """PowerSGD+ : :class:`PowerSGD` with ``restart_every=100`` by default (an SVD every τ steps)."""

    def __init__(self, params: Any, **hyper: Any) -> None:
        hyper.setdefault("restart_every", 100)
        super().__init__(params, **hyper)


class Adafactor(XpmatOptimizer):
    """Adafactor (§4.7 eq. 52, §4.7.1) over :mod:`xpmat.optim.adafactor`: rank-1 factored
    second moment for matrices, unfactored for 1-D parameters (no AdamW fallback), update
    clipping, relative step RMS(W), β₂ = 1 − t^(−c), optional β₁."""

    method = _adafactor


class AdamNMF(XpmatOptimizer):
    """AdamNMF (appendix L.2) over :mod:`xpmat.optim.adamnmf`: rank-r NMF second moment kept
    by one warm-started blockwise EM step per iteration; 1-D parameters go to AdamW."""

    method = _adamnmf
    matrix_only = True


class LRE(XpmatOptimizer):
    """LRE, low-rank eigenbasis ([LRE 2025][lre-2025]) over :mod:`xpmat.optim.lre`: each
    parameter (flattened, blocks of at most ``max_dim``) keeps its curvature as ``Q diag(L) Qᵀ``
    and runs Adam in the rank-``r`` basis (or preconditions by ``Q L^(-1/p) Qᵀ``).

    The default ``curvature="covariance"`` uses gradients only.  The Hessian curvatures
    (``"hutchinson"``, ``"bfgs"``, ``"sr1"``) need ``step(closure)`` with a closure that takes
    ``backward``: ``closure(backward=False)`` must return the loss without calling
    ``backward`` (the optimizer differentiates it with ``create_graph=True`` and sets
    ``p.grad``); a plain closure that calls ``loss.backward(create_graph=True)`` works too.
    One Hessian-vector product per param group and step (``torch.autograd.grad`` on the
    gradients), only on steps where the basis is updated.
    """

    method = _lre

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step; with a Hessian curvature the closure provides the graph for the HVPs."""
        if not any(g["curvature"] in _lre.HESSIAN_CURVATURES for g in self.param_groups):
            return super().step(closure)
        if closure is None:
            raise ValueError("LRE: a Hessian curvature (hutchinson / bfgs / sr1) needs "
                             "step(closure) with closure(backward=True) -> loss")
        import inspect

        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        with torch.enable_grad():
            if "backward" in inspect.signature(closure).parameters:
                loss = closure(backward=False)
                grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            else:
                loss = closure()
                grads = tuple(p.grad for p in params)
                if any(g is not None and g.grad_fn is None for g in grads):
                    raise ValueError("LRE: a Hessian curvature needs a closure(backward=True) "
                                     "or loss.backward(create_graph=True) in the closure")
        graph = {p: g for p, g in zip(params, grads, strict=True) if g is not None}
        for p, g in graph.items():
            p.grad = g.detach()
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if not ps:
                continue
            sign = -1.0 if group["maximize"] else 1.0
            gs = [sign * p.grad for p in ps]
            hyper = self._hyper(group)
            hess_ps = [p for p in ps if p in graph]

            def hvp(vs, ps=ps, hess_ps=hess_ps, sign=sign):
                if len(hess_ps) != len(ps):
                    raise ValueError("LRE: every parameter of a Hessian-curvature group needs a "
                                     "gradient from the closure")
                with torch.enable_grad():
                    out = torch.autograd.grad([graph[p] for p in ps], ps, grad_outputs=vs,
                                              retain_graph=True, allow_unused=True)
                return [torch.zeros_like(p) if h is None else sign * h.detach()
                        for p, h in zip(ps, out, strict=True)]

            fresh = [p for p in ps if not self.state[p]]
            if fresh:
                for p, s in zip(fresh, self.method.init(fresh, **hyper), strict=True):
                    self._put(p, s)
            states = [self._get(p) for p in ps]
            updates, new = self.method.update(gs, states, ps, hvp=hvp, **hyper)
            for p, u, s in zip(ps, updates, new, strict=True):
                p.add_(u)
                self._put(p, s)
        return loss.detach()  # the closure's loss holds the create_graph graph: release it


class Shampoo(XpmatOptimizer):
    """Shampoo ([Stratos 2026, §5, §5.1, §6.2][stratos-2026]) over :mod:`xpmat.optim.shampoo`:
    EMA Kronecker factors, ``L^(-1/4) G R^(-1/4)`` (``root=2``: ``L^(-1/2) G R^(-1/2)``) by
    ``eigh``, coupled Newton or a warm-started eigenbasis, refreshed every
    ``precondition_every`` steps, blocks above ``max_preconditioner_dim``, step size grafted
    to AdamW's; 1-D parameters go to AdamW (``adamw_*`` settings)."""

    method = _shampoo
    matrix_only = True
