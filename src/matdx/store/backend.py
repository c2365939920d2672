"""Database backends: a MongoDB-wire server, or the embedded file-persisted store.

The embedded backend is FireWorks' mongomock mode (``MONGOMOCK_SERVERSTORE_FILE``): one
in-memory server store per process, loaded from a JSON file (MongoDB extended JSON) and
written back by :meth:`Backend.flush` and at exit. The LaunchPad and the property store
share that one server store through the ``_store`` client argument, so both see the same
data. It is single-process: a lock file refuses a second process.

A process that only reads opens it ``read_only``: the file is then never written (not at
exit either), several readers may share it (a shared lock, which a writer waits for in
vain and is refused), and a store that does not exist yet is read as empty without
creating anything.
"""

from __future__ import annotations

import atexit
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
    read_only: bool = False
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
        """Write the embedded store to its file, atomically (no-op for a server or reader)."""
        if self._server_store is None or self.target.path is None or self.read_only:
            return
        path = self.target.path
        start = time.monotonic()
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(encode_store(self._server_store.to_dict()), encoding="utf-8")
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


def _lock_file(path: Path, read_only: bool) -> Any:
    """The store's lock file, locked exclusively (writer) or shared (reader)."""
    lock = open(path.with_suffix(path.suffix + ".lock"), "a+")  # noqa: SIM115 - held for the process
    try:
        fcntl.flock(lock, (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StoreBusyError(
            f"the embedded store {path} is in use by another matdx process "
            "(it is single-process; use a MongoDB server for concurrent work)"
        ) from None
    return lock


def encode_store(data: dict[str, Any]) -> str:
    """The embedded store's file text: MongoDB extended JSON, as ``bson.json_util.dumps``.

    ``json_util.dumps`` first rebuilds the whole document tree in Python, a call per
    value; here the standard library's C encoder walks it and calls ``json_util`` only
    for the BSON types it does not know (dates, ``ObjectId``, binary data): 2.5 times
    faster, and ``json_util.loads`` reads back the same documents (``NaN`` and infinities
    are written as JSON's ``NaN``/``Infinity`` rather than ``{"$numberDouble": ...}``).
    """
    import json

    from bson import json_util

    return json.dumps(
        data, default=lambda obj: json_util.default(obj, json_util.DEFAULT_JSON_OPTIONS)
    )


def _open_embedded(target: DbTarget, read_only: bool = False) -> Backend:
    path = target.path
    assert path is not None
    exists = path.exists() and path.stat().st_size > 0
    if read_only and not exists:
        return _empty_embedded(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_file(path, read_only)
    if not exists:
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
    backend = Backend(
        target,
        client_kwargs={"_store": server_store},
        client_class=mongomock.MongoClient,
        _lock=lock,
        _server_store=server_store,
    )
    if read_only:
        _set_read_only(backend)
    else:
        # mongomock_persistence writes the file at exit with json_util.dumps; write it
        # with flush (atomically, and faster) instead
        server_store._finalizer.detach()
        atexit.register(_flush_at_exit, backend)
    return backend


def _flush_at_exit(backend: Backend) -> None:
    """Write the embedded store at exit, unless its directory was removed meanwhile."""
    path = backend.target.path
    if path is not None and path.parent.is_dir():
        backend.flush()


def _empty_embedded(target: DbTarget) -> Backend:
    """An empty in-memory store for a reader of an embedded store not created yet."""
    import mongomock
    import mongomock.store
    import mongomock_persistence  # noqa: F401 - patches mongomock's server store

    saved = os.environ.get("MONGOMOCK_SERVERSTORE_FILE")
    os.environ["MONGOMOCK_SERVERSTORE_FILE"] = ""  # no file: nothing loaded, nothing saved
    try:
        server_store = mongomock.store.ServerStore()
    finally:
        if saved is None:
            del os.environ["MONGOMOCK_SERVERSTORE_FILE"]
        else:
            os.environ["MONGOMOCK_SERVERSTORE_FILE"] = saved
    return Backend(
        target,
        client_kwargs={"_store": server_store},
        client_class=mongomock.MongoClient,
        read_only=True,
        _server_store=server_store,
    )


def _set_read_only(backend: Backend) -> None:
    """Never write the embedded store of ``backend`` (the exit-time save detached)."""
    backend.read_only = True
    finalizer = getattr(backend._server_store, "_finalizer", None)
    if finalizer is not None:
        finalizer.detach()


def _open_server(target: DbTarget, timeout_ms: int) -> Backend:
    import pymongo
    from pymongo.errors import PyMongoError

    kwargs = {"serverSelectionTimeoutMS": timeout_ms, "connectTimeoutMS": timeout_ms}
    backend = Backend(target, client_kwargs=kwargs, client_class=pymongo.MongoClient)
    try:
        client = backend.new_client()
    except (PyMongoError, OSError, ValueError, TypeError) as exc:
        # URI options pymongo checks when the client is made: TLS files that cannot be
        # read, unknown or malformed values
        reason = " ".join(str(exc).split())
        raise StoreUnavailableError(
            f"cannot use the database URI {target.display}: {reason}"
        ) from None
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        reason = str(exc).split(",")[0].split("(")[0].strip()
        raise StoreUnavailableError(
            f"cannot reach the database at {target.display}: {reason}"
        ) from None
    return backend


def open_backend(target: DbTarget, timeout_ms: int = 5000, read_only: bool = False) -> Backend:
    """Open (once per process) the database behind ``target``.

    Parameters
    ----------
    target
        Parsed database URI.
    timeout_ms
        Server selection timeout.
    read_only
        The process only reads: an embedded store is never written back (a server is
        opened as usual). A store first opened to read cannot be written later in the
        same process.

    Returns
    -------
    Backend
        The opened backend; the same object on later calls with the same URI.

    Raises
    ------
    StoreUnavailableError
        If a server cannot be reached (the message shows the URI without password).
    StoreBusyError
        If another process holds the embedded store, or it was opened to read and is now
        opened to write.
    """
    key = target.uri if target.kind == "mongodb" else str(target.path)
    if key not in _OPEN:
        if target.kind == "embedded":
            _OPEN[key] = _open_embedded(target, read_only)
        else:
            _OPEN[key] = _open_server(target, timeout_ms)
    backend = _OPEN[key]
    if backend.read_only and not read_only:
        raise StoreBusyError(
            f"the embedded store {target.path} was opened read-only by this process"
        )
    return backend
