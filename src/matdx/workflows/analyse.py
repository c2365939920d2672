"""One analysis for every step: formation energies and hulls from a step's calculations.

:func:`analyse_step` reads the completed calculations of a step (``settings_hash``),
derives formation energies and energies above the hull per chemical system (from the
step's own elemental references) and stores them: at the top level of each material's
summary for step 0, the pre-screen, and under ``steps.<name>`` for a later step.
"""

from __future__ import annotations

import json
from typing import Any

from pymatgen.core import Composition

from matdx.schemas.names import PRESCREEN
from matdx.workflows.compute import plan_entry
from matdx.workflows.context import open_store

ENERGY_TASKS = ("relax", "vc-relax", "static", "phonons")
"""Tasks whose energy is a ground-state energy (so a hull makes sense)."""

SYMPREC = 0.01
"""Tolerance (Å) of the space groups the engines report (stored with each summary)."""


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


def analyse_step(
    campaign: str, step: dict[str, Any] | str, governance: dict[str, Any]
) -> dict[str, Any]:
    """Derive a step's formation energies and hull from its calculations and store them.

    Parameters
    ----------
    campaign
        Campaign name.
    step
        One entry of :meth:`~matdx.workflows.campaign.LoadedCampaign.step_plan` (or its
        JSON text).
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

    step = plan_entry(step)
    store, backend = open_store()
    ids = store.material_ids(campaign)
    calcs = {c["material_id"]: c for c in store.calculations(ids, step["settings_hash"])}
    mats = store.materials(list(calcs))
    thermo: dict[str, Any] = {}
    if step["task"] in ENERGY_TASKS:
        points = [
            EnergyPoint(
                mid, Composition(mats[mid]["formula_pretty"]), c["output"]["energy_per_atom"]
            )
            for mid, c in calcs.items()
        ]
        thermo = thermodynamics(points)
    access = derived_access(calcs, mats)
    if step["name"] == PRESCREEN:
        rows = [
            _summary_row(mid, mats[mid], c, thermo[mid], step["settings_hash"], governance)
            | {"derived_access": access[mats[mid]["chemsys"]]}
            for mid, c in calcs.items()
        ]
        store.write_summaries(campaign, rows)
        stable = sum(bool(r["is_stable"]) for r in rows)
    else:
        blocks = {mid: _plain(_step_block(c, thermo.get(mid))) for mid, c in calcs.items()}
        store.write_step_summaries(
            campaign, step["name"], blocks, {mid: access[mats[mid]["chemsys"]] for mid in blocks}
        )
        stable = sum(bool(b.get("is_stable")) for b in blocks.values())
    backend.checkpoint()
    return {"summarised": len(calcs), "stable": stable}


def _summary_row(
    material_id: str,
    material: dict[str, Any],
    calc: dict[str, Any],
    thermo: Any,
    settings_hash: str,
    governance: dict[str, Any],
) -> dict[str, Any]:
    """A material's summary from its pre-screen calculation (the top-level fields)."""
    from matdx.analysis.descriptors import crystal_fields, crystal_system

    out = calc["output"]
    return {
        "material_id": material_id,
        "formula_pretty": material["formula_pretty"],
        "chemsys": material["chemsys"],
        "elements": material["elements"],
        "nelements": material["nelements"],
        "nsites": material["nsites"],
        **(crystal_fields(out["structure"]) if out.get("structure") else {}),
        "symmetry": {
            "number": out.get("spacegroup_number"),
            "symbol": out.get("spacegroup_symbol"),
            "crystal_system": crystal_system(out.get("spacegroup_number")),
            "symprec": SYMPREC,
        },
        "converged": out.get("converged"),
        "energy_per_atom": out["energy_per_atom"],
        "formation_energy_per_atom": thermo.formation_energy_per_atom,
        "energy_above_hull": thermo.energy_above_hull,
        "is_stable": thermo.is_stable,
        "decomposes_to": thermo.decomposes_to,
        "volume_per_atom": out["volume_per_atom"],
        "method": {
            "engine": calc["engine"],
            "settings_hash": settings_hash,
            "units": {"energy": "eV/atom", "volume": "Å³/atom"},
        },
        **{k: calc.get(k, governance.get(k)) for k in GOVERNANCE_KEYS},
    }


def _step_block(calc: dict[str, Any], thermo: Any) -> dict[str, Any]:
    out = calc["output"]
    extra = out.get("extra") or {}
    block: dict[str, Any] = {
        "engine": calc["engine"],
        "task": calc["task"],
        "calc_id": calc["calc_id"],
        "settings_hash": calc["settings_hash"],
        "energy_per_atom": out.get("energy_per_atom"),
        "volume_per_atom": out.get("volume_per_atom"),
        "converged": out.get("converged"),
        "band_gap": out.get("band_gap"),
        "spacegroup": out.get("spacegroup_symbol"),
        "spacegroup_number": out.get("spacegroup_number"),
    }
    magnetisation = extra.get("total_magnetization")
    if magnetisation is not None:
        n = len((out.get("structure") or {}).get("sites") or []) or 1
        block.update(
            total_magnetization=magnetisation,
            magnetization_per_atom=magnetisation / n,
            magmoms=out.get("magmoms"),
        )
    if "residual_stress_kbar" in extra:
        block["residual_stress_kbar"] = extra["residual_stress_kbar"]
    if thermo is not None:
        block.update(
            formation_energy_per_atom=thermo.formation_energy_per_atom,
            energy_above_hull=thermo.energy_above_hull,
            is_stable=thermo.is_stable,
            decomposes_to=thermo.decomposes_to,
        )
    ph = extra.get("phonons")
    if ph:
        block.update(
            dynamically_stable=ph.get("dynamically_stable"),
            min_frequency_thz=ph.get("min_frequency"),
            zero_point_energy_kj_mol=ph.get("zero_point_energy"),
        )
    if calc["task"] == "md":
        block.update(_md_values(out, extra))
    return block


def _md_values(out: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """An MD run's time averages with their standard errors, never its final frame.

    ``energy_per_atom`` and ``volume_per_atom`` are the production averages of the
    potential energy and volume per atom (``None`` if the run recorded none).
    """
    n = len((out.get("structure") or {}).get("sites") or []) or 1
    means = extra.get("averages") or {}
    errors = extra.get("standard_errors") or {}
    values: dict[str, Any] = {k: v for k, v in extra.items() if isinstance(v, int | float)}
    values.update({f"mean_{k}": v for k, v in means.items() if isinstance(v, int | float)})
    values.update({f"stderr_{k}": v for k, v in errors.items() if isinstance(v, int | float)})
    for key, name in (("potential_energy_eV", "energy_per_atom"), ("volume_A3", "volume_per_atom")):
        mean, err = means.get(key), errors.get(key)
        values[name] = mean / n if mean is not None else None
        values[f"{name}_stderr"] = err / n if err is not None else None
    return values


def _plain(block: dict[str, Any]) -> dict[str, Any]:
    """Plain Python values (numpy scalars are not BSON)."""
    text = json.dumps(block, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return json.loads(text)  # type: ignore[no-any-return]


__all__ = ["analyse_step", "derived_access"]
