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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from matdx.core.errors import DeadlineReachedError
from matdx.engines.registry import ENGINES, get_engine
from matdx.schemas.results import CalcResult
from matdx.workflows.pool import ComputePool, active_pool
from matdx.workflows.sinks import Sink, open_sink

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
    resumable = bool(step["resumable"])

    def workdir(item: dict[str, Any]) -> Path | None:
        return _workdir(campaign, step["name"], item["material_id"]) if resumable else None

    batched = _batched(step)

    counts = run_items(
        campaign,
        step["settings"],
        step["settings_hash"],
        items,
        governance,
        partial(compute_one, campaign, step),
        task=step["task"],
        fw_id=fw_id,
        use_deadline=resumable,
        workdir=workdir if resumable else None,
        compute_many=partial(compute_many, step) if batched else None,
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


def compute_one(
    campaign: str, step: dict[str, Any], structure: Structure, item: dict[str, Any]
) -> CalcResult:
    """One material's calculation in one step (what :func:`compute_batch` runs per item).

    A module-level function, so that a worker process of
    :mod:`matdx.workflows.pool` can run it.
    """
    resumable = bool(step["resumable"])
    where = _workdir(campaign, step["name"], item["material_id"]) if resumable else None
    options = dict(step["options"])
    if step["task"] == "phonons":
        return _phonon_calculation(step["engine"], options, structure, where)
    until = deadline() if resumable else None
    return get_engine(step["engine"]).calculate(structure, step["task"], options, where, until)


def _batched(step: dict[str, Any]) -> bool:
    """Whether a step's batch computes together (:meth:`Engine.calculate_many`)."""
    return (
        not step["resumable"]
        and step["task"] in ("relax", "vc-relax", "static")
        and ENGINES[step["engine"]].batched
    )


def compute_many(step: dict[str, Any], structures: list[Structure]) -> list[Any]:
    """A batch of materials' calculations in one step, computed together.

    For engines whose registry entry says ``batched`` (a machine-learned potential
    evaluating many structures in one forward pass).
    """
    engine = get_engine(step["engine"])
    return engine.calculate_many(structures, step["task"], dict(step["options"]))


@dataclass
class Outcome:
    """What one attempt at a calculation gave: its output or the reason it failed."""

    output: dict[str, Any] | None
    error: str | None
    started: datetime
    ended: datetime
    wall_time_s: float
    pid: int


def attempt(
    compute: Callable[[Structure, dict[str, Any]], Any],
    structure: Structure | dict[str, Any] | str | None,
    item: dict[str, Any],
) -> Outcome:
    """Run ``compute`` on one item, in this process or a worker's.

    Raises
    ------
    DeadlineReachedError
        As raised by the engine (the caller requeues the item).
    """
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    output, error = None, None
    try:
        if structure is None:
            raise LookupError(f"material {item['material_id']} is not in the store")
        output = compute(_structure(structure), item).model_dump()
    except DeadlineReachedError:
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
    wall = time.perf_counter() - t0
    return Outcome(output, error, started, datetime.now(UTC), wall, os.getpid())


def attempt_many(
    compute: Callable[[list[Structure]], list[Any]],
    structures: list[Structure | dict[str, Any] | str | None],
    items: list[dict[str, Any]],
) -> list[Outcome]:
    """Run ``compute`` on many items together; each item's wall time is an equal share."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    present = [i for i, s in enumerate(structures) if s is not None]
    results: list[Any]
    try:
        results = compute([_structure(structures[i]) for i in present])  # type: ignore[arg-type]
    except Exception as exc:
        results = [exc] * len(present)
    by_index = dict(zip(present, results, strict=True))
    ended = datetime.now(UTC)
    wall = (time.perf_counter() - t0) / max(len(items), 1)
    out = []
    for i, item in enumerate(items):
        result = by_index.get(i, LookupError(f"material {item['material_id']} is not in the store"))
        if isinstance(result, Exception):
            error = f"{type(result).__name__}: {result}"[:2000]
            out.append(Outcome(None, error, started, ended, wall, os.getpid()))
        else:
            out.append(Outcome(result.model_dump(), None, started, ended, wall, os.getpid()))
    return out


def prefetch_batch(
    campaign: str,
    step: dict[str, Any] | str,
    items: list[dict[str, Any]],
    governance: dict[str, Any],
    fw_id: int | None = None,
    planned: Mapping[tuple[str, str], Any] | None = None,
) -> None:
    """Hand a batch's calculations to the worker pool before the batch runs.

    Takes :func:`compute_batch`'s arguments. Outside a :func:`~matdx.workflows.pool.
    compute_pool` block, and for resumable steps (which run one at a time, each engine
    with its own parallelism), nothing happens; the batch computes when it runs.

    ``planned`` maps ``(settings_hash, material_id)`` to the input structure of each
    material this process planned as new with those settings (not computed before, and
    stored as generated): those are handed out without asking the store whether they are
    done or for their structure (two collection scans a batch on FerretDB). The batch
    still looks up what is done when it runs.
    """
    pool = active_pool()
    step = plan_entry(step)
    if pool is None or step["resumable"] or _batched(step):
        return
    sink = open_sink()
    key = step["settings_hash"]
    planned = planned or {}
    known = [{**it, "structure": planned[key, it["material_id"]]}
             for it in items if (key, it["material_id"]) in planned]
    rest = [it for it in items if (key, it["material_id"]) not in planned]
    done = sink.completed([it["material_id"] for it in rest], key) if rest else set()
    todo = known + [it for it in rest if it["material_id"] not in done]
    _submit(pool, sink, partial(compute_one, campaign, step), key, todo)


def _submit(
    pool: ComputePool,
    sink: Sink,
    compute: Callable[[Structure, dict[str, Any]], Any],
    settings_hash: str,
    items: list[dict[str, Any]],
) -> None:
    """Submit the items the pool does not hold yet, with their structures."""
    new = [it for it in items if not pool.holds((settings_hash, it["material_id"]))]
    stored = sink.structures([it["material_id"] for it in new if "structure" not in it])
    for it in new:
        structure = it.get("structure") or stored.get(it["material_id"])
        pool.submit((settings_hash, it["material_id"]), attempt, compute, structure, it)


def _take(pool: ComputePool, key: tuple[str, str]) -> Outcome:
    """The pool's outcome of ``key``; a failure if the worker died computing it."""
    from concurrent.futures.process import BrokenProcessPool

    now = datetime.now(UTC)
    try:
        return pool.take(key)
    except BrokenProcessPool as exc:
        error = f"WorkerDied: the worker process computing it ended abruptly ({exc})"
        return Outcome(None, error[:2000], now, datetime.now(UTC), 0.0, -1)


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
    compute_many: Callable[[list[Structure]], list[Any]] | None = None,
) -> dict[str, Any]:
    """Compute each item not yet done with these settings and keep its record.

    Within a :func:`~matdx.workflows.pool.compute_pool` block, calculations without a
    deadline run in the pool's worker processes (``compute`` must then be picklable, a
    module-level function or a ``partial`` of one), each perhaps already handed out by
    :func:`prefetch_batch`; records are built and written here, in the same order.

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
    compute_many
        ``compute_many(structures)`` → one result or exception per structure: computes
        the items not yet done together, in this process (instead of ``compute`` one at
        a time; no deadline).

    Returns
    -------
    dict
        Counts of completed, failed and skipped materials, and ``unfinished``: the ids of
        those not computed because the job's deadline (``MATDX_DEADLINE``) came first.
    """
    sink = open_sink()
    pool = None if use_deadline or compute_many is not None else active_pool()
    # what the pool holds was found not done when it was handed out (prefetch_batch)
    held = {
        it["material_id"]
        for it in items
        if pool is not None and pool.holds((settings_hash, it["material_id"]))
    }
    ask = [it["material_id"] for it in items if it["material_id"] not in held]
    done = sink.completed(ask, settings_hash) if ask else set()
    batch: dict[str, Outcome] = {}
    if pool is not None:
        _submit(pool, sink, compute, settings_hash,
                [it for it in items if it["material_id"] not in done])
        stored: dict[str, Any] = {}
    else:
        by_id = [it["material_id"] for it in items if "structure" not in it]
        stored = sink.structures([m for m in by_id if m not in done])
    if compute_many is not None:
        todo = [it for it in items if it["material_id"] not in done]
        structures = [it.get("structure") or stored.get(it["material_id"]) for it in todo]
        outcomes = attempt_many(compute_many, structures, todo)
        batch = {it["material_id"]: o for it, o in zip(todo, outcomes, strict=True)}
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
        try:
            if pool is not None:
                outcome = _take(pool, (settings_hash, it["material_id"]))
            elif compute_many is not None:
                outcome = batch[it["material_id"]]
            elif use_deadline and _past_deadline():
                raise DeadlineReachedError("the job's deadline has passed")
            else:
                structure = it.get("structure") or stored.get(it["material_id"])
                outcome = attempt(compute, structure, it)
        except DeadlineReachedError:
            # stopped cleanly, resumable in its directory: it and the rest go to a new batch
            counts["unfinished"] = [
                x["material_id"] for x in items[index:] if x["material_id"] not in done
            ]
            break
        record: dict[str, Any] = {
            "material_id": it["material_id"],
            "campaign": campaign,
            "engine": settings["engine"],
            "task": task,
            "settings": settings,
            "settings_hash": settings_hash,
            **governance,
        }
        if outcome.error is None:
            record.update(status="completed", output=outcome.output)
            counts["completed"] += 1
        else:
            record.update(status="failed", error=outcome.error)
            counts["failed"] += 1
            if len(counts.setdefault("errors", [])) < 3:
                counts["errors"].append(f"{it['material_id']}: {outcome.error[:300]}")
        record["provenance"] = {
            "matdx_version": versions["matdx"],
            "code_versions": versions,
            "host": host,
            "machine": machine,
            "pid": outcome.pid,
            "launch_dir": launch_dir,
            "work_dir": str(workdir(it)) if workdir else None,
            "fw_id": fw_id,
            "started_at": outcome.started.isoformat(),
            "ended_at": outcome.ended.isoformat(),
            "wall_time_s": outcome.wall_time_s,
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


__all__ = [
    "Outcome",
    "attempt",
    "compute_batch",
    "compute_one",
    "deadline",
    "plan_entry",
    "prefetch_batch",
    "run_items",
]
