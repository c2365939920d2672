"""Heartbeats, claims and lost-run recovery, with plain queries only.

FireWorks' own ``detect_lostruns`` needs ``$lookup`` (absent from FerretDB 1.24) and
relies on a ping every hour. matdx keeps its own heartbeat per running Firework (every
:data:`HEARTBEAT_S` seconds, in the ``matdx_heartbeats`` collection of the LaunchPad's
database) and calls a RUNNING Firework *lost* when its heartbeat is older than
``stale_after`` seconds: a worker killed by ``kill -9``, a node failure or a batch job's
walltime is detected within ``stale_after`` plus the polling interval. Lost Fireworks are
marked FIZZLED and rerun (READY again); the steps resume from what was already stored.

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

HEARTBEATS = "matdx_heartbeats"
CLAIMS = "matdx_claims"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def beat(db: Any, fw_id: int) -> None:
    """Record that Firework ``fw_id`` is alive now."""
    doc = {
        "updated_on": _now(),
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
    step: str | tuple[str, ...] | None = None,
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
    step
        Only Fireworks of this step (or of these steps).
    stale_after
        Age in seconds after which an unlaunched claim counts as abandoned.

    Returns
    -------
    int or None
        The claimed Firework id.
    """
    query: dict[str, Any] = {"spec._matdx.campaign": campaign, "state": "READY"}
    if isinstance(step, tuple):
        query["spec._matdx.step"] = {"$in": list(step)}
    elif step is not None:
        query["spec._matdx.step"] = step
    cursor = lp.fireworks.find(query, {"fw_id": 1, "launches": 1, "archived_launches": 1})
    for doc in sorted(cursor, key=lambda d: d["fw_id"]):
        if exclude and doc["fw_id"] in exclude:
            continue
        if _take_claim(lp.db[CLAIMS], f"{doc['fw_id']}:{attempt(doc)}", owner, stale_after):
            return int(doc["fw_id"])
    return None


def _take_claim(claims: Any, key: str, owner: str, stale_after: float) -> bool:
    """Insert the claim ``key`` for ``owner``, replacing one older than ``stale_after``.

    The unique ``_id`` decides between processes: a stale claim is deleted (only while it
    is still that old), and then whoever inserts the key first has it.
    """
    from pymongo.errors import DuplicateKeyError

    for _ in range(2):
        try:
            claims.insert_one({"_id": key, "owner": owner, "at": _now()})
            return True
        except DuplicateKeyError:
            cutoff = _now() - timedelta(seconds=stale_after)
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


def _as_datetime(value: Any) -> datetime | None:
    """A naive UTC datetime from a stored time (FireWorks writes some as ISO text)."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def lost_fireworks(lp: Any, campaign: str, stale_after: float = STALE_AFTER_S) -> list[int]:
    """Fireworks of ``campaign`` that no process is running any more.

    RUNNING ones whose heartbeat is older than ``stale_after``, and RESERVED ones (not
    reserved for an offline run) unchanged for that long: their worker died between
    reserving and starting. Fireworks reserved for offline runs stay RESERVED until
    ``matdx sync``, which judges them by their heartbeat files instead.
    """
    cutoff = _now() - timedelta(seconds=stale_after)
    running = list(
        lp.fireworks.find(
            {"spec._matdx.campaign": campaign, "state": {"$in": ["RUNNING", "RESERVED"]}},
            {"fw_id": 1, "updated_on": 1, "state": 1},
        )
    )
    if not running:
        return []
    ids = [d["fw_id"] for d in running]
    beats = {d["_id"]: d["updated_on"] for d in lp.db[HEARTBEATS].find({"_id": {"$in": ids}})}
    offline = {
        d["fw_id"]
        for d in lp.offline_runs.find(
            {"fw_id": {"$in": ids}, "completed": False, "deprecated": {"$ne": True}}, {"fw_id": 1}
        )
    }
    lost = []
    for d in running:
        if d["state"] == "RESERVED" and d["fw_id"] in offline:
            continue
        last = _as_datetime(beats.get(d["fw_id"]) or d.get("updated_on"))
        if last is None or last < cutoff:
            lost.append(int(d["fw_id"]))
    return lost


def recover_lost(lp: Any, campaign: str, stale_after: float = STALE_AFTER_S) -> list[int]:
    """Mark lost Fireworks' launches FIZZLED and rerun them; return their ids."""
    lost = lost_fireworks(lp, campaign, stale_after)
    for fw_id in lost:
        doc = lp.fireworks.find_one({"fw_id": fw_id}, {"launches": 1})
        for launch_id in doc.get("launches", []):
            lp.launches.update_one(
                {"launch_id": launch_id, "state": {"$in": ["RUNNING", "RESERVED"]}},
                {"$set": {"state": "FIZZLED"}},
            )
        lp.rerun_fw(fw_id)
        lp.db[HEARTBEATS].delete_one({"_id": fw_id})
    return lost


LOCKS = "matdx_locks"


@contextmanager
def campaign_lock(
    db: Any, campaign: str, timeout_s: float = 600.0, stale_after_s: float = 1800.0
) -> Iterator[None]:
    """Hold the campaign's planning lock (one process plans and adds workflows at a time).

    The lock is a document with a unique ``_id``; a lock older than ``stale_after_s`` (its
    holder died) is broken.

    Raises
    ------
    StoreBusyError
        If another process holds the lock for longer than ``timeout_s``.
    """
    import time

    from pymongo.errors import DuplicateKeyError

    from matdx.core.errors import StoreBusyError

    key = f"plan:{campaign}"
    me = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    start = time.monotonic()
    while True:
        try:
            db[LOCKS].insert_one({"_id": key, "owner": me, "at": _now()})
            break
        except DuplicateKeyError:
            held = db[LOCKS].find_one({"_id": key}) or {}
            if held.get("at") and held["at"] < _now() - timedelta(seconds=stale_after_s):
                db[LOCKS].delete_one({"_id": key, "owner": held.get("owner")})
                continue
            if time.monotonic() - start > timeout_s:
                raise StoreBusyError(
                    f"campaign {campaign!r} is being planned by {held.get('owner')}"
                ) from None
            time.sleep(0.5)
    try:
        yield
    finally:
        db[LOCKS].delete_one({"_id": key, "owner": me})
