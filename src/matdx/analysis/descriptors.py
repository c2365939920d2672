"""Descriptors of a relaxed crystal under the Materials Project's (emmet's) names.

:func:`crystal_fields` turns a structure (pymatgen's dict) into the composition, formula
and cell fields of an emmet materials document: ``formula_anonymous``, ``composition``,
``composition_reduced`` (element → amount), ``volume`` (Å³ per cell), ``density``
(g/cm³) and the crystal system of a space group.
"""

from __future__ import annotations

from typing import Any

CRYSTAL_SYSTEMS = (
    (2, "triclinic"),
    (15, "monoclinic"),
    (74, "orthorhombic"),
    (142, "tetragonal"),
    (167, "trigonal"),
    (194, "hexagonal"),
    (230, "cubic"),
)
"""Last space group number of each crystal system (International Tables)."""


def crystal_system(number: int | None) -> str | None:
    """Crystal system of space group ``number`` (1-230), else ``None``."""
    if number is None or not 1 <= number <= 230:
        return None
    return next(name for last, name in CRYSTAL_SYSTEMS if number <= last)


def crystal_fields(structure: dict[str, Any]) -> dict[str, Any]:
    """Composition, formula, volume and density of a structure (emmet's names and units)."""
    from pymatgen.core import Structure
    from scipy.constants import atomic_mass

    s = Structure.from_dict(structure)
    comp = s.composition
    return {
        "formula_anonymous": comp.anonymized_formula,
        "composition": {str(el): float(n) for el, n in comp.get_el_amt_dict().items()},
        "composition_reduced": {
            str(el): float(n) for el, n in comp.reduced_composition.get_el_amt_dict().items()
        },
        "volume": float(s.volume),
        # pymatgen's Structure.density, same constant, without the 0.6 ms a call of its
        # unit classes: amu per Å³ to g/cm³ (atomic_mass in kg, 1 Å³ = 1e-24 cm³)
        "density": float(comp.weight) * atomic_mass * 1e3 / (s.volume * 1e-24),
    }


__all__ = ["CRYSTAL_SYSTEMS", "crystal_fields", "crystal_system"]
