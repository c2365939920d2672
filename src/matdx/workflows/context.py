"""Opening the store from inside a workflow step (in any process)."""

from __future__ import annotations

from matdx.core.dburi import parse_db_uri
from matdx.core.settings import get_settings
from matdx.store.backend import Backend, open_backend
from matdx.store.connection import connect
from matdx.store.repository import Store


def open_store(db_uri: str | None = None) -> tuple[Store, Backend]:
    """Connect mongoengine to the configured database and return the store.

    Parameters
    ----------
    db_uri
        Explicit URI; otherwise ``MATDX_DB_URI`` or the embedded default.

    Returns
    -------
    Store, Backend
        The store operations and the opened backend.
    """
    settings = get_settings(db_uri=db_uri)
    backend = open_backend(
        parse_db_uri(settings.db_uri, settings.data_dir), settings.server_timeout_ms
    )
    connect(backend)
    return Store(), backend
