"""Which library, which device: namespace detection over ``array-api-compat``.

The caller's arrays name their library; nothing here imports one.  :func:`loaded_torch` hands
the other ``_array`` modules the torch module *already imported* by whoever made the torch
arrays they were given (read from ``sys.modules``, never imported).
"""

from __future__ import annotations

import sys as _sys
from collections.abc import Sequence
from typing import Any

import array_api_compat as _compat

is_torch = _compat.is_torch_namespace
is_cupy = _compat.is_cupy_namespace
is_numpy = _compat.is_numpy_namespace
is_strict = _compat.is_array_api_strict_namespace
is_jax = _compat.is_jax_namespace
is_dask = _compat.is_dask_namespace
device = _compat.device


def library_name(xp: Any) -> str:
    """Short name of the library behind namespace ``xp`` (``"numpy"``, ``"torch"``, ...)."""
    for name, test in (
        ("numpy", is_numpy),
        ("torch", is_torch),
        ("cupy", is_cupy),
        ("array_api_strict", is_strict),
        ("jax", is_jax),
        ("dask", is_dask),
    ):
        if test(xp):
            return name
    return getattr(xp, "__name__", repr(xp))


def chunk_namespace(x: Any) -> Any:
    """The array-api-compat namespace of one array, unchecked: a Dask chunk or ``_meta`` inside
    a task (:mod:`xpmat._dask`), where the caller's arguments were validated already."""
    return _compat.array_namespace(x)


def _describe(x: Any) -> str:
    mod = type(x).__module__.split(".")[0]
    shape = getattr(x, "shape", None)
    dev = ""
    try:
        dev = f", device={device(x)}"
    except Exception:  # not an array: the caller will be told below
        pass
    return f"{mod}.{type(x).__name__}(shape={tuple(shape) if shape is not None else '?'}{dev})"


def array_namespace(*arrays: Any, names: Sequence[str] | None = None, xp: Any = None) -> Any:
    """Return the Array API namespace shared by ``arrays`` (``None`` entries are skipped).

    Parameters
    ----------
    *arrays : arrays or None
        The array arguments of a public function.
    names : sequence of str, optional
        Their argument names, used in error messages.
    xp : namespace, optional
        If given, it is returned as is (the caller skipped inference).

    Raises
    ------
    TypeError
        If an argument is not an array, if the arrays come from different libraries
        (the message names both arguments and their types), or if they live on
        different devices.
    """
    if xp is not None:
        return xp
    if names is None:
        names = [f"argument {i}" for i in range(len(arrays))]
    present = [(n, a) for n, a in zip(names, arrays, strict=True) if a is not None]
    if not present:
        raise TypeError("no array argument given to infer the array namespace from")
    spaces = []
    for name, a in present:
        if not _compat.is_array_api_obj(a):
            raise TypeError(
                f"`{name}` must be an array (NumPy, CuPy, PyTorch, array-api-strict, ...), "
                f"got {type(a).__module__}.{type(a).__name__}"
            )
        spaces.append(_compat.array_namespace(a))
    first_name, first = present[0]
    for (name, a), space in zip(present[1:], spaces[1:], strict=True):
        if space is not spaces[0]:
            raise TypeError(
                f"arrays from different libraries: `{first_name}` is {_describe(first)} "
                f"but `{name}` is {_describe(a)}; convert one so that both come from the "
                "same library"
            )
        if device(a) != device(first):
            raise TypeError(
                f"arrays on different devices: `{first_name}` is on {device(first)} but "
                f"`{name}` is on {device(a)}; move one so that both share a device"
            )
    return spaces[0]


def is_cpu(x: Any) -> bool:
    """True when array ``x`` lives in host memory (NumPy, array-api-strict, CPU torch / JAX)."""
    kind = getattr(getattr(x, "device", None), "type", None)  # torch: no namespace lookup
    if kind is not None:
        return kind == "cpu"
    xp = _compat.array_namespace(x)
    if is_numpy(xp) or is_strict(xp):
        return True
    dev = device(x)  # a JAX device has .platform; CuPy's is a CUDA device
    kind = getattr(dev, "platform", None) or str(dev)
    return str(kind).lower() == "cpu"


def loaded_torch() -> Any:
    """The torch module, already imported by whoever made the torch arrays we were given."""
    return _sys.modules["torch"]
