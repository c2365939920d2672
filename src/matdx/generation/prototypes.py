"""Prototype crystal structures, decorated with chemical elements.

Each prototype is a primitive cell whose sites carry *slot* labels (0, 1, 2, ...); a
decoration assigns one element per slot. The registry maps a prototype name to its
:class:`Prototype`; aliases (``CsCl`` = ``B2``) point to the same object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from ase.data import atomic_numbers, covalent_radii, reference_states
from pymatgen.core import Lattice, Structure

LatticeMaker = Callable[[float], np.ndarray]
"""Given the cell volume (Å³), return the 3×3 lattice matrix (rows are vectors)."""


@dataclass(frozen=True)
class Prototype:
    """A primitive cell with slot labels on its sites.

    Attributes
    ----------
    name
        Strukturbericht or common name.
    slots
        Slot label of each site; slot 0 is the majority (or first) species.
    frac_coords
        Fractional coordinates of the sites.
    lattice
        Function of the cell volume giving the lattice matrix.
    """

    name: str
    slots: tuple[int, ...]
    frac_coords: tuple[tuple[float, float, float], ...]
    lattice: LatticeMaker

    @property
    def n_slots(self) -> int:
        """Number of distinct species the prototype takes."""
        return len(set(self.slots))

    @property
    def nsites(self) -> int:
        """Number of sites in the primitive cell."""
        return len(self.slots)

    def build(self, species: Sequence[str], volume_per_atom: float | None = None) -> Structure:
        """Decorate the prototype.

        Parameters
        ----------
        species
            One element per slot, in slot order.
        volume_per_atom
            Target volume (Å³/atom); Vegard's law over the elemental volumes if omitted.

        Returns
        -------
        Structure
            The decorated primitive cell.
        """
        if len(species) != self.n_slots:
            raise ValueError(f"{self.name} takes {self.n_slots} species, got {len(species)}")
        site_species = [species[s] for s in self.slots]
        v = volume_per_atom if volume_per_atom is not None else vegard_volume(site_species)
        return Structure(Lattice(self.lattice(v * self.nsites)), site_species, self.frac_coords)


def _cubic_fcc(volume: float) -> np.ndarray:
    a = (4 * volume) ** (1 / 3)  # primitive cell holds a³/4
    return 0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], float)


def _cubic_bcc(volume: float) -> np.ndarray:
    a = (2 * volume) ** (1 / 3)
    return 0.5 * a * np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]], float)


def _simple_cubic(volume: float) -> np.ndarray:
    return volume ** (1 / 3) * np.eye(3)


def _hexagonal_ideal(volume: float) -> np.ndarray:
    # ideal c/a = sqrt(8/3); cell volume = sqrt(3)/2 a^2 c
    ratio = math.sqrt(8 / 3)
    a = (volume / (math.sqrt(3) / 2 * ratio)) ** (1 / 3)
    return Lattice.hexagonal(a, ratio * a).matrix


def _tetragonal_l10(volume: float) -> np.ndarray:
    # body-centred tetragonal cell of the L1_0 ordering of fcc: a' = a/sqrt(2), c = a
    a = (2 * volume) ** (1 / 3)
    return np.diag([a / math.sqrt(2), a / math.sqrt(2), a])


def _rutile(volume: float) -> np.ndarray:
    ratio = 0.644  # c/a of TiO2 rutile
    a = (volume / ratio) ** (1 / 3)
    return np.diag([a, a, ratio * a])


def _to_fcc_primitive(
    conventional: tuple[tuple[float, float, float], ...],
) -> tuple[tuple[float, float, float], ...]:
    """Fractional coordinates in the cubic cell → in the fcc primitive cell (mod 1)."""
    m = np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]], float)
    return tuple(tuple(float(x) for x in np.mod(np.array(f) @ m, 1.0)) for f in conventional)


_U_WURTZITE = 3 / 8  # ideal internal parameter
_U_RUTILE = 0.305
_X_SPINEL = 0.2625  # oxygen 32e parameter, origin choice 2 of Fd-3m

# spinel AB2X4 (Fd-3m, origin 2): A on 8a, B on 16d, X on 32e; the two, four and eight
# sites of each orbit in one fcc primitive cell
_SPINEL_A = ((1 / 8, 1 / 8, 1 / 8), (7 / 8, 3 / 8, 3 / 8))
_SPINEL_B = ((1 / 2, 1 / 2, 1 / 2), (1 / 4, 3 / 4, 0.0), (3 / 4, 0.0, 1 / 4), (0.0, 1 / 4, 3 / 4))
_x = _X_SPINEL
_SPINEL_X = (
    (_x, _x, _x),
    (-_x + 3 / 4, -_x + 1 / 4, _x + 1 / 2),
    (-_x + 1 / 4, _x + 1 / 2, -_x + 3 / 4),
    (_x + 1 / 2, -_x + 3 / 4, -_x + 1 / 4),
    (-_x, -_x, -_x),
    (_x + 1 / 4, _x + 3 / 4, -_x + 1 / 2),
    (_x + 3 / 4, -_x + 1 / 2, _x + 1 / 4),
    (-_x + 1 / 2, _x + 1 / 4, _x + 3 / 4),
)

# a 4-site basis along the body diagonal of the fcc primitive cell (D0_3, L2_1)
_DIAG = ((0.0, 0.0, 0.0), (0.25, 0.25, 0.25), (0.5, 0.5, 0.5), (0.75, 0.75, 0.75))

PROTOTYPES: dict[str, Prototype] = {
    "fcc": Prototype("fcc", (0,), ((0.0, 0.0, 0.0),), _cubic_fcc),
    "bcc": Prototype("bcc", (0,), ((0.0, 0.0, 0.0),), _cubic_bcc),
    "hcp": Prototype("hcp", (0, 0), ((1 / 3, 2 / 3, 0.25), (2 / 3, 1 / 3, 0.75)), _hexagonal_ideal),
    "L1_2": Prototype(
        "L1_2",
        (0, 0, 0, 1),
        ((0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0), (0.0, 0.0, 0.0)),
        _simple_cubic,
    ),
    "L1_0": Prototype("L1_0", (0, 1), ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)), _tetragonal_l10),
    "B2": Prototype("B2", (0, 1), ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)), _simple_cubic),
    "D0_3": Prototype("D0_3", (1, 0, 0, 0), _DIAG, _cubic_fcc),
    "rocksalt": Prototype("rocksalt", (0, 1), ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)), _cubic_fcc),
    "L2_1": Prototype("L2_1", (2, 0, 1, 0), _DIAG, _cubic_fcc),
}
# ionic prototypes: slot 0 the cation (A), the last slot the anion (X)
_u, _w = _U_RUTILE, _U_WURTZITE
PROTOTYPES.update(
    {
        "zincblende": Prototype(
            "zincblende", (0, 1), ((0.0, 0.0, 0.0), (0.25, 0.25, 0.25)), _cubic_fcc
        ),
        "wurtzite": Prototype(
            "wurtzite",
            (0, 0, 1, 1),
            (
                (1 / 3, 2 / 3, 0.0),
                (2 / 3, 1 / 3, 0.5),
                (1 / 3, 2 / 3, _w),
                (2 / 3, 1 / 3, 0.5 + _w),
            ),
            _hexagonal_ideal,
        ),
        "fluorite": Prototype(
            "fluorite", (0, 1, 1), ((0.0, 0.0, 0.0), (0.25, 0.25, 0.25), (0.75, 0.75, 0.75)),
            _cubic_fcc,
        ),
        "rutile": Prototype(
            "rutile",
            (0, 0, 1, 1, 1, 1),
            (
                (0.0, 0.0, 0.0),
                (0.5, 0.5, 0.5),
                (_u, _u, 0.0),
                (1 - _u, 1 - _u, 0.0),
                (0.5 + _u, 0.5 - _u, 0.5),
                (0.5 - _u, 0.5 + _u, 0.5),
            ),
            _rutile,
        ),
        "perovskite": Prototype(
            "perovskite",
            (0, 1, 2, 2, 2),
            ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 0.5, 0.5)),
            _simple_cubic,
        ),
        "spinel": Prototype(
            "spinel",
            (0,) * 2 + (1,) * 4 + (2,) * 8,
            _to_fcc_primitive(_SPINEL_A + _SPINEL_B + _SPINEL_X),
            _cubic_fcc,
        ),
    }
)
PROTOTYPES["B1"] = PROTOTYPES["rocksalt"]
PROTOTYPES["B3"] = PROTOTYPES["zincblende"]
PROTOTYPES["B4"] = PROTOTYPES["wurtzite"]
PROTOTYPES["C1"] = PROTOTYPES["fluorite"]
PROTOTYPES["C4"] = PROTOTYPES["rutile"]
PROTOTYPES["E2_1"] = PROTOTYPES["perovskite"]
PROTOTYPES["H1_1"] = PROTOTYPES["spinel"]
PROTOTYPES["CsCl"] = PROTOTYPES["B2"]
PROTOTYPES["A1"] = PROTOTYPES["fcc"]
PROTOTYPES["A2"] = PROTOTYPES["bcc"]
PROTOTYPES["A3"] = PROTOTYPES["hcp"]


@cache
def elemental_volume(element: str) -> float:
    """Volume per atom (Å³) of an element's reference crystal.

    Uses ASE's reference lattice constants where the reference state is a close-packed or
    cubic crystal, otherwise a sphere of the covalent radius at 74 % packing.

    Parameters
    ----------
    element
        Element symbol.

    Returns
    -------
    float
        Volume per atom in Å³.
    """
    z = atomic_numbers[element]
    ref = reference_states[z] or {}
    sym, a = ref.get("symmetry"), ref.get("a")
    per_atom = {"fcc": 4, "bcc": 2, "sc": 1, "diamond": 8}
    if sym in per_atom and a:
        return a**3 / per_atom[sym]
    if sym == "hcp" and a:
        c = ref.get("c/a", math.sqrt(8 / 3)) * a
        return math.sqrt(3) / 2 * a * a * c / 2
    return 4 / 3 * math.pi * covalent_radii[z] ** 3 / 0.74


@cache
def element_alone_volume(element: str) -> float:
    """Volume per atom (Å³) of a cell of one element alone (an elemental reference phase).

    :func:`elemental_volume` where ASE's reference state is a crystal; for an element
    whose reference state is a molecule or an atom (H, N, O, F, He) the molar volume of
    its solid (pymatgen's element data) instead of a covalent sphere, so that its cells do
    not start compressed far into the repulsive wall of the molecule.
    """
    from pymatgen.core import Element

    ref = reference_states[atomic_numbers[element]] or {}
    molar = Element(element).molar_volume
    if ref.get("symmetry") in ("diatom", "atom") and molar:
        return float(molar) / 0.602214076  # cm³/mol → Å³/atom
    return elemental_volume(element)


def vegard_volume(species: Sequence[str]) -> float:
    """Mean elemental volume over the given sites (Vegard's law), Å³/atom.

    A cell of a single element takes :func:`element_alone_volume`.
    """
    if len(set(species)) == 1:
        return element_alone_volume(species[0])
    return sum(elemental_volume(s) for s in species) / len(species)
