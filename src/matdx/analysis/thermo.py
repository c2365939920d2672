"""Formation energies and energies above the convex hull, with pymatgen's PhaseDiagram.

The hull of a compound depends only on the phases of its own chemical system and its
subsystems, so one phase diagram is built per chemical system present rather than one
over every element of the campaign (which would need a high-dimensional hull).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition


@dataclass(frozen=True)
class EnergyPoint:
    """One computed material: identifier, composition and energy per atom (eV/atom)."""

    material_id: str
    composition: Composition
    energy_per_atom: float


@dataclass
class Thermo:
    """Derived thermodynamic properties of one material (eV/atom)."""

    formation_energy_per_atom: float | None = None
    energy_above_hull: float | None = None
    is_stable: bool | None = None
    decomposes_to: list[dict[str, Any]] = field(default_factory=list)
    """Stable phases an unstable material decomposes to, as in the Materials Project's
    thermo documents: ``{"material_id", "formula", "amount"}`` (amount: the phase's share
    of the atoms); empty for a stable material."""


def _chemsys(comp: Composition) -> tuple[str, ...]:
    return tuple(sorted(el.symbol for el in comp.elements))


def elemental_references(points: Iterable[EnergyPoint]) -> dict[str, EnergyPoint]:
    """Lowest-energy elemental phase of each element."""
    refs: dict[str, EnergyPoint] = {}
    for p in points:
        if len(p.composition.elements) == 1:
            el = p.composition.elements[0].symbol
            if el not in refs or p.energy_per_atom < refs[el].energy_per_atom:
                refs[el] = p
    return refs


def _entry(p: EnergyPoint) -> PDEntry:
    return PDEntry(p.composition, p.energy_per_atom * p.composition.num_atoms, name=p.material_id)


def thermodynamics(points: list[EnergyPoint]) -> dict[str, Thermo]:
    """Formation energy and energy above hull of every point.

    Parameters
    ----------
    points
        Computed materials (all with the same engine and settings).

    Returns
    -------
    dict
        ``material_id`` → :class:`Thermo`; fields stay ``None`` for a material whose
        elements lack an elemental reference.
    """
    refs = elemental_references(points)
    by_sys: dict[tuple[str, ...], list[EnergyPoint]] = defaultdict(list)
    for p in points:
        by_sys[_chemsys(p.composition)].append(p)
    out: dict[str, Thermo] = {p.material_id: Thermo() for p in points}
    for p in points:
        els = _chemsys(p.composition)
        if all(e in refs for e in els):
            e_form = p.energy_per_atom - sum(
                p.composition.get_atomic_fraction(e) * refs[e].energy_per_atom for e in els
            )
            out[p.material_id].formation_energy_per_atom = e_form
    # the hull is made of the lowest phase of each composition: only those (of the system
    # and its subsystems) enter a phase diagram, whose size is then bounded by the number
    # of compositions, not of materials; every material is placed against it
    lowest: dict[tuple[str, ...], dict[str, EnergyPoint]] = {}
    for system, members in by_sys.items():
        best: dict[str, EnergyPoint] = {}
        for q in members:
            key = q.composition.reduced_formula
            if key not in best or q.energy_per_atom < best[key].energy_per_atom:
                best[key] = q
        lowest[system] = best
    for system, members in by_sys.items():
        if not all(e in refs for e in system):
            continue
        entries = {
            q.material_id: _entry(q)
            for k in range(1, len(system) + 1)
            for sub in combinations(system, k)
            for q in lowest.get(sub, {}).values()
        }
        pd = PhaseDiagram(list(entries.values()))
        for p in members:
            entry = entries.get(p.material_id) or _entry(p)
            decomp, e_hull = pd.get_decomp_and_e_above_hull(entry, allow_negative=True)
            t = out[p.material_id]
            t.energy_above_hull = max(float(e_hull), 0.0)
            t.is_stable = e_hull < 1e-8
            t.decomposes_to = sorted(
                (
                    {
                        "material_id": e.name,
                        "formula": e.composition.reduced_formula,
                        "amount": float(amount),
                    }
                    for e, amount in decomp.items()
                    if e.name != p.material_id
                ),
                key=lambda d: (d["formula"], d["material_id"]),
            )
    return out
