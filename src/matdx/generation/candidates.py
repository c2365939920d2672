"""Enumerate the raw candidates of a chemical space.

Pure functions: the same chemical space gives the same candidates, in the same order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pymatgen.core import Lattice, Structure

from matdx.generation.ionic import charge_balanced, substitute
from matdx.generation.orderings import orderings
from matdx.generation.prototypes import PROTOTYPES, Prototype, vegard_volume
from matdx.schemas.campaign import ChemicalSpace

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Candidate:
    """A generated structure and how it was made.

    Attributes
    ----------
    source
        Prototype name, or ordering label such as ``fcc/n4/<hnf>/<colouring>``.
    structure
        The pymatgen structure.
    """

    source: str
    structure: Structure

    @property
    def formula(self) -> str:
        """Reduced formula."""
        return self.structure.composition.reduced_formula


def decorate(proto: Prototype, elements: Sequence[str]) -> Iterator[Candidate]:
    """All assignments of ``elements`` (one per slot, all used) to a prototype.

    Parameters
    ----------
    proto
        Prototype with ``len(elements)`` slots.
    elements
        Distinct elements.

    Yields
    ------
    Candidate
        One per permutation of the elements over the slots.
    """
    for perm in itertools.permutations(elements):
        yield Candidate(proto.name, proto.build(perm))


def order(parent: Prototype, size: int, elements: Sequence[str]) -> Iterator[Candidate]:
    """Symmetry-distinct orderings of ``elements`` on supercells of ``parent``.

    Parameters
    ----------
    parent
        Single-slot prototype.
    size
        Supercell size.
    elements
        Distinct elements; each ordering uses all of them.

    Yields
    ------
    Candidate
        One per ordering, scaled to the Vegard volume of its composition.
    """
    for ordering, cell in orderings(parent, size, len(elements)):
        species = [elements[c] for c in ordering.colouring]
        scale = vegard_volume(species) ** (1 / 3)  # template cells have 1 Å³/atom
        lattice = Lattice(cell.lattice.matrix * scale)
        yield Candidate(ordering.label, Structure(lattice, species, cell.frac_coords))


def too_close(structure: Structure, min_distance: float) -> bool:
    """Whether two atoms (periodic images included) are closer than ``min_distance`` Å."""
    centers, _, _, dist = structure.get_neighbor_list(min_distance)
    return bool(len(centers) and dist.min() < min_distance)


def generate_candidates(space: ChemicalSpace, progress: Progress | None = None) -> list[Candidate]:
    """Enumerate prototypes and orderings over every element combination of ``space``.

    Parameters
    ----------
    space
        Validated chemical space.
    progress
        Called with the number of element combinations just finished.

    Returns
    -------
    list of Candidate
        Raw candidates (duplicates across prototypes/supercells included), with the
        substitutions of the seed structures (``seeds``, paths as given), filtered by
        ``min_atoms``, ``max_atoms``, ``min_distance`` and ``charge_balanced``.
    """
    out: list[Candidate] = []
    protos = [PROTOTYPES[name] for name in dict.fromkeys(space.prototypes)]
    protos = list({id(p): p for p in protos}.values())  # aliases (CsCl = B2) once
    parents = [PROTOTYPES[p] for p in space.orderings.parents] if space.orderings else []
    sizes = space.orderings.sizes if space.orderings else []
    for k in range(space.min_components, space.max_components + 1):
        for combo in itertools.combinations(space.elements, k):
            found: list[Candidate] = []
            for proto in protos:
                if proto.n_slots == k:
                    found.extend(decorate(proto, combo))
            if k >= 2:
                for parent, n in itertools.product(parents, sizes):
                    if n * parent.nsites <= space.max_atoms:
                        found.extend(order(parent, n, combo))
                found.extend(
                    Candidate(source, structure)
                    for source, structure in substitute(
                        space.seeds, combo, space.substitution_threshold
                    )
                )
            out.extend(
                c
                for c in found
                if space.min_atoms <= len(c.structure) <= space.max_atoms
                and not too_close(c.structure, space.min_distance)
                and (not space.charge_balanced or charge_balanced(c.structure.composition))
            )
            if progress is not None:
                progress(1)
    return out


def count_combinations(space: ChemicalSpace) -> int:
    """Number of element combinations :func:`generate_candidates` walks through."""
    from math import comb

    n = len(space.elements)
    return sum(comb(n, k) for k in range(space.min_components, space.max_components + 1))
