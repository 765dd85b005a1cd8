"""Kronecker products: rearrangement, nearest Kronecker product, Kronecker matmul, Shampoo factors.

Row-major vectorization throughout, as in [Stratos 2026][stratos-2026]
(App. G): ``vec([[a, b], [c, d]]) = (a, b, c, d)``, so ``vec(A X Bᵀ) = (A ⊗ B) vec(X)``
(eq. 99) and ``numpy.reshape`` is ``vec``.  For ``A`` of shape ``(m, d)`` and ``B`` of shape
``(n, l)``, ``A ⊗ B`` has shape ``(m n, d l)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from xpmat import _array, _dask

__all__ = [
    "ShampooFactors",
    "kron_matmul",
    "kron_rearrange",
    "nearest_kron",
    "shampoo_factors",
    "shampoo_kron",
]


def _pair(shape: Sequence[int], name: str) -> tuple[int, int]:
    try:
        p, q = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair of positive ints (rows, cols), got {shape!r}") from None
    if p < 1 or q < 1:
        raise ValueError(f"`{name}` must be a pair of positive ints (rows, cols), got {shape!r}")
    return p, q


def _check_matrix(x: Any, name: str) -> None:
    if x.ndim < 2:
        raise ValueError(f"`{name}` must have shape (..., rows, cols), got shape {tuple(x.shape)}")


def kron_rearrange(H: Any, a_shape: Sequence[int], b_shape: Sequence[int], /, *, xp: Any = None) -> Any:
    """Van Loan–Pitsianis rearrangement ``(..., m n, d l) -> (..., m d, n l)`` (eq. 102).

    Parameters
    ----------
    H : array, shape (..., m*n, d*l)
        Any real matrix (a Kronecker product ``A ⊗ B`` or a sum of them), batched over the
        leading axes.  Integer input is kept as is (the map only moves entries).
    a_shape : (m, d)
        Shape of the left Kronecker factor ``A``.
    b_shape : (n, l)
        Shape of the right Kronecker factor ``B``.

    Returns
    -------
    array, shape (..., m*d, n*l)
        ``R`` with ``R[(i1 d + i2), (j1 l + j2)] = H[(i1 n + j1), (i2 l + j2)]`` (0-based), so that
        ``kron_rearrange(A ⊗ B) = vec(A) vec(B)ᵀ`` (eq. 101).

    Notes
    -----
    [Stratos 2026][stratos-2026] App. G.1, eq. (101)–(103);
    [Van Loan & Pitsianis 1993][van-loan-pitsianis-1993].  The map reads ``H`` as a 4-index
    array ``(i1, j1, i2, j2)`` of shape ``(m, n, d, l)`` and swaps the two middle axes: one
    reshape, one ``permute_dims``, one reshape (one copy).  It is an involution once the
    shapes are swapped accordingly: ``kron_rearrange(kron_rearrange(H, (m, d), (n, l)),
    (m, n), (d, l))`` returns ``H`` exactly (eq. 103; for square factors ``m = d``, ``n = l``
    the second call takes ``(m, n), (m, n)``).

    Input policy (``docs/backends.md``): NaN/Inf propagate as arithmetic takes them; empty input
    raises a ``ValueError`` naming the argument; float16 / bfloat16 results come back in the
    input's dtype.

    Backends: Array API ``reshape`` / ``permute_dims`` everywhere.  No host read: the same
    path runs eager and under ``jax.jit``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import kron_rearrange
    >>> A, B = np.arange(6.0).reshape(2, 3), np.arange(4.0).reshape(4, 1)
    >>> R = kron_rearrange(np.kron(A, B), (2, 3), (4, 1))
    >>> bool(np.array_equal(R, np.outer(A.ravel(), B.ravel())))
    True
    >>> bool(np.array_equal(kron_rearrange(R, (2, 4), (3, 1)), np.kron(A, B)))
    True
    """
    xp = _array.array_namespace(H, names=("H",), xp=xp)
    m, d = _pair(a_shape, "a_shape")
    n, l = _pair(b_shape, "b_shape")
    _check_matrix(H, "H")
    if tuple(H.shape[-2:]) != (m * n, d * l):
        raise ValueError(
            f"`H` must have shape (..., m*n, d*l) = (..., {m * n}, {d * l}) for a_shape={(m, d)} and "
            f"b_shape={(n, l)}, got shape {tuple(H.shape)}"
        )
    batch = tuple(H.shape[:-2])
    k = len(batch)
    H4 = xp.reshape(H, (*batch, m, n, d, l))
    H4 = xp.permute_dims(H4, (*range(k), k, k + 2, k + 1, k + 3))
    return xp.reshape(H4, (*batch, m * d, n * l))


def kron_matmul(A: Any, B: Any, X: Any, /, *, xp: Any = None) -> Any:
    """``(A ⊗ B) vec(X)`` as the matrix ``A X Bᵀ``, never forming ``A ⊗ B`` (eq. 99).

    Parameters
    ----------
    A : array, shape (..., m, d)
    B : array, shape (..., n, l)
    X : array, shape (..., d, l)
        Leading axes of the three broadcast against each other.

    Returns
    -------
    array, shape (..., m, n)
        ``Y = A X Bᵀ``; ``vec(Y) = (A ⊗ B) vec(X)`` with row-major ``vec`` (``reshape``).
        Floating dtype of the inputs (integers promoted to the default float).

    Notes
    -----
    [Stratos 2026][stratos-2026] App. G, eq. (99).  Cost ``O(m d l + m l n)`` instead of ``O(m n d l)``; the
    product is taken in the cheaper order.

    Input policy (``docs/backends.md``): NaN/Inf propagate as arithmetic takes them; empty input
    gives results of the right shapes (no NaN); float16 / bfloat16 results come back in the
    input's dtype.

    Backends: Array API ``matmul`` everywhere.  No host read: the same path runs eager and under ``jax.jit``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import kron_matmul
    >>> rng = np.random.default_rng(0)
    >>> A, B, X = rng.normal(size=(3, 2)), rng.normal(size=(4, 5)), rng.normal(size=(2, 5))
    >>> Y = kron_matmul(A, B, X)
    >>> bool(np.allclose(Y.ravel(), np.kron(A, B) @ X.ravel()))
    True
    """
    xp = _array.array_namespace(A, B, X, names=("A", "B", "X"), xp=xp)
    for x, name in ((A, "A"), (B, "B"), (X, "X")):
        _check_matrix(x, name)
    if A.shape[-1] != X.shape[-2] or B.shape[-1] != X.shape[-1]:
        raise ValueError(
            f"shapes do not match: `A` {tuple(A.shape)} (..., m, d), `B` {tuple(B.shape)} (..., n, l) "
            f"need `X` (..., d, l), got {tuple(X.shape)}"
        )
    dt = _array.float_dtype(xp, A, B, X)
    A, B, X = (_array.as_float(x, xp, dt) for x in (A, B, X))
    m, d = A.shape[-2:]
    n, l = B.shape[-2:]
    Bt = _array.mT(B, xp)
    if m * d * l + m * l * n <= d * l * n + m * d * n:
        return (A @ X) @ Bt
    return A @ (X @ Bt)


def _normalize(x: Any, xp: Any) -> tuple[Any, Any]:
    """``x / ‖x‖_F`` over the last two axes (zero stays zero) and the norm ``(..., 1, 1)``."""
    nrm = _array.frobenius_norm(x, xp, keepdims=True)
    safe = xp.where(nrm > 0, nrm, 1.0)  # a scalar: on Dask no chunk of another type
    return x / safe, nrm


def _fix_sign(U: Any, V: Any, xp: Any) -> tuple[Any, Any]:
    """Flip ``(U, V)`` together so that the largest-magnitude entry of ``U`` is positive."""
    hi = xp.max(U, axis=(-2, -1), keepdims=True)
    lo = xp.min(U, axis=(-2, -1), keepdims=True)
    s = 2 * xp.astype(hi >= -lo, U.dtype) - 1  # +1 where hi >= -lo, else -1 (NaN too)
    return U * s, V * s


def nearest_kron(
    C: Any,
    a_shape: Sequence[int],
    b_shape: Sequence[int],
    /,
    *,
    method: str = "svd",
    iters: int = 30,
    init: Any = None,
    seed: Any = None,
    xp: Any = None,
) -> tuple[Any, Any]:
    """Nearest Kronecker product: ``(A, B)`` minimizing ``‖C − A ⊗ B‖_F`` (Van Loan–Pitsianis).

    Parameters
    ----------
    C : array, shape (..., m*n, d*l), or a pair of callables ``(matvec, rmatvec)``
        The matrix to approximate (floating; integers promoted).  With ``method="power"``,
        ``C`` may instead be the rearranged operator ``R = kron_rearrange(C)`` given
        implicitly, in matrix form: ``matvec(V)`` maps ``V`` of shape ``(..., n, l)`` to
        ``view(R vec(V))`` of shape ``(..., m, d)`` and ``rmatvec(U)`` maps ``(..., m, d)``
        to ``view(Rᵀ vec(U))`` of shape ``(..., n, l)``.  Then ``init`` is required (it fixes
        namespace, dtype, device and batch shape).  For a gradient sample,
        ``matvec(V) = mean_t G_t V G_tᵀ`` and ``rmatvec(U) = mean_t G_tᵀ U G_t`` (the
        rearranged empirical Fisher ``E[G ⊗ G]``, seed §6.2) with no ``mn × mn`` matrix.
    a_shape : (m, d)
    b_shape : (n, l)
    method : {"svd", "power"}
        ``"svd"``: a full SVD of the ``(m d) × (n l)`` rearranged matrix (exact).
        ``"power"``: ``iters`` rounds of the power method ``u ← R v, v ← Rᵀ u`` (two
        matrix–vector products per round, never a full SVD); it converges at rate
        ``(σ₂ / σ₁)²`` per round.
    iters : int
        Power rounds (``method="power"`` only).
    init : array, shape (..., n, l), optional
        Start matrix ``V₀`` for the power method; default: a seeded Gaussian draw.
    seed : int or numpy.random.Generator, optional
        Seed of the default start (drawn on the host, same numbers on every backend).

    Returns
    -------
    A : array, shape (..., m, d)
    B : array, shape (..., n, l)
        Scale and sign convention: ``‖A‖_F = ‖B‖_F = sqrt(σ₁)`` (σ₁ the top singular value
        of the rearranged matrix, so ``‖A ⊗ B‖_F = σ₁``), and the largest-magnitude entry of
        ``A`` is positive (on a tie between a positive and a negative entry, the positive
        wins).  ``C = 0`` gives zeros.

    Notes
    -----
    [Stratos 2026][stratos-2026] App. G.1, Lemma G.1 and Corollary G.2: ``‖C − A ⊗ B‖_F =
    ‖rearrange(C) − vec(A) vec(B)ᵀ‖_F``, so the optimum is the rank-1 SVD truncation
    ``A = a view(u₁, m, d)``, ``B = b view(v₁, n, l)``, ``a b = σ₁``.  Section 6.2 uses it
    with ``C = E[g gᵀ]``, ``a_shape = (m, m)``, ``b_shape = (n, n)``.  NaN/Inf in ``C``
    propagate to the result.

    Input policy (``docs/backends.md``): a matrix holding NaN/Inf gets NaN in all its outputs
    (the other matrices of a batch are unaffected); empty input raises a ``ValueError`` naming
    the argument; float16 / bfloat16 results come back in the input's dtype (factorizations run
    in float32).

    Backends: ``xp.linalg.svd`` (``"svd"``) or Array API matmuls (``"power"``) everywhere;
    the power start is drawn on the host once (under ``jax.jit``: at trace time, so it is a
    constant of the compiled function; pass ``seed`` or ``init``).  No host read.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import nearest_kron
    >>> rng = np.random.default_rng(0)
    >>> A0, B0 = rng.normal(size=(3, 2)), rng.normal(size=(4, 5))
    >>> A, B = nearest_kron(np.kron(A0, B0), (3, 2), (4, 5))
    >>> bool(np.allclose(np.kron(A, B), np.kron(A0, B0)))
    True
    >>> A, B = nearest_kron(np.kron(A0, B0), (3, 2), (4, 5), method="power", iters=5, seed=0)
    >>> bool(np.allclose(np.kron(A, B), np.kron(A0, B0)))
    True
    """
    m, d = _pair(a_shape, "a_shape")
    n, l = _pair(b_shape, "b_shape")
    if method not in ("svd", "power"):
        raise ValueError(f"method must be 'svd' or 'power', got {method!r}")
    if isinstance(C, tuple):
        if method != "power" or len(C) != 2 or not all(callable(f) for f in C):
            raise TypeError("an implicit `C` must be a pair (matvec, rmatvec) of callables, "
                            "with method='power'")
        if init is None:
            raise ValueError("an implicit `C` = (matvec, rmatvec) needs `init` (..., n, l)")
        matvec, rmatvec = C
        if int(iters) < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        xp = _array.array_namespace(init, names=("init",), xp=xp)
        return _power(matvec, rmatvec, _array.as_float(init, xp), iters, (m, d), (n, l), xp)
    xp = _array.array_namespace(C, init, names=("C", "init"), xp=xp)
    C = _array.as_float(C, xp)
    R = kron_rearrange(C, (m, d), (n, l), xp=xp)
    batch = tuple(R.shape[:-2])
    if method == "svd":
        U, S, Vh = _array.svd(R, xp)
        s1 = xp.reshape(S[..., 0], (*batch, 1, 1))
        u = xp.reshape(U[..., :, 0], (*batch, m, d))
        v = xp.reshape(Vh[..., 0, :], (*batch, n, l))
        root = xp.sqrt(s1)
        return _fix_sign(u * root, v * root, xp)
    if int(iters) < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")

    def matvec(V: Any) -> Any:
        return xp.reshape(R @ xp.reshape(V, (*batch, n * l, 1)), (*batch, m, d))

    def rmatvec(U: Any) -> Any:
        return xp.reshape(_array.mT(R, xp) @ xp.reshape(U, (*batch, m * d, 1)), (*batch, n, l))

    if init is None:
        init = _array.random_normal((*batch, n, l), seed=seed, xp=xp, dtype=C.dtype, dev=_array.device(C),
                                    like=C)
    else:
        init = _array.as_float(init, xp, C.dtype)
        if tuple(init.shape[-2:]) != (n, l):
            raise ValueError(f"`init` must have shape (..., n, l) = (..., {n}, {l}), got {tuple(init.shape)}")
    return _power(matvec, rmatvec, init, iters, (m, d), (n, l), xp)


def _power(matvec: Callable, rmatvec: Callable, V: Any, iters: int, a_shape, b_shape, xp: Any):
    """Power rounds on the rearranged operator, in matrix form; returns the scaled (A, B).

    The rounds after the first run through ``_array.fixed_loop`` (one traced body under
    ``jax.jit``, a Python loop elsewhere).
    """

    def step(state: tuple) -> tuple:
        U, _ = _normalize(matvec(state[1]), xp)
        V, s1 = _normalize(rmatvec(U), xp)  # ‖Rᵀ u‖ -> σ₁
        return U, V, s1

    V, _ = _normalize(V, xp)
    U, V, s1 = _array.fixed_loop(int(iters) - 1, step, step((None, V, None)))
    root = xp.sqrt(s1)
    return _fix_sign(U * root, V * root, xp)


class ShampooFactors(NamedTuple):
    """Running second moments of a gradient stream (see :func:`shampoo_factors`).

    ``L`` ``(..., m, m)`` and ``R`` ``(..., n, n)`` are weighted sums; ``weight`` ``(..., 1, 1)``
    is their total weight, so ``E[G Gᵀ] ≈ L / weight`` and ``E[Gᵀ G] ≈ R / weight``.
    """

    L: Any
    R: Any
    weight: Any


def shampoo_factors(G: Any, state: ShampooFactors | None = None, /, *, beta: float | None = None,
                    xp: Any = None) -> ShampooFactors:
    """Fold one gradient ``G`` into the Shampoo factors ``E[G Gᵀ]``, ``E[Gᵀ G]`` (seed §6.2).

    Parameters
    ----------
    G : array, shape (..., m, n)
        The new gradient (floating; integers promoted).
    state : ShampooFactors, optional
        The factors so far; ``None`` starts a new stream.
    beta : float in [0, 1), optional
        ``None``: plain running mean over the stream (``weight`` counts gradients).
        Otherwise an EMA, ``L ← β L + (1 − β) G Gᵀ`` with ``weight ← β weight + (1 − β)``
        (``weight = 1 − βᵗ``: dividing by it is the bias correction).

    Returns
    -------
    ShampooFactors
        New state (the input state is not modified).  Read the moments as
        ``L / weight`` and ``R / weight``, or the Kronecker approximation with
        :func:`shampoo_kron`.

    Notes
    -----
    [Stratos 2026][stratos-2026] §6.2: one power step from ``vec(I)`` on
    ``E[G ⊗ G] = rearrange(E[g gᵀ])`` gives ``vec(E[G Gᵀ])`` and ``vec(E[Gᵀ G])``.

    Input policy (``docs/backends.md``): NaN/Inf propagate as arithmetic takes them; empty input
    gives results of the right shapes (no NaN); float16 / bfloat16 results come back in the
    input's dtype.

    Backends: Array API matmuls everywhere.  No host read: the same path runs eager and under ``jax.jit``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import shampoo_factors
    >>> st = None
    >>> for G in np.random.default_rng(0).normal(size=(3, 4, 2)):
    ...     st = shampoo_factors(G, st)
    >>> st.L.shape, st.R.shape, float(st.weight[0, 0])
    ((4, 4), (2, 2), 3.0)
    """
    xp = _array.array_namespace(G, names=("G",), xp=xp)
    _check_matrix(G, "G")
    G = _array.as_float(G, xp)
    Gt = _array.mT(G, xp)
    GG, GtG = G @ Gt, Gt @ G
    if state is None:
        one = _dask.as_chunk_type(xp.ones((*G.shape[:-2], 1, 1), dtype=G.dtype, device=_array.device(G)), G)
        w = one if beta is None else one * (1.0 - beta)
        return ShampooFactors(GG if beta is None else (1.0 - beta) * GG,
                              GtG if beta is None else (1.0 - beta) * GtG, w)
    if tuple(state.L.shape[-1:]) != (G.shape[-2],) or tuple(state.R.shape[-1:]) != (G.shape[-1],):
        raise ValueError(f"`G` {tuple(G.shape)} does not match the state's L {tuple(state.L.shape)} "
                         f"and R {tuple(state.R.shape)}")
    if beta is None:
        return ShampooFactors(state.L + GG, state.R + GtG, state.weight + 1.0)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    return ShampooFactors(beta * state.L + (1.0 - beta) * GG, beta * state.R + (1.0 - beta) * GtG,
                          beta * state.weight + (1.0 - beta))


def shampoo_kron(state: ShampooFactors, /, *, xp: Any = None) -> tuple[Any, Any]:
    """Kronecker factors ``(A, B)`` with ``A ⊗ B = E[G Gᵀ] ⊗ E[Gᵀ G] / tr(E[G Gᵀ])`` (eq. 64).

    Parameters
    ----------
    state : ShampooFactors
        From :func:`shampoo_factors`.

    Returns
    -------
    A : array, shape (..., m, m)
        ``E[G Gᵀ] / sqrt(t)`` with ``t = tr E[G Gᵀ] = tr E[Gᵀ G] = E‖G‖_F²``.
    B : array, shape (..., n, n)
        ``E[Gᵀ G] / sqrt(t)``.  (Symmetric split of the scalar; zero gradients give zeros.)

    Notes
    -----
    Lemma 6.1 (seed §6.2.1): when ``rearrange(E[g gᵀ]) = E[G ⊗ G]`` has rank one, ``A ⊗ B``
    equals the empirical Fisher ``E[g gᵀ]`` exactly (``g = vec(G)``, row-major); otherwise
    it is the one-step power-method approximation of :func:`nearest_kron`.

    Input policy (``docs/backends.md``): NaN/Inf propagate as arithmetic takes them; empty input
    gives results of the right shapes (no NaN); float16 / bfloat16 results come back in the
    input's dtype.

    Backends: Array API everywhere.  No host read: the same path runs eager and under ``jax.jit``.

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import shampoo_factors, shampoo_kron
    >>> rng = np.random.default_rng(0)
    >>> P, Q = rng.normal(size=(3, 3)), rng.normal(size=(2, 2))
    >>> st, F = None, 0
    >>> for k in range(6):                # G = P E_k Qᵀ: E[g gᵀ] is a Kronecker product
    ...     G = P @ np.eye(6)[k].reshape(3, 2) @ Q.T
    ...     st, F = shampoo_factors(G, st), F + np.outer(G.ravel(), G.ravel()) / 6
    >>> A, B = shampoo_kron(st)
    >>> bool(np.allclose(np.kron(A, B), F))
    True
    """
    xp = _array.array_namespace(state.L, state.R, names=("state.L", "state.R"), xp=xp)
    w = xp.where(state.weight > 0, state.weight, 1.0)  # scalars: on Dask no chunk of another type
    L, R = state.L / w, state.R / w
    m = L.shape[-1]
    eye = _array.eye(m, like=L, xp=xp)
    t = xp.sum(L * eye, axis=(-2, -1), keepdims=True)
    root = xp.sqrt(xp.where(t > 0, t, 1.0))
    return L / root, R / root
