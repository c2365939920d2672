"""The one symmetry analysis of matdx: space groups and spglib datasets.

Every reported space group (``CalcResult.spacegroup_symbol`` / ``spacegroup_number`` of
every engine, whatever code computed the structure) comes from :func:`spacegroup` with
:data:`SYMPREC` = 0.01 Å and spglib's own default angle tolerance
(:data:`ANGLE_TOLERANCE`), so that one structure gets one group whichever engine relaxed
it. pymatgen's ``SpacegroupAnalyzer`` is not used for reported groups: it adds a 5° angle
tolerance of its own, with which slightly sheared cells get a higher group than spglib
gives them.

Other analyses use the same function with a tolerance of their own, passed as a named
parameter:

* deduplication (:mod:`matdx.generation.dedup`) analyses a Niggli cell scaled to one atom
  per unit volume with a tolerance *relative* to the mean atomic spacing
  (``dedup.SYMPREC`` = 0.04, about 0.1 Å in metals). Its fingerprint decides material
  identifiers, which must survive small noise: with 0.01 Å most fingerprints change under
  displacements of a few thousandths of an ångström (numbers in
  :mod:`matdx.generation.dedup`);
* the space-group feature of :mod:`matdx.ml.features` keeps 0.1 Å, the tolerance its
  trained models were fitted with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import spglib

SYMPREC = 0.01
"""Distance tolerance (Å) of every reported space group."""

ANGLE_TOLERANCE = -1.0
"""Angle tolerance of every reported space group: -1 is spglib's default (no separate angle
tolerance: the distance tolerance decides)."""

Cell = tuple[Any, Any, Any]
"""A spglib cell: lattice (rows), fractional positions, atom types."""


def spglib_cell(structure: Any) -> Cell:
    """The spglib cell of a pymatgen ``Structure``, ASE ``Atoms`` or spglib cell tuple.

    Raises
    ------
    TypeError
        For any other object.
    """
    if isinstance(structure, tuple):
        return structure
    if hasattr(structure, "lattice") and hasattr(structure, "frac_coords"):  # pymatgen
        return (
            np.asarray(structure.lattice.matrix),
            np.asarray(structure.frac_coords),
            [site.specie.Z for site in structure],
        )
    if hasattr(structure, "get_scaled_positions"):  # ASE
        return (np.asarray(structure.cell), structure.get_scaled_positions(), structure.numbers)
    raise TypeError(f"not a structure: {type(structure).__name__}")


def symmetry_dataset(
    structure: Any, symprec: float = SYMPREC, angle_tolerance: float = ANGLE_TOLERANCE
) -> Any | None:
    """The spglib symmetry dataset of ``structure``, ``None`` if spglib finds none.

    Parameters
    ----------
    structure
        pymatgen ``Structure``, ASE ``Atoms`` or spglib cell ``(lattice, positions, types)``.
    symprec
        Distance tolerance (Å, or the cell's own length unit for a scaled cell).
    angle_tolerance
        Angle tolerance (degrees; -1: spglib's default).
    """
    try:
        return spglib.get_symmetry_dataset(
            spglib_cell(structure), symprec=symprec, angle_tolerance=angle_tolerance
        )
    except Exception:  # spglib refuses odd cells (overlapping atoms, singular lattice)
        return None


def spacegroup(
    structure: Any, symprec: float = SYMPREC, angle_tolerance: float = ANGLE_TOLERANCE
) -> tuple[str | None, int | None]:
    """International symbol and number of the space group of ``structure``.

    Parameters
    ----------
    structure
        pymatgen ``Structure``, ASE ``Atoms`` or spglib cell.
    symprec, angle_tolerance
        See :func:`symmetry_dataset`; the defaults are those of every reported group.

    Returns
    -------
    tuple
        ``("Fm-3m", 225)``, or ``(None, None)`` if spglib finds no symmetry.
    """
    data = symmetry_dataset(structure, symprec, angle_tolerance)
    if data is None:
        return None, None
    return str(data.international), int(data.number)


def irreducible_kpoints(
    structure: Any, mesh: Any, shift: Any = (0, 0, 0), symprec: float = SYMPREC
) -> int:
    """Number of k-points of a Monkhorst–Pack ``mesh`` left by symmetry and time reversal.

    What a plane-wave code computes (the whole mesh if spglib finds no symmetry).

    Parameters
    ----------
    structure
        pymatgen ``Structure``, ASE ``Atoms`` or spglib cell.
    mesh
        Divisions along the three reciprocal vectors.
    shift
        Half-step offsets (0 or 1 each).
    symprec
        Distance tolerance (Å).
    """
    try:
        mapping, _ = spglib.get_ir_reciprocal_mesh(
            np.asarray(mesh, dtype="intc"), spglib_cell(structure),
            is_shift=np.asarray(shift, dtype="intc"), symprec=symprec,
        )
    except Exception:  # spglib refuses odd cells: count the whole mesh
        return int(np.prod(mesh))
    return len(np.unique(mapping))


__all__ = [
    "ANGLE_TOLERANCE",
    "SYMPREC",
    "irreducible_kpoints",
    "spacegroup",
    "spglib_cell",
    "symmetry_dataset",
]
