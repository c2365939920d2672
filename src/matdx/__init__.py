"""matdx: high-throughput computational materials screening.

Importing the package does nothing but define ``__version__``; every subpackage is
imported on demand.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("matdx")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
