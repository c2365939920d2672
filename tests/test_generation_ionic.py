"""Ionic prototypes, charge balance and substitution from seed structures."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Lattice, Structure

from matdx.core.errors import CampaignError
from matdx.generation.candidates import generate_candidates
from matdx.generation.ionic import charge_balanced, substitute
from matdx.generation.prototypes import PROTOTYPES
from matdx.schemas.campaign import ChemicalSpace
from matdx.workflows.campaign import load_campaign

ROOT = Path(__file__).resolve().parents[1]
ILMENITE = ROOT / "workflows" / "seeds" / "FeTiO3_ilmenite.cif"

# each prototype against the same structure built by pymatgen from its space group and
# Wyckoff positions (International Tables settings)
REFERENCES = {
    "rocksalt": (["Mg", "O"], "Fm-3m", Lattice.cubic(4.21), [[0, 0, 0], [0.5, 0.5, 0.5]]),
    "zincblende": (["Zn", "S"], "F-43m", Lattice.cubic(5.41), [[0, 0, 0], [0.25, 0.25, 0.25]]),
    "wurtzite": (["Zn", "O"], "P6_3mc", Lattice.hexagonal(3.25, 5.31),
                 [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.375]]),
    "fluorite": (["Ca", "F"], "Fm-3m", Lattice.cubic(5.46), [[0, 0, 0], [0.25, 0.25, 0.25]]),
    "rutile": (["Ti", "O"], "P4_2/mnm", Lattice.tetragonal(4.59, 2.96),
               [[0, 0, 0], [0.305, 0.305, 0]]),
    "perovskite": (["Sr", "Ti", "O"], "Pm-3m", Lattice.cubic(3.905),
                   [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),
    # origin choice 1 of Fd-3m: Mg 8a, Al 16d, O 32e
    "spinel": (["Mg", "Al", "O"], 227, Lattice.cubic(8.08),
               [[0, 0, 0], [5 / 8, 5 / 8, 5 / 8], [0.3875, 0.3875, 0.3875]]),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_ionic_prototypes_are_the_structures_of_their_space_groups(name):
    species, group, lattice, coords = REFERENCES[name]
    ref = Structure.from_spacegroup(group, lattice, species, coords)
    built = PROTOTYPES[name].build(species)
    assert len(built) == len(ref.get_primitive_structure())
    assert built.get_space_group_info()[0] == ref.get_space_group_info()[0]
    assert StructureMatcher(scale=True).fit(built, ref)


@pytest.mark.parametrize(
    ("formula", "balanced"),
    [("MgO", True), ("MgO2", False), ("MgAl2O4", True), ("Mg2Si", True), ("MgSiO3", True),
     ("MgAlO3", False), ("LiCoO2", True), ("CuAu", False), ("Cu", True)],
)
def test_charge_balance_with_common_oxidation_states(formula, balanced):
    assert charge_balanced(Composition(formula)) is balanced


def test_charge_balanced_space_keeps_only_neutral_decorations():
    common = dict(elements=["Mg", "Al", "O"], min_components=2, max_components=3,
                  prototypes=["rocksalt", "fluorite", "perovskite", "spinel"], orderings=None)
    every = generate_candidates(ChemicalSpace(**common))
    kept = generate_candidates(ChemicalSpace(**common, charge_balanced=True))
    assert {c.formula for c in kept} == {"MgO", "MgAl2O4"}
    assert len(kept) < len(every)
    assert all(charge_balanced(c.structure.composition) for c in kept)
    # spinel: Mg on the tetrahedral site only (AlMg2O4 is not neutral)
    assert [c.formula for c in kept if c.source == "spinel"] == ["MgAl2O4"]


def test_substitution_from_a_seed_file_in_cif_and_poscar(tmp_path):
    seed = Structure.from_file(ILMENITE)
    poscar = tmp_path / "POSCAR"
    seed.to(filename=str(poscar))
    for path in (ILMENITE, poscar):
        made = list(substitute([str(path)], ["Mg", "Si", "O"]))
        assert [s.composition.reduced_formula for _, s in made] == ["MgSiO3"]
        source, structure = made[0]
        assert source == f"substitution:{path.name}"
        # Fe -> Mg, Ti -> Si on the seed's own sites and cell
        assert structure.lattice == seed.lattice
        assert [sp.symbol for sp in structure.species] == [
            {"Fe": "Mg", "Ti": "Si", "O": "O"}[sp.symbol] for sp in seed.species]
    # a seed with another number of species gives nothing for these elements
    assert list(substitute([str(ILMENITE)], ["Mg", "O"])) == []


def test_campaign_seeds_are_read_relative_to_the_campaign_file(tmp_path):
    data = {"name": "seeded", "chemical_space": {
        "elements": ["Mg", "Si", "O"], "min_components": 3, "prototypes": ["perovskite"],
        "orderings": None, "charge_balanced": True, "seeds": ["seeds/ilmenite.cif"]},
        "prescreen": {"engine": "chgnet"}}
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "ilmenite.cif").write_text(ILMENITE.read_text())
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    loaded = load_campaign(path)
    assert loaded.spec.chemical_space.seeds == [str(tmp_path / "seeds" / "ilmenite.cif")]
    cands = generate_candidates(loaded.spec.chemical_space)
    # MgSiO3 with Mg on the A or the B site, antiperovskite Mg3SiO (Si4-) twice, ilmenite
    assert sorted((c.source, c.formula) for c in cands) == [
        *[("perovskite", "Mg3SiO")] * 2, *[("perovskite", "MgSiO3")] * 2,
        ("substitution:ilmenite.cif", "MgSiO3")]
    # a missing seed file: one line naming the file, the line and the field
    data["chemical_space"]["seeds"] = ["seeds/none.cif"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(CampaignError) as exc:
        load_campaign(path)
    msg = str(exc.value)
    assert "\n" not in msg and "field chemical_space.seeds" in msg and "none.cif does not exist" in msg


def test_oxide_campaign_file_validates():
    loaded = load_campaign(ROOT / "workflows" / "oxides_chgnet.yaml")
    assert loaded.spec.prescreen.engine == "chgnet"
    assert loaded.step_plan()[1]["options"]["pseudo_elements"] == ["Mg", "O", "Si"]


def test_agreement_of_a_prescreen_with_a_later_step():
    from matdx.analysis.agreement import agreement

    def row(mid, formula, nel, e_pre, e_step, hull_pre):
        return {"material_id": mid, "formula_pretty": formula, "nelements": nel,
                "energy_per_atom": e_pre, "energy_above_hull": hull_pre,
                "steps": {"dft": {"energy_per_atom": e_step}} if e_step is not None else {}}

    rows = [
        row("cu", "Cu", 1, -1.0, -4.0, 0.0),
        row("au", "Au", 1, -2.0, -3.0, 0.0),
        # formation energies: pre -0.1, -0.05, -0.02; step -0.2, -0.02, -0.15
        row("cuau", "CuAu", 2, -1.6, -3.7, 0.0),
        row("cu3au", "Cu3Au", 2, -1.3, -3.77, 0.0),
        row("cuau3", "CuAu3", 2, -1.77, -3.4, 0.03),
        row("other", "Cu3Au", 2, -1.2, None, 0.05),  # not computed by the step
    ]
    result = agreement(rows, "dft")
    assert result["n_materials"] == 5 and result["n_compounds"] == 3
    assert result["formation_mae"] == pytest.approx((0.1 + 0.03 + 0.13) / 3)
    # at the step's level Cu3Au (-0.02) lies above the CuAu-Cu tie-line (-0.1)
    per = {p["material_id"]: p for p in result["per_material"]}
    assert per["cu3au"]["step_hull"] == pytest.approx(0.08)
    assert sorted(result["stable"]) == ["CuAu", "CuAu3"]
    # the pre-screen ranked cu3au, cuau (hull 0, by id) first, then cuau3
    assert result["kept_in_top"] == {1: 0, 2: 1, 3: 2}
