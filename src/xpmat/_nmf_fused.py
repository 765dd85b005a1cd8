"""Fused EM loops of :func:`xpmat.nmf` on PyTorch and CuPy (few kernels per iteration, no host read).

The blockwise EM step of :mod:`xpmat.nmf` (``R = C ⊘ max(A B, f)``,
``A ← A ⊙ (R Bᵀ) ⊘ (1ᵀ Bᵀ)``, the same for ``B`` with the new ``A``; ``f = eps · mean(A B)``
taken at the start of the step) run with buffers the loop owns (the caller's arrays are
never written to):

- **PyTorch** (:class:`TorchEM`): 13 ATen ops per iteration instead of the Array API form's 35.
  The ratio is written in place into a buffer ``(m + 1) × (n + 1)`` whose extra row and
  column hold ones, so the two numerator products give the denominators as a by-product
  (``[R; 1ᵀ] Bᵀ`` ends with the row ``1ᵀ Bᵀ``, ``Aᵀ [1 | R]`` starts with the column
  ``Aᵀ 1``); the smallest normal number ``tiny`` added to those by-products (``baddbmm``'s
  ``input``) plays the part of the zero-sum guard (a zero sum comes with a zero numerator,
  and adding ``tiny`` leaves every sum above ``tiny / u`` unchanged).  The next step's floor
  comes from the sums already at hand: ``Σ A'B' = Σ B ⊙ K`` (``K = A'ᵀ R'``, taken between
  the two halves of the ``B`` update).
  A matrix whose product ``A B`` is all zero (floor 0, where :func:`xpmat.nmf` uses 1) goes to
  NaN instead of to zero factors; :meth:`TorchEM.factors` maps that NaN back to the zeros the
  Array API form gives (its inputs are checked finite, so NaN has no other source).
  Per iteration: 4 products (``bmm`` / ``baddbmm``), 2 × (``maximum``, ``div``) ratio passes,
  2 × (``mul_``, ``div_``) factor updates, 1 floor (a ``baddbmm`` against ones).
  On a CUDA device, with :data:`CUDA_GRAPHS` on, the 13 ops of a step are captured once in a
  CUDA graph and each later step replays it (one launch instead of 13: the host no longer
  bounds the loop; the buffers the graph reads and writes are fixed, as capture needs).  Off
  by default: not yet run on a GPU (``tools/gpu_goals.py`` times it beside the plain loop).
- **CuPy** (:func:`em_step_cupy`): the ratio and each factor update as one
  ``cupy.ElementwiseKernel`` each.  Untested here (no GPU in CI): written against CuPy's
  documented API, import-safe, and used only on CuPy arrays.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["CUDA_GRAPHS", "TorchEM", "em_step_cupy"]

#: Whether :class:`TorchEM` replays each step from a CUDA graph on CUDA tensors (module
#: docstring); a module constant, as ``xpmat._dask.ONE_TASK_BYTES``.
CUDA_GRAPHS = False


class TorchEM:
    """The EM steps of :func:`xpmat.nmf` on torch tensors ``C (..., m, n)``, ``A``, ``B``.

    ``step()`` runs one step (13 ATen ops, no host read); ``factors()`` returns ``(A, B)`` in
    the input's shape (views of the loop's buffers: read them before the next ``step``).
    ``floor`` is the first step's floor ``(..., 1, 1)`` (:func:`xpmat.nmf._model_floor`).
    """

    def __init__(self, C: Any, A: Any, B: Any, floor: Any, eps: float) -> None:
        import torch

        *batch, m, n = C.shape
        r = A.shape[-1]
        b = 1
        for s in batch:
            b *= s
        self.shapes = (A.shape, B.shape)
        opts = {"dtype": C.dtype, "device": C.device}
        tiny = torch.finfo(C.dtype).tiny
        self.C = C.reshape(b, m, n)
        fresh = {"memory_format": torch.contiguous_format}
        self.A = A.reshape(b, m, r).clone(**fresh)
        self.B = B.reshape(b, r, n).clone(**fresh)
        self.f = floor.reshape(b, 1, 1).clone()
        self.c = eps / (m * n)
        big = torch.zeros((b, m + 1, n + 1), **opts)
        big[:, :m, 0] = 1.0
        big[:, m, 1:] = 1.0
        self.P, self.R_rows, self.R_cols = big[:, :m, 1:], big[:, :, 1:], big[:, :m, :]
        self.N_ext = torch.empty((b, m + 1, r), **opts)  # [R Bᵀ; 1ᵀ Bᵀ + tiny]
        self.K_ext = torch.empty((b, r, n + 1), **opts)  # [Aᵀ 1 + tiny | Aᵀ R]
        self.N, self.rho = self.N_ext[:, :m], self.N_ext[:, m:]
        self.K, self.sig = self.K_ext[:, :, 1:], self.K_ext[:, :, :1]
        self.tiny_row = torch.zeros((1, m + 1, r), **opts)
        self.tiny_row[:, m] = tiny
        self.tiny_col = torch.zeros((1, r, n + 1), **opts)
        self.tiny_col[:, :, 0] = tiny
        self.Bt, self.At = self.B.mT, self.A.mT
        self.B_flat = self.B.view(b, 1, r * n)
        self.ones = torch.ones((1, r * n, 1), **opts).expand(b, r * n, 1)
        self.graph = None  # the captured step (CUDA_GRAPHS)

    def _ratio(self, X: Any, Y: Any) -> None:
        """``P ← C ⊘ max(X Y, f)`` (3 ops)."""
        import torch

        torch.bmm(X, Y, out=self.P)
        torch.maximum(self.P, self.f, out=self.P)
        torch.div(self.C, self.P, out=self.P)

    def step(self) -> None:
        """One blockwise EM step in place (13 ATen ops, no host read; on CUDA with
        :data:`CUDA_GRAPHS`, a replay of the step captured at the first call)."""
        if self.graph is not None:
            self.graph.replay()
        elif CUDA_GRAPHS and self.C.is_cuda:
            self.graph = self._captured()
        else:
            self._step()

    def _captured(self) -> Any:
        """Run one step (warm-up, on a side stream, as capture asks) and capture the next, not
        run, in a CUDA graph."""
        import torch

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        return graph

    def _step(self) -> None:
        """The 13 ops of one step."""
        import torch

        self._ratio(self.A, self.B)
        torch.baddbmm(self.tiny_row, self.R_rows, self.Bt, out=self.N_ext)
        self.A.mul_(self.N).div_(self.rho)
        self._ratio(self.A, self.B)
        torch.baddbmm(self.tiny_col, self.At, self.R_cols, out=self.K_ext)
        self.B.mul_(self.K)
        torch.baddbmm(self.f, self.B_flat, self.ones, beta=0.0, alpha=self.c, out=self.f)
        self.B.div_(self.sig)

    def factors(self) -> tuple[Any, Any]:
        """``(A, B)`` now, in the input's shapes; a matrix gone NaN (all-zero product) is zeroed."""
        import torch

        for x in (self.A, self.B):
            x.masked_fill_(torch.isnan(x), 0.0)
        return self.A.reshape(self.shapes[0]), self.B.reshape(self.shapes[1])


@functools.cache
def _cupy_kernels() -> tuple[Any, Any]:
    import cupy

    ratio = cupy.ElementwiseKernel("T c, T p, T f", "T out", "out = c / (p > f ? p : f)",
                                   "xpmat_nmf_ratio")
    update = cupy.ElementwiseKernel("T x, T num, T den", "T out",
                                    "out = x * num / (den == (T)0 ? (T)1 : den)", "xpmat_nmf_update")
    return ratio, update


def em_step_cupy(C: Any, A: Any, B: Any, floor: Any) -> tuple[Any, Any]:
    """One blockwise EM step on CuPy arrays with fused elementwise kernels (new arrays).

    Per half: one product ``A B``, one kernel ``C ⊘ max(A B, f)``, one product for the
    numerator, one sum for the denominator and one kernel ``x ⊙ num ⊘ safe(den)``.
    Untested until a GPU run (see the module docstring).
    """
    import cupy

    ratio, update = _cupy_kernels()
    R = ratio(C, A @ B, floor)
    A = update(A, R @ cupy.swapaxes(B, -1, -2), cupy.sum(B, axis=-1)[..., None, :])
    R = ratio(C, A @ B, floor)
    B = update(B, cupy.swapaxes(A, -1, -2) @ R, cupy.sum(A, axis=-2)[..., :, None])
    return A, B
