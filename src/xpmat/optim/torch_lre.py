"""LRE's closures on the torch side: Hessian-vector products and per-sample Jacobians (imports torch).

The functional core :mod:`xpmat.optim.lre` takes its curvature through hooks: ``hvp`` (the
Hessian curvatures ``"hutchinson"``, ``"bfgs"``, ``"sr1"``) and ``corrections`` (the
per-sample curvatures ``"fisher"``: ``GᵀG`` of the per-sample gradients, ``"gauss_newton"``:
``JᵀJ`` of the residuals' Jacobian).  :class:`LREClosures` is the part of the torch class
:class:`xpmat.optim.LRE` that provides them from ``step(closure)``: it evaluates the closure
(``create_graph=True`` for a Hessian curvature; one vectorized backward,
``torch.autograd.grad(..., is_grads_batched=True)``, for the per-sample rows), binds the hooks
into the core's transform, and releases the graph and the Jacobians after the step.  The
class docstring of ``LRE`` (:data:`xpmat.optim.lre.SPEC`) says what the closure must return.

It is a mixin of the catalog class (:mod:`xpmat.optim.torch_optim`), before
:class:`~xpmat.optim.torch_adapter.XpmatOptimizer` in its bases, overriding the adapter's
hooks ``_evaluate``, ``_main_transform`` and ``_finish``.
"""

from __future__ import annotations

import inspect
from typing import Any

from xpmat._optional import require
from xpmat.optim import lre as _lre
from xpmat.optim.transforms import Transform

torch = require("torch", "The torch optimizers of xpmat.optim (xpmat.optim.Muon, AdamW, ...)")

__all__ = ["LREClosures"]


class LREClosures:
    """The closure hooks of :class:`xpmat.optim.LRE` (see the module doc)."""

    # this step's create_graph gradients (Hessian curvatures) and per-sample Jacobians Jᵀ (n, k)
    _graph: dict[torch.Tensor, torch.Tensor] | None = None
    _jac: dict[torch.Tensor, torch.Tensor] | None = None

    def _closure_kind(self) -> str | None:
        """``"hessian"``, ``"fisher"``, ``"gauss_newton"`` or None: what the closure provides."""
        curvs = {g["curvature"] for g in self.param_groups}
        hess = curvs & set(_lre.HESSIAN_CURVATURES)
        per = sorted(curvs & set(_lre.PER_SAMPLE_CURVATURES))
        if per and (hess or len(per) > 1):
            raise ValueError(f"LRE: param groups with curvatures {sorted(curvs)} need different "
                             "closures; one closure serves every group")
        return "hessian" if hess else (per[0] if per else None)

    def _evaluate(self, closure: Any) -> Any:
        """With a Hessian curvature: the closure's loss differentiated with ``create_graph``
        (the graph kept for this step's Hessian-vector products); with a per-sample one: the
        per-sample gradients of the closure's vector (kept for the corrections)."""
        kind = self._closure_kind()
        if kind is None:
            return super()._evaluate(closure)
        if closure is None:
            raise ValueError(f"LRE: curvature {kind!r} needs step(closure) (see the class doc)")
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        takes_backward = "backward" in inspect.signature(closure).parameters
        with torch.enable_grad():
            out = closure(backward=False) if takes_backward else closure()
            if kind != "hessian":
                return self._per_sample(out, params, kind)
            if takes_backward:
                grads = torch.autograd.grad(out, params, create_graph=True, allow_unused=True)
            else:
                grads = tuple(p.grad for p in params)
                if any(g is not None and g.grad_fn is None for g in grads):
                    raise ValueError("LRE: a Hessian curvature needs a closure(backward=True) "
                                     "or loss.backward(create_graph=True) in the closure")
        self._graph = {p: g for p, g in zip(params, grads, strict=True) if g is not None}
        for p, g in self._graph.items():
            p.grad = g.detach()
        return out.detach()  # the closure's loss holds the create_graph graph: release it

    def _per_sample(self, out: Any, params: list[torch.Tensor], kind: str) -> torch.Tensor:
        """Rows of the Jacobian of ``out`` (k values) in one vmapped backward; sets ``p.grad``
        (``Σ ∇ℓ_j`` or ``Jᵀ r``) and keeps ``Jᵀ`` (n, k) per parameter; returns the objective."""
        if not torch.is_tensor(out) or out.numel() == 0:
            raise ValueError(f"LRE: curvature={kind!r} needs a closure returning a tensor of "
                             f"per-sample {'losses' if kind == 'fisher' else 'residuals'}, got {out!r}")
        v = out.reshape(-1)
        eye = torch.eye(v.numel(), dtype=v.dtype, device=v.device)
        jacs = torch.autograd.grad(v, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        r = v.detach()
        self._jac = {}
        for p, J in zip(params, jacs, strict=True):
            if J is None:
                continue
            J = J.reshape(v.numel(), -1)
            g = J.sum(0) if kind == "fisher" else r.to(J.dtype) @ J
            p.grad = g.reshape(p.shape)
            self._jac[p] = J.mT
        return r.sum() if kind == "fisher" else 0.5 * (r * r).sum()

    def _main_transform(self, group: dict[str, Any]) -> Transform:
        hyper = self._hyper(group, _lre)
        curv, ps = group["curvature"], self._with_grad(group)
        if curv in _lre.PER_SAMPLE_CURVATURES:
            jac = self._jac

            def corrections() -> list[torch.Tensor]:
                if jac is None or any(p not in jac for p in ps):
                    raise ValueError(f"LRE: curvature={curv!r} needs step(closure) with a closure "
                                     "returning per-sample values that depend on every parameter")
                return [jac[p] for p in ps]

            return _lre.transform(corrections=corrections, **hyper)
        if curv not in _lre.HESSIAN_CURVATURES:
            return _lre.transform(**hyper)
        graph, sign = self._graph, -1.0 if group["maximize"] else 1.0

        def hvp(vs: list[torch.Tensor]) -> list[torch.Tensor]:
            if graph is None or any(p not in graph for p in ps):
                raise ValueError("LRE: every parameter of a Hessian-curvature group needs a "
                                 "gradient from the closure")
            with torch.enable_grad():
                out = torch.autograd.grad([graph[p] for p in ps], ps, grad_outputs=vs,
                                          retain_graph=True, allow_unused=True)
            return [torch.zeros_like(p) if h is None else sign * h.detach()
                    for p, h in zip(ps, out, strict=True)]

        return _lre.transform(hvp=hvp, **hyper)

    def _finish(self) -> None:
        self._graph = self._jac = None  # release the create_graph graph and the Jacobians

