"""Symmetry-distinct orderings of a parent lattice in small supercells.

The supercells of a parent cell are the Hermite normal forms (HNF) of determinant ``n``,
reduced under the parent's rotations; the colourings of each supercell's sites are reduced
under the permutations that its symmetry operations induce. What remains may still repeat a
structure of another supercell (a 2-atom ordering inside a 4-atom cell): the campaign-wide
deduplication collapses those.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import numpy as np
import spglib
from pymatgen.core import Structure

from matdx.generation.prototypes import Prototype


def _hnf_rows(m: np.ndarray) -> tuple[int, ...]:
    """Canonical lower-triangular Hermite normal form of the row lattice of ``m``."""
    h = [list(map(int, row)) for row in m]
    # clear the upper triangle column by column, from the last column to the first
    for col, pivot in ((2, 2), (1, 1)):
        rows = list(range(pivot + 1))
        while True:
            nonzero = [r for r in rows if h[r][col] != 0]
            if len(nonzero) <= 1:
                break
            r_min = min(nonzero, key=lambda r: abs(h[r][col]))
            for r in nonzero:
                if r != r_min:
                    q = h[r][col] // h[r_min][col]
                    h[r] = [x - q * y for x, y in zip(h[r], h[r_min], strict=True)]
        nz = [r for r in rows if h[r][col] != 0]
        if nz and nz[0] != pivot:
            h[pivot], h[nz[0]] = h[nz[0]], h[pivot]
    for i in range(3):
        if h[i][i] < 0:
            h[i] = [-x for x in h[i]]
    # reduce below-diagonal entries modulo the diagonal
    for i in range(1, 3):
        for j in range(i - 1, -1, -1):
            q = h[i][j] // h[j][j]
            h[i] = [x - q * y for x, y in zip(h[i], h[j], strict=True)]
    return tuple(x for row in h for x in row)


def hermite_normal_forms(n: int) -> list[np.ndarray]:
    """All lower-triangular HNF matrices of determinant ``n`` (row convention).

    Parameters
    ----------
    n
        Supercell size.

    Returns
    -------
    list of ndarray
        3×3 integer matrices ``H``; supercell vectors are ``H @ parent_lattice``.
    """
    out = []
    for a in range(1, n + 1):
        if n % a:
            continue
        for c in range(1, n // a + 1):
            if (n // a) % c:
                continue
            f = n // (a * c)
            for b, d, e in itertools.product(range(a), range(a), range(c)):
                out.append(np.array([[a, 0, 0], [b, c, 0], [d, e, f]], int))
    return out


def _cell(structure: Structure) -> tuple[np.ndarray, np.ndarray, list[int]]:
    return (structure.lattice.matrix, structure.frac_coords, [1] * len(structure))


@cache
def distinct_supercells(proto: Prototype, n: int) -> tuple[tuple[int, ...], ...]:
    """HNFs of size ``n`` that are distinct under the parent's rotations.

    Parameters
    ----------
    proto
        Parent prototype (all sites one slot).
    n
        Supercell size.

    Returns
    -------
    tuple
        Flattened canonical HNF matrices.
    """
    parent = proto.build(["Cu"] * proto.n_slots, volume_per_atom=12.0)
    sym = spglib.get_symmetry(_cell(parent), symprec=1e-3)
    rotations = sym["rotations"]
    seen: set[tuple[int, ...]] = set()
    keep: list[tuple[int, ...]] = []
    for h in hermite_normal_forms(n):
        key = _hnf_rows(h)
        if key in seen:
            continue
        keep.append(key)
        seen.update(_hnf_rows(h @ w.T) for w in rotations)
    return tuple(keep)


def site_permutations(structure: Structure, symprec: float = 1e-3) -> np.ndarray:
    """Permutations of the sites induced by the symmetry operations of an undecorated cell.

    Parameters
    ----------
    structure
        Cell whose sites are all one species.
    symprec
        spglib tolerance.

    Returns
    -------
    ndarray
        ``(n_ops, n_sites)`` array; row ``k`` maps site ``i`` to ``perm[k, i]``.
    """
    sym = spglib.get_symmetry(_cell(structure), symprec=symprec)
    frac = structure.frac_coords
    perms = []
    for rot, trans in zip(sym["rotations"], sym["translations"], strict=True):
        moved = frac @ rot.T + trans
        diff = moved[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        match = np.linalg.norm(diff, axis=2) < 1e-3
        perms.append(match.argmax(axis=1))
    return np.unique(np.array(perms, int), axis=0)


def distinct_colourings(perms: np.ndarray, k: int) -> np.ndarray:
    """Colourings of the sites with exactly ``k`` colours, one per orbit of ``perms``.

    Parameters
    ----------
    perms
        Site permutations from :func:`site_permutations`.
    k
        Number of colours, all of which must be used.

    Returns
    -------
    ndarray
        ``(n_colourings, n_sites)`` array of colour labels 0..k-1.
    """
    n = perms.shape[1]
    if k > n:
        return np.zeros((0, n), int)
    colourings = np.array(list(itertools.product(range(k), repeat=n)), int)
    colourings = colourings[[len(set(c)) == k for c in colourings]]
    weights = k ** np.arange(n - 1, -1, -1)
    # code of each colouring under each permutation; the orbit representative is the minimum
    codes = (colourings[:, perms] * weights).sum(axis=2)
    canonical = codes.min(axis=1)
    _, first = np.unique(canonical, return_index=True)
    return colourings[np.sort(first)]


@dataclass(frozen=True)
class Ordering:
    """A supercell of a parent prototype and a colouring of its sites."""

    parent: str
    size: int
    hnf: tuple[int, ...]
    colouring: tuple[int, ...]

    @property
    def label(self) -> str:
        """Short identifier used as the candidate's source."""
        h = "".join(map(str, self.hnf))
        c = "".join(map(str, self.colouring))
        return f"{self.parent}/n{self.size}/{h}/{c}"


@cache
def orderings(proto: Prototype, n: int, k: int) -> tuple[tuple[Ordering, Structure], ...]:
    """Symmetry-distinct ``k``-colour orderings of ``proto`` in supercells of size ``n``.

    Parameters
    ----------
    proto
        Parent prototype with a single slot.
    n
        Supercell size.
    k
        Number of species.

    Returns
    -------
    tuple of (Ordering, Structure)
        Each ordering with its undecorated supercell (unit volume per atom, species 'Cu').
    """
    if proto.n_slots != 1:
        raise ValueError(f"parent {proto.name!r} must have a single site type")
    parent = proto.build(["Cu"], volume_per_atom=1.0)
    out = []
    for hnf in distinct_supercells(proto, n):
        cell = parent.copy()
        cell.make_supercell(np.array(hnf).reshape(3, 3))
        for colouring in distinct_colourings(site_permutations(cell), k):
            out.append((Ordering(proto.name, n, hnf, tuple(int(c) for c in colouring)), cell))
    return tuple(out)
