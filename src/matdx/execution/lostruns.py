"""Lost-run recovery from heartbeats, with plain queries only.

FireWorks' own ``detect_lostruns`` needs ``$lookup`` (absent from FerretDB 1.24) and
relies on a ping every hour. matdx keeps its own heartbeat per running Firework (see
:mod:`matdx.workflows.coordination`) and calls a RUNNING Firework *lost* when its heartbeat
is older than ``stale_after`` seconds: a worker killed by ``kill -9``, a node failure or a
batch job's walltime is detected within ``stale_after`` plus the polling interval. Lost
Fireworks are marked FIZZLED and rerun (READY again); the steps resume from what was
already stored.

This module uses the LaunchPad object it is given but does not import FireWorks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from matdx.schemas.names import CAMPAIGN, spec_key
from matdx.workflows.coordination import HEARTBEATS, STALE_AFTER_S, utcnow


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
    cutoff = utcnow() - timedelta(seconds=stale_after)
    running = list(
        lp.fireworks.find(
            {spec_key(CAMPAIGN): campaign, "state": {"$in": ["RUNNING", "RESERVED"]}},
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
