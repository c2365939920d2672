"""Connecting mongoengine to an opened backend."""

from __future__ import annotations

import mongoengine
from mongoengine.connection import ConnectionFailure

from matdx.store.backend import Backend
from matdx.store.documents import ALIAS, ALL_DOCUMENTS

_CONNECTED: dict[str, str] = {}
_INDEXED: set[str] = set()


def _ensure_indexes(key: str) -> None:
    if key not in _INDEXED:
        for doc in ALL_DOCUMENTS:
            doc.ensure_indexes()
        _INDEXED.add(key)


def connect(backend: Backend, read_only: bool = False) -> None:
    """Register ``backend`` as mongoengine's ``matdx`` connection and create indexes.

    Calling it again with the same backend does nothing; with another backend it
    reconnects (tests switch databases this way).

    Parameters
    ----------
    backend
        An opened backend (see :func:`matdx.store.backend.open_backend`).
    read_only
        Only reads follow: no index is created (which would create the collections).
    """
    key = f"{backend.target.uri}|{backend.target.path}|{backend.target.db_name}"
    if _CONNECTED.get(ALIAS) == key:
        if not read_only:
            _ensure_indexes(key)
        return
    mongoengine.disconnect(alias=ALIAS)
    for doc in ALL_DOCUMENTS:
        doc._collection = None  # forget collections bound to a previous connection
    kwargs = dict(backend.client_kwargs)
    if backend.target.kind == "mongodb":
        kwargs["host"] = backend.target.uri
    try:
        mongoengine.connect(
            db=backend.target.db_name,
            alias=ALIAS,
            mongo_client_class=backend.client_class,
            uuidRepresentation="standard",
            **kwargs,
        )
    except ConnectionFailure as exc:  # pragma: no cover - settings clash
        raise RuntimeError(str(exc)) from None
    _INDEXED.discard(key)
    if not read_only:
        _ensure_indexes(key)
    _CONNECTED[ALIAS] = key
