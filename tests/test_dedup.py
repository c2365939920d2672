from __future__ import annotations

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure
from pymatgen.core.operations import SymmOp

from matdx.generation.candidates import generate_candidates
from matdx.generation.dedup import deduplicate, default_matcher, identify
from matdx.generation.prototypes import PROTOTYPES
from matdx.schemas.campaign import ChemicalSpace


def copies(s: Structure, rng: np.random.Generator) -> list[Structure]:
    """Rotated, translated, permuted, supercell and slightly strained copies of ``s``."""
    out = []
    rot = s.copy()
    rot.apply_operation(SymmOp.from_axis_angle_and_translation([1, 2, 3], 37.0))
    out.append(rot)
    tr = s.copy()
    tr.translate_sites(list(range(len(tr))), rng.random(3))
    out.append(tr)
    perm = Structure.from_sites([s[i] for i in rng.permutation(len(s))])
    out.append(perm)
    out.append(s * (2, 1, 1))
    out.append(s * (1, 2, 2))
    strained = s.copy()
    strained.apply_strain(0.01)
    out.append(strained)
    return out


def test_copies_of_one_ordering_collapse_and_orderings_stay_apart():
    rng = np.random.default_rng(0)
    l12 = PROTOTYPES["L1_2"].build(["Cu", "Au"])
    d03 = PROTOTYPES["D0_3"].build(["Cu", "Au"])  # same composition Cu3Au, other ordering
    structures = [l12, *copies(l12, rng), d03, *copies(d03, rng)]
    result = deduplicate(structures)
    assert result.groups == [list(range(7)), list(range(7, 14))]


def test_groups_equal_pymatgen_group_structures_on_a_mixed_set():
    rng = np.random.default_rng(1)
    space = ChemicalSpace(elements=["Cu", "Au"], orderings={"parents": ["fcc", "bcc"],
                                                           "sizes": [2, 3, 4]})
    base = [c.structure for c in generate_candidates(space)]
    mixed = base + [c for s in base[::7] for c in copies(s, rng)[:4]]
    ours = deduplicate(mixed)
    theirs = default_matcher().group_structures(mixed)
    index = {id(s): i for i, s in enumerate(mixed)}
    as_sets = sorted(sorted(index[id(s)] for s in g) for g in theirs)
    assert sorted(ours.groups) == as_sets
    assert len(ours.groups) < len(mixed)


def test_known_structures_keep_their_identifier():
    l12 = PROTOTYPES["L1_2"].build(["Cu", "Au"])
    fp, _ = identify(l12)
    moved = l12 * (1, 1, 2)
    result = deduplicate([moved, PROTOTYPES["fcc"].build(["Cu"])],
                         known=lambda fps: {fp: [("mdx-known", l12)]} if fp in fps else {})
    assert result.known_ids == {0: "mdx-known"}


def test_identifier_is_deterministic():
    s = PROTOTYPES["L1_0"].build(["Cu", "Pt"])
    assert identify(s) == identify(s.copy())
    assert identify(s)[1] != identify(PROTOTYPES["B2"].build(["Cu", "Pt"]))[1]


def sg(s: Structure) -> int:
    import spglib

    return spglib.get_symmetry_dataset(
        (s.lattice.matrix, s.frac_coords, [x.specie.Z for x in s]), symprec=1e-3).number


def test_distinct_orderings_of_one_composition_stay_apart():
    space = ChemicalSpace(elements=["Cu", "Au"], min_components=2, max_components=2,
                          prototypes=[], orderings={"parents": ["bcc"], "sizes": [6]})
    cuau = [c.structure for c in generate_candidates(space)
            if c.structure.composition.reduced_formula == "CuAu"]
    result = deduplicate(cuau)
    for g in result.groups:
        assert len({sg(cuau[i]) for i in g}) == 1
    # pymatgen's default site tolerance merges some of these distinct orderings
    loose = StructureMatcher().group_structures(cuau)
    assert any(len({sg(s) for s in g}) > 1 for g in loose)
    assert len(result.groups) > len(loose)
