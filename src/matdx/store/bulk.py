"""Bulk writes that work on MongoDB, FerretDB and the embedded (mongomock) store.

Two findings about FerretDB 1.24 shape this module:

* an update command holds one backend connection per statement until the whole command
  ends, so a bulk update of more statements than the pool holds hangs the server (SQLite:
  ~100; PostgreSQL: 30 passed and 50 hung, measured); updates are therefore sent in
  commands of at most :data:`UPDATE_CHUNK`;
* an update costs tens of milliseconds per document while an insert costs well under one,
  so the store's bulk paths insert new documents (:func:`insert_new`) and update only what
  changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo import ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

UPDATE_CHUNK = 20
DUPLICATE_KEY = 11000


@dataclass(frozen=True)
class Upsert:
    """One upsert: ``update`` is an update document, or a full replacement if ``replace``."""

    filter: dict[str, Any]
    update: dict[str, Any]
    replace: bool = False


def apply_upserts(collection: Any, ops: Sequence[Upsert]) -> int:
    """Apply upserts, in commands of at most :data:`UPDATE_CHUNK` statements.

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
    n = 0
    if isinstance(collection, Collection):
        for start in range(0, len(ops), UPDATE_CHUNK):
            requests = [
                ReplaceOne(op.filter, op.update, upsert=True)
                if op.replace
                else UpdateOne(op.filter, op.update, upsert=True)
                for op in ops[start : start + UPDATE_CHUNK]
            ]
            res = collection.bulk_write(requests, ordered=True)
            n += res.upserted_count + res.modified_count
        return n
    for op in ops:
        if op.replace:
            r = collection.replace_one(op.filter, op.update, upsert=True)
        else:
            r = collection.update_one(op.filter, op.update, upsert=True)
        n += (r.upserted_id is not None) + r.modified_count
    return n


def insert_new(collection: Any, docs: Sequence[dict[str, Any]]) -> int:
    """Insert documents whose ``_id`` is not taken yet; skip the others.

    Concurrent writers may insert the same ``_id`` first: duplicate-key errors are
    expected and ignored, any other error is raised.

    Returns
    -------
    int
        Number of documents inserted.
    """
    if not docs:
        return 0
    try:
        return len(collection.insert_many(list(docs), ordered=False).inserted_ids)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return int(exc.details.get("nInserted", 0))


_FLAVOURS: dict[int, str] = {}
IN_CHUNK = 500
"""Ids per ``$in`` query on MongoDB."""
FERRETDB_POINT_QUERIES = 16
"""Up to this many ids, FerretDB gets one point query each (see :func:`find_by_ids`)."""
FERRETDB_IN_CHUNK = 10_000
"""Ids per ``$in`` query on FerretDB (one collection scan each)."""


def flavour(collection: Any) -> str:
    """``"ferretdb"``, ``"mongodb"`` or ``"mongomock"`` (asked once per client)."""
    if not isinstance(collection, Collection):
        return "mongomock"
    client = collection.database.client
    key = id(client)
    if key not in _FLAVOURS:
        info = client.admin.command("buildInfo")
        _FLAVOURS[key] = "ferretdb" if "ferretdbVersion" in info else "mongodb"
    return _FLAVOURS[key]


def find_by_ids(
    collection: Any,
    ids: Sequence[Any],
    projection: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Documents with these ``_id`` values, fetched the cheapest way for the server.

    MongoDB answers ``{_id: {$in: [...]}}`` from its primary index, in chunks of
    :data:`IN_CHUNK`. FerretDB 1.24 (SQLite) scans the collection for every query, also
    for ``{_id: value}``, which stops at the first match: a point query costs on average
    half a scan, an ``$in`` of any length one scan (on 2,000 calculations, 70 ms and
    1.2-2.2 s). There a few ids are fetched one by one and more with one ``$in`` of up to
    :data:`FERRETDB_IN_CHUNK` ids.
    """
    ids = list(dict.fromkeys(ids))
    if not ids:
        return []
    if flavour(collection) == "ferretdb":
        if len(ids) <= FERRETDB_POINT_QUERIES:
            out = []
            for i in ids:
                doc = collection.find_one({"_id": i}, projection)
                if doc is not None:
                    out.append(doc)
            return out
        chunk = FERRETDB_IN_CHUNK
    else:
        chunk = IN_CHUNK
    return [
        d
        for start in range(0, len(ids), chunk)
        for d in collection.find({"_id": {"$in": ids[start : start + chunk]}}, projection)
    ]


def insert_missing(collection: Any, docs: Sequence[dict[str, Any]]) -> set[Any]:
    """Insert documents; return the ``_id`` values that already existed (not inserted).

    One ``insert_many`` (unordered): the server's unique ``_id`` index decides, which is
    also safe against concurrent writers.
    """
    if not docs:
        return set()
    try:
        collection.insert_many(list(docs), ordered=False)
        return set()
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return {docs[e["index"]]["_id"] for e in errors}
