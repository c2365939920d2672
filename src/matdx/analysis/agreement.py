"""How well a pre-screen agrees with a later step's (more accurate) results.

On the materials the later step computed, each level's formation energies and energies
above the hull are taken from its own energies (:func:`~matdx.analysis.thermo.
thermodynamics` over that same set of materials, so that both hulls have the same
phases), and compared: mean absolute difference of formation energies, Spearman rank
correlation of energies above the hull, and how many of the later step's stable compounds
were among the pre-screen's best ``k`` compounds (ranked over every material it
computed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymatgen.core import Composition

from matdx.analysis.thermo import EnergyPoint, thermodynamics


def _points(rows: Sequence[dict[str, Any]], key: str) -> list[EnergyPoint]:
    return [
        EnergyPoint(r["material_id"], Composition(r["formula_pretty"]), float(r[key]))
        for r in rows
    ]


def agreement(
    rows: Sequence[dict[str, Any]],
    step: str,
    tops: Sequence[int] = (1, 2, 3),
    stable_tol: float = 1e-3,
) -> dict[str, Any]:
    """Compare the pre-screen with ``step`` on the materials ``step`` computed.

    Parameters
    ----------
    rows
        Summaries of a campaign: ``material_id``, ``formula_pretty``, ``nelements``,
        the pre-screen's ``energy_per_atom`` and ``energy_above_hull``, and
        ``steps[step]["energy_per_atom"]``.
    step
        The later step.
    tops
        Sizes of the pre-screen's best-compounds lists to check.
    stable_tol
        Largest energy above the hull (eV/atom) of a stable phase.

    Returns
    -------
    dict
        ``n_materials``, ``n_compounds``, ``formation_mae`` (eV/atom, compounds),
        ``hull_spearman`` (compounds; ``None`` where undefined), ``stable`` (the step's
        stable compounds, formulas), ``kept_in_top`` (``{k: how many of them were in the
        pre-screen's top k}``) and ``per_material`` (formula and both levels' values).
    """
    from scipy.stats import spearmanr

    both = [
        {
            **r,
            "step_energy": ((r.get("steps") or {}).get(step) or {}).get("energy_per_atom"),
        }
        for r in rows
        if r.get("energy_per_atom") is not None
    ]
    both = [r for r in both if r["step_energy"] is not None]
    pre = thermodynamics(_points(both, "energy_per_atom"))
    post = thermodynamics(_points(both, "step_energy"))
    compounds = [r for r in both if r["nelements"] > 1]
    per = [
        {
            "formula": r["formula_pretty"],
            "material_id": r["material_id"],
            "prescreen_formation": pre[r["material_id"]].formation_energy_per_atom,
            "step_formation": post[r["material_id"]].formation_energy_per_atom,
            "prescreen_hull": pre[r["material_id"]].energy_above_hull,
            "step_hull": post[r["material_id"]].energy_above_hull,
        }
        for r in compounds
    ]
    mae = (
        sum(abs(p["prescreen_formation"] - p["step_formation"]) for p in per) / len(per)
        if per
        else None
    )
    a = [p["prescreen_hull"] for p in per]
    b = [p["step_hull"] for p in per]
    # undefined for fewer than three compounds or when one level puts them all on its hull
    defined = len(per) > 2 and max(a) - min(a) > 1e-9 and max(b) - min(b) > 1e-9
    rho = float(spearmanr(a, b)[0]) if defined else None
    ranked = sorted(
        (r for r in rows if r.get("nelements", 1) > 1 and r.get("energy_above_hull") is not None),
        key=lambda r: (float(r["energy_above_hull"]), r["material_id"]),
    )
    stable = [p for p in per if p["step_hull"] <= stable_tol]
    kept = {
        k: sum(p["material_id"] in {r["material_id"] for r in ranked[:k]} for p in stable)
        for k in tops
    }
    return {
        "n_materials": len(both),
        "n_compounds": len(per),
        "formation_mae": mae,
        "hull_spearman": rho,
        "stable": [p["formula"] for p in stable],
        "kept_in_top": kept,
        "per_material": per,
    }
