"""Encoding of nested arrays for servers that cannot store them.

FerretDB 1.x rejects arrays that directly contain arrays (a lattice matrix, a force
array). Every list that holds a list is stored with its list elements wrapped as
``{"__list__": [...]}``: an array of documents, which every MongoDB-wire server accepts.
:func:`unpack` reverses it exactly. Scalars, dicts and flat lists are unchanged.
"""

from __future__ import annotations

from typing import Any

WRAP = "__list__"


def pack(obj: Any) -> Any:
    """Return ``obj`` with every list element that is a list wrapped (recursively)."""
    if isinstance(obj, dict):
        return {k: pack(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [{WRAP: pack(x)} if isinstance(x, list | tuple) else pack(x) for x in obj]
    return obj


def unpack(obj: Any) -> Any:
    """Inverse of :func:`pack`."""
    if isinstance(obj, dict):
        if len(obj) == 1 and WRAP in obj:
            return unpack(obj[WRAP])
        return {k: unpack(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(x) for x in obj]
    return obj
