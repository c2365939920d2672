"""Campaign-wide deduplication of candidate structures.

Two stages keep the cost near-linear in the number of candidates:

1. *Bucket* every structure by a cheap symmetry fingerprint (reduced formula, space group,
   and the multiset of (element, site symmetry, orbit fraction)). The fingerprint is the
   same for rotated, translated, permuted and supercell copies of one crystal, and for
   small strains that stay inside the symmetry tolerance.
2. *Confirm* inside each bucket with pymatgen's :class:`StructureMatcher`, as
   ``group_structures`` does, but only among structures that can match.

Structures already in the store are passed in as ``known`` and matched the same way, so
that a candidate seen in an earlier campaign keeps its identifier.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import spglib
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from matdx.core.hashing import stable_hash

SYMPREC = 0.1
"""spglib tolerance (Å) of the fingerprint: loose, so that small strains keep the bucket."""


def _cell(structure: Structure) -> tuple[np.ndarray, np.ndarray, list[int]]:
    return (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])


def identify(structure: Structure, symprec: float = SYMPREC) -> tuple[str, str]:
    """Fingerprint and deterministic identifier of a structure, from one spglib call.

    The fingerprint is ``"<formula>|<space group>|<hash of site orbits>"``, where the
    orbits are the multiset of (element, site symmetry, fraction of atoms): equal crystals
    share it whatever their setting, origin, site order or supercell. The identifier
    ``"mdx-<16 hex>"`` hashes the fingerprint with the standardised cell; it is the same
    for the same input, not for every copy of a crystal (the matcher decides that).

    Parameters
    ----------
    structure
        Any ordered structure.
    symprec
        spglib tolerance in Å.

    Returns
    -------
    fingerprint, identifier
        Two strings.
    """
    cell = _cell(structure)
    numbers = cell[2]
    formula = structure.composition.reduced_formula
    data = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if data is None:  # spglib found no cell: the formula alone buckets it
        fp = f"{formula}|0|-"
        key = [fp, np.round(cell[0], 3).tolist(), np.round(cell[1], 3).tolist(), numbers]
        return fp, "mdx-" + stable_hash(key, 16)
    n = len(numbers)
    orbits: dict[tuple[int, str], int] = defaultdict(int)
    for rep in data.equivalent_atoms:
        orbits[(numbers[rep], data.site_symmetry_symbols[rep])] += 1
    signature = sorted((z, sym, str(Fraction(count, n))) for (z, sym), count in orbits.items())
    fp = f"{formula}|{data.number}|{stable_hash(signature, 10)}"
    key = [fp, np.round(data.std_lattice, 3).tolist(), *_canonical_sites(data)]
    return fp, "mdx-" + stable_hash(key, 16)


def _canonical_sites(data: Any) -> tuple[list[list[float]], list[int]]:
    """Sites of spglib's standardised cell, independent of the origin and the site order.

    Every atom of the rarest species is tried as the origin; the lexicographically
    smallest sorted site list wins. Copies of one crystal (rotated, translated, permuted,
    supercells) then give the same list, so equal identifiers mean equal crystals.
    """
    types = np.asarray(data.std_types)
    values, counts = np.unique(types, return_counts=True)
    rare = values[np.argmin(counts)]
    best: tuple[list[list[float]], list[int]] | None = None
    for origin in np.flatnonzero(types == rare):
        pos = np.round((data.std_positions - data.std_positions[origin]) % 1.0, 3) % 1.0
        order = np.lexsort((*pos.T[::-1], types))
        cand = (pos[order].tolist(), types[order].tolist())
        if best is None or cand < best:
            best = cand
    assert best is not None
    return best


def fingerprint(structure: Structure, symprec: float = SYMPREC) -> str:
    """Symmetry fingerprint that equal crystals share (see :func:`identify`)."""
    return identify(structure, symprec)[0]


MATCHER_STOL = 0.2
"""Site tolerance of the confirming matcher. pymatgen's default (0.3) merges distinct
orderings: two CuAu orderings of 6-atom bcc supercells (space groups Cmmm and Amm2) fit
with a normalised rms of 0.27."""


def default_matcher() -> StructureMatcher:
    """The matcher that confirms duplicates: pymatgen's defaults with ``stol=0.2``."""
    return StructureMatcher(stol=MATCHER_STOL)


@dataclass
class DedupResult:
    """Outcome of :func:`deduplicate`.

    Attributes
    ----------
    groups
        Indices of the input structures, one list per distinct crystal; the first index
        of each list is the group's representative.
    fingerprints
        Fingerprint of every input structure.
    ids
        Identifier of every input structure (see :func:`identify`).
    known_ids
        For groups that match a structure already known, that structure's identifier
        (keyed by group position).
    """

    groups: list[list[int]]
    fingerprints: list[str]
    ids: list[str]
    known_ids: dict[int, str] = field(default_factory=dict)

    @property
    def representatives(self) -> list[int]:
        """The first index of every group."""
        return [g[0] for g in self.groups]


def deduplicate(
    structures: Sequence[Structure],
    known: Callable[[set[str]], Mapping[str, Sequence[tuple[str, Structure]]]] | None = None,
    matcher: StructureMatcher | None = None,
    progress: Callable[[int], None] | None = None,
) -> DedupResult:
    """Group structures that are the same crystal.

    Parameters
    ----------
    structures
        Candidates.
    known
        Called once with the set of fingerprints; returns the already stored structures
        that share them, ``{fp: [(id, structure), ...]}``.
    matcher
        Matcher confirming duplicates inside a bucket (default: :func:`default_matcher`).
    progress
        Called with the number of structures processed since the last call.

    Returns
    -------
    DedupResult
        Groups in order of first appearance.
    """
    matcher = matcher or default_matcher()
    fps: list[str] = []
    ids: list[str] = []
    buckets: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(structures):
        fp, sid = identify(s)
        fps.append(fp)
        ids.append(sid)
        buckets[fp].append(i)
        if progress is not None and i % 100 == 99:
            progress(100)
    if progress is not None and len(structures) % 100:
        progress(len(structures) % 100)

    stored = known(set(buckets)) if known is not None else {}
    groups: list[list[int]] = []
    group_known: list[str | None] = []
    for fp, members in buckets.items():
        # equal identifiers are equal crystals: the matcher only compares one per identifier
        classes: dict[str, list[int]] = defaultdict(list)
        for i in members:
            classes[ids[i]].append(i)
        reps = [c[0] for c in classes.values()]
        if len(reps) == 1:
            sub = [members]
        else:
            rep_class = {id(structures[c[0]]): c for c in classes.values()}
            grouped = matcher.group_structures([structures[i] for i in reps])
            sub = [sorted(i for s in g for i in rep_class[id(s)]) for g in grouped]
        for g in sub:
            match = None
            for kid, ks in stored.get(fp, ()):
                if matcher.fit(structures[g[0]], ks):
                    match = kid
                    break
            groups.append(g)
            group_known.append(match)
    order = sorted(range(len(groups)), key=lambda j: groups[j][0])
    result = DedupResult([groups[j] for j in order], fps, ids)
    result.known_ids = {
        pos: group_known[j] for pos, j in enumerate(order) if group_known[j] is not None
    }
    return result
