"""Subspace iteration: power and orthogonal iteration, PowerIter1, randomized SVD/eigh, Nyström.

Math: [Stratos 2026][stratos-2026] App. Q.1 (power iteration), Q.2 (orthogonal
iteration, eqs. 142–143), Q.2.1 (online version, eqs. 144–145, sign and order consistency);
[Pethick 2025][pethick-2025] (PowerIter1); [Xie, Chen, Yuan 2025][xie-chen-yuan-2025] §3 eqs.
(8)–(9) (single-step power iteration); [LRE 2025][lre-2025] "Basis algorithms" 3–4
(randomized eigendecomposition, Nyström).

Operators.  Wherever a symmetric ``A`` is accepted it may be an array ``(..., n, n)`` or a
callable.  :func:`power_iteration` calls it on vectors ``(..., n) -> (..., n)`` (a
Hessian-vector product); the block functions call it on blocks ``(..., n, k) -> (..., n, k)``.
The size and the array type then come from the other array arguments (``x0``, ``Q0``) or,
where there is none, from ``shape=`` (``n`` or ``(..., n, n)``) and ``like=`` (any array
whose namespace, device and floating dtype the results take).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from xpmat import _array, _dask, _dask_range
from xpmat._array import mT
from xpmat.orthogonalize import CQR2_AUTO_RATIO, CQR2_TOL, orthonormalize

__all__ = [
    "nystrom_eigh",
    "orthogonal_iteration",
    "power_iter1",
    "power_iteration",
    "randomized_eigh",
    "randomized_svd",
]


# ----------------------------------------------------------------------------- helpers


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")
    return value


def _check_square(A: Any, name: str = "A") -> None:
    if A.ndim < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"`{name}` must be a square matrix (..., n, n), got shape {tuple(A.shape)}")


def _signs(d: Any, xp: Any) -> Any:
    """+1 where ``d >= 0`` (zero included), -1 elsewhere, in ``d``'s dtype."""
    return 1 - 2 * xp.astype(d < 0, d.dtype)


def _max_abs_signs(M: Any, xp: Any) -> Any:
    """Per-column signs ``(..., k)`` that make each column's largest-magnitude entry positive."""
    a = xp.abs(M)
    mx = _array.max_abs(M, xp, axis=-2, keepdims=True)  # Dask: empty row chunks allowed
    pick = xp.sum(xp.where(a == mx, M, 0.0), axis=-2)
    return _signs(pick, xp)


def _selector(idx: Any, size: int, dtype: Any, xp: Any) -> Any:
    """One-hot ``S (..., size, k)`` with ``S[i, j] = (idx[j] == i)``: ``M @ S`` gathers columns."""
    ar = _dask.as_chunk_type(xp.arange(size, device=_array.device(idx)), idx)  # Dask: idx's chunk type
    return xp.astype(ar[:, None] == idx[..., None, :], dtype)


def _gather(v: Any, S: Any) -> Any:
    """``v[..., idx]`` for the one-hot selector ``S`` of :func:`_selector`."""
    return (v[..., None, :] @ S)[..., 0, :]


def _sym(H: Any, xp: Any) -> Any:
    return (H + mT(H, xp)) / 2


def _block_operator(A: Any, *, shape: Any, like: Any, xp: Any, names: tuple, others: tuple,
                    vector: bool = False) -> tuple:
    """Resolve an array-or-callable symmetric operator.

    Returns ``(apply, xp, n, batch, dtype, device)``.  ``others`` are further array arguments
    (or None) taking part in namespace resolution; when ``A`` is callable, the first of them
    that is not None (or ``like``) supplies size / namespace / dtype.
    """
    if callable(A):
        ref = next((o for o in (*others, like) if o is not None), None)
        if ref is None:
            raise TypeError(
                f"`{names[0]}` is a callable: pass like=<array> (its namespace, device and floating "
                "dtype are used) and shape=n or (..., n, n)")
        xp = _array.array_namespace(*others, like, names=(*names[1:], "like"), xp=xp)
        dtype = _array.float_dtype(xp, *[o for o in (*others, like) if o is not None])
        dev = _array.device(ref)
        known = [o for o in others if o is not None]
        if shape is not None:
            shape = (shape, shape) if isinstance(shape, int) else tuple(shape)
            if len(shape) < 2 or shape[-1] != shape[-2]:
                raise ValueError(f"`shape` must be n or (..., n, n), got {shape!r}")
            n, batch = shape[-1], shape[:-2]
        elif known:
            o = known[0]
            n, batch = (o.shape[-1], o.shape[:-1]) if vector else (o.shape[-2], o.shape[:-2])
        else:
            raise TypeError(f"`{names[0]}` is a callable: pass shape=n or (..., n, n)")

        def apply(X: Any) -> Any:
            Y = A(X)
            if tuple(Y.shape[-1:] if vector else Y.shape[-2:]) != tuple(X.shape[-1:] if vector
                                                                          else X.shape[-2:]):
                raise ValueError(f"callable `{names[0]}` mapped shape {tuple(X.shape)} to "
                                 f"{tuple(Y.shape)}; it must keep the last "
                                 f"{'axis' if vector else 'two axes'}")
            return _array.as_float(Y, xp, dtype)

        return apply, xp, n, tuple(batch), dtype, dev
    xp = _array.array_namespace(A, *others, names=names, xp=xp)
    if not hasattr(A, "shape"):
        raise TypeError(f"`{names[0]}` must be an array or a callable, got {type(A).__name__}")
    _check_square(A, names[0])
    dtype = _array.float_dtype(xp, A, *[o for o in others if o is not None])
    Af = _array.as_float(A, xp, dtype)
    if vector:
        def apply(v: Any) -> Any:
            return (Af @ v[..., None])[..., 0]
    else:
        def apply(X: Any) -> Any:
            return Af @ X
    return apply, xp, A.shape[-1], tuple(A.shape[:-2]), dtype, _array.device(A)


def _unit(v: Any, xp: Any) -> Any:
    nrm = _array.vector_norm(v, xp, axis=-1, keepdims=True)
    return v / xp.where(nrm > 0, nrm, 1.0)


# ----------------------------------------------------------------------------- power iteration


def power_iteration(A: Any | Callable, /, *, x0: Any = None, iters: int = 100, tol: float | None = 1e-6,
                    seed: Any = None, check_every: int = 10, shape: Any = None, like: Any = None,
                    xp: Any = None) -> tuple[Any, Any]:
    """Dominant eigenpair of a symmetric matrix or operator by power iteration.

    Parameters
    ----------
    A : array (..., n, n) or callable
        Symmetric matrix (real floating; integer input is promoted), or a matvec
        ``A(v)`` mapping ``(..., n) -> (..., n)`` (a Hessian-vector product, a Kronecker
        operator...).  For a callable the size, namespace, device and dtype come from
        ``x0``, or (without ``x0``) from ``shape`` and ``like``.
    x0 : array (..., n), optional
        Start vector (broadcast over the batch).  Default: a Gaussian draw from ``seed``.
    iters : int
        Maximum number of power steps ``v <- A v / ||A v||`` (``iters + 1`` operator calls).
    tol : float or None
        Stop when ``||A v - λ v|| <= tol · ||A v||`` for every batch member.  Checked on the
        host only every ``check_every`` steps (one synchronisation per check); ``None``
        runs all ``iters`` steps without any host round trip, and so does any ``tol``
        where the residual cannot be read (a JAX tracer under ``jax.jit``, a Dask array).
    seed : int or numpy.random.Generator, optional
        Seed of the default start vector.
    check_every : int
        Steps between convergence checks.
    shape : int or tuple, optional
        ``n`` or ``(..., n, n)``: size of a callable ``A`` when ``x0`` is not given.
    like : array, optional
        For a callable ``A`` without ``x0``: the namespace, device and floating dtype to use.
    xp : namespace, optional
        Skip namespace inference.

    Returns
    -------
    lam : array (...)
        Rayleigh quotient ``vᵀ A v`` (the eigenvalue of largest magnitude; may be negative).
    v : array (..., n)
        Unit eigenvector, sign fixed so that its largest-magnitude entry is positive.

    Notes
    -----
    Appendix Q.1: ``q_{k+1} = X q_k / ||X q_k||``; the error after ``k`` steps decays as
    ``(|λ_2| / |λ_1|)^k``.  Without a gap the iterate converges to the normalised projection
    of ``x0`` on the top eigenspace (footnote 27), and ``λ`` still converges.  If
    ``λ_1 = -λ_2`` the direction does not converge.  Zero ``A`` (or a start vector in its
    null space) gives ``λ = 0`` and ``v = 0``, not NaN.  With ``tol``, each matrix of a batch
    is frozen once it has converged, so its result does not depend on its batch mates.
    Input policy (``docs/backends.md``): NaN/Inf in a matrix of ``A`` give that matrix NaN
    ``λ`` and ``v`` (and do not hold back the others' stop); a 0 × 0 ``A`` raises ``ValueError``.

    Backends: standard Array API only (matmul, vector_norm); the check uses ``bool()`` of a
    0-D array every ``check_every`` steps on eager arrays.  Under ``jax.jit`` (or with
    ``tol=None``) the steps run as one traced loop body (``_array.fixed_loop``), no host read;
    ``jax.jit`` therefore returns the ``tol=None`` result, at least as converged as eager's.

    Examples
    --------
    >>> import numpy as np, xpmat as xm
    >>> A = np.diag([3.0, 1.0, 0.5])
    >>> lam, v = xm.power_iteration(A, seed=0)
    >>> print(round(float(lam), 6), np.round(np.abs(v), 4))
    3.0 [1. 0. 0.]
    """
    _check_int("iters", iters, 0)
    _check_int("check_every", check_every, 1)
    if tol is not None and not tol >= 0:
        raise ValueError(f"`tol` must be >= 0 or None, got {tol!r}")
    apply, xp, n, batch, dtype, dev = _block_operator(
        A, shape=shape, like=like, xp=xp, names=("A", "x0"), others=(x0,), vector=True)
    if n == 0:
        raise ValueError("`A` is 0 x 0: a matrix without rows has no eigenpair")
    if x0 is None:
        v = _array.random_normal((*batch, n), seed=seed, xp=xp, dtype=dtype, dev=dev,
                                 like=like if callable(A) else A)
    else:
        if x0.ndim < 1 or x0.shape[-1] != n:
            raise ValueError(f"`x0` must have shape (..., {n}), got {tuple(x0.shape)}")
        v = _array.as_float(x0, xp, dtype)
        if not callable(A):
            v = xp.broadcast_to(v, (*batch, n)) if v.ndim <= len(batch) + 1 else v
    v = _unit(v, xp)
    w = apply(v)

    def step(state: tuple) -> tuple:
        v = _unit(state[1], xp)
        return v, apply(v)

    if tol is None or _array.is_lazy(w):  # no host read: all `iters` steps
        v, w = _array.fixed_loop(iters, step, (v, w))
    else:
        v, w = _power_loop(step, v, w, iters, tol, check_every, xp)
    lam = xp.sum(v * w, axis=-1)
    s = _max_abs_signs(v[..., None], xp)
    return lam, v * s


def _power_loop(step: Callable, v: Any, w: Any, iters: int, tol: float, check_every: int,
                xp: Any) -> tuple[Any, Any]:
    """Power steps until every matrix of the batch has converged (one host read per check).

    A converged matrix is frozen (``where``), so its result does not depend on its batch
    mates; a matrix whose residual is NaN (NaN/Inf in ``A``) counts as done: it cannot
    converge, and must not keep the others iterating.
    """
    done = None
    for k in range(1, iters + 1):
        v1, w1 = step((v, w))
        if done is not None:
            v1, w1 = xp.where(done[..., None], v, v1), xp.where(done[..., None], w, w1)
        v, w = v1, w1
        if k % check_every == 0 and k < iters:
            res = _array.vector_norm(w - xp.sum(v * w, axis=-1)[..., None] * v, xp)
            done = xp.logical_or(res <= tol * _array.vector_norm(w, xp), xp.isnan(res))
            if bool(xp.all(done)):
                break
    return v, w


# ----------------------------------------------------------------------------- orthogonal iteration


def _align(Q: Any, lam: Any, P: Any, xp: Any) -> tuple[Any, Any]:
    """Reorder and flip the columns of ``Q`` to follow the previous basis ``P`` (Q.2.1)."""
    r = Q.shape[-1]
    C = mT(P, xp) @ Q  # C[j, i] = <p_j, q_i>
    idx = xp.argmax(xp.abs(C), axis=-1)  # for previous column j: the best new column
    S = _selector(idx, r, Q.dtype, xp)  # S[i, j] = (idx[j] == i)
    valid = xp.all(xp.sum(S, axis=-1) == 1, axis=-1)  # a bijection?
    eye = _array.eye(r, like=Q, xp=xp)
    S = xp.where(valid[..., None, None], S, eye)
    Q, lam, C = Q @ S, _gather(lam, S), C @ S
    s = _signs(xp.linalg.diagonal(C), xp)
    return Q * s[..., None, :], lam


def orthogonal_iteration(A: Any | Callable, Q0: Any, /, *, iters: int = 1, align_to: Any = None,
                         ritz: bool = True, method: str = "auto", xp: Any = None) -> tuple[Any, Any]:
    """Top-``r`` eigenspace of a symmetric ``A`` by orthogonal (subspace) iteration.

    Parameters
    ----------
    A : array (..., n, n) or callable
        Symmetric matrix (integer input promoted), or a callable on blocks
        ``(..., n, r) -> (..., n, r)``; size, namespace, device and dtype then come from ``Q0``.
    Q0 : array (..., n, r), r <= n
        Start basis with orthonormal columns (the previous output, or
        ``orthonormalize(random)``).  With ``iters=1`` the returned ``lam`` are Rayleigh
        quotients on ``Q0``, which needs ``Q0ᵀ Q0 = I``.
    iters : int >= 1
        Number of steps ``Q <- orth(A Q)``; each calls ``A`` once.
    align_to : array (..., n, r), optional
        Previous basis.  Columns are reordered to match it (each previous column takes the
        new column of largest ``|<q_i, p_j>|``, when that is a one-to-one matching; otherwise
        the descending order is kept) and flipped so that ``<q_j, p_j> >= 0``.
    ritz : bool
        ``True``: Rayleigh–Ritz in the last step (an ``r × r`` ``eigh``): ``lam`` are the Ritz
        values of ``A`` on the basis entering that step, sorted descending, and the columns
        of ``Q`` are those Ritz vectors after one more power step.  ``False``: no ``eigh``
        (accelerator friendly, Q.2.1): ``lam`` are the Rayleigh quotients ``q_iᵀ A q_i`` of the
        entering columns, and columns are sorted by them.
    method : str
        Passed to :func:`xpmat.orthonormalize`.
    xp : namespace, optional
        Skip namespace inference.

    Returns
    -------
    Q : array (..., n, r)
        Orthonormal basis of ``span(A^iters Q0)``.
    lam : array (...,  r)
        Eigenvalue estimates of the columns of ``Q`` (descending unless ``align_to`` reorders).

    Notes
    -----
    Eqs. (142)–(143) of appendix Q.2: ``Ṽ = X V̂``, ``V̂ = QR(Ṽ)``.  With a gap
    ``λ_r > λ_{r+1}`` the subspace error decays as ``tan Θ_k <= (λ_{r+1}/λ_r)^k tan Θ_0``
    (for ``|λ|``-ordered spectra).  The last step is ``Y = A Q``, ``H = Qᵀ Y = W Θ Wᵀ``,
    ``Q <- orth(Y W)``: one operator call per step, the ``eigh`` costs ``O(r³)``, and the
    triangular orthonormalization keeps column ``i`` in ``span(A Q w_1..w_i)``, so columns track
    individual eigenvectors.  Signs of ``W`` are fixed by ``diag(W) >= 0``.  Q.2.1 (online):
    call with ``iters=1, align_to=Q_prev`` on a drifting matrix; labels then do not jump.
    Zero ``A`` returns finite ``Q`` (whatever ``orthonormalize`` gives for a zero block) and
    ``lam = 0``.  NaN/Inf in a batch member make that member's ``Q`` and ``lam`` NaN (no
    exception: the small ``eigh`` runs on a screened matrix).

    Input policy (``docs/backends.md``): a matrix holding NaN/Inf gets NaN in all its outputs
    (the other matrices of a batch are unaffected); empty input gives results of the right
    shapes (no NaN); float16 / bfloat16 results come back in the input's dtype (factorizations
    run in float32).

    Backends: standard Array API (matmul, eigh, argmax); orthonormalization via
    :func:`xpmat.orthonormalize` (CholeskyQR2 / Householder).
    Host reads: one per inner :func:`xpmat.orthonormalize` call that takes CholeskyQR2 on
    eager arrays (``method="householder"``: none); under ``jax.jit`` and on Dask none (per-matrix
    fallback, see :func:`xpmat.orthonormalize`).

    Examples
    --------
    >>> import numpy as np, xpmat as xm
    >>> A = np.diag([4.0, 3.0, 1.0, 0.5])
    >>> Q0 = np.linalg.qr(np.random.default_rng(0).standard_normal((4, 2)))[0]
    >>> Q, lam = xm.orthogonal_iteration(A, Q0, iters=60)
    >>> print(np.round(lam, 6), np.round(np.abs(Q[:2]), 4))
    [4. 3.] [[1. 0.]
     [0. 1.]]
    """
    _check_int("iters", iters, 1)
    apply, xp, n, _, dtype, _ = _block_operator(
        A, shape=None, like=None, xp=xp, names=("A", "Q0", "align_to"), others=(Q0, align_to))
    if Q0.ndim < 2 or Q0.shape[-2] != n or Q0.shape[-1] > n:
        raise ValueError(f"`Q0` must have shape (..., {n}, r) with r <= {n}, got {tuple(Q0.shape)}")
    r = Q0.shape[-1]
    if align_to is not None and (align_to.ndim < 2 or tuple(align_to.shape[-2:]) != (n, r)):
        raise ValueError(f"`align_to` must have shape (..., {n}, {r}), got {tuple(align_to.shape)}")
    Q = _array.as_float(Q0, xp, dtype)
    for _ in range(iters - 1):
        Q = orthonormalize(apply(Q), method=method, xp=xp)
    Y = apply(Q)
    H = mT(Q, xp) @ Y
    if ritz:  # a member holding NaN/Inf gets NaN lam and W from _array.eigh
        lam, W = _array.eigh(_sym(H, xp), xp, descending=True)
        W = W * _signs(xp.linalg.diagonal(W), xp)[..., None, :]
    else:
        rq = xp.linalg.diagonal(H)
        W = _selector(xp.argsort(rq, axis=-1, descending=True, stable=True), r, dtype, xp)
        lam = _gather(rq, W)
    Q = orthonormalize(Y @ W, method=method, xp=xp)
    if align_to is not None:
        Q, lam = _align(Q, lam, _array.as_float(align_to, xp, dtype), xp)
    return Q, lam


# ----------------------------------------------------------------------------- PowerIter1


def power_iter1(B: Any, Q: Any, /, *, method: str = "auto", sketch: Any = None,
                reduce: Callable[[list[Any]], list[Any]] | None = None,
                xp: Any = None) -> tuple[Any, Any, Any]:
    """One warm-started power step of PowerSGD / Dion: ``PowerIter1(B; Q)``.

    Parameters
    ----------
    B : array (..., m, n), or a sequence of such matrices (mixed shapes)
        Matrix to approximate (real floating; integer input promoted).
    Q : array (..., n, r), r <= m, or a sequence (one per ``B``)
        Previous right factor (warm start).
    method : str
        Passed to :func:`xpmat.orthonormalize` for ``P``; ``"rcqr"`` takes ``sketch``.
        ``"auto"`` takes Householder while ``torch.compile`` traces (CholeskyQR2's acceptance
        test reads the host).
    sketch : array (k, m), or a sequence (one per ``B``), optional
        The sketch of ``method="rcqr"`` (:func:`xpmat.orthonormalize`).
    reduce : callable, optional
        ``reduce(arrays) -> arrays`` (data parallel: the mean over ranks), applied to the list
        of the ``B Q`` before the orthonormalization and to the list of the ``Bᵀ P`` before the
        column normalization: two calls for all the matrices together.
    xp : namespace, optional
        Skip namespace inference.

    Returns
    -------
    P : array (..., m, r)
        ``orth(B Q)``, orthonormal columns.
    R : array (..., n, r)
        ``Bᵀ P``; ``P Rᵀ = P Pᵀ B`` is the rank-``r`` approximation.
    Q_new : array (..., n, r)
        ``R`` with unit-norm columns (zero columns stay zero); ``P Q_newᵀ`` is Dion's
        "all singular values set to 1" update.

    Lists of these, one per matrix, when ``B`` is a sequence.

    Notes
    -----
    [Pethick 2025][pethick-2025] (PowerIter1) and [Xie, Chen, Yuan 2025, eq. 9][xie-chen-yuan-2025]:
    ``P̃ = QR(Δ Q_{t-1})``, ``Q_t = Δᵀ P̃``, ``Δ̂ = P̃ Q_tᵀ = P̃ P̃ᵀ Δ``.  Zero ``B`` gives
    ``R = Q_new = 0`` (no NaN).  The one PowerIter1 of the package: Dion
    (:mod:`xpmat.optim.dion`, with ``reduce`` in :class:`xpmat.distributed.DistributedDion`)
    and PowerSGD (:mod:`xpmat.optim.powersgd`) call it.

    Input policy (``docs/backends.md``): a matrix holding NaN/Inf gets NaN in all its outputs
    (the other matrices of a batch are unaffected); empty input gives results of the right
    shapes (no NaN); float16 / bfloat16 results come back in the input's dtype (factorizations
    run in float32).

    Backends: standard Array API; orthonormalization via :func:`xpmat.orthonormalize`.
    Host reads: one per inner :func:`xpmat.orthonormalize` call that takes CholeskyQR2 on
    eager arrays (``method="householder"`` or ``"rcqr"``: none); under ``jax.jit`` and on Dask
    none (per-matrix fallback, see :func:`xpmat.orthonormalize`).

    Examples
    --------
    >>> import numpy as np, xpmat as xm
    >>> B = np.arange(12.0).reshape(4, 3)
    >>> P, R, Qn = xm.power_iter1(B, np.ones((3, 1)))
    >>> print(np.allclose(P.T @ P, 1), np.round(np.linalg.norm(Qn, axis=0), 6))
    True [1.]
    """
    many = isinstance(B, (list, tuple))
    Bs, Qs = (list(B), list(Q)) if many else ([B], [Q])
    Ss = list(sketch) if many and sketch is not None else [sketch] * len(Bs)
    if len(Qs) != len(Bs) or len(Ss) != len(Bs):
        raise ValueError(f"`B`, `Q` and `sketch` must be as many, got {len(Bs)}, {len(Qs)}, {len(Ss)}")
    xps = []
    for i, (b, q) in enumerate(zip(Bs, Qs, strict=True)):
        xps.append(_checked_pair(b, q, f"B[{i}]" if many else "B", f"Q[{i}]" if many else "Q", xp))
        dtype = _array.float_dtype(xps[i], b, q)
        Bs[i], Qs[i] = _array.as_float(b, xps[i], dtype), _array.as_float(q, xps[i], dtype)
    Y = _reduced(reduce, [b @ q for b, q in zip(Bs, Qs, strict=True)])
    P = [orthonormalize(y, method=_method(method, x), sketch=sk, xp=x)
         for y, sk, x in zip(Y, Ss, xps, strict=True)]
    R = _reduced(reduce, [mT(b, x) @ p for b, p, x in zip(Bs, P, xps, strict=True)])
    Qn = [_array.normalize_columns(r, x) for r, x in zip(R, xps, strict=True)]
    return (P, R, Qn) if many else (P[0], R[0], Qn[0])


def _checked_pair(B: Any, Q: Any, bname: str, qname: str, xp: Any) -> Any:
    """The namespace of ``B`` and ``Q`` after the shape checks of :func:`power_iter1`."""
    xp = _array.array_namespace(B, Q, names=(bname, qname), xp=xp)
    if B.ndim < 2:
        raise ValueError(f"`{bname}` must be a matrix (..., m, n), got shape {tuple(B.shape)}")
    m, n = B.shape[-2:]
    if Q.ndim < 2 or Q.shape[-2] != n or Q.shape[-1] > m:
        raise ValueError(f"`{qname}` must have shape (..., {n}, r) with r <= m = {m}, got {tuple(Q.shape)} "
                         f"for {bname} of shape {tuple(B.shape)}")
    return xp


def _method(method: str, xp: Any) -> str:
    """``"auto"`` is Householder while ``torch.compile`` traces (no host read in the graph)."""
    return "householder" if method == "auto" and _array.is_compiling(xp) else method


def _reduced(reduce: Any, arrays: list[Any]) -> list[Any]:
    return list(reduce(arrays)) if reduce is not None and arrays else arrays


def _sketch_size(rank: int, oversample: int, limit: int) -> int:
    _check_int("rank", rank, 1)
    _check_int("oversample", oversample, 0)
    if limit == 0:
        raise ValueError("`A` has an empty side: it has no singular triplets or eigenpairs "
                         f"(rank = {rank} requested)")
    if rank > limit:
        raise ValueError(f"`rank` = {rank} exceeds the matrix size limit {limit}")
    return min(rank + oversample, limit)


def randomized_svd(A: Any, rank: int, /, *, oversample: int = 10, power_iters: int = 2, seed: Any = None,
                   method: str = "auto", xp: Any = None) -> tuple[Any, Any, Any]:
    """Rank-``rank`` truncated SVD by the randomized range finder ([Halko et al. 2011][halko-2011]).

    Parameters
    ----------
    A : array (..., m, n)
        Real floating (integer input promoted).
    rank : int
        Number of singular triplets, ``1 <= rank <= min(m, n)``.
    oversample : int
        Extra sketch columns: ``l = min(rank + oversample, m, n)``.
    power_iters : int
        Subspace iterations ``Q <- orth(A orth(Aᵀ Q))``; each sharpens the spectrum
        decay by ``(σ_{l+1}/σ_k)^2``.
    seed : int or numpy.random.Generator, optional
        Seed of the Gaussian test matrix (drawn on the host, same on every backend).
    method : str
        Passed to :func:`xpmat.orthonormalize` (every product is re-orthonormalized).
    xp : namespace, optional
        Skip namespace inference.

    Returns
    -------
    U : array (..., m, rank)
    S : array (..., rank), descending, >= 0
    Vh : array (..., rank, n)
        ``U diag(S) Vh ≈ A``; each column of ``U`` has its largest-magnitude entry positive.

    Notes
    -----
    Range finder ``Q = orth(A Ω)``, ``Ω ~ N(0, 1)^{n×l}``, ``power_iters`` rounds of
    orthonormalized subspace iteration, then the SVD of the small ``l × n`` matrix
    ``Qᵀ A`` (computed as ``R2ᵀ`` from ``Aᵀ Q = Q2 R2``, so only an ``l × l`` SVD runs).
    ``2 + 2·power_iters`` products with ``A``.  The same idea is
    [LRE 2025][lre-2025] "Basis algorithms" 3 and PowerSGD's power step
    ([Xie et al. 2025, eq. 8][xie-chen-yuan-2025]); [Halko et al. 2011][halko-2011].  Zero ``A``
    gives ``S = 0`` (finite ``U``, ``Vh``).  NaN/Inf in a batch member make its results NaN
    (no exception from the small SVD).

    Input policy (``docs/backends.md``): a matrix holding NaN/Inf gets NaN in all its outputs
    (the other matrices of a batch are unaffected); empty input raises a ``ValueError`` naming
    the argument; float16 / bfloat16 results come back in the input's dtype (factorizations run
    in float32).

    Backends: standard Array API (matmul, svd of an ``l × l`` matrix); host NumPy draw of Ω
    (under ``jax.jit``: at trace time, a constant of the compiled function);
    orthonormalization via :func:`xpmat.orthonormalize`.  Dask, a tall matrix in one column
    chunk: where a ``dask.distributed`` cluster's workers are short of memory
    (:func:`xpmat._dask_range.memory_tight`), a range finder that holds no tall intermediate
    between its passes (:mod:`xpmat._dask_range`; ``docs/dask.md``).
    Host reads: one per inner :func:`xpmat.orthonormalize` call that takes CholeskyQR2 on
    eager arrays (``method="householder"``: none); under ``jax.jit`` and on Dask none (per-matrix
    fallback, see :func:`xpmat.orthonormalize`).

    Examples
    --------
    >>> import numpy as np, xpmat as xm
    >>> A = np.diag([5.0, 3.0, 1.0, 0.01, 0.0])
    >>> U, S, Vh = xm.randomized_svd(A, 2, seed=0)
    >>> print(np.round(S, 6))
    [5. 3.]
    """
    xp = _array.array_namespace(A, names=("A",), xp=xp)
    if A.ndim < 2:
        raise ValueError(f"`A` must be a matrix (..., m, n), got shape {tuple(A.shape)}")
    m, n = A.shape[-2:]
    # a size Dask does not know (nan, e.g. rows after a boolean mask) cannot bound the sketch:
    # the other one does (the unknown side must then hold at least l = rank + oversample)
    l = _sketch_size(rank, oversample, min((s for s in (m, n) if s == s), default=m))
    _check_int("power_iters", power_iters, 0)
    dtype = _array.float_dtype(xp, A)
    A = _array.as_float(A, xp, dtype)
    Om = _array.random_normal((*A.shape[:-2], n, l), seed=seed, xp=xp, dtype=dtype, dev=_array.device(A),
                              like=A)
    if _lean_on_dask(A, l, method, xp):
        return _randomized_svd_lean(A, Om, rank, power_iters, method, xp)
    At = mT(A, xp)
    Q = orthonormalize(A @ Om, method=method, xp=xp)
    for _ in range(power_iters):
        Q = orthonormalize(A @ orthonormalize(At @ Q, method=method, xp=xp), method=method, xp=xp)
    Ur, S, Vh = _sketch_svd(At @ Q, rank, method, xp)
    U = Q @ Ur
    s = _max_abs_signs(U, xp)
    return U * s[..., None, :], S, Vh * s[..., :, None]


def _sketch_svd(Bt: Any, rank: int, method: str, xp: Any) -> tuple[Any, Any, Any]:
    """``(Ur, S, Vh)`` of rank ``rank`` of the wide ``l × n`` sketch ``B = Qᵀ A``, given ``Bᵀ``
    (then ``U = Q Ur``), through the QR of ``Bᵀ = Q2 R2`` (``B = R2ᵀ Q2ᵀ``): only an ``l × l``
    SVD, much faster than LAPACK's SVD of a wide matrix and as accurate as the QR."""
    Q2 = orthonormalize(Bt, method=method, xp=xp)
    Ur, S, Wh = _array.svd(mT(mT(Q2, xp) @ Bt, xp), xp)  # NaN for a member holding NaN/Inf
    return Ur[..., :rank], S[..., :rank], Wh[..., :rank, :] @ mT(Q2, xp)


def _lean_on_dask(A: Any, l: int, method: str, xp: Any) -> bool:
    """Whether :func:`randomized_svd` runs the memory-lean Dask range finder
    (:mod:`xpmat._dask_range`): a 2-D Dask ``A`` in one column chunk (rows chunked as they
    come), float32 or float64, whose ``m × l`` sketches ``orthonormalize`` would factor by
    CholeskyQR2 (``method="cholesky_qr2"``, or ``"auto"`` with ``m >= 4 l`` or ``m`` unknown),
    when ``_dask_range.LEAN`` says so (by default: when the workers' memory is tight)."""
    if not (_array.is_dask(xp) and A.ndim == 2 and A.numblocks[1] == 1):
        return False
    if A.dtype.itemsize < 4:  # float16: the generic graph (it works 16-bit sketches in float32)
        return False
    if not (method == "cholesky_qr2" or (method == "auto" and not A.shape[0] < CQR2_AUTO_RATIO * l)):
        return False
    lean = _dask_range.LEAN
    return _dask_range.memory_tight(A, l) if lean is None else lean


def _randomized_svd_lean(A: Any, Om: Any, rank: int, power_iters: int, method: str,
                         xp: Any) -> tuple[Any, Any, Any]:
    """:func:`randomized_svd`'s steps on Dask with no tall intermediate held between passes:
    each pass over ``A``'s row chunks makes the chunks of ``A Z`` and ``Q`` it needs
    (:func:`xpmat._dask_range.range_pass`); ``U`` is made, with its signs, from the last one."""
    W, Q = _dask_range.range_pass(A, Om, tol=CQR2_TOL)
    for _ in range(power_iters):
        W, Q = _dask_range.range_pass(A, orthonormalize(W, method=method, xp=xp), tol=CQR2_TOL)
    Ur, S, Vh = _sketch_svd(W, rank, method, xp)
    U, s = _dask_range.signed_product(Q, Ur)
    return U, S, Vh * s[:, None]


def randomized_eigh(A: Any | Callable, rank: int, /, *, oversample: int = 10, power_iters: int = 2,
                    seed: Any = None, shape: Any = None, like: Any = None, method: str = "auto",
                    xp: Any = None) -> tuple[Any, Any]:
    """Rank-``rank`` eigendecomposition of a symmetric ``A`` by a randomized range finder.

    Parameters
    ----------
    A : array (..., n, n) or callable
        Symmetric matrix (integer input promoted), or a callable on blocks
        ``(..., n, k) -> (..., n, k)``, e.g. ``lambda X: Q @ (L[:, None] * (Q.T @ X)) + c @ (c.T @ X)``.
    rank : int
        Number of eigenpairs, ``1 <= rank <= n``.
    oversample : int
        Extra sketch columns: ``l = min(rank + oversample, n)``.
    power_iters : int
        Subspace iterations ``Q <- orth(A Q)`` after the sketch.
    seed : int or numpy.random.Generator, optional
        Seed of the Gaussian test matrix.
    shape : int or tuple, optional
        For a callable ``A``: ``n`` or ``(..., n, n)`` (required).
    like : array, optional
        For a callable ``A``: namespace, device and floating dtype of the results (required).
    method : str
        Passed to :func:`xpmat.orthonormalize`.
    xp : namespace, optional
        Skip namespace inference.

    Returns
    -------
    L : array (..., rank)
        The ``rank`` Ritz values of largest magnitude (all eigenvalues for PSD ``A``), sorted
        descending.
    Q : array (..., n, rank)
        Orthonormal Ritz vectors, ``A ≈ Q diag(L) Qᵀ``; largest-magnitude entry of each
        column positive.

    Notes
    -----
    [LRE 2025][lre-2025], "Basis algorithms" 3: ``Q = orth(A Ω)``, then the
    eigendecomposition of the small ``Qᵀ A Q``.  Operator calls: ``2 + power_iters``.  For
    indefinite ``A`` the sketch captures the eigenvalues of largest magnitude.  Zero ``A``
    gives ``L = 0``; NaN/Inf in a batch member make its ``L`` and ``Q`` NaN (no exception).

    Input policy (``docs/backends.md``): a matrix holding NaN/Inf gets NaN in all its outputs
    (the other matrices of a batch are unaffected); empty input raises a ``ValueError`` naming
    the argument; float16 / bfloat16 results come back in the input's dtype (factorizations run
    in float32).

    Backends: standard Array API (matmul, eigh of ``l × l``); host NumPy draw of Ω
    (under ``jax.jit``: at trace time, a constant of the compiled function);
    orthonormalization via :func:`xpmat.orthonormalize`.
    Host reads: one per inner :func:`xpmat.orthonormalize` call that takes CholeskyQR2 on
    eager arrays (``method="householder"``: none); under ``jax.jit`` and on Dask none (per-matrix
    fallback, see :func:`xpmat.orthonormalize`).

    Examples
    --------
    >>> import numpy as np, xpmat as xm
    >>> A = np.diag([5.0, 3.0, 1.0, 0.0])
    >>> L, Q = xm.randomized_eigh(A, 2, seed=0)
    >>> print(np.round(L, 6))
    [5. 3.]
    >>> L2, _ = xm.randomized_eigh(lambda X: A @ X, 2, shape=4, like=A, seed=0)
    >>> print(np.allclose(L, L2))
    True
    """
    apply, xp, n, batch, dtype, dev = _block_operator(
        A, shape=shape, like=like, xp=xp, names=("A",), others=())
    l = _sketch_size(rank, oversample, n)
    _check_int("power_iters", power_iters, 0)
    Om = _array.random_normal((*batch, n, l), seed=seed, xp=xp, dtype=dtype, dev=dev,
                              like=like if callable(A) else A)
    Q = orthonormalize(apply(Om), method=method, xp=xp)
    for _ in range(power_iters):
        Q = orthonormalize(apply(Q), method=method, xp=xp)
    theta, W = _array.eigh(_sym(mT(Q, xp) @ apply(Q), xp), xp)  # NaN for a member holding NaN/Inf
    top = xp.argsort(xp.abs(theta), axis=-1, descending=True, stable=True)[..., :rank]
    S1 = _selector(top, l, dtype, xp)
    L = _gather(theta, S1)
    S2 = _selector(xp.argsort(L, axis=-1, descending=True, stable=True), rank, dtype, xp)
    L, V = _gather(L, S2), Q @ (W @ (S1 @ S2))
    return L, V * _max_abs_signs(V, xp)[..., None, :]


def _nystrom_cholesky(G: Any, xp: Any) -> tuple[Any, Any]:
    """Cholesky factor of Nyström's core ``G`` and a per-matrix failure flag ``(...,)``.

    NumPy, PyTorch and array-api-strict raise on a matrix that is not positive definite: that
    becomes our ``ValueError``.  JAX and CuPy return NaN instead
    (``_array.cholesky_signals_by_nan``): there an eager factor is read once (one host sync) to
    raise the same error; a tracer (``jax.jit``) cannot be, so the failed batch members are
    flagged and come back NaN.  Dask
    (``_array.cholesky``: the lower factor, NaN on failure) is lazy too: failed members come
    back NaN, no host read.
    """
    try:
        C = _array.cholesky(G, xp)
    except Exception as exc:  # numpy LinAlgError, torch LinAlgError (a RuntimeError), ...
        raise ValueError(f"nystrom_eigh: Cholesky of Ωᵀ(AΩ + νΩ) failed ({type(exc).__name__}): `A` "
                         "is not positive semi-definite; use randomized_eigh "
                         "for indefinite A") from exc
    failed = xp.logical_not(xp.all(xp.isfinite(C), axis=(-2, -1)))
    if _array.cholesky_signals_by_nan(xp) and not _array.is_lazy(failed) and bool(xp.any(failed)):
        raise ValueError("nystrom_eigh: Cholesky of Ωᵀ(AΩ + νΩ) returned NaN: `A` is not positive "
                         "semi-definite; use randomized_eigh for indefinite A")
    return C, failed


def nystrom_eigh(A: Any | Callable, rank: int, /, *, oversample: int = 10, power_iters: int = 0,
                 shift: float | None = None, seed: Any = None, shape: Any = None, like: Any = None,
                 method: str = "auto", xp: Any = None) -> tuple[Any, Any]:
    """Rank-``rank`` eigendecomposition of a PSD ``A`` by the stabilized Nyström approximation.

    Parameters
    ----------
    A : array (..., n, n) or callable
        Symmetric positive semi-definite matrix, or a callable on blocks ``(..., n, k) -> (..., n, k)``.
    rank : int
        Number of eigenpairs, ``1 <= rank <= n``.
    oversample : int
        Extra sketch columns: ``l = min(rank + oversample, n)``.
    power_iters : int
        Optional subspace iterations on the test matrix ``Ω <- orth(A Ω)`` before the sketch.
    shift : float or None
        Stabilizing shift ``ν``.  ``None``: ``ν = sqrt(n) · eps(dtype) · ||A Ω||_F`` per batch
        member.  A float: that absolute shift (``0`` = the unshifted Nyström formula, which
        fails for low-rank ``A``).
    seed : int or numpy.random.Generator, optional
        Seed of the Gaussian test matrix.
    shape, like : optional
        For a callable ``A``: ``n`` or ``(..., n, n)``, and an array giving namespace, device
        and floating dtype (both required).
    method : str
        Passed to :func:`xpmat.orthonormalize`.
    xp : namespace, optional
        Skip namespace inference.

    Returns
    -------
    L : array (..., rank), descending, >= 0
    Q : array (..., n, rank), orthonormal; ``A ≈ Q diag(L) Qᵀ``.

    Raises
    ------
    ValueError
        If the Cholesky factorization of ``Ωᵀ (A Ω + ν Ω)`` fails (``A`` is not PSD).  On
        torch the Cholesky's error check synchronizes with the device; on eager JAX and CuPy
        (whose Cholesky returns NaN) one host read finds it.  Under ``jax.jit`` nothing can be
        raised: the batch members whose Cholesky failed get NaN ``L`` and ``Q``.

    Notes
    -----
    [LRE 2025][lre-2025], "Basis algorithms" 4, in the numerically stable form of
    [Tropp, Yurtsever, Udell & Cevher 2017, Alg. 3][tropp-2017]: ``Ω`` orthonormal, ``Y_ν = A Ω + ν Ω``,
    ``C = chol(Ωᵀ Y_ν)``, ``B = Y_ν C⁻ᵀ``, ``B = U Σ Vᵀ``, ``L = max(Σ² − ν, 0)``.  One
    operator call (plus ``power_iters``).  Exact (up to ``ν``) when ``rank(A) <= l``.  Zero
    ``A`` gives ``L = 0``; NaN/Inf in a batch member make its ``L`` and ``Q`` NaN (no exception).

    Input policy (``docs/backends.md``): a matrix holding NaN/Inf gets NaN in all its outputs
    (the other matrices of a batch are unaffected); empty input raises a ``ValueError`` naming
    the argument; float16 / bfloat16 results come back in the input's dtype (factorizations run
    in float32).

    Backends: standard Array API (cholesky, triangular solve via ``_array.solve_triangular``:
    SciPy / torch / JAX fast paths, ``xp.linalg.solve`` elsewhere, svd of ``n × l``).
    Host reads: one per inner :func:`xpmat.orthonormalize` call that takes CholeskyQR2 on
    eager arrays (``method="householder"``: none); under ``jax.jit`` and on Dask none (per-matrix
    fallback, see :func:`xpmat.orthonormalize`).
    Eager JAX and CuPy read once more (their Cholesky returns NaN instead of raising; see Raises).

    Examples
    --------
    >>> import numpy as np, xpmat as xm
    >>> A = np.diag([5.0, 3.0, 1.0, 0.0])
    >>> L, Q = xm.nystrom_eigh(A, 2, seed=0)
    >>> print(np.round(L, 6))
    [5. 3.]
    """
    apply, xp, n, batch, dtype, dev = _block_operator(
        A, shape=shape, like=like, xp=xp, names=("A",), others=())
    l = _sketch_size(rank, oversample, n)
    _check_int("power_iters", power_iters, 0)
    if shift is not None and not shift >= 0:
        raise ValueError(f"`shift` must be >= 0 or None, got {shift!r}")
    Om = _array.random_normal((*batch, n, l), seed=seed, xp=xp, dtype=dtype, dev=dev,
                              like=like if callable(A) else A)
    Om = orthonormalize(Om, method=method, xp=xp)
    for _ in range(power_iters):
        Om = orthonormalize(apply(Om), method=method, xp=xp)
    Y = apply(Om)
    if shift is None:
        nu = math.sqrt(n) * float(xp.finfo(dtype).eps) * _array.frobenius_norm(Y, xp)
        live = nu > 0
        nu = xp.where(live, nu, 1.0)[..., None, None]  # scalars: no chunk of another type (Dask)
    else:
        live, nu = None, shift
    Ynu = Y + nu * Om
    G = _sym(mT(Om, xp) @ Ynu, xp)
    bad = _array.nonfinite_members(G, xp)  # NaN/Inf in A: NaN results, never "not PSD"
    C, failed = _nystrom_cholesky(xp.where(bad[..., None, None], _array.eye(l, like=G, xp=xp), G), xp)
    bad = xp.logical_or(bad, failed)
    Bm = _array.solve_triangular(mT(C, xp), Ynu, upper=True, left=False, xp=xp)
    U, Sig, _ = _array.svd(xp.where(bad[..., None, None], 0.0, Bm), xp)
    U, Sig = _array.poison(U, bad, xp, 2)[..., :rank], _array.poison(Sig, bad, xp, 1)[..., :rank]
    nu_v = nu[..., 0] if live is not None else nu
    L = xp.maximum(Sig * Sig - nu_v, 0.0)
    if live is not None:
        L = xp.where(live[..., None], L, 0.0)
    return _array.poison(L, bad, xp, 1), U * _max_abs_signs(U, xp)[..., None, :]
