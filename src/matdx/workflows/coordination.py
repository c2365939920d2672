"""Heartbeats, claims and locks: how processes share a LaunchPad, plain queries only.

Every running Firework has a heartbeat (every :data:`HEARTBEAT_S` seconds, in the
``matdx_heartbeats`` collection of the LaunchPad's database, or a file offline), from which
:mod:`matdx.execution.lostruns` tells which runs were lost.

A *claim* makes one worker the only one to run a READY Firework: inserting the document
``{_id: "<fw_id>:<attempt>"}`` succeeds for exactly one caller on any MongoDB-wire server
(the ``_id`` index is unique), where FireWorks' own reservation is a read-then-write on
FerretDB.

This module uses the LaunchPad object it is given but does not import FireWorks.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from matdx.schemas.names import CAMPAIGN, KIND, spec_key

HEARTBEATS = "matdx_heartbeats"
DUPLICATE_KEY = 11000
CLAIMS = "matdx_claims"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


def utcnow() -> datetime:
    """The current UTC time without tzinfo (as BSON stores it)."""
    return datetime.now(UTC).replace(tzinfo=None)


def beat(db: Any, fw_id: int) -> None:
    """Record that Firework ``fw_id`` is alive now."""
    doc = {
        "updated_on": utcnow(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job_id": os.environ.get("SLURM_JOB_ID") or os.environ.get("PJM_JOBID"),
    }
    db[HEARTBEATS].replace_one({"_id": int(fw_id)}, doc, upsert=True)


@contextmanager
def heartbeat(db: Any | None, fw_id: int | None, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Beat for ``fw_id`` every ``every`` seconds while the block runs.

    The thread is stopped and joined before the block's result goes back to FireWorks,
    so no heartbeat write overlaps the write that completes the launch.
    """
    if db is None or fw_id is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                beat(db, fw_id)
            except Exception:  # a missed beat must not kill the task
                continue

    beat(db, fw_id)
    thread = threading.Thread(target=loop, name=f"matdx-heartbeat-{fw_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


FILE_BEAT = "matdx_heartbeat.json"


@contextmanager
def file_heartbeat(directory: str, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Offline heartbeat: rewrite ``matdx_heartbeat.json`` in ``directory`` periodically."""
    import json
    import time

    path = os.path.join(directory, FILE_BEAT)
    stop = threading.Event()

    def write() -> None:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(
                {"updated_on": time.time(), "host": socket.gethostname(), "pid": os.getpid()}, fh
            )
        os.replace(tmp, path)

    def loop() -> None:
        while not stop.wait(every):
            try:
                write()
            except OSError:
                continue

    write()
    thread = threading.Thread(target=loop, name="matdx-file-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def attempt(fw_doc: dict[str, Any]) -> int:
    """How many launches a Firework has had (current and archived)."""
    return len(fw_doc.get("launches", [])) + len(fw_doc.get("archived_launches", []))


def claim_next(
    lp: Any,
    campaign: str,
    owner: str,
    exclude: set[int] | None = None,
    kinds: tuple[str, ...] | None = None,
    stale_after: float = STALE_AFTER_S,
) -> int | None:
    """Claim a READY Firework of ``campaign`` for ``owner``; ``None`` if there is none.

    A claim is a unique key ``<fw_id>:<launches so far>``: the first process to insert it
    runs that attempt. A claim on a Firework that is still READY and older than
    ``stale_after`` is taken over: its process died between claiming and launching (a job
    killed at that moment), and would otherwise keep the Firework from everyone.

    Parameters
    ----------
    lp
        LaunchPad.
    campaign
        Campaign name.
    owner
        Who claims (recorded for diagnosis), e.g. ``"<host>:<pid>"``.
    exclude
        Firework ids not to consider.
    kinds
        Only Fireworks of these kinds (:mod:`matdx.schemas.names`).
    stale_after
        Age in seconds after which an unlaunched claim counts as abandoned.

    Returns
    -------
    int or None
        The claimed Firework id.
    """
    query: dict[str, Any] = {spec_key(CAMPAIGN): campaign, "state": "READY"}
    if kinds is not None:
        query[spec_key(KIND)] = {"$in": list(kinds)}
    cursor = lp.fireworks.find(query, {"fw_id": 1, "launches": 1, "archived_launches": 1})
    for doc in sorted(cursor, key=lambda d: d["fw_id"]):
        if exclude and doc["fw_id"] in exclude:
            continue
        if _take_claim(lp.db[CLAIMS], f"{doc['fw_id']}:{attempt(doc)}", owner, stale_after):
            return int(doc["fw_id"])
    return None


def claim_many(
    lp: Any,
    campaign: str,
    owner: str,
    n: int,
    kinds: tuple[str, ...] | None = None,
    stale_after: float = STALE_AFTER_S,
) -> list[int]:
    """Claim up to ``n`` READY Fireworks of ``campaign`` for ``owner`` (see :func:`claim_next`).

    One query for the READY Fireworks and one ``insert_many`` of their claims; the unique
    ``_id`` of a claim decides between processes, as in :func:`claim_next`. A claim that
    another process holds is taken over only if it is stale, one by one.
    """
    from pymongo.errors import BulkWriteError

    query: dict[str, Any] = {spec_key(CAMPAIGN): campaign, "state": "READY"}
    if kinds is not None:
        query[spec_key(KIND)] = {"$in": list(kinds)}
    docs = sorted(
        lp.fireworks.find(query, {"fw_id": 1, "launches": 1, "archived_launches": 1}),
        key=lambda d: d["fw_id"],
    )[:n]
    keys = {f"{d['fw_id']}:{attempt(d)}": int(d["fw_id"]) for d in docs}
    if not keys:
        return []
    now, order = utcnow(), list(keys)
    taken = set(keys)
    try:
        lp.db[CLAIMS].insert_many(
            [{"_id": k, "owner": owner, "at": now} for k in order], ordered=False
        )
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        held = {order[e["index"]] for e in errors}
        taken -= held
        taken |= {k for k in held if _take_claim(lp.db[CLAIMS], k, owner, stale_after)}
    return sorted(keys[k] for k in taken)


def _take_claim(claims: Any, key: str, owner: str, stale_after: float) -> bool:
    """Insert the claim ``key`` for ``owner``, replacing one older than ``stale_after``.

    The unique ``_id`` decides between processes: a stale claim is deleted (only while it
    is still that old), and then whoever inserts the key first has it.
    """
    from pymongo.errors import DuplicateKeyError

    for _ in range(2):
        try:
            claims.insert_one({"_id": key, "owner": owner, "at": utcnow()})
            return True
        except DuplicateKeyError:
            cutoff = utcnow() - timedelta(seconds=stale_after)
            if not claims.delete_one({"_id": key, "at": {"$lt": cutoff}}).deleted_count:
                return False
    return False


def release_unstarted(lp: Any, fw_ids: set[int]) -> list[int]:
    """Drop the claims of Fireworks that are still READY (their run never started)."""
    released = []
    for fw_id in sorted(fw_ids):
        doc = lp.fireworks.find_one(
            {"fw_id": fw_id}, {"state": 1, "launches": 1, "archived_launches": 1}
        )
        if doc is not None and doc["state"] == "READY":
            lp.db[CLAIMS].delete_one({"_id": f"{fw_id}:{attempt(doc)}"})
            released.append(fw_id)
    return released


LOCKS = "matdx_locks"


def _holder_is_dead(owner: str | None) -> bool:
    """Whether a lock's ``host:pid:thread`` owner is a process of this host that has ended."""
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@contextmanager
def exclusive(
    db: Any,
    key: str,
    *,
    stale_after_s: float,
    timeout_s: float | None = None,
    what: str = "",
    where: str = "the database",
) -> Iterator[None]:
    """Hold the lock ``key`` (a document with that unique ``_id`` in ``matdx_locks``).

    Inserting the document is atomic on every MongoDB-wire server and on mongomock, where a
    ``find_one_and_update`` on a ``locked`` field is not on FerretDB 1.x. Waits with
    growing pauses (5 ms to 0.5 s) while another process holds it. A lock is broken when
    it is older than ``stale_after_s`` or its holder was a process of this host that has
    ended (killed while holding it). Taking and giving back the lock are retried while
    the server is unreachable (:func:`~matdx.core.retry.retry_db`); a lock whose insert
    reached the server although its reply did not is recognised as one's own.

    Raises
    ------
    StoreBusyError
        If another process holds the lock for longer than ``timeout_s`` (no limit: ``None``).
    """
    import random
    import time

    from pymongo.errors import DuplicateKeyError

    from matdx.core.errors import StoreBusyError
    from matdx.core.retry import retry_db

    me = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    start, pause = time.monotonic(), 0.005

    def take() -> bool:
        try:
            db[LOCKS].insert_one({"_id": key, "owner": me, "at": utcnow()})
            return True
        except DuplicateKeyError:
            pass
        held = db[LOCKS].find_one({"_id": key}) or {}
        if held.get("owner") == me:  # our insert arrived, its reply did not
            return True
        at = held.get("at")
        stale = at is not None and at < utcnow() - timedelta(seconds=stale_after_s)
        if at is not None and (stale or _holder_is_dead(held.get("owner"))):
            db[LOCKS].delete_one({"_id": key, "owner": held.get("owner"), "at": at})
            return take()
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise StoreBusyError(f"{what or key} is held by {held.get('owner')}")
        return False

    while not retry_db(take, f"take the lock of {what or key}", where):
        time.sleep(pause * (1 + random.random()))
        pause = min(2 * pause, 0.5)
    try:
        yield
    finally:
        retry_db(
            lambda: db[LOCKS].delete_one({"_id": key, "owner": me}),
            f"give back the lock of {what or key}",
            where,
        )


@contextmanager
def campaign_lock(
    db: Any, campaign: str, timeout_s: float = 600.0, stale_after_s: float = 1800.0
) -> Iterator[None]:
    """Hold the campaign's planning lock (one process plans and adds workflows at a time).

    Raises
    ------
    StoreBusyError
        If another process holds the lock for longer than ``timeout_s``.
    """
    with exclusive(
        db,
        f"plan:{campaign}",
        stale_after_s=stale_after_s,
        timeout_s=timeout_s,
        what=f"the planning lock of campaign {campaign!r}",
    ):
        yield
