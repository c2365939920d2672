"""Database backends: a MongoDB-wire server, or the embedded file-persisted store.

The embedded backend is FireWorks' mongomock mode (``MONGOMOCK_SERVERSTORE_FILE``): one
in-memory server store per process, loaded from a JSON file and written back by
:func:`flush` and at exit. The LaunchPad and the property store share that one server
store through the ``_store`` client argument, so both see the same data. It is
single-process: a lock file refuses a second process.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matdx.core.dburi import DbTarget
from matdx.core.errors import StoreBusyError, StoreUnavailableError

_OPEN: dict[str, Backend] = {}
CHECKPOINT_SPACING = 50.0
""":meth:`Backend.checkpoint` waits this many times the last write's duration."""


@dataclass
class Backend:
    """An opened database target.

    Attributes
    ----------
    target
        The parsed URI.
    client_kwargs
        Keyword arguments every client of this target must be created with.
    client_class
        Class of the clients (``pymongo.MongoClient`` or ``mongomock.MongoClient``).
    """

    target: DbTarget
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    client_class: type = object
    _lock: Any = None
    _server_store: Any = None
    _last_write: float = 0.0
    _write_cost: float = 0.0

    def new_client(self) -> Any:
        """A client connected to this target."""
        if self.target.kind == "embedded":
            return self.client_class(**self.client_kwargs)
        return self.client_class(self.target.uri, **self.client_kwargs)

    def flush(self) -> None:
        """Write the embedded store to its file, atomically (no-op for a server)."""
        if self._server_store is None or self.target.path is None:
            return
        from bson import json_util

        path = self.target.path
        start = time.monotonic()
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json_util.dumps(self._server_store.to_dict()), encoding="utf-8")
        os.replace(tmp, path)
        self._last_write = time.monotonic()
        self._write_cost = self._last_write - start

    def checkpoint(self) -> None:
        """:meth:`flush`, unless the last write was too recent to be worth another.

        Writing the embedded store costs time in proportion to its size (1.2 s at 20 MB)
        and rewrites all of it, so after every batch it would cost a growing share of a
        campaign. Here it is written only once :data:`CHECKPOINT_SPACING` times its last
        write time has passed (at most ~2 % of the time): a process killed with ``kill -9``
        loses at most that much work, which a rerun recomputes (store and LaunchPad live in
        the same file, so they roll back together). The store is also written at exit and
        by every :meth:`flush`.
        """
        if time.monotonic() - self._last_write >= CHECKPOINT_SPACING * self._write_cost:
            self.flush()


def _open_embedded(target: DbTarget) -> Backend:
    path = target.path
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path.with_suffix(path.suffix + ".lock"), "a+")  # noqa: SIM115 - held for the process
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StoreBusyError(
            f"the embedded store {path} is in use by another matdx process "
            "(it is single-process; use a MongoDB server for concurrent work)"
        ) from None
    if not path.exists() or path.stat().st_size == 0:
        path.write_text("{}", encoding="utf-8")
    # FireWorks reads the variable when it is first imported; mongomock_persistence reads it
    # whenever a server store is created. Both must see the same file.
    current = os.environ.get("MONGOMOCK_SERVERSTORE_FILE")
    if current and Path(current).resolve() != path.resolve() and "fireworks" in sys.modules:
        raise StoreUnavailableError(
            f"MONGOMOCK_SERVERSTORE_FILE={current} differs from the embedded store {path}"
        )
    os.environ["MONGOMOCK_SERVERSTORE_FILE"] = str(path)
    import mongomock
    import mongomock.gridfs
    import mongomock.store
    import mongomock_persistence  # noqa: F401 - patches mongomock's server store

    mongomock.gridfs.enable_gridfs_integration()  # GridFS on the embedded store, as FireWorks

    try:
        server_store = mongomock.store.ServerStore()
    except ValueError as exc:
        raise StoreUnavailableError(f"the embedded store {path} is corrupt: {exc}") from None
    return Backend(
        target,
        client_kwargs={"_store": server_store},
        client_class=mongomock.MongoClient,
        _lock=lock,
        _server_store=server_store,
    )


def _open_server(target: DbTarget, timeout_ms: int) -> Backend:
    import pymongo
    from pymongo.errors import PyMongoError

    kwargs = {"serverSelectionTimeoutMS": timeout_ms, "connectTimeoutMS": timeout_ms}
    backend = Backend(target, client_kwargs=kwargs, client_class=pymongo.MongoClient)
    try:
        backend.new_client().admin.command("ping")
    except PyMongoError as exc:
        reason = str(exc).split(",")[0].split("(")[0].strip()
        raise StoreUnavailableError(
            f"cannot reach the database at {target.display}: {reason}"
        ) from None
    return backend


def open_backend(target: DbTarget, timeout_ms: int = 5000) -> Backend:
    """Open (once per process) the database behind ``target``.

    Parameters
    ----------
    target
        Parsed database URI.
    timeout_ms
        Server selection timeout.

    Returns
    -------
    Backend
        The opened backend; the same object on later calls with the same URI.

    Raises
    ------
    StoreUnavailableError
        If a server cannot be reached (the message shows the URI without password).
    StoreBusyError
        If another process holds the embedded store.
    """
    key = target.uri if target.kind == "mongodb" else str(target.path)
    if key not in _OPEN:
        if target.kind == "embedded":
            _OPEN[key] = _open_embedded(target)
        else:
            _OPEN[key] = _open_server(target, timeout_ms)
    return _OPEN[key]
