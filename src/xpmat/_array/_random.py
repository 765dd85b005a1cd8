"""Random draws: one host draw (NumPy's ``default_rng``), moved to the caller's library and device.

The same seed gives the same numbers on every backend.  Nothing here imports an array library
at import time; :func:`random_normal` imports ``dask.array`` inside its body for a Dask ``like``
(Dask is then loaded already).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat as _compat
import numpy as _np

from xpmat._array._dtypes import resolve_dtype
from xpmat._array._namespace import is_torch


def rng(seed: Any) -> _np.random.Generator:
    """A NumPy Generator from an int, ``None`` or an existing Generator (returned as is)."""
    if isinstance(seed, _np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, _np.integer)):
        return _np.random.default_rng(seed)
    raise TypeError(f"seed must be an int, None or a numpy.random.Generator, got {type(seed).__name__}")


def random_normal(shape: Sequence[int], *, seed: Any, xp: Any, dtype: Any, dev: Any = None,
                  like: Any = None) -> Any:
    """Standard normal draws, identical on every backend for the same ``seed``.

    The draw happens once on the host with NumPy's ``default_rng`` (float64), then
    moves to ``dev`` in one ``xp.asarray(..., device=dev)`` and is cast to ``dtype``.
    The same seed therefore gives the same numbers on NumPy, PyTorch and CuPy.
    Dask: the draw becomes a one-chunk Dask array of ``like``'s chunk type
    (``dask.array.asarray(..., like=like._meta)``, NumPy's ``like=`` protocol: a CuPy chunk
    for a CuPy-backed ``like``), named by its contents; a size Dask does not know (``nan``,
    after boolean masking) raises ``ValueError``: a draw needs its shape.
    """
    shape = tuple(shape)
    if any(s != s for s in shape):  # nan: a Dask chunk size not known before computing
        raise ValueError(f"a random draw of shape {shape} needs every size, and Dask does not know "
                         "the array's chunk sizes (nan): call `.compute_chunk_sizes()` on it first, "
                         "or pass the start values yourself")
    host = rng(seed).standard_normal(shape)
    dtype = resolve_dtype(xp, dtype)
    if _compat.is_dask_array(like):
        import dask.array as da

        return da.asarray(host, dtype=dtype, like=like._meta)
    if dtype is not None and is_torch(xp) and dtype == xp.bfloat16:
        # torch builds bf16 from float32 host data, not from float64 ndarrays
        return xp.astype(xp.asarray(host.astype(_np.float32), device=dev), dtype)
    return xp.asarray(host, dtype=dtype, device=dev)


def chunk_like(x: Any, ref: Any, axis: int) -> Any:
    """``x`` chunked as ``ref`` along the batch axes and ``axis`` (Dask); anything else as is.

    A host draw moved to Dask (:func:`random_normal`) lands in one chunk; before it meets a
    chunked argument (the ``m × r`` factor of an ``m × n`` NMF, ``axis=-2``) it takes that
    argument's chunks, so that Dask never merges the argument's chunks to match it.
    """
    if not (_compat.is_dask_array(x) and _compat.is_dask_array(ref)):
        return x
    batch = x.ndim - 2
    chunks = {i: ref.chunks[i - x.ndim + ref.ndim] for i in range(batch)}
    chunks[axis % x.ndim] = ref.chunks[axis]
    return x.rechunk(chunks)
