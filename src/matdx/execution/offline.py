"""Offline mode: compute nodes that cannot reach the database.

1. On the login node, :func:`reserve_job` claims READY Fireworks and reserves each into a
   launch directory of a job directory on the shared file system (FireWorks' offline
   mechanism: ``FW.json`` + ``FW_offline.json``).
2. The batch job runs :func:`farm_offline` under MPI: ranks run the reserved Fireworks
   from their directories with ``MATDX_OFFLINE=1``; results are appended to
   ``matdx_records.jsonl`` and a heartbeat file is rewritten while a task runs.
3. Back on the login node, :func:`sync` ingests the records into the store (idempotent),
   lets FireWorks recover each finished offline launch (``recover_offline``), reruns the
   launches whose heartbeat went stale without finishing (a job killed at its walltime),
   and runs the campaign's analysis when every batch is done.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matdx.schemas.names import CAMPAIGN, DB_KINDS, KIND, NODE_KINDS, SPEC, spec_key
from matdx.workflows.coordination import FILE_BEAT, claim_many
from matdx.workflows.sinks import OFFLINE_ENV, RECORDS_FILE, read_records

RESERVE_CHUNK = 1000
"""Fireworks claimed and reserved per round of :func:`reserve_job`."""
SYNC_CHUNK = 5000
"""Records ingested per write by :func:`sync`."""


def pending_dirs(job_dir: Path) -> list[Path]:
    """Launch directories of ``job_dir`` that hold a reserved, unfinished Firework."""
    out = []
    for d in sorted(job_dir.glob("launcher_*")):
        offline = d / "FW_offline.json"
        if (
            (d / "FW.json").exists()
            and offline.exists()
            and "fwaction" not in json.loads(offline.read_text() or "{}")
        ):
            out.append(d)
    return out


def reserve_job(lp: Any, store: Any, campaign: str, job_dir: Path, n_tasks: int) -> list[Path]:
    """Claim and reserve up to ``n_tasks`` READY Fireworks of ``campaign`` into ``job_dir``.

    Each launch directory also gets the input structures of its batch, from ``store``
    (the compute nodes cannot read it).

    Returns
    -------
    list of Path
        The launch directories written.
    """
    from matdx.workflows import fireworks_adapter as fwa
    from matdx.workflows.fw_bulk import reserve_many
    from matdx.workflows.sinks import write_inputs

    owner = f"{socket.gethostname()}:{os.getpid()}:{job_dir.name}"
    dirs: list[Path] = []
    while len(dirs) < n_tasks:
        fw_ids = claim_many(
            lp, campaign, owner, min(n_tasks - len(dirs), RESERVE_CHUNK), kinds=NODE_KINDS
        )
        if not fw_ids:
            break
        where = {fw_id: job_dir / f"launcher_{fw_id:06d}" for fw_id in fw_ids}
        reserved = reserve_many(lp, fw_ids, fwa.campaign_fworker(campaign), where)
        wanted = {fw_id: _ids_without_structure(where[fw_id] / "FW.json") for fw_id in reserved}
        held = store.structures([m for ids in wanted.values() for m in ids])
        for fw_id, ids in wanted.items():
            write_inputs(where[fw_id], {m: held[m] for m in ids if m in held})
            dirs.append(where[fw_id])
    return dirs


def _ids_without_structure(fw_json: Path) -> list[str]:
    """Materials of a reserved Firework whose structures the batch does not carry."""
    spec = json.loads(fw_json.read_text())
    return [
        it["material_id"]
        for task in spec.get("spec", {}).get("_tasks", [])
        for it in task.get("kwargs", {}).get("items", [])
        if "structure" not in it
    ]


def run_offline_dir(launch_dir: str) -> tuple[str, str]:
    """Worker side: run the Firework reserved in ``launch_dir``; return (dir, state)."""
    os.environ[OFFLINE_ENV] = "1"
    from matdx.workflows import fireworks_adapter as fwa

    fwa.run_offline(Path(launch_dir))
    data = json.loads((Path(launch_dir) / "FW_offline.json").read_text())
    return launch_dir, data.get("state", "UNKNOWN")


def farm_offline(
    job_dir: Path,
    walltime_s: float | None,
    task_estimate_s: float,
    margin_s: float | None = None,
    root_works: bool = True,
) -> dict[str, Any] | None:
    """Run the reserved Fireworks of ``job_dir`` over the MPI ranks.

    Rank 0 hands them out and, with ``root_works``, runs them too (see
    :func:`matdx.execution.farm.farm_executors`).

    Returns
    -------
    dict or None
        Final states by directory on rank 0, ``None`` on workers.
    """
    from mpi4py import MPI

    from matdx.execution.farm import drive, farm_executors, job_clock

    start = time.monotonic()
    time_left, deadline = job_clock(walltime_s, margin_s, start)
    comm = MPI.COMM_WORLD
    with farm_executors(comm, root_works) as (executor, local):
        if executor is None:
            return None
        names = [str(d) for d in pending_dirs(job_dir)]
        queue = list(range(len(names)))

        def claim() -> int | None:
            return queue.pop(0) if queue else None

        def submit(ex: Any, i: int) -> Any:
            return ex.submit(_run_indexed, i, names[i], deadline)

        ran = drive(
            executor,
            max(comm.Get_size() - 1, 1),
            claim,
            submit,
            time_left,
            task_estimate_s,
            local=local,
        )
        return {
            "states": {names[i]: s for i, s in ran.states.items()},
            "stopped_for_walltime": ran.stopped,
            "elapsed_s": round(time.monotonic() - start, 1),
        }


def _run_indexed(i: int, launch_dir: str, deadline: float | None = None) -> tuple[int, str]:
    from matdx.execution.farm import set_deadline

    set_deadline(deadline)
    return i, run_offline_dir(launch_dir)[1]


def _by_key(
    collection: Any, key: str, values: list[int], projection: dict[str, Any]
) -> dict[int, dict[str, Any]]:
    """Documents whose ``key`` is one of ``values``, by that value (``$in`` queries)."""
    out = {}
    for start in range(0, len(values), 10_000):
        for d in collection.find({key: {"$in": values[start : start + 10_000]}}, projection):
            out[d[key]] = d
    return out


@dataclass
class SyncReport:
    """What ``matdx sync`` did."""

    ingested: int = 0
    recovered: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    analysed: bool = False


def _beat_age(launch_dir: Path) -> float | None:
    path = launch_dir / FILE_BEAT
    if not path.exists():
        return None
    try:
        return time.time() - float(json.loads(path.read_text())["updated_on"])
    except (ValueError, KeyError, OSError):
        return None


def sync(
    lp: Any,
    store: Any,
    campaign: str,
    stale_after_s: float = 60.0,
    run_dir: Path | None = None,
    db_uri: str | None = None,
) -> SyncReport:
    """Bring a campaign's offline results into the LaunchPad and the store.

    Parameters
    ----------
    lp
        LaunchPad.
    store
        Property store.
    campaign
        Campaign name.
    stale_after_s
        A started offline run whose heartbeat file is older than this, with no result,
        is lost (its job ended early) and is rerun.
    run_dir
        Directory for the analysis launch.
    db_uri
        Database the analysis step writes to (default: the process default).

    Returns
    -------
    SyncReport
        Counts and ids.
    """
    from matdx.workflows import fireworks_adapter as fwa
    from matdx.workflows.fw_bulk import recover_many

    report = SyncReport()
    runs = list(lp.offline_runs.find({"completed": False, "deprecated": {"$ne": True}}))
    fws = _by_key(
        lp.fireworks, "fw_id", [r["fw_id"] for r in runs], {"fw_id": 1, spec_key(CAMPAIGN): 1}
    )
    dirs = {
        d["launch_id"]: Path(d["launch_dir"])
        for d in _by_key(
            lp.launches,
            "launch_id",
            [r["launch_id"] for r in runs],
            {"launch_id": 1, "launch_dir": 1},
        ).values()
    }
    pending: list[dict[str, Any]] = []
    finished: dict[int, dict[str, Any]] = {}
    for run in runs:
        fw = fws.get(run["fw_id"])
        if fw is None or fw["spec"][SPEC][CAMPAIGN] != campaign:
            continue
        ldir = dirs[run["launch_id"]]
        pending += read_records(ldir / RECORDS_FILE)
        if len(pending) >= SYNC_CHUNK:
            report.ingested += store.write_calculations(pending)
            pending = []
        offline = json.loads((ldir / "FW_offline.json").read_text() or "{}")
        if "fwaction" in offline:
            finished[run["launch_id"]] = offline
            continue
        age = _beat_age(ldir)
        started = "started_on" in offline
        if started and (age is None or age > stale_after_s):
            lp.offline_runs.update_one(
                {"launch_id": run["launch_id"]}, {"$set": {"deprecated": True}}
            )
            lp.launches.update_one({"launch_id": run["launch_id"]}, {"$set": {"state": "FIZZLED"}})
            (ldir / "FW.json").rename(ldir / "FW.json.lost")  # a late job must not run it
            lp.rerun_fw(run["fw_id"])
            report.lost.append(run["fw_id"])
        else:
            report.running.append(run["fw_id"])
    # every record is stored before any launch is recovered
    report.ingested += store.write_calculations(pending) if pending else 0
    report.recovered = recover_many(lp, finished)
    ready = lp.fireworks.count_documents(
        {
            spec_key(CAMPAIGN): campaign,
            spec_key(KIND): {"$in": list(DB_KINDS)},
            "state": "READY",
        }
    )
    if ready and not report.running:
        # the analysis, and the selection of the next step's batches (for the next job)
        from matdx.core.settings import get_settings
        from matdx.workflows.context import default_db

        target = run_dir or get_settings().runs_dir / campaign
        if db_uri is None:
            fwa.run_fireworks(lp, campaign, target, kinds=DB_KINDS)
        else:
            with default_db(db_uri):
                fwa.run_fireworks(lp, campaign, target, kinds=DB_KINDS)
        report.analysed = True
    return report
