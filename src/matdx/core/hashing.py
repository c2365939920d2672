"""Stable content hashes used as idempotency keys."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """Serialise ``obj`` to JSON with sorted keys and no whitespace.

    Parameters
    ----------
    obj
        Any JSON-serialisable object.

    Returns
    -------
    str
        The canonical JSON text.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Return a short hex digest of the canonical JSON of ``obj``.

    Parameters
    ----------
    obj
        Any JSON-serialisable object.
    length
        Number of hex characters kept.

    Returns
    -------
    str
        Hex digest prefix.
    """
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
