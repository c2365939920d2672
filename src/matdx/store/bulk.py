"""Bulk writes that work on MongoDB, FerretDB and the embedded (mongomock) store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ReplaceOne, UpdateOne
from pymongo.collection import Collection


@dataclass(frozen=True)
class Upsert:
    """One upsert: ``update`` is an update document, or a full replacement if ``replace``."""

    filter: dict[str, Any]
    update: dict[str, Any]
    replace: bool = False


def apply_upserts(collection: Any, ops: Sequence[Upsert]) -> int:
    """Apply upserts in one round trip where the driver allows it.

    mongomock's ``bulk_write`` does not accept the operation objects of current pymongo,
    so the embedded store gets the same operations one by one (in-process, no round trip).

    Parameters
    ----------
    collection
        A pymongo or mongomock collection.
    ops
        Upserts, applied in order.

    Returns
    -------
    int
        Number of documents inserted or modified.
    """
    if not ops:
        return 0
    if isinstance(collection, Collection):
        requests = [
            ReplaceOne(op.filter, op.update, upsert=True)
            if op.replace
            else UpdateOne(op.filter, op.update, upsert=True)
            for op in ops
        ]
        res = collection.bulk_write(requests, ordered=True)
        return res.upserted_count + res.modified_count
    n = 0
    for op in ops:
        if op.replace:
            r = collection.replace_one(op.filter, op.update, upsert=True)
        else:
            r = collection.update_one(op.filter, op.update, upsert=True)
        n += (r.upserted_id is not None) + r.modified_count
    return n
