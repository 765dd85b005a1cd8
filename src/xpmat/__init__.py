"""xpmat: matrix primitives of modern optimizers on any Array API library.

The public API, re-exported from the modules that define it; nothing else lives here.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xpmat")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__: list[str] = []
