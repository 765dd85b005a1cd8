"""Matrix inverse p-th roots ``A^(-1/p)`` of symmetric PSD matrices (Shampoo's preconditioner).

Two routes: an eigendecomposition (exact up to rounding, any real ``p > 0``) and the
coupled Newton iteration (matmuls only, integer ``p``), which is what GPU Shampoo
implementations run.  [Stratos 2026][stratos-2026] §5 (Shampoo's
``L^(-1/4) G R^(-1/4)``, eq. 53) and section 6.2 (``E[GGᵀ]^(-1/2)``, eq. 63).
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from typing import Any, NamedTuple

from xpmat import _array, _dask

__all__ = ["ConvergenceWarning", "InvRootInfo", "inv_root", "inv_root_from_eig"]


class ConvergenceWarning(RuntimeWarning):
    """An iterative matrix function stopped before reaching its tolerance."""


class InvRootInfo(NamedTuple):
    """Convergence report of :func:`inv_root` (``return_info=True``).

    Attributes
    ----------
    converged : array of bool, shape ``(...)``
        Per batch item: the Newton residual ``max|M − I|`` reached ``tol``.  Always
        true for ``method="eigh"``.
    error : array, shape ``(...)``
        The final residual ``max|M − I|`` (0 for ``method="eigh"``).
    iters : int
        Newton steps taken (0 for ``method="eigh"``; always the ``iters`` argument when the
        residual cannot be read, e.g. under ``jax.jit``, and on Dask, where the count of a
        one-task run is known only inside its task).
    """

    converged: Any
    error: Any
    iters: int


def _check_square(A: Any, name: str = "A") -> None:
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"`{name}` must be a square matrix (..., n, n), got shape {tuple(A.shape)}")


def inv_root(
    A: Any,
    p: float,
    /,
    *,
    method: str = "eigh",
    eps: float = 0.0,
    iters: int = 100,
    tol: float | None = None,
    check_every: int = 4,
    warm_dtype: str | None = None,
    return_info: bool = False,
    xp: Any = None,
) -> Any:
    r"""Inverse p-th root ``(A + eps·I)^(-1/p)`` of a symmetric PSD matrix.

    Parameters
    ----------
    A : array, shape (..., n, n)
        Symmetric positive semi-definite matrices (float32/float64; integer input is
        promoted to the default floating dtype).  Only the symmetric part matters for
        ``"eigh"``; ``"newton"`` assumes symmetry.
    p : float
        The root: ``p = 2`` whitening (AdaGrad's ``O^(-1/2)``), ``p = 4`` Shampoo's
        factors.  Any ``p > 0`` for ``"eigh"``; a positive integer for ``"newton"``.
    method : {"eigh", "newton"}
        ``"eigh"``: ``V diag((w + eps)^(-1/p)) Vᵀ`` from ``eigh``.  ``"newton"``: the
        coupled Newton iteration (matmuls only).
    eps : float
        Added to the diagonal first (Shampoo's ``ε I``).  Default 0.
    iters : int
        Maximum Newton steps (``"newton"``).
    tol : float, optional
        Newton stops when ``max|M − I| ≤ tol`` (see Notes).  Default ``10·sqrt(n)·u``
        with ``u`` the unit roundoff of the dtype.
    check_every : int
        The host looks at the residual every ``check_every`` steps (one device sync
        each time) to stop early; converged batch items are frozen on the device
        at every step, so extra steps never change them.  On Dask, matrices up to
        ``xpmat._dask.ONE_TASK_BYTES`` (64 MiB per batch chunk) are iterated whole in one
        task with the chunk's library, checks and early exit included (``docs/dask.md``).
        Where the residual cannot be read (a JAX tracer under ``jax.jit``, a larger Dask
        array) all ``iters`` steps run without a check, and return the same ``X`` (the frozen
        items do not move; on Dask the block products of a converged matrix skip their GEMMs).
    warm_dtype : {None, "float32", "bfloat16", "tf32"}
        ``"newton"`` only: run the early steps in this lower precision until the residual is
        below 0.1 (read at the ``check_every`` checks), then the last steps in ``A``'s dtype.
        An accuracy/speed trade: the result is as accurate as a run in the warm precision,
        **not** the input's (see Notes).  ``"bfloat16"``: PyTorch / JAX only; ``"tf32"``:
        PyTorch only, float32 products with ``torch.set_float32_matmul_precision("high")``
        (TF32 tensor cores on CUDA, no change on a CPU).  Ignored where the residual cannot be
        read (under ``jax.jit``, on Dask).  Default ``None``: every step in ``A``'s dtype.
    return_info : bool
        Return ``(X, InvRootInfo)`` instead of ``X``; no warning is raised then.
    xp : namespace, optional
        Array namespace (inferred from ``A`` otherwise).

    Returns
    -------
    X : array, shape (..., n, n)
        ``(A + eps I)^(-1/p)``, symmetric, in ``A``'s namespace, device and dtype.
    info : InvRootInfo
        Only with ``return_info=True``.

    Warns
    -----
    ConvergenceWarning
        ``"newton"`` did not reach ``tol`` in ``iters`` steps for some batch item
        (singular or indefinite ``A`` with ``eps = 0``, too few ``iters``, a too
        strict ``tol``).  Those items hold the last iterate, which is unreliable.
        Not raised where the flags cannot be read (under ``jax.jit``): ask for
        ``return_info=True`` and look at ``info.converged`` there.

    Notes
    -----
    ``"eigh"`` is a pseudo-inverse root: eigenvalues ``w + eps`` at or below
    ``n·u·max(w + eps)`` (zero, rounding noise, or negative: ``A`` not PSD) map to 0,
    so a zero matrix gives a zero matrix, never Inf or NaN.

    ``"newton"`` is the coupled iteration of [Guo & Higham 2006][guo-higham-2006], as run by
    Distributed Shampoo: with ``z = (p + 1) / (2‖A‖_F)``,
    ``X₀ = z^(1/p) I``, ``M₀ = z A`` and

    .. math:: T_k = ((p + 1) I − M_k) / p,\quad X_{k+1} = X_k T_k,\quad M_{k+1} = T_k^p M_k,

    ``M_k → I`` and ``X_k → A^(-1/p)``; the eigenvalues of ``M₀`` lie in
    ``(0, (p + 1)/2]`` where the iteration converges.  Each step costs
    ``⌈log₂ p⌉ + popcount(p) + 1`` matmuls.  A zero matrix returns zeros (reported
    converged); a singular one (``eps = 0``) does not converge and is reported.
    A matrix whose residual exceeds 1e3 (an eigenvalue of ``M`` left ``(0, p + 1)``:
    indefinite or singular ``A``, where rounding makes a zero eigenvalue negative) is
    frozen as divergent, before anything overflows.  Input policy (``docs/backends.md``):
    a matrix holding NaN/Inf gives a NaN matrix with either method (``"newton"`` also reports
    it not converged), never the backend's ``LinAlgError`` nor zeros; a 0 × 0 matrix gives
    a 0 × 0 result; float16 / bfloat16 ``"eigh"`` runs in float32; ``inv_root(t A, p) =
    t^(-1/p) inv_root(A, p)`` across the whole normal range (the Newton scaling uses an
    overflow-free Frobenius norm; the pseudo-inverse cut is relative).
    Measured for ``κ(A) = 1e4``: float32 relative error ≈ 8e-5 (p = 2), 3e-5 (p = 4)
    in 16 steps; float64 ≈ 2e-13 in 18 steps.

    ``warm_dtype``: the coupled iteration does not correct an error made in its early steps.
    From a hand-over point ``(X_s, M_s)`` the remaining steps converge to ``X_s M_s^(-1/p)``,
    which is ``A^(-1/p)`` only where ``X_s`` commutes with ``A``; the warm precision's
    rounding leaves a non-commuting part of relative size ``u_warm`` that the later steps
    keep (and, for eigenvalue ratios ``r``, scale by about ``|1 − (r + … + r^p)/p|``).  So the
    result carries the warm dtype's accuracy, and the last steps in ``A``'s dtype only bring
    the residual ``M`` to ``tol`` (so a float32 ``tol`` is met after TF32 or bf16 early
    steps, which alone stall above it).  Measured (n = 64, relative error against ``eigh``):
    float64 with ``"float32"`` warm steps 1.5e-6 at κ = 1e2 and 4.1e-5 at κ = 1e4 (float32
    alone: 1.7e-6, 4.0e-5; float64 alone: 4e-15, 9e-14); float32 with ``"bfloat16"`` 2e-2
    at κ = 1e2, and no convergence at κ = 1e4 (bf16 rounds the small eigenvalues of ``A``
    away).  On a CPU a float32 warm start of a float64 matrix (n = 384, κ = 1e3, p = 4, one
    thread) took 331 ms against 402 ms in float64 and 121 ms all in float32: use it where the
    warm precision is many times faster (TF32 / bf16 tensor cores) and its accuracy suffices.

    [Stratos 2026, §5, eq. 53 and §6.2, eq. 63][stratos-2026].

    Backends: standard Array API only (``xp.linalg.eigh``, ``@``) on every library.
    Host reads: none for ``"eigh"``; ``"newton"`` reads the residual every
    ``check_every`` steps (with ``warm_dtype`` too: the hand-over is decided at a check) and
    the convergence flags once after the loop (for the warning), on eager arrays only (on
    Dask: inside the one task of a small matrix, never on the client); under ``jax.jit``
    and on a Dask matrix above the one-task size it runs ``iters`` steps and reads
    nothing (the Python loop is unrolled into the traced program: compile time grows
    with ``iters``).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import inv_root
    >>> A = np.diag([16.0, 1.0])
    >>> print(np.round(inv_root(A, 4), 6))
    [[0.5 0. ]
     [0.  1. ]]
    >>> print(np.round(inv_root(A, 2, method="newton"), 6))
    [[0.25 0.  ]
     [0.   1.  ]]
    """
    xp = _array.array_namespace(A, names=("A",), xp=xp)
    _check_square(A)
    A = _array.as_float(A, xp)
    if method not in ("eigh", "newton"):
        raise ValueError(f"method must be 'eigh' or 'newton', got {method!r}")
    if not (isinstance(p, (int, float)) and p > 0 and math.isfinite(p)):
        raise ValueError(f"p must be a positive number, got {p!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    n = A.shape[-1]
    dev = _array.device(A)
    if n == 0:  # the root of a 0 x 0 matrix is 0 x 0
        empty = xp.zeros(A.shape, dtype=A.dtype, device=dev)
        if not return_info:
            return empty
        batch = tuple(A.shape[:-2])
        return empty, InvRootInfo(xp.ones(batch, dtype=xp.bool, device=dev),
                                  xp.zeros(batch, dtype=A.dtype, device=dev), 0)
    if method == "eigh":
        X = _inv_root_eigh(A, p, eps, xp)
        if return_info:
            batch = tuple(A.shape[:-2])
            ok = xp.ones(batch, dtype=xp.bool, device=dev)
            return X, InvRootInfo(ok, xp.zeros(batch, dtype=A.dtype, device=dev), 0)
        return X
    if int(p) != p:
        raise ValueError(f"method='newton' needs an integer p, got {p!r}")
    if iters < 1 or check_every < 1:
        raise ValueError(f"iters and check_every must be >= 1, got {iters}, {check_every}")
    if tol is None:
        tol = 10.0 * math.sqrt(n) * _unit_roundoff(xp, A.dtype)
    _check_warm(warm_dtype, xp)
    if _array.is_dask(xp) and _dask.fits_one_task(A):  # the whole iteration in one task
        X, err, converged = _newton_on_dask(A, int(p), eps, iters, tol, check_every)
        return (X, InvRootInfo(converged, err, iters)) if return_info else X
    X, err, done, zero, k = _inv_root_newton(A, int(p), eps, iters, tol, check_every, xp, warm_dtype)
    converged = done | zero
    if return_info:
        return X, InvRootInfo(converged, err, k)
    if _array.is_lazy(converged):  # under jax.jit: no warning (return_info=True reports)
        return X
    if not bool(xp.all(converged)):  # host check once, after the loop
        bad = int(xp.sum(xp.astype(~converged, xp.int32)))
        worst = float(xp.max(xp.where(converged, xp.zeros_like(err), err)))
        warnings.warn(
            f"inv_root(method='newton') did not converge for {bad} matrix(es) in {k} steps "
            f"(max|M - I| = {worst:.2e} > tol = {tol:.2e}); the result is unreliable. "
            "Add eps > 0 for singular matrices, raise iters, or use method='eigh'.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return X


_DIVERGED = 1e3  # max|M - I| beyond which the Newton iteration is declared divergent


def _unit_roundoff(xp: Any, dtype: Any) -> float:
    return float(xp.finfo(dtype).eps) / 2


def _inv_root_eigh(A: Any, p: float, eps: float, xp: Any) -> Any:
    w, V = _array.eigh((A + _array.mT(A, xp)) / 2, xp)
    return _inv_root_from_eig(w + eps, V, p, xp)


def _inv_root_from_eig(w: Any, V: Any, p: float, xp: Any) -> Any:
    """``V diag(w^(-1/p)) Vᵀ``, symmetrized; eigenvalues ``<= n·u·max(w)`` map to 0 (a
    pseudo-inverse root).  Shared with Shampoo's tracked-eigenbasis route."""
    n = w.shape[-1]
    cut = n * _unit_roundoff(xp, w.dtype) * xp.max(w, axis=-1, keepdims=True)
    keep = w > cut
    safe = xp.where(keep, w, 1.0)  # scalars, not *_like: w's Dask meta may not be its chunks' type
    f = xp.where(keep, safe ** (-1.0 / p), 0.0)
    X = (V * f[..., None, :]) @ _array.mT(V, xp)
    return (X + _array.mT(X, xp)) / 2


def _matpow(T: Any, p: int, xp: Any, skip: Any = None) -> Any:
    """``T^p`` for an integer ``p >= 1`` by repeated squaring (``skip``: :func:`_skip_flag`)."""
    out = None
    base = T
    while True:
        if p & 1:
            out = base if out is None else _array.matmul(out, base, xp, skip=skip)
        p >>= 1
        if not p:
            return out
        base = _array.matmul(base, base, xp, skip=skip)


def _skip_flag(stop: Any, xp: Any) -> Any:
    """Dask, one matrix: ``stop`` itself, so that the block products of a step after convergence
    skip their GEMMs (the step's results are discarded by its ``where``; the tasks stay, as
    Dask has no early exit without a host read).  Otherwise None."""
    return stop if _array.is_dask(xp) and stop.ndim == 0 else None


def _newton_step(state: tuple, p: int, tol: float, eye: Any, xp: Any) -> tuple:
    """One coupled Newton step on ``(X, M, err, done, stop)``; stopped items stay frozen."""
    X, M, err, done, stop = state
    T = ((p + 1) * eye - M) / p
    skip = _skip_flag(stop, xp)
    X_new = _array.matmul(X, T, xp, skip=skip)  # Dask: one task per block (``_array.matmul``)
    M_new = _array.matmul(_matpow(T, p, xp, skip), M, xp, skip=skip)
    sb = stop[..., None, None]
    X = xp.where(sb, X, X_new)
    M = xp.where(sb, M, M_new)
    err = xp.where(stop, err, xp.max(xp.abs(M_new - eye), axis=(-2, -1)))
    done = done | (err <= tol)
    # eigenvalues of M leave (0, p + 1): a negative one (singular or indefinite A) grows
    # without bound; M so far from I never comes back
    return X, M, err, done, done | ~(err <= _DIVERGED)


def _inv_root_newton(A: Any, p: int, eps: float, iters: int, tol: float, check_every: int, xp: Any,
                     warm: Any = None):
    n = A.shape[-1]
    eye = _array.eye(n, like=A, xp=xp)
    if eps:
        A = A + eps * eye
    nrm = _array.frobenius_norm(A, xp)  # bounds the spectral norm; no overflow of the squares
    zero = nrm == 0
    z = (p + 1) / (2 * xp.where(zero, 1.0, nrm))
    zb = z[..., None, None]
    M = zb * A
    state = _newton_state(zb ** (1.0 / p) * eye, M, tol, eye, zero, xp)
    k = 0
    if warm is not None and not _array.is_lazy(zero):  # early steps in the warm precision
        wdt, ctx = _warm_dtype(warm, A.dtype, xp)
        weye = xp.astype(eye, wdt)
        wtol = max(tol, _WARM_TOL)
        with ctx:
            wstate = _newton_state(xp.astype(state[0], wdt), xp.astype(M, wdt), wtol, weye, zero, xp)
            wstate, k = _newton_loop(wstate, lambda s: _newton_step(s, p, wtol, weye, xp), 0, iters,
                                     check_every, xp)
        state = _newton_state(xp.astype(wstate[0], A.dtype), xp.astype(wstate[1], A.dtype), tol, eye,
                              zero, xp)

    def step(state: tuple) -> tuple:
        return _newton_step(state, p, tol, eye, xp)

    if _array.is_lazy(zero):  # jax.jit: all `iters` steps, no host read, one traced body
        state, k = _array.fixed_loop(iters, step, state), iters
    elif k < iters:
        state, k = _newton_loop(state, step, k, iters, check_every, xp)
    X, _, err, done, _ = state
    X = xp.where(zero[..., None, None], 0.0, X)
    X = _array.poison(X, _array.nonfinite_members(A, xp), xp, 2)  # an Inf would leave zeros
    X = (X + _array.mT(X, xp)) / 2
    err = xp.where(zero, 0.0, err)
    return X, err, done & ~zero, zero, k


def _newton_on_dask(A: Any, p: int, eps: float, iters: int, tol: float, check_every: int) -> tuple:
    """``(X, err, converged)`` of a Dask ``A`` whose matrices fit one task
    (:func:`xpmat._dask.fits_one_task`): each batch chunk's matrices are gathered into one task
    that runs the eager iteration with the chunk's own library (its host reads and early exit
    included), and ``X`` goes back to ``A``'s chunks, as ``dask.array.linalg`` does for its small
    factors.  The graph has O(blocks) tasks whatever ``iters``; larger matrices take the blocked
    path (``docs/dask.md``)."""
    fn = functools.partial(_newton_task, p=p, eps=eps, iters=iters, tol=tol, check_every=check_every)
    n, batch = A.shape[-1], A.shape[:-2]
    X, err, ok = _dask.per_matrix(fn, A, [(n, n), (), ()], label="inv-root-newton",
                                  dtypes=[A.dtype, A.dtype, bool])
    return X.rechunk(A.chunks), err.reshape(batch), ok.reshape(batch)


def _newton_task(t: Any, cxp: Any, *, p: int, eps: float, iters: int, tol: float, check_every: int):
    """One task of :func:`_newton_on_dask`: the eager Newton iteration on a chunk ``t``."""
    X, err, done, zero, _ = _inv_root_newton(t, p, eps, iters, tol, check_every, cxp)
    return X, cxp.asarray(err), cxp.asarray(done | zero)


def _newton_state(X: Any, M: Any, tol: float, eye: Any, zero: Any, xp: Any) -> tuple:
    """``(X, M, err, done, stop)`` of a Newton start; ``stop``: converged (or zero ``A``), or
    diverged (frozen so that they never overflow)."""
    err = xp.max(xp.abs(M - eye), axis=(-2, -1))
    done = (err <= tol) | zero
    return X, M, err, done, done | ~(err <= _DIVERGED)


def _newton_loop(state: tuple, step: Any, first: int, iters: int, check_every: int, xp: Any):
    """Steps ``first + 1 .. iters`` of ``step``; the host reads ``all(stop)`` at every step number
    divisible by ``check_every`` and stops there: ``(state, last step)``."""
    k = first
    for k in range(first + 1, iters + 1):
        state = step(state)
        if k % check_every == 0 and bool(xp.all(state[4])):
            break
    return state, k


#: Residual ``max|M − I|`` at which the warm phase hands over to the input's precision: from
#: there the quadratic convergence of the last steps takes 3–4 steps to float64 rounding.
_WARM_TOL = 0.1
_WARM = ("float32", "bfloat16", "tf32")


def _warm_dtype(warm: str, dtype: Any, xp: Any) -> tuple[Any, Any]:
    """``(dtype, context)`` of the warm phase.  ``"tf32"``: float32 under
    ``torch.set_float32_matmul_precision("high")`` (TF32 tensor cores on CUDA; plain float32 on
    CPU), restored afterwards."""
    if warm == "tf32":
        return xp.float32, _tf32()
    return _array.resolve_dtype(xp, warm), contextlib.nullcontext()


@contextlib.contextmanager
def _tf32() -> Any:
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _check_warm(warm: Any, xp: Any) -> None:
    if warm is None:
        return
    if warm not in _WARM:
        raise ValueError(f"warm_dtype must be None or one of {_WARM}, got {warm!r}")
    if warm == "tf32" and not _array.is_torch(xp):
        raise ValueError(f"warm_dtype='tf32' needs PyTorch tensors, got {_array.library_name(xp)} arrays")
    if warm == "bfloat16" and not _array.supports_bfloat16(xp):
        raise ValueError(f"warm_dtype='bfloat16' needs PyTorch or JAX; {_array.library_name(xp)} "
                         "has no bfloat16 (use 'float32')")


def inv_root_from_eig(w: Any, V: Any, p: float, /, *, xp: Any = None) -> Any:
    """The pseudo-inverse ``p``-th root ``V diag(w^(-1/p)) Vᵀ`` of ``A = V diag(w) Vᵀ``.

    Parameters
    ----------
    w : array (..., n)
        Eigenvalues (any order).
    V : array (..., n, n)
        Orthonormal eigenvectors in the columns, matching ``w``.
    p : float > 0
    xp : namespace, optional

    Returns
    -------
    array (..., n, n)
        Symmetrized; eigenvalues ``<= n·u·max(w)`` (``u`` the unit roundoff) map to 0, as
        :func:`inv_root` with ``method="eigh"`` does.

    Notes
    -----
    For callers that already hold an eigendecomposition (Shampoo's tracked eigenbasis,
    ``[Stratos 2026][stratos-2026]`` Q.2.1).

    Backends: standard Array API.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat.matfun import inv_root_from_eig
    >>> np.round(inv_root_from_eig(np.array([4.0, 16.0]), np.eye(2), 2), 6).tolist()
    [[0.5, 0.0], [0.0, 0.25]]
    """
    xp = _array.array_namespace(w, V, names=("w", "V"), xp=xp)
    return _inv_root_from_eig(w, V, p, xp)
