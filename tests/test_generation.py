from __future__ import annotations

import numpy as np
import pytest
import spglib
from pymatgen.core import Structure

from matdx.generation.candidates import generate_candidates, too_close
from matdx.generation.orderings import distinct_supercells, hermite_normal_forms
from matdx.generation.prototypes import PROTOTYPES, elemental_volume
from matdx.schemas.campaign import ChemicalSpace


def sg(s: Structure) -> int:
    cell = (s.lattice.matrix, s.frac_coords, [x.specie.Z for x in s])
    return spglib.get_symmetry_dataset(cell, symprec=1e-3).number


@pytest.mark.parametrize(
    ("name", "species", "number", "formula"),
    [
        ("fcc", ["Cu"], 225, "Cu"),
        ("bcc", ["Cu"], 229, "Cu"),
        ("hcp", ["Cu"], 194, "Cu"),
        ("L1_2", ["Cu", "Au"], 221, "Cu3Au"),
        ("L1_0", ["Cu", "Au"], 123, "CuAu"),
        ("B2", ["Cu", "Au"], 221, "CuAu"),
        ("CsCl", ["Cu", "Au"], 221, "CuAu"),
        ("D0_3", ["Al", "Ni"], 225, "Al3Ni"),
        ("rocksalt", ["Cu", "Au"], 225, "CuAu"),
        ("L2_1", ["Cu", "Al", "Ni"], 225, "AlCu2Ni"),
    ],
)
def test_prototypes_have_their_space_group(name, species, number, formula):
    s = PROTOTYPES[name].build(species)
    assert sg(s) == number
    assert s.composition.reduced_formula == formula
    # the cell is scaled to the Vegard volume of its sites
    expected = np.mean([elemental_volume(str(x.specie)) for x in s])
    assert s.volume / len(s) == pytest.approx(expected, rel=1e-9)


def test_hnf_counts_match_the_known_sequence():
    # number of 3D sublattices of index n: 1, 7, 13, 35, 31, 91
    assert [len(hermite_normal_forms(n)) for n in range(1, 7)] == [1, 7, 13, 35, 31, 91]
    # distinct fcc supercells up to rotation (Hart & Forcade): 1, 2, 3, 7
    assert [len(distinct_supercells(PROTOTYPES["fcc"], n)) for n in range(1, 5)] == [1, 2, 3, 7]


def test_generation_is_deterministic_and_filtered():
    space = ChemicalSpace(elements=["Cu", "Au", "Pt"], max_atoms=3)
    a = generate_candidates(space)
    b = generate_candidates(space)
    assert [c.source for c in a] == [c.source for c in b]
    assert all(x.structure == y.structure for x, y in zip(a, b, strict=True))
    assert max(len(c.structure) for c in a) <= 3
    assert {c.formula for c in a} >= {"Cu", "Au", "Pt", "CuAu", "Cu2Au"}
    assert any(len(c.structure.composition) == 3 for c in a)  # ternary 3-atom orderings


def test_min_distance_filter_removes_crowded_cells():
    space = ChemicalSpace(elements=["Cu", "Au"], min_distance=2.6, orderings=None,
                          prototypes=["fcc", "bcc", "rocksalt"])
    kept = generate_candidates(space)
    assert kept, "fcc/bcc Au have neighbours at > 2.6 Å"
    assert all(not too_close(c.structure, 2.6) for c in kept)
    # rocksalt CuAu has its nearest neighbours at a/2 < 2.6 Å and is dropped
    assert "rocksalt" not in {c.source for c in kept}
    assert too_close(PROTOTYPES["rocksalt"].build(["Cu", "Au"]), 2.6)
