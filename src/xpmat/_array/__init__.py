"""The one package that knows about array libraries: re-exports only.

Everything here is a thin layer over ``array-api-compat`` and ``array-api-extra``, plus the few
operations the Array API standard lacks (triangular solve, bf16, randomness, synchronisation),
each with a per-library fast path and a generic fallback that its docstring names.  Callers
write ``from xpmat import _array`` and ``_array.name(...)``; the names live by topic:

=====================  ==========================================================================
module                 holds
=====================  ==========================================================================
``_namespace``         ``array_namespace``, ``is_torch`` / ``is_numpy`` / ..., ``device``,
                       ``library_name``, ``chunk_namespace``, ``is_cpu``
``_dtypes``            the one dtype table (``ITEMSIZE``, ``FLOAT_NAMES``, ``LOW_PRECISION``),
                       ``float_dtype``, ``as_float``, ``resolve_dtype``, ``cast``, ``itemsize``,
                       ``is_low_precision``, ``supports_bfloat16``, ``supports_float64``,
                       ``AUTO``, ``auto_dtype``, ``fast_bfloat16`` (bf16 where it is native)
``_trace``             ``is_lazy``, ``fixed_loop``, ``is_compiling``, ``cond``, ``synchronize``
``_random``            ``rng``, ``random_normal``, ``chunk_like``
``_products``          ``mT``, ``matmul_t``, ``matmul``, ``gram_t``, ``matmul_add``, ``eye``
``_fused``             ``lerp``, ``add_scaled`` (one torch kernel each)
``_norms``             ``max_abs``, ``vector_norm``, ``frobenius_norm``, ``normalize_columns``
``_triangular``        ``solve_triangular``, ``triangular_inverse``
``_linalg``            ``eigh``, ``svd``, ``qr``, ``cholesky`` and their NaN / float16 policy
                       (``nonfinite_members``, ``poison``, ``cholesky_signals_by_nan``)
=====================  ==========================================================================

The modules import each other in that order, never back up (``tests/test_architecture.py``
checks it against ``docs/architecture.md``).  None imports torch, CuPy or JAX when it is
imported: libraries are *detected* through the namespace of the caller's arrays.  Where a
function needs a library's module it takes the loaded one from ``sys.modules`` (torch for
``lerp``, ``add_scaled``, ``matmul_add``, ``is_compiling``, ``cond``; JAX for its tracer type,
``fori_loop`` and x64 flag) or imports it inside its body, only for arrays of that library:
``synchronize`` (torch, CuPy: to wait for their device), ``solve_triangular``
(``jax.scipy.linalg``, ``cupyx.scipy.linalg``, SciPy for NumPy: the standard has no triangular
solve), ``random_normal`` / ``max_abs`` / ``eye`` (``dask.array`` for Dask arrays).
"""

from __future__ import annotations

from xpmat._array._dtypes import (
    AUTO,
    FLOAT_NAMES,
    ITEMSIZE,
    LOW_PRECISION,
    as_float,
    auto_dtype,
    cast,
    fast_bfloat16,
    float_dtype,
    is_low_precision,
    itemsize,
    resolve_dtype,
    supports_bfloat16,
    supports_float64,
)
from xpmat._array._fused import add_scaled, lerp
from xpmat._array._linalg import cholesky, cholesky_signals_by_nan, eigh, nonfinite_members, poison, qr, svd
from xpmat._array._namespace import (
    array_namespace,
    chunk_namespace,
    device,
    is_cpu,
    is_cupy,
    is_dask,
    is_jax,
    is_numpy,
    is_strict,
    is_torch,
    library_name,
)
from xpmat._array._norms import frobenius_norm, max_abs, normalize_columns, vector_norm
from xpmat._array._products import eye, gram_t, matmul, matmul_add, matmul_t, mT
from xpmat._array._random import chunk_like, random_normal, rng
from xpmat._array._trace import cond, fixed_loop, is_compiling, is_lazy, synchronize
from xpmat._array._triangular import solve_triangular, triangular_inverse

__all__ = [
    "AUTO",
    "FLOAT_NAMES",
    "ITEMSIZE",
    "LOW_PRECISION",
    "add_scaled",
    "array_namespace",
    "as_float",
    "auto_dtype",
    "cast",
    "cholesky",
    "cholesky_signals_by_nan",
    "chunk_like",
    "chunk_namespace",
    "cond",
    "device",
    "eigh",
    "eye",
    "fast_bfloat16",
    "fixed_loop",
    "float_dtype",
    "frobenius_norm",
    "gram_t",
    "is_compiling",
    "is_cpu",
    "is_cupy",
    "is_dask",
    "is_jax",
    "is_lazy",
    "is_low_precision",
    "is_numpy",
    "is_strict",
    "is_torch",
    "itemsize",
    "lerp",
    "library_name",
    "mT",
    "matmul",
    "matmul_add",
    "matmul_t",
    "max_abs",
    "nonfinite_members",
    "normalize_columns",
    "poison",
    "qr",
    "random_normal",
    "resolve_dtype",
    "rng",
    "solve_triangular",
    "supports_bfloat16",
    "supports_float64",
    "svd",
    "synchronize",
    "triangular_inverse",
    "vector_norm",
]
