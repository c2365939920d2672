"""One compute path for every step of a campaign, the pre-screen (step 0) included.

:func:`compute_batch` runs a step's task on a batch of materials through the engine
contract (:class:`~matdx.engines.base.Engine`); :func:`run_items` keeps a record of each
calculation, completed or failed, with its provenance. Results go to the store, or with
``MATDX_OFFLINE=1`` to the launch directory (see :mod:`matdx.workflows.sinks`).
Materials that already have a completed calculation with the step's settings are skipped,
so a re-run batch resumes where a killed one stopped.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from matdx.core.errors import DeadlineReachedError
from matdx.engines.registry import get_engine
from matdx.schemas.results import CalcResult
from matdx.workflows.sinks import open_sink

PHONON_KEYS = ("supercell", "displacement", "mesh")
"""Settings of a phonon step that go to phonopy; the others go to the force engine."""


def plan_entry(step: dict[str, Any] | str) -> dict[str, Any]:
    """A step of :meth:`~matdx.workflows.campaign.LoadedCampaign.step_plan`, from a Firework.

    Fireworks carry the step as JSON text: FerretDB stores no nested arrays.
    """
    return json.loads(step) if isinstance(step, str) else step


@cache
def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("matdx", "ase", "pymatgen", "spglib", "fireworks"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = "unknown"
    return out


def _structure(obj: Structure | dict[str, Any] | str) -> Structure:
    # batches carry JSON text; a Structure or its dict (from other callers) also works
    if isinstance(obj, Structure):
        return obj
    return Structure.from_str(obj, fmt="json") if isinstance(obj, str) else Structure.from_dict(obj)


def compute_batch(
    campaign: str,
    step: dict[str, Any] | str,
    items: list[dict[str, Any]],
    governance: dict[str, Any],
    fw_id: int | None = None,
) -> dict[str, Any]:
    """Run a step's task on a batch of materials and keep each result.

    A resumable step (every step after the pre-screen) runs each material in its own
    directory, ``<runs>/<campaign>/steps/<step>/<id>``, the same in every launch: an engine
    stopped at the job's deadline continues there in the next job, where a new batch of the
    unfinished materials (returned as ``detour``) runs before the step's analysis. The
    pre-screen's quick relaxations need no directory, and the farm starts none it cannot
    finish. Failures are recorded with their reason and the batch goes on.

    Parameters
    ----------
    campaign
        Campaign name.
    step
        One entry of :meth:`~matdx.workflows.campaign.LoadedCampaign.step_plan` (or its
        JSON text).
    items
        ``[{"material_id": ...}, ...]``: the structures are the stored materials' unless
        an item carries its own ``"structure"`` (pymatgen JSON text or dict, with the
        ``input_calc_id`` it comes from).
    governance
        Tier and rights fields stamped on each calculation.
    fw_id
        Firework id, for provenance.

    Returns
    -------
    dict
        Counts of completed, failed, skipped and requeued materials.
    """
    step = plan_entry(step)
    engine, task, options = get_engine(step["engine"]), step["task"], dict(step["options"])
    resumable = bool(step["resumable"])

    def workdir(item: dict[str, Any]) -> Path | None:
        return _workdir(campaign, step["name"], item["material_id"]) if resumable else None

    def compute(structure: Structure, item: dict[str, Any]) -> CalcResult:
        where, until = workdir(item), deadline() if resumable else None
        if task == "phonons":
            return _phonon_calculation(step["engine"], options, structure, where)
        return engine.calculate(structure, task, options, where, until)

    counts = run_items(
        campaign,
        step["settings"],
        step["settings_hash"],
        items,
        governance,
        compute,
        task=task,
        fw_id=fw_id,
        use_deadline=resumable,
        workdir=workdir if resumable else None,
    )
    unfinished = set(counts.pop("unfinished", []))
    if unfinished:
        # a new batch, before the step's analysis, for the next job to continue
        rest = [it for it in items if it["material_id"] in unfinished]
        counts["requeued"] = len(rest)
        counts["step"] = step["name"]
        batch = {"campaign": campaign, "step": json.dumps(step), "items": rest,
                 "governance": governance}
        counts["detour"] = {"batches": [batch], "analysis": None}
    return counts


def run_items(
    campaign: str,
    settings: dict[str, Any],
    settings_hash: str,
    items: list[dict[str, Any]],
    governance: dict[str, Any],
    compute: Callable[[Structure, dict[str, Any]], Any],
    task: str,
    fw_id: int | None = None,
    use_deadline: bool = True,
    workdir: Callable[[dict[str, Any]], Path] | None = None,
) -> dict[str, Any]:
    """Compute each item not yet done with these settings and keep its record.

    Parameters
    ----------
    campaign, settings, settings_hash, items, governance, fw_id
        As :func:`compute_batch`; an item may carry ``input_calc_id`` (provenance).
    compute
        ``compute(structure, item)`` → :class:`~matdx.schemas.results.CalcResult`.
    task
        Task name stored with each calculation.
    use_deadline
        Stop at the job's deadline, leaving the rest ``unfinished`` (the caller requeues
        them).
    workdir
        ``workdir(item)`` → the directory the calculation's files are in, kept in its
        provenance as ``work_dir``.

    Returns
    -------
    dict
        Counts of completed, failed and skipped materials, and ``unfinished``: the ids of
        those not computed because the job's deadline (``MATDX_DEADLINE``) came first.
    """
    sink = open_sink()
    done = sink.completed([it["material_id"] for it in items], settings_hash)
    by_id = [it["material_id"] for it in items if "structure" not in it]
    stored = sink.structures([m for m in by_id if m not in done])
    versions = dict(_versions())
    host = socket.gethostname()
    machine = platform.machine()  # the compute node's architecture (x86_64, aarch64)
    launch_dir = os.getcwd()
    pending: list[dict[str, Any]] = []
    counts: dict[str, Any] = {"completed": 0, "failed": 0, "skipped": len(done)}
    last_flush = time.monotonic()
    for index, it in enumerate(items):
        if it["material_id"] in done:
            continue
        if use_deadline and _past_deadline():
            counts["unfinished"] = [
                x["material_id"] for x in items[index:] if x["material_id"] not in done
            ]
            break
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        record: dict[str, Any] = {
            "material_id": it["material_id"],
            "campaign": campaign,
            "engine": settings["engine"],
            "task": task,
            "settings": settings,
            "settings_hash": settings_hash,
            **governance,
        }
        try:
            structure = it.get("structure") or stored.get(it["material_id"])
            if structure is None:
                raise LookupError(f"material {it['material_id']} is not in the store")
            result = compute(_structure(structure), it)
            record.update(status="completed", output=result.model_dump())
            counts["completed"] += 1
        except DeadlineReachedError:
            # stopped cleanly, resumable in its directory: it and the rest go to a new batch
            counts["unfinished"] = [
                x["material_id"] for x in items[index:] if x["material_id"] not in done
            ]
            break
        except Exception as exc:
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            counts["failed"] += 1
            if len(counts.setdefault("errors", [])) < 3:
                counts["errors"].append(f"{it['material_id']}: {record['error'][:300]}")
        ended = datetime.now(UTC)
        record["provenance"] = {
            "matdx_version": versions["matdx"],
            "code_versions": versions,
            "host": host,
            "machine": machine,
            "launch_dir": launch_dir,
            "work_dir": str(workdir(it)) if workdir else None,
            "fw_id": fw_id,
            "started_at": started.isoformat(),
            "ended_at": ended.isoformat(),
            "wall_time_s": time.perf_counter() - t0,
        }
        if it.get("input_calc_id"):
            record["provenance"]["input_calc_id"] = it["input_calc_id"]
        pending.append(record)
        if time.monotonic() - last_flush >= sink.flush_every_s:
            sink.write(pending)
            pending, last_flush = [], time.monotonic()
    sink.write(pending)
    sink.close()
    return counts


def deadline() -> float | None:
    """The job's deadline (epoch seconds) for this process's calculations, if any."""
    value = os.environ.get("MATDX_DEADLINE")
    return float(value) if value else None


def _past_deadline() -> bool:
    d = deadline()
    return d is not None and time.time() >= d


def _workdir(campaign: str, step: str, material_id: str) -> Path:
    """Directory of one material's calculation in one step, the same in every launch.

    A run stopped at a job's deadline (or killed) continues from what it left there.
    """
    from matdx.core.settings import get_settings

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", material_id)
    return get_settings().runs_dir / campaign / "steps" / step / safe


def _phonon_calculation(
    engine: str,
    options: dict[str, Any],
    structure: Structure,
    workdir: Path | None,
) -> CalcResult:
    """Phonons by phonopy, forces from the engine's static task (each a short run)."""
    from matdx.analysis.phonons import forces_from_engine, phonons

    calc = get_engine(engine)
    root = workdir or Path(".")
    force_opts = {k: v for k, v in options.items() if k not in PHONON_KEYS}
    base = calc.calculate(structure, "static", force_opts, root / "undisplaced")
    counter = iter(range(1_000_000))
    result = phonons(
        structure,
        forces_from_engine(
            lambda s: calc.calculate(s, "static", force_opts, root / f"disp-{next(counter):03d}")
        ),
        supercell_matrix=options.get("supercell", 2),
        displacement=options.get("displacement", 0.01),
        mesh=options.get("mesh", 50.0),
    )
    files = {k: str(v) for k, v in result.save(root).items()}
    extra = {**base.extra, "phonons": result.summary.model_dump(mode="json"), "phonon_files": files}
    return base.model_copy(update={"task": "phonons", "extra": extra})


__all__ = ["compute_batch", "deadline", "plan_entry", "run_items"]
