"""Opening the store from inside a workflow step (in any process).

A step opens the database named by ``MATDX_DB_URI`` (or the embedded default). When a
campaign runs its Fireworks in the process that submitted it with an explicit URI,
:func:`default_db` makes the steps use that URI too, without putting it (and a possible
password) into the workflow.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from matdx.core.dburi import parse_db_uri
from matdx.core.settings import get_settings
from matdx.store.backend import Backend, open_backend
from matdx.store.connection import connect
from matdx.store.repository import Store

_process_default: list[str] = []


@contextmanager
def default_db(db_uri: str) -> Iterator[None]:
    """Within the block, :func:`open_store` without a URI opens ``db_uri``."""
    _process_default.append(db_uri)
    try:
        yield
    finally:
        _process_default.pop()


def open_store(db_uri: str | None = None, read_only: bool = False) -> tuple[Store, Backend]:
    """Connect mongoengine to the configured database and return the store.

    Parameters
    ----------
    db_uri
        Explicit URI; otherwise the one set by :func:`default_db`, ``MATDX_DB_URI`` or the
        embedded default.
    read_only
        The caller only reads: an embedded store is not written back (see
        :func:`~matdx.store.backend.open_backend`).

    Returns
    -------
    Store, Backend
        The store operations and the opened backend.
    """
    if db_uri is None and _process_default:
        db_uri = _process_default[-1]
    settings = get_settings(db_uri=db_uri)
    backend = open_backend(
        parse_db_uri(settings.db_uri, settings.data_dir), settings.server_timeout_ms, read_only
    )
    connect(backend, read_only)
    return Store(), backend
