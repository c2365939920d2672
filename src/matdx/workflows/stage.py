"""Later steps: select their materials from an earlier step's results, queue their batches.

A campaign's ``steps:`` chain calculations (e.g. EMT pre-screen → QE vc-relax → QE static →
phonons). When a later step's turn comes, :func:`stage_step` (quick, needs the database)
selects materials from the results of the step's input step (:func:`select_materials`),
takes their final structures from the stored calculations of that step, and returns the
batches to compute; the workflow manager inserts them, with the step's analysis after
them, before the next stage. The batches run :func:`~matdx.workflows.compute.compute_batch`
and the analysis :func:`~matdx.workflows.analyse.analyse_step`, as the pre-screen's do.
"""

from __future__ import annotations

import json
from typing import Any

from matdx.schemas.names import PRESCREEN
from matdx.workflows.analyse import analyse_step
from matdx.workflows.compute import plan_entry
from matdx.workflows.context import open_store


def _block_value(row: dict[str, Any], source: str, key: str) -> Any:
    if source == PRESCREEN:
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


REFERENCE_TASKS = frozenset({"relax", "vc-relax", "static"})
"""Tasks that compute every elemental phase of the elements involved (their hull's
references, at the step's own level of theory); other tasks (md, phonons) take the lowest
phase of their input step."""


def select_materials(
    rows: list[dict[str, Any]], source: str, select: dict[str, Any], task: str = "static"
) -> list[str]:
    """The materials a step computes, from the summaries of its campaign.

    Parameters
    ----------
    rows
        Summaries (``material_id``, ``elements``, ``nelements``, ``nsites`` and the
        source step's ``energy_above_hull``/``energy_per_atom``).
    source
        Input step (:data:`~matdx.schemas.names.PRESCREEN` or a step name).
    select
        :class:`~matdx.schemas.campaign.Selection` fields.
    task
        The step's task: a relaxation or static step (:data:`REFERENCE_TASKS`) computes
        every elemental phase of the elements involved, so that its formation energies
        and hull take the lowest of them at its own level of theory, whatever the input
        step ranked lowest; other tasks, and ``references: "lowest"``, take the input
        step's lowest phase.

    Returns
    -------
    list of str
        Material ids, best first, elemental phases last (lowest at the input step first).
        With ``references`` the ranking is over compounds; a space without compounds ranks
        its elemental phases.
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
    if select.get("references", True) and compounds:
        every_phase = task in REFERENCE_TASKS and select.get("references", True) is True
        elements = sorted({el for r in pool for el in r["elements"]})
        for el in elements:
            refs = [r for r in have if r["nelements"] == 1 and r["elements"] == [el]]
            refs.sort(key=lambda r: (_block_value(r, source, "energy_per_atom"), r["material_id"]))
            for ref in refs if every_phase else refs[:1]:
                if ref["material_id"] not in chosen:
                    chosen.append(ref["material_id"])
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
    step = plan_entry(step)
    store, _ = open_store()
    projection = (
        "material_id",
        "elements",
        "nelements",
        "nsites",
        "energy_per_atom",
        "energy_above_hull",
        "formation_energy_per_atom",
        "steps",
    )
    rows = store.summary_rows(campaign, list(projection))
    selected = select_materials(rows, step["input"], step["select"], step["task"])
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


__all__ = ["REFERENCE_TASKS", "select_materials", "stage_step"]
