"""OPTIMADE ``structures`` attributes of stored materials.

A material record carries the OPTIMADE properties a filter may select on
(:data:`QUERYABLE`: formulae, element ratios, periodicity), computed once when it is stored
with the ``optimade`` package's formula rules (reduced formula in alphabetical order,
anonymous formula by decreasing count, ``A3B`` not ``AB3``). The site arrays
(:func:`site_attributes`) are derived from the stored structure when an entry is served or
exported. The OPTIMADE data service and the ``optimade`` file export both use these
functions, so their entries agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

QUERYABLE = (
    "chemical_formula_reduced",
    "chemical_formula_anonymous",
    "chemical_formula_descriptive",
    "elements_ratios",
    "dimension_types",
    "nperiodic_dimensions",
    "structure_features",
)
"""OPTIMADE properties stored on each material record (besides ``elements``,
``nelements`` and ``nsites``, which the record has under the same names)."""
SITE_FIELDS = ("lattice_vectors", "cartesian_site_positions", "species_at_sites", "species")
"""OPTIMADE properties computed from the stored structure."""


def _symbols(structure: dict[str, Any]) -> list[str]:
    return [site["species"][0]["element"] for site in structure["sites"]]


def formula_attributes(structure: dict[str, Any]) -> dict[str, Any]:
    """The :data:`QUERYABLE` properties of a structure (a pymatgen ``Structure`` dict)."""
    # imported here: the package's models take about a second to import
    from optimade.models.utils import anonymize_formula, reduce_formula

    symbols = _symbols(structure)
    counts: dict[str, int] = {}
    for s in symbols:
        counts[s] = counts.get(s, 0) + 1
    elements = sorted(counts)
    formula = "".join(f"{e}{counts[e]}" for e in elements)
    reduced = reduce_formula(formula)
    return {
        "chemical_formula_reduced": reduced,
        "chemical_formula_anonymous": anonymize_formula(formula),
        "chemical_formula_descriptive": reduced,
        "elements_ratios": [counts[e] / len(symbols) for e in elements],
        "dimension_types": [1, 1, 1],
        "nperiodic_dimensions": 3,
        "structure_features": [],
    }


def site_attributes(structure: dict[str, Any]) -> dict[str, Any]:
    """The :data:`SITE_FIELDS` of a structure (a pymatgen ``Structure`` dict)."""
    symbols = _symbols(structure)
    return {
        "lattice_vectors": [list(map(float, v)) for v in structure["lattice"]["matrix"]],
        "cartesian_site_positions": [list(map(float, site["xyz"])) for site in structure["sites"]],
        "species_at_sites": symbols,
        "species": [
            {"name": e, "chemical_symbols": [e], "concentration": [1.0]}
            for e in sorted(set(symbols))
        ],
    }


def structure_attributes(
    structure: dict[str, Any], last_modified: datetime | None
) -> dict[str, Any]:
    """Every OPTIMADE ``structures`` attribute of a structure (no provider fields).

    Parameters
    ----------
    structure
        A pymatgen ``Structure`` dict.
    last_modified
        When the record was last changed (naive datetimes are UTC).
    """
    symbols = _symbols(structure)
    when = last_modified or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return {
        "elements": sorted(set(symbols)),
        "nelements": len(set(symbols)),
        "nsites": len(symbols),
        "last_modified": when.isoformat(),
        **formula_attributes(structure),
        **site_attributes(structure),
    }
