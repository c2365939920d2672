"""Workflow steps: small typed functions that a workflow manager runs.

Each step takes plain JSON-serialisable arguments (so any manager can carry them), does
its work through the engines and the store, and returns a JSON-serialisable summary.
:data:`STEPS` is the registry the FireWorks adapter dispatches on.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pymatgen.core import Composition, Structure

from matdx.core.errors import DeadlineReachedError
from matdx.engines.registry import get_engine
from matdx.workflows.context import open_store
from matdx.workflows.sinks import open_sink


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


def prescreen_batch(
    campaign: str,
    settings: dict[str, Any],
    settings_hash: str,
    items: list[dict[str, Any]],
    governance: dict[str, Any],
    fw_id: int | None = None,
) -> dict[str, Any]:
    """Relax a batch of materials with the pre-screen engine and keep each result.

    Results go to the store, or with ``MATDX_OFFLINE=1`` to the launch directory (see
    :mod:`matdx.workflows.sinks`). Materials that already have a completed calculation with
    these settings are skipped, so a re-run batch resumes where a killed one stopped.

    Parameters
    ----------
    campaign
        Campaign name.
    settings
        ``{"engine": name, **engine options}``.
    settings_hash
        Hash of ``settings``.
    items
        ``[{"material_id": ...}, ...]``; the structures are the stored materials' (an
        item may also carry its own ``"structure"``, as pymatgen JSON text or dict).
    governance
        Tier and rights fields stamped on each calculation.
    fw_id
        Firework id, for provenance.

    Returns
    -------
    dict
        Counts of completed, failed and skipped materials.
    """
    options = {k: v for k, v in settings.items() if k != "engine"}
    relax = get_engine(settings["engine"]).relaxer()
    return run_items(
        campaign,
        settings,
        settings_hash,
        items,
        governance,
        lambda structure, _item: relax(structure, **options),
        task="relax",
        fw_id=fw_id,
        use_deadline=False,  # short tasks: the farm starts none it cannot finish
    )


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
        As :func:`prescreen_batch`; an item may carry ``input_calc_id`` (provenance).
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


GOVERNANCE_KEYS = ("tier", "owner", "groups", "rights", "export_control")


def derived_access(
    calcs: dict[str, dict[str, Any]], mats: dict[str, dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Governance of every calculation a chemical system's hull is built from.

    A hull (and formation energy) in system A-B-C uses the calculations of A-B-C and of all
    its subsystems; a reader must be allowed to see all of them to see the derived values.
    """
    by_sys: dict[str, set[tuple[str, str, tuple[str, ...]]]] = {}
    for mid, c in calcs.items():
        key = (c.get("tier", "open"), c.get("owner", ""), tuple(c.get("groups") or ()))
        by_sys.setdefault(mats[mid]["chemsys"], set()).add(key)
    out = {}
    for system in by_sys:
        els = set(system.split("-"))
        keys = set().union(*(v for k, v in by_sys.items() if set(k.split("-")) <= els))
        out[system] = [{"tier": t, "owner": o, "groups": list(g)} for t, o, g in sorted(keys)]
    return out


def analyse_campaign(
    campaign: str, settings_hash: str, governance: dict[str, Any]
) -> dict[str, Any]:
    """Compute formation energies and energies above hull over a campaign and store them.

    Parameters
    ----------
    campaign
        Campaign name.
    settings_hash
        Settings of the calculations to use (elemental references come from the same).
    governance
        Tier and rights of the campaign (a summary takes those of the calculation it
        summarises, which may come from another campaign).

    Returns
    -------
    dict
        Number of materials summarised and of stable ones.
    """
    # imported here: pymatgen's phase diagram module (and matplotlib with it) takes half a
    # second to import, which every farm worker would pay without running an analysis
    from matdx.analysis.thermo import EnergyPoint, thermodynamics

    store, backend = open_store()
    ids = store.material_ids(campaign)
    mats = store.materials(ids)
    calcs = {c["material_id"]: c for c in store.calculations(ids, settings_hash)}
    points = [
        EnergyPoint(mid, Composition(mats[mid]["formula_pretty"]), c["output"]["energy_per_atom"])
        for mid, c in calcs.items()
    ]
    thermo = thermodynamics(points)
    access = derived_access({mid: c for mid, c in calcs.items()}, mats)
    rows = []
    for mid, c in calcs.items():
        m, out, t = mats[mid], c["output"], thermo[mid]
        rows.append(
            {
                "material_id": mid,
                "formula_pretty": m["formula_pretty"],
                "chemsys": m["chemsys"],
                "elements": m["elements"],
                "nelements": m["nelements"],
                "nsites": m["nsites"],
                "symmetry": {
                    "number": out.get("spacegroup_number"),
                    "symbol": out.get("spacegroup_symbol"),
                    "symprec": 0.01,
                },
                "energy_per_atom": out["energy_per_atom"],
                "formation_energy_per_atom": t.formation_energy_per_atom,
                "energy_above_hull": t.energy_above_hull,
                "is_stable": t.is_stable,
                "decomposes_to": t.decomposes_to,
                "volume_per_atom": out["volume_per_atom"],
                "method": {
                    "engine": c["engine"],
                    "settings_hash": settings_hash,
                    "units": {"energy": "eV/atom", "volume": "Å³/atom"},
                },
                "derived_access": access[m["chemsys"]],
                **{k: c.get(k, governance.get(k)) for k in GOVERNANCE_KEYS},
            }
        )
    store.write_summaries(campaign, rows)
    backend.flush()
    return {"summarised": len(rows), "stable": sum(bool(r["is_stable"]) for r in rows)}


def _chain(name: str) -> Callable[..., dict[str, Any]]:
    def run(**kwargs: Any) -> dict[str, Any]:
        from matdx.workflows import chain

        return getattr(chain, name)(**kwargs)  # type: ignore[no-any-return]

    run.__name__ = name
    return run


STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    "prescreen": prescreen_batch,
    "analyse": analyse_campaign,
    "stage": _chain("stage_step"),
    "compute": _chain("compute_batch"),
    "analyse_step": _chain("analyse_step"),
}
"""Workflow steps by name; ``prescreen`` and ``compute`` run calculations (any node), the
others read the database (quick; run where it is reachable)."""

COMPUTE_STEPS = ("prescreen", "compute")
