"""Candidates for ionic compounds: charge balance and substitution from known structures.

Charge balance uses pymatgen's :meth:`~pymatgen.core.Composition.oxi_state_guesses` with
each element's common oxidation states; substitution uses pymatgen's data-driven ionic
substitution probabilities (:class:`pymatgen.analysis.structure_prediction.substitutor.
Substitutor`, Hautier et al., Inorg. Chem. 50, 656 (2011)) on seed structures read from
CIF or POSCAR files.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from pymatgen.core import Composition, Element, Species, Structure

from matdx.core.errors import InputError


@cache
def _balanced(reduced_formula: str) -> bool:
    return bool(Composition(reduced_formula).oxi_state_guesses(max_sites=-1))


def charge_balanced(composition: Composition) -> bool:
    """Whether common oxidation states of its elements make ``composition`` neutral.

    A single element (a metal, an elemental phase) counts as balanced.
    """
    if len(composition.elements) < 2:
        return True
    return _balanced(composition.reduced_formula)


def read_seed(path: str | Path) -> Structure:
    """A seed structure from a CIF or POSCAR file (by pymatgen's reading of the name).

    Raises
    ------
    InputError
        One line naming the file if it is missing or unreadable.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"seed structure {p} does not exist")
    try:
        structure = Structure.from_file(p)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"seed structure {p.name} cannot be read: {first}") from None
    if structure.is_ordered is False:
        raise InputError(f"seed structure {p.name} has partial occupancies")
    return structure


@cache
def _decorated(path: str) -> Structure:
    structure = read_seed(path)
    structure.add_oxidation_state_by_guess()
    return structure


def _target_species(elements: Sequence[str], allowed: set[Species]) -> Iterator[list[Species]]:
    """Each assignment of common oxidation states to ``elements`` with both signs.

    Only species that the probability model knows (``allowed``) are used.
    """
    states = [Element(el).common_oxidation_states for el in elements]
    for combo in itertools.product(*states):
        if any(q > 0 for q in combo) and any(q < 0 for q in combo):
            species = [Species(el, q) for el, q in zip(elements, combo, strict=True)]
            if all(sp in allowed for sp in species):
                yield species


@cache
def _substitutor(threshold: float) -> Any:
    from pymatgen.analysis.structure_prediction.substitutor import Substitutor

    return Substitutor(threshold=threshold)


def substitute(
    seeds: Sequence[str], elements: Sequence[str], threshold: float = 1e-3
) -> Iterator[tuple[str, Structure]]:
    """Structures of ``elements`` made from seeds by probable ionic substitutions.

    Parameters
    ----------
    seeds
        CIF or POSCAR files; each seed with as many species as ``elements`` is used.
    elements
        The elements every structure made contains (each once, in some oxidation state).
    threshold
        Smallest substitution probability kept.

    Yields
    ------
    tuple of (str, Structure)
        ``substitution:<seed file name>`` and the structure (no oxidation states), in the
        seed's cell; substitutions keep the cell charge neutral.
    """
    if not seeds:  # the model costs seconds to load: only for campaigns with seeds
        return
    substitutor = _substitutor(threshold)
    allowed = set(substitutor.get_allowed_species())
    for path in seeds:
        seed = _decorated(str(path))
        if len(seed.composition.elements) != len(elements):
            continue
        for species in _target_species(elements, allowed):
            made = substitutor.pred_from_structures(
                species, [{"structure": seed, "id": Path(path).name}], remove_duplicates=True
            )
            for transformed in made:
                structure = transformed.final_structure.copy()
                structure.remove_oxidation_states()
                yield f"substitution:{Path(path).name}", structure
