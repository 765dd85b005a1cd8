"""Orthogonalization: orthonormal bases (Householder QR, CholeskyQR2), msign, polar.

Math: ``adaptive-learning-methods.md`` section 7 (Muon, msign) and appendix Q.3 / Q.3.1
(Newton–Schulz, eqs. 146–147); ``dion-vs-powersgd.md`` (QR / CholeskyQR of the power step);
``ERRATA.md`` on Q.3 (Frobenius normalization leaves the smallest singular value far below
the 1e-3 the Polar Express coefficients are designed for).
"""

from __future__ import annotations

from typing import Any

from xpmat import _array
from xpmat._array import mT

__all__ = ["orthonormalize"]

_ORTH_METHODS = ("auto", "householder", "cholesky_qr2")
# CholeskyQR2 is accepted when the first pass leaves ‖Q1ᵀQ1 − I‖_max below this; the second
# pass then restores orthogonality to working precision (Yamamoto et al. 2015: needs κ(X)² u ≲ 1).
_CQR2_TOL = 0.1
# "auto" uses CholeskyQR2 when m >= _AUTO_RATIO * r (measured: see docs/orthogonalize.md).
_AUTO_RATIO = 4


# ----------------------------------------------------------------------------- orthonormalize


def _householder(X: Any, xp: Any) -> Any:
    """Householder QR ``Q`` with the sign convention diag(R) >= 0 (zero counts as positive)."""
    Q, R = xp.linalg.qr(X)
    d = xp.linalg.diagonal(R)
    return Q * (1 - 2 * xp.astype(d < 0, Q.dtype))[..., None, :]


def _cholesky(G: Any, xp: Any) -> tuple[Any, Any]:
    """Lower Cholesky factor of the Gram ``G`` and a per-matrix success flag ``(...,)``.

    torch: ``torch.linalg.cholesky_ex`` (no exception, ``info``); elsewhere
    ``xp.linalg.cholesky`` and an exception means failure for the whole batch (``None``).
    """
    if _array.is_torch(xp):
        import torch

        L, info = torch.linalg.cholesky_ex(G)
        return L, info == 0
    try:
        L = xp.linalg.cholesky(G)
    except Exception:  # numpy / strict / cupy raise LinAlgError on a non-PD Gram
        return None, None
    return L, None


def _cholesky_qr(X: Any, xp: Any) -> tuple[Any, Any]:
    """One Cholesky-QR pass: ``Q = X R⁻¹`` with ``RᵀR = XᵀX``; returns ``(Q, ok)``."""
    L, ok = _cholesky(mT(X, xp) @ X, xp)
    if L is None:
        return None, None
    Q = _array.solve_triangular(mT(L, xp), X, upper=True, left=False, xp=xp)
    return Q, ok


def _cholesky_qr2(X: Any, xp: Any) -> Any | None:
    """CholeskyQR2, or ``None`` when the Gram is numerically singular / too ill-conditioned.

    One host synchronisation per call (the acceptance test ``bool(xp.all(ok))``).
    """
    Q1, ok1 = _cholesky_qr(X, xp)
    if Q1 is None:
        return None
    G2 = mT(Q1, xp) @ Q1
    r = X.shape[-1]
    eye = xp.eye(r, dtype=X.dtype, device=_array.device(X))
    # NaN/Inf from a failed first pass compare False, so they fail the test too.
    ok = xp.all(xp.abs(G2 - eye) <= _CQR2_TOL, axis=(-2, -1))
    if ok1 is not None:
        ok = xp.logical_and(ok, ok1)
    L2, ok2 = _cholesky(G2, xp)
    if L2 is None:
        return None
    if ok2 is not None:
        ok = xp.logical_and(ok, ok2)
    if not bool(xp.all(ok)):  # the one host sync of the call
        return None
    return _array.solve_triangular(mT(L2, xp), Q1, upper=True, left=False, xp=xp)


def orthonormalize(X: Any, /, *, method: str = "auto", xp: Any = None) -> Any:
    """Orthonormal basis ``Q`` of the columns of ``X`` (the ``Q`` of a thin QR, diag(R) > 0).

    Parameters
    ----------
    X : array (..., m, r), m >= r
        Real floating (integer input is promoted to the default floating dtype; float16 /
        bfloat16 are computed in float32 and cast back).  Leading axes are a batch.
    method : {"auto", "householder", "cholesky_qr2"}
        ``"householder"``: ``xp.linalg.qr`` with the signs fixed so diag(R) >= 0.
        ``"cholesky_qr2"``: two Cholesky-QR passes ``Q = X R⁻¹``, ``RᵀR = XᵀX`` (two Gram
        products, two r×r Cholesky factorizations, two triangular solves); when the Gram is
        numerically singular or too ill-conditioned it falls back to Householder for the
        whole call.  ``"auto"``: CholeskyQR2 for tall-skinny blocks (m >= 4 r, where it was
        measured faster), Householder otherwise.
    xp : namespace, optional
        Array namespace; inferred from ``X`` when omitted.

    Returns
    -------
    Q : array (..., m, r)
        Same namespace, device and floating dtype as ``X``; ``QᵀQ = I`` to working
        precision and ``X = Q R`` with ``R`` upper triangular with non-negative diagonal.
        Only ``Q`` is returned (``R = QᵀX`` if needed).

    Notes
    -----
    For full-column-rank ``X`` the factor with positive diag(R) is unique, so every method
    returns the same ``Q`` (to rounding).  CholeskyQR2 (Yamamoto et al. 2015) is accurate
    when ``κ(X)² u ≲ 1`` (κ ≲ 1e7 in float64, ≲ 3e3 in float32): after the first pass the
    Gram ``Q1ᵀQ1`` must be within 0.1 of the identity entry-wise and both Cholesky
    factorizations must succeed, else the call recomputes with Householder.  That acceptance
    test costs **one host synchronisation per call** (none on the Householder path).

    Rank-deficient or zero ``X`` (and κ beyond the bound above): the Cholesky path falls
    back, and Householder returns an orthonormal ``Q`` whose columns beyond the rank complete
    the basis arbitrarily (no NaN; zero ``X`` gives an orthonormal ``Q``, not zeros).
    NaN/Inf input gives non-finite output.  Used for the QR of orthogonal / power iteration
    (``adaptive-learning-methods.md`` Q.2, eqs. 142–145) and Dion's / PowerSGD's power step
    (``dion-vs-powersgd.md``).

    Backends: ``xp.linalg.qr`` / ``xp.linalg.cholesky`` everywhere; torch uses
    ``torch.linalg.cholesky_ex`` (no exception on failure); triangular solves through
    ``_array.solve_triangular`` (torch / SciPy / CuPy fast paths, ``xp.linalg.solve`` elsewhere).

    Examples
    --------
    >>> import numpy as np
    >>> from xpmat import orthonormalize
    >>> X = np.random.default_rng(0).standard_normal((100, 5))
    >>> Q = orthonormalize(X)
    >>> bool(np.allclose(Q.T @ Q, np.eye(5)))
    True
    >>> bool(np.allclose(Q, orthonormalize(X, method="householder")))
    True
    """
    xp = _array.array_namespace(X, names=("X",), xp=xp)
    if method not in _ORTH_METHODS:
        raise ValueError(f"method must be one of {_ORTH_METHODS}, got {method!r}")
    if X.ndim < 2 or X.shape[-2] < X.shape[-1]:
        raise ValueError(f"`X` must be (..., m, r) with m >= r, got shape {tuple(X.shape)}")
    dt = _array.float_dtype(xp, X)
    Xc = _array.as_float(X, xp, dt)
    low = dt in tuple(getattr(xp, n) for n in ("float16", "bfloat16") if hasattr(xp, n))
    if low:
        Xc = xp.astype(Xc, xp.float32)
    m, r = X.shape[-2], X.shape[-1]
    if r == 0 or m == 0:
        return xp.zeros(X.shape, dtype=dt, device=_array.device(X))
    if method == "auto":
        method = "cholesky_qr2" if m >= _AUTO_RATIO * r else "householder"
    Q = _cholesky_qr2(Xc, xp) if method == "cholesky_qr2" else None
    if Q is None:
        Q = _householder(Xc, xp)
    return xp.astype(Q, dt) if low else Q
