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

The symmetry analysis is :func:`matdx.core.symmetry.symmetry_dataset`, the function of every
reported space group, with a tolerance of its own (:data:`SYMPREC`, relative to the mean
atomic spacing) instead of the reported 0.01 Å. On the ideal candidates of the demo campaign
(``workflows/emt_alloys.yaml``: 4,872 with the references) both tolerances give the same
4,116 groups and the same identifier for every candidate; but the fingerprint must also
survive the noise of structures that come back from elsewhere. With random displacements of
0.002 Å (σ) on 975 of those candidates, all keep their fingerprint with :data:`SYMPREC` and
only 444 with 0.01 Å; with 0.005 Å, 975 against 21. The loose tolerance stays, and with it
every identifier already stored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
import spglib
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from matdx.core.hashing import stable_hash
from matdx.core.symmetry import symmetry_dataset

SYMPREC = 0.04
"""spglib tolerance of the fingerprint, relative to the mean atomic spacing (the cube root
of the volume per atom; 0.04 is about 0.1 Å in metals): loose, so that small strains and
noise keep the bucket. Not the reported groups' 0.01 Å (see the module docstring): it
decides the material identifiers."""

_ROUND = 4
"""Decimals of the rounded pattern (metric and fractional positions) a symmetry analysis
is cached under."""


def _cell(structure: Structure) -> tuple[np.ndarray, np.ndarray, list[int]]:
    return (structure.lattice.matrix, structure.frac_coords, [site.specie.Z for site in structure])


@dataclass(frozen=True)
class _Symmetry:
    """spglib's analysis of a decoration pattern, with species as labels 0, 1, ..."""

    number: int
    orbits: tuple[tuple[int, str, int], ...]
    """(label, site symmetry, number of atoms) of every orbit."""
    std_lattice: tuple[tuple[float, ...], ...]
    """Standardised lattice at one atom per unit volume, rounded."""
    std_sites: tuple[tuple[tuple[float, ...], ...], tuple[int, ...]]
    """Sites of the standardised cell (see :func:`_canonical_sites`): positions, labels."""


def _pattern(structure: Structure) -> tuple[tuple[Any, ...], list[int]] | None:
    """The structure's decoration pattern, shared by copies and other decorations.

    Rotated, translated, permuted and isotropically scaled copies share it, and so do
    structures with other elements on the same sites. The Niggli cell is scaled to one
    atom per unit volume and kept as its metric; the species become labels in order of
    atomic number; the sites are put in :func:`_canonical_sites` order.

    Returns
    -------
    (pattern, atomic numbers by label) or None
        ``None`` when the cell cannot be reduced.
    """
    lattice, _, numbers = _cell(structure)
    n = len(numbers)
    volume = abs(float(np.linalg.det(lattice)))
    reduced = spglib.niggli_reduce(lattice)
    if reduced is None or n == 0 or volume <= 0:
        return None
    scale = (volume / n) ** (1 / 3)
    reduced = np.asarray(reduced) / scale
    frac = (structure.cart_coords / scale) @ np.linalg.inv(reduced)
    if np.linalg.det(reduced) < 0:  # keep a right-handed basis: same metric, same crystal
        reduced, frac = -reduced, -frac
    elements = sorted(set(numbers))
    labels = np.searchsorted(elements, numbers)
    pos, types = _canonical_sites(frac, labels, _ROUND)
    sites = tuple((t, *p) for t, p in zip(types, pos, strict=True))
    metric = np.round(reduced @ reduced.T, _ROUND)
    key = (tuple(metric[np.triu_indices(3)].tolist()), sites)
    return key, elements


@lru_cache(maxsize=65536)
def _analyse(key: tuple[Any, ...], symprec: float) -> _Symmetry | None:
    """Symmetry (spglib) of a pattern from :func:`_pattern`, computed once per pattern."""
    upper, sites = key
    metric = np.zeros((3, 3))
    metric[np.triu_indices(3)] = upper
    metric = metric + np.triu(metric, 1).T
    try:
        lattice = np.linalg.cholesky(metric)  # rows: a on x, b in the xy plane, right-handed
    except np.linalg.LinAlgError:
        return None
    labels = [s[0] for s in sites]
    positions = [s[1:] for s in sites]
    data = symmetry_dataset((lattice, positions, labels), symprec=symprec)
    if data is None:
        return None
    orbits: dict[tuple[int, str], int] = defaultdict(int)
    for rep in data.equivalent_atoms:
        orbits[(labels[rep], data.site_symmetry_symbols[rep])] += 1
    std = np.asarray(data.std_lattice)
    std = std / (abs(np.linalg.det(std)) / len(data.std_types)) ** (1 / 3)
    pos, types = _canonical_sites(data.std_positions, data.std_types, 3)
    return _Symmetry(
        number=int(data.number),
        orbits=tuple(sorted((label, sym, count) for (label, sym), count in orbits.items())),
        std_lattice=tuple(map(tuple, np.round(std, 3).tolist())),
        std_sites=(tuple(map(tuple, pos)), tuple(types)),
    )


def identify(structure: Structure, symprec: float = SYMPREC) -> tuple[str, str]:
    """Fingerprint and deterministic identifier of a structure.

    The fingerprint is ``"<formula>|<space group>|<hash of site orbits>"``, where the
    orbits are the multiset of (element, site symmetry, fraction of atoms): equal crystals
    share it whatever their setting, origin, site order or supercell. The identifier
    ``"mdx-<16 hex>"`` hashes the fingerprint with the standardised cell (at a fixed
    volume per atom and origin-independent), so that rotated, translated, permuted and
    isotropically scaled copies of a crystal usually share it; the matcher decides the
    rest. The symmetry analysis (spglib) runs once per decoration pattern: the many
    candidates that put other elements on the same sites reuse it.

    Parameters
    ----------
    structure
        Any ordered structure.
    symprec
        spglib tolerance relative to the mean atomic spacing (see :data:`SYMPREC`).

    Returns
    -------
    fingerprint, identifier
        Two strings.
    """
    formula = structure.composition.reduced_formula
    found = _pattern(structure)
    sym = _analyse(found[0], symprec) if found is not None else None
    if found is None or sym is None:  # spglib found no cell: the formula alone buckets it
        lattice, frac, numbers = _cell(structure)
        fp = f"{formula}|0|-"
        key = [fp, np.round(lattice, 3).tolist(), np.round(frac, 3).tolist(), numbers]
        return fp, "mdx-" + stable_hash(key, 16)
    elements = found[1]
    n = len(structure)
    signature = sorted(
        (elements[label], sym_, str(Fraction(count, n))) for label, sym_, count in sym.orbits
    )
    fp = f"{formula}|{sym.number}|{stable_hash(signature, 10)}"
    positions, labels = sym.std_sites
    key = [fp, [list(r) for r in sym.std_lattice], [list(p) for p in positions],
           [elements[label] for label in labels]]
    return fp, "mdx-" + stable_hash(key, 16)


def _canonical_sites(
    positions: Any, types: Any, decimals: int
) -> tuple[list[list[float]], list[int]]:
    """Sites of a cell, independent of the origin and the site order.

    Every atom of the rarest type is tried as the origin (positions rounded to
    ``decimals``); the lexicographically smallest sorted site list wins. Copies of one
    cell (translated, permuted) then give the same lists.

    Returns
    -------
    positions, types
        Fractional positions and types, sorted by type, then position.
    """
    types = np.asarray(types)
    positions = np.asarray(positions, dtype=float)
    values, counts = np.unique(types, return_counts=True)
    rare = values[np.argmin(counts)]
    best: tuple[list[list[float]], list[int]] | None = None
    for origin in np.flatnonzero(types == rare):
        pos = np.round((positions - positions[origin]) % 1.0, decimals) % 1.0
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
