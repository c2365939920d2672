"""The CHGNet engine against CHGNet's own ASE calculator and StructOptimizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("chgnet")

from chgnet.model import StructOptimizer
from chgnet.model.dynamics import CHGNetCalculator
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from matdx.core.errors import EngineError, InputError
from matdx.engines.mlip import load_chgnet
from matdx.engines.registry import ENGINES, check_elements, get_engine
from matdx.schemas.results import CalcResult

ENGINE = get_engine("chgnet")


def perturbed(s: Structure, seed: int) -> Structure:
    rng = np.random.default_rng(seed)
    out = s.copy()
    for i in range(len(out)):
        out.translate_sites([i], rng.normal(0, 0.04, 3), frac_coords=False)
    return out


MGO = perturbed(Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.3), ["Mg", "O"],
                                          [[0, 0, 0], [0.5, 0.5, 0.5]]), 1)
LIF_PRIMITIVE = perturbed(Structure.from_spacegroup(
    "Fm-3m", Lattice.cubic(4.1), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]]
).get_primitive_structure(), 4)
SRTIO3 = perturbed(Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.95), ["Sr", "Ti", "O"],
                                             [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]), 2)
LIF = perturbed(Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.1), ["Li", "F"],
                                          [[0, 0, 0], [0.5, 0.5, 0.5]]), 3)


def test_registry_entry_and_elements():
    spec = ENGINES["chgnet"]
    assert spec.batched and spec.tasks == ("relax", "vc-relax", "static", "md")
    check_elements("chgnet", ["Li", "Fe", "O", "N", "Pu"])
    with pytest.raises(InputError, match=r"engine 'chgnet' does not support Og"):
        check_elements("chgnet", ["O", "Og"])


def test_static_is_chgnets_own_calculator():
    res = ENGINE.calculate(SRTIO3, "static")
    atoms = AseAtomsAdaptor.get_atoms(SRTIO3)
    atoms.calc = CHGNetCalculator(model=load_chgnet(), use_device="cpu")
    assert res.engine == "chgnet" and res.task == "static" and res.n_steps == 0
    assert res.energy == pytest.approx(float(atoms.get_potential_energy()), abs=1e-5)
    assert np.allclose(res.forces, atoms.get_forces(), atol=1e-5)
    assert np.allclose(res.stress, atoms.get_stress(), atol=1e-6)
    assert res.code_version.startswith("CHGNet 0.4")


@pytest.mark.parametrize("task", ["vc-relax", "relax"])
def test_relax_takes_chgnets_structoptimizer_steps(task):
    relax_cell = task == "vc-relax"
    res = ENGINE.calculate(MGO, task, {"optimizer": "FIRE", "fmax": 0.05})
    ref = StructOptimizer(model=load_chgnet(), optimizer_class="FIRE", use_device="cpu").relax(
        MGO, fmax=0.05, steps=500, relax_cell=relax_cell, verbose=False)
    traj = ref["trajectory"]
    final = ref["final_structure"]
    assert res.converged
    # the trajectory holds the start, every step and a last observation
    assert res.n_steps == len(traj.energies) - 2
    assert res.energy == pytest.approx(float(traj.energies[-1]), abs=1e-4)
    assert res.volume_per_atom == pytest.approx(final.volume / len(final), rel=1e-6)
    got = Structure.from_dict(res.structure)
    assert np.allclose(got.cart_coords, final.cart_coords, atol=1e-5)
    if not relax_cell:
        assert got.volume == pytest.approx(MGO.volume)


def test_many_relaxed_together_are_each_relaxed_alone():
    structures = [LIF_PRIMITIVE, SRTIO3, MGO]
    together = ENGINE.calculate_many(structures, "vc-relax", {"fmax": 0.05, "batch_size": 2})
    for s, res in zip(structures, together, strict=True):
        alone = ENGINE.calculate(s, "vc-relax", {"fmax": 0.05})
        assert isinstance(res, CalcResult)
        assert res.n_steps == alone.n_steps
        assert res.energy_per_atom == pytest.approx(alone.energy_per_atom, abs=1e-5)
        assert res.volume_per_atom == pytest.approx(alone.volume_per_atom, rel=1e-5)


def test_a_bad_structure_fails_alone_in_its_batch():
    overlapping = Structure(Lattice.cubic(4.0), ["Mg", "O"], [[0, 0, 0], [0.01, 0, 0]])
    results = ENGINE.calculate_many([overlapping, LIF], "static")
    assert isinstance(results[0], InputError) and "apart" in str(results[0])
    assert isinstance(results[1], CalcResult)
    with pytest.raises(InputError, match=r"^unknown chgnet static setting\(s\): fmax$"):
        ENGINE.calculate(LIF, "static", {"fmax": 0.1})
    with pytest.raises(EngineError, match="CHGNet does not treat Og"):
        ENGINE.calculate(Structure(Lattice.cubic(4.0), ["Og"], [[0, 0, 0]]), "static")


def test_md_runs_in_the_ase_md_integrator(tmp_path: Path):
    res = ENGINE.calculate(
        LIF, "md",
        {"temperature": 300, "steps": 20, "thermo_interval": 5,
         "dump_interval": 0, "timestep": 1.0, "seed": 3},
        workdir=tmp_path,
    )
    assert res.engine == "chgnet" and res.task == "md" and res.n_steps == 20
    assert res.parameters["calculator"] == "chgnet"
    assert np.isfinite(res.energy) and len(res.forces) == len(LIF)
    # the final frame's energy is CHGNet's on the final structure
    static = ENGINE.calculate(Structure.from_dict(res.structure), "static")
    assert static.energy == pytest.approx(res.energy, abs=1e-4)
