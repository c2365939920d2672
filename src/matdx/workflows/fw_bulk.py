"""Offline reservation and recovery of many Fireworks at once.

FireWorks reserves (``reserve_fw``) and recovers (``recover_offline``) one Firework at a
time, and each call refreshes the workflow: it reads and rewrites the workflow document,
whose size grows with the number of its Fireworks. A campaign is one workflow of all its
batch Fireworks, so both cost O(N) per Firework and O(N^2) in all (measured: about 1
Firework/s at 150 Fireworks). Here the same database changes are made for a whole set:
the launches inserted or replaced in bulk, the Fireworks' states set with bulk updates,
and the workflow refreshed once. A recovered launch whose action does more than complete
(a detour, an update of the children's spec, ...) goes through FireWorks' own
``recover_offline``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pymongo import ReplaceOne, UpdateOne

from matdx.store.bulk import UPDATE_CHUNK

CHUNK = 1000
"""Fireworks fetched per query."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _bulk(collection: Any, requests: Sequence[Any]) -> None:
    """Send ``requests`` in commands of at most :data:`UPDATE_CHUNK` (one by one on mongomock)."""
    from pymongo.collection import Collection

    if not isinstance(collection, Collection):
        for r in requests:
            doc = r._doc
            if isinstance(r, ReplaceOne):
                collection.replace_one(r._filter, doc, upsert=bool(r._upsert))
            else:
                collection.update_one(r._filter, doc, upsert=bool(r._upsert))
        return
    for start in range(0, len(requests), UPDATE_CHUNK):
        collection.bulk_write(list(requests[start : start + UPDATE_CHUNK]), ordered=False)


def _set_workflow_states(lp: Any, states: dict[int, str], children: set[int]) -> None:
    """Record ``states`` in the workflow of those Fireworks and refresh ``children``."""
    if not states:
        return
    from fireworks.core.launchpad import WFLock

    from matdx.workflows.fw_lock import workflow_lock

    first = next(iter(states))
    with workflow_lock(lp, first), WFLock(lp, first):
        wf = lp.get_wf_by_fw_id_lzyfw(first)
        wf.fw_states.update(states)
        updated: set[int] = set()
        for child in sorted(children - set(states)):
            updated |= wf.refresh(child)
        lp._update_wf(wf, sorted(updated - set(states)))


def reserve_many(
    lp: Any, fw_ids: Sequence[int], fworker: Any, dirs: dict[int, Path]
) -> dict[int, int]:
    """Reserve READY Fireworks (claimed by the caller) for offline runs, in bulk.

    Writes ``FW.json`` and ``FW_offline.json`` into each Firework's directory of ``dirs``
    and records the offline runs, as :func:`~matdx.workflows.fireworks_adapter.reserve_offline`
    does for one.

    Returns
    -------
    dict
        Launch id by Firework id, for the Fireworks that were still READY.
    """
    from fireworks import Firework, Launch

    docs = []
    for start in range(0, len(fw_ids), CHUNK):
        docs += lp.fireworks.find(
            {"fw_id": {"$in": list(fw_ids[start : start + CHUNK])}, "state": "READY"}
        )
    if not docs:
        return {}
    docs.sort(key=lambda d: d["fw_id"])
    first = lp.get_new_launch_id(len(docs))  # MatdxLaunchPad: a range, unique across processes
    launch_ids = range(first, first + len(docs))
    now = _now()
    launches, fw_updates, offline = [], [], []
    out: dict[int, int] = {}
    for doc, lid in zip(docs, launch_ids, strict=True):
        fw_id = doc["fw_id"]
        d = dirs[fw_id]
        d.mkdir(parents=True, exist_ok=True)
        launch = Launch("RESERVED", str(d), fworker, launch_id=lid, fw_id=fw_id)
        launches.append(launch.to_db_dict())
        fw = Firework.from_dict(
            {**doc, "launches": [launch.to_dict()], "archived_launches": [], "state": "RESERVED"}
        )
        fw.to_file(str(d / "FW.json"))
        (d / "FW_offline.json").write_text(json.dumps({"launch_id": lid}))
        fw_updates.append(
            UpdateOne(
                {"fw_id": fw_id, "state": "READY"},
                {"$set": {"state": "RESERVED", "updated_on": now}, "$push": {"launches": lid}},
            )
        )
        offline.append(
            {
                "fw_id": fw_id,
                "launch_id": lid,
                "name": doc.get("name"),
                "created_on": now.isoformat(),
                "updated_on": now.isoformat(),
                "deprecated": False,
                "completed": False,
            }
        )
        out[fw_id] = lid
    lp.launches.insert_many(launches, ordered=False)
    _bulk(lp.fireworks, fw_updates)
    lp.offline_runs.insert_many(offline, ordered=False)
    _set_workflow_states(lp, {fw_id: "RESERVED" for fw_id in out}, set())
    return out


def _plain_completion(fwaction: dict[str, Any]) -> bool:
    """Whether an action only completes its Firework (nothing for FireWorks to apply)."""
    return not any(
        fwaction.get(k)
        for k in (
            "update_spec",
            "mod_spec",
            "additions",
            "detours",
            "append_wfs",
            "defuse_children",
            "defuse_workflow",
            "exit",
        )
    )


def recover_many(lp: Any, finished: dict[int, dict[str, Any]]) -> list[int]:
    """Bring finished offline launches (launch id -> its ``FW_offline.json``) back, in bulk.

    Returns
    -------
    list of int
        The Firework ids recovered.
    """
    from fireworks import FWAction, Launch
    from fireworks.utilities.fw_serializers import reconstitute_dates

    plain = {lid: data for lid, data in finished.items() if _plain_completion(data["fwaction"])}
    recovered = []
    for lid in finished.keys() - plain.keys():
        lp.recover_offline(lid)
        recovered.append(lp.launches.find_one({"launch_id": lid}, {"fw_id": 1})["fw_id"])
    ids = sorted(plain)
    launch_ops, fw_ops, states = [], [], {}
    children: set[int] = set()
    now = _now()
    for start in range(0, len(ids), CHUNK):
        for doc in lp.launches.find({"launch_id": {"$in": ids[start : start + CHUNK]}}):
            data = plain[doc["launch_id"]]
            launch = Launch.from_dict(doc)
            launch.state = "RUNNING"
            launch.state = data["state"]
            launch.action = FWAction.from_dict(data["fwaction"])
            for s in launch.state_history:
                if s["state"] == "RUNNING":
                    s["created_on"] = reconstitute_dates(data["started_on"])
                elif s["state"] == data["state"]:
                    s["created_on"] = reconstitute_dates(data["completed_on"])
            launch_ops.append(ReplaceOne({"launch_id": launch.launch_id}, launch.to_db_dict()))
            fw_ops.append(
                UpdateOne(
                    {"fw_id": launch.fw_id}, {"$set": {"state": data["state"], "updated_on": now}}
                )
            )
            states[launch.fw_id] = data["state"]
    _bulk(lp.launches, launch_ops)
    _bulk(lp.fireworks, fw_ops)
    if states:
        wf = lp.workflows.find_one({"nodes": next(iter(states))}, {"links": 1})
        for parent in states:
            children.update(wf["links"].get(str(parent), []))
    _set_workflow_states(lp, states, children)
    lp.offline_runs.update_many(
        {"launch_id": {"$in": ids}}, {"$set": {"completed": True, "updated_on": now.isoformat()}}
    )
    return recovered + sorted(states)
