"""Campaign steps after the pre-screen: select, compute, analyse.

A campaign's ``steps:`` chain calculations (e.g. EMT pre-screen → QE vc-relax → QE static →
phonons). Each step is three kinds of workflow step:

1. :func:`stage_step` (quick, needs the database) selects materials from the results of the
   step's input step (:func:`select_materials`), takes their final structures from the
   stored calculations of that step, and returns the batches to compute. The workflow
   manager inserts them, with an :func:`analyse_step` after them, before the next stage.
2. :func:`compute_batch` runs the engine's task on each material of a batch (any node;
   with ``MATDX_OFFLINE=1`` results go to the launch directory), skipping those already
   computed with the same settings, so that re-runs resume.
3. :func:`analyse_step` computes the step's own formation energies and hull from its
   calculations (elemental references are selected along, see
   :class:`~matdx.schemas.campaign.Selection`) and stores them under
   ``steps.<name>`` of each material's summary.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pymatgen.core import Composition, Structure

from matdx.analysis.thermo import EnergyPoint, thermodynamics
from matdx.engines.registry import get_engine
from matdx.schemas.results import CalcResult
from matdx.workflows.context import open_store

PHONON_KEYS = ("supercell", "displacement", "mesh")
"""Settings of a phonon step that go to phonopy; the others go to the force engine."""

_ENERGY_TASKS = ("relax", "vc-relax", "static", "phonons")
"""Tasks whose energy is a ground-state energy (so a hull makes sense)."""


def _step(step: dict[str, Any] | str) -> dict[str, Any]:
    # Fireworks carry the step as JSON text: FerretDB stores no nested arrays
    return json.loads(step) if isinstance(step, str) else step


def _block_value(row: dict[str, Any], source: str, key: str) -> Any:
    if source == "prescreen":
        return row.get(key)
    return ((row.get("steps") or {}).get(source) or {}).get(key)


def _order(row: dict[str, Any], source: str) -> tuple[bool, float, float, str]:
    """Lowest energy above hull first, then most negative formation energy."""
    e_hull = _block_value(row, source, "energy_above_hull")
    e_form = _block_value(row, source, "formation_energy_per_atom")
    return (
        e_hull is None,
        float(e_hull) if e_hull is not None else 0.0,
        float(e_form) if e_form is not None else 0.0,
        row["material_id"],
    )


def select_materials(rows: list[dict[str, Any]], source: str, select: dict[str, Any]) -> list[str]:
    """The materials a step computes, from the summaries of its campaign.

    Parameters
    ----------
    rows
        Summaries (``material_id``, ``elements``, ``nelements``, ``nsites`` and the
        source step's ``energy_above_hull``/``energy_per_atom``).
    source
        Input step (``"prescreen"`` or a step name).
    select
        :class:`~matdx.schemas.campaign.Selection` fields.

    Returns
    -------
    list of str
        Material ids, best first, elemental references last. With ``references`` the
        ranking is over compounds, and each element involved adds its lowest-energy phase;
        a space without compounds ranks its elemental phases.
    """
    have = [r for r in rows if _block_value(r, source, "energy_per_atom") is not None]
    pool = have
    if select.get("max_sites") is not None:
        pool = [r for r in pool if r["nsites"] <= select["max_sites"]]
    limit = select.get("max_energy_above_hull")
    if limit is not None:
        pool = [
            r
            for r in pool
            if (e := _block_value(r, source, "energy_above_hull")) is not None and e <= limit + 1e-9
        ]
    # elements come as references, unless the space has no compounds (a unary campaign)
    compounds = any(r["nelements"] > 1 for r in have)
    if select.get("references", True) and compounds:
        pool = [r for r in pool if r["nelements"] > 1]
    pool = sorted(pool, key=lambda r: _order(r, source))
    if select.get("top") is not None:
        pool = pool[: select["top"]]
    chosen = [r["material_id"] for r in pool]
    if select.get("references", True):
        elements = sorted({el for r in pool for el in r["elements"]})
        for el in elements:
            refs = [r for r in have if r["nelements"] == 1 and r["elements"] == [el]]
            if refs:
                best = min(refs, key=lambda r: _block_value(r, source, "energy_per_atom"))
                if best["material_id"] not in chosen:
                    chosen.append(best["material_id"])
    return chosen


def stage_step(
    campaign: str, step: dict[str, Any] | str, governance: dict[str, Any]
) -> dict[str, Any]:
    """Select the materials of ``step`` and return the batches still to compute.

    Parameters
    ----------
    campaign
        Campaign name.
    step
        One entry of :meth:`~matdx.workflows.campaign.LoadedCampaign.step_plan`.
    governance
        Tier and rights stamped on each calculation.

    Returns
    -------
    dict
        ``selected``, ``queued`` and, when there is work, ``detour``: ``{"batches":
        [kwargs of compute_batch], "analysis": kwargs of analyse_step}`` for the workflow
        manager to insert before the next stage. Without work the analysis runs here.
    """
    from matdx.store.documents import SummaryDoc

    step = _step(step)
    store, _ = open_store()
    projection = {
        "material_id": 1,
        "elements": 1,
        "nelements": 1,
        "nsites": 1,
        "energy_per_atom": 1,
        "energy_above_hull": 1,
        "formation_energy_per_atom": 1,
        "steps": 1,
    }
    rows = list(SummaryDoc._get_collection().find({"campaign": campaign}, projection))
    selected = select_materials(rows, step["input"], step["select"])
    inputs = {c["material_id"]: c for c in store.calculations(selected, step["input_hash"])}
    done = store.completed(selected, step["settings_hash"])
    todo = [m for m in selected if m in inputs and m not in done]
    items = [
        {
            "material_id": m,
            "structure": json.dumps(inputs[m]["output"]["structure"]),
            "input_calc_id": inputs[m]["calc_id"],
        }
        for m in todo
    ]
    size = step["batch_size"]
    text = json.dumps(step)
    analysis = {"campaign": campaign, "step": text, "governance": governance}
    summary: dict[str, Any] = {"step": step["name"], "selected": len(selected), "queued": len(todo)}
    if not items:
        summary["analysis"] = analyse_step(campaign, step, governance)
        return summary
    batches = [
        {"campaign": campaign, "step": text, "items": items[i : i + size], "governance": governance}
        for i in range(0, len(items), size)
    ]
    summary["detour"] = {"batches": batches, "analysis": analysis}
    return summary


def _workdir(campaign: str, step: str, material_id: str) -> Path:
    """Directory of one material's calculation in one step, the same in every launch.

    A run stopped at a job's deadline (or killed) continues from what it left there.
    """
    from matdx.core.settings import get_settings

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", material_id)
    return get_settings().runs_dir / campaign / "steps" / step / safe


def _phonon_calculation(
    engine: str, options: dict[str, Any], structure: Structure, workdir: Path
) -> CalcResult:
    from matdx.analysis.phonons import forces_from_engine, phonons

    static = get_engine(engine).calculator("static")
    force_opts = {k: v for k, v in options.items() if k not in PHONON_KEYS}
    base = static(structure, force_opts, workdir / "undisplaced")
    counter = iter(range(1_000_000))
    result = phonons(
        structure,
        forces_from_engine(lambda s: static(s, force_opts, workdir / f"disp-{next(counter):03d}")),
        supercell_matrix=options.get("supercell", 2),
        displacement=options.get("displacement", 0.01),
        mesh=options.get("mesh", 50.0),
    )
    files = {k: str(v) for k, v in result.save(workdir).items()}
    extra = {**base.extra, "phonons": result.summary.model_dump(mode="json"), "phonon_files": files}
    return base.model_copy(update={"task": "phonons", "extra": extra})


def compute_batch(
    campaign: str,
    step: dict[str, Any] | str,
    items: list[dict[str, Any]],
    governance: dict[str, Any],
    fw_id: int | None = None,
) -> dict[str, int]:
    """Run a step's task on a batch of materials (see :func:`stage_step`).

    Each material runs in its own directory, ``<runs>/<campaign>/steps/<step>/<id>``, the
    same in every launch: a resumable engine stopped at the job's deadline continues there
    in the next job, where a new batch of the unfinished materials (returned as
    ``detour``) runs before the step's analysis. Failures are recorded with their reason
    and the batch goes on.

    Returns
    -------
    dict
        Counts of completed, failed, skipped and requeued materials.
    """
    from matdx.workflows.steps import run_items

    step = _step(step)
    engine, task = step["engine"], step["task"]
    options = dict(step["settings"]["options"])
    from matdx.workflows.steps import deadline

    def workdir(item: dict[str, Any]) -> Path:
        return _workdir(campaign, step["name"], item["material_id"])

    def compute(structure: Structure, item: dict[str, Any]) -> CalcResult:
        if task == "phonons":
            return _phonon_calculation(engine, options, structure, workdir(item))
        run = get_engine(engine).calculator(task)
        return run(structure, options, workdir(item), deadline())

    counts = run_items(
        campaign,
        step["settings"],
        step["settings_hash"],
        items,
        governance,
        compute,
        task=task,
        fw_id=fw_id,
        workdir=workdir,
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


def _step_block(calc: dict[str, Any], thermo: Any) -> dict[str, Any]:
    out = calc["output"]
    block: dict[str, Any] = {
        "engine": calc["engine"],
        "task": calc["task"],
        "calc_id": calc["calc_id"],
        "energy_per_atom": out.get("energy_per_atom"),
        "volume_per_atom": out.get("volume_per_atom"),
        "converged": out.get("converged"),
        "band_gap": out.get("band_gap"),
        "spacegroup": out.get("spacegroup_symbol"),
        "spacegroup_number": out.get("spacegroup_number"),
    }
    if thermo is not None:
        block.update(
            formation_energy_per_atom=thermo.formation_energy_per_atom,
            energy_above_hull=thermo.energy_above_hull,
            is_stable=thermo.is_stable,
            decomposes_to=thermo.decomposes_to,
        )
    extra = out.get("extra") or {}
    ph = extra.get("phonons")
    if ph:
        block.update(
            dynamically_stable=ph.get("dynamically_stable"),
            min_frequency_thz=ph.get("min_frequency"),
            zero_point_energy_kj_mol=ph.get("zero_point_energy"),
        )
    if calc["task"] == "md":
        block.update({k: v for k, v in extra.items() if isinstance(v, int | float)})
        means = extra.get("averages") or {}
        block.update({f"mean_{k}": v for k, v in means.items() if isinstance(v, int | float)})
    return block


def _plain(block: dict[str, Any]) -> dict[str, Any]:
    """Plain Python values (numpy scalars are not BSON)."""
    text = json.dumps(block, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return json.loads(text)  # type: ignore[no-any-return]


def analyse_step(
    campaign: str, step: dict[str, Any] | str, governance: dict[str, Any]
) -> dict[str, Any]:
    """Store the step's results, with its own formation energies and hull, in the summaries.

    Returns
    -------
    dict
        Number of materials summarised and of stable ones.
    """
    from matdx.workflows.steps import derived_access

    step = _step(step)
    store, backend = open_store()
    ids = store.material_ids(campaign)
    calcs = {c["material_id"]: c for c in store.calculations(ids, step["settings_hash"])}
    mats = store.materials(list(calcs))
    thermo: dict[str, Any] = {}
    if step["task"] in _ENERGY_TASKS:
        points = [
            EnergyPoint(
                mid, Composition(mats[mid]["formula_pretty"]), c["output"]["energy_per_atom"]
            )
            for mid, c in calcs.items()
        ]
        thermo = thermodynamics(points)
    access = derived_access(calcs, mats)
    blocks = {mid: _plain(_step_block(c, thermo.get(mid))) for mid, c in calcs.items()}
    store.write_step_summaries(
        campaign, step["name"], blocks, {mid: access[mats[mid]["chemsys"]] for mid in blocks}
    )
    backend.flush()
    return {
        "summarised": len(blocks),
        "stable": sum(bool(b.get("is_stable")) for b in blocks.values()),
    }


__all__ = ["analyse_step", "compute_batch", "select_materials", "stage_step"]
