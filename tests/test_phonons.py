"""Phonons with phonopy and forces from real engines: ASE's EMT, and pw.x for Si.

Cu in EMT: fcc is stable with a highest frequency near 8 THz (EMT overestimates the
experimental 7.3 THz by about 10 %); bcc, the textbook unstable Cu phase, has imaginary
transverse modes at N, as in DFT.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import phonopy
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from scipy.spatial.transform import Rotation

from matdx.analysis.phonons import PhononResult, forces_from_engine, phonons
from matdx.core.errors import EngineError
from matdx.engines.emt.core import relax
from matdx.schemas.results import CalcResult

R_GAS = 8.314462618  # J/K/mol
H_PLANCK = 6.62607015e-34
N_AVOGADRO = 6.02214076e23
T_GRID = [0, 10, 50, 100, 200, 300, 500, 1000, 1500, 2000]


def emt_forces(structures: list[Structure]) -> list[np.ndarray]:
    out = []
    for s in structures:
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = EMT()
        out.append(atoms.get_forces())
    return out


def relaxed_cu(crystal: str, a: float) -> Structure:
    result = relax(AseAtomsAdaptor.get_structure(bulk("Cu", crystal, a=a)))
    assert result.converged
    return Structure.from_dict(result.structure)


@pytest.fixture(scope="module")
def fcc() -> Structure:
    s = relaxed_cu("fcc", 3.6)
    assert s.get_space_group_info()[1] == 225
    return s


@pytest.fixture(scope="module")
def fcc_phonons(fcc: Structure) -> PhononResult:
    return phonons(fcc, emt_forces, 3, temperatures=T_GRID)


def test_fcc_cu_is_stable_with_emt_frequencies(fcc_phonons: PhononResult) -> None:
    s = fcc_phonons.summary
    assert s.dynamically_stable
    assert s.min_frequency > -1e-3  # only Gamma's acoustic zeros
    assert 7.9 < s.max_frequency < 8.3  # EMT Cu: 8.06 THz (experiment 7.3)
    assert s.n_displacements == 1 and s.n_atoms_primitive == 1 and s.n_atoms_supercell == 27
    assert s.band_path[0][:4] == ["\\Gamma", "X", "W", "K"]
    a = fcc_phonons.arrays
    # DOS integrates to 3 modes per atom
    assert np.trapezoid(a["dos"], a["dos_frequencies"]) == pytest.approx(3.0, rel=0.02)
    assert a["band_frequencies"].shape == (10 * 51, 3)  # 9 + 1 segments of 51 q-points
    assert np.all(a["mesh_frequencies"] > -1e-3)


@pytest.mark.filterwarnings("ignore:Mesh .* is incompatible with the primitive-cell point group")
def test_band_path_points_are_the_physical_high_symmetry_points(fcc: Structure) -> None:
    """Labels land on X, W, K, L, U even for a rotated cell given in an odd primitive basis."""
    a = fcc.lattice.abc[0] * np.sqrt(2)
    rot = Rotation.from_euler("zyx", [20, 35, -50], degrees=True).as_matrix()
    basis = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]])  # its map to the standard cell is not symmetric
    odd = Structure(Lattice(basis @ fcc.lattice.matrix @ rot.T), ["Cu"], [[0.1, 0.2, 0.3]])
    cartesian = {"\\Gamma": [0, 0, 0], "X": [0, 1, 0], "L": [0.5, 0.5, 0.5], "W": [0.5, 1, 0],
                 "K": [0.75, 0.75, 0], "U": [0.25, 1, 0.25]}  # units of 2 pi / a, cubic axes
    x_point = []
    for structure, rotation in ((fcc, np.eye(3)), (odd, rot)):
        # primitive_matrix "P": phonopy keeps the odd basis instead of reducing it
        result = phonons(structure, emt_forces, 3, temperatures=[300], primitive_matrix="P")
        ph = result.phonopy
        starts = [label for seg in result.summary.band_path for label in seg[:-1]]
        bands = result.arrays["band_frequencies"]
        for k, label in enumerate(starts):
            q = np.asarray(ph.primitive.cell) @ (rotation @ np.array(cartesian[label]) / a)
            expected = ph.run_qpoints([q]).frequencies[0]
            assert np.allclose(bands[k * 51], np.sort(expected), atol=1e-6), label
        x_point.append(bands[starts.index("X") * 51])
    assert x_point[0][2] == pytest.approx(8.06, abs=0.05)  # LA(X); experiment 7.25 THz
    assert x_point[0][0] == pytest.approx(5.49, abs=0.05)  # TA(X); experiment 5.16 THz


def test_bcc_cu_is_dynamically_unstable(fcc_phonons: PhononResult) -> None:
    bcc = relaxed_cu("bcc", 2.87)
    assert bcc.get_space_group_info()[1] == 229  # still bcc after the EMT relaxation
    result = phonons(bcc, emt_forces, 3, temperatures=[300])
    s = result.summary
    assert not s.dynamically_stable
    assert s.min_frequency < -1.0  # about -1.17 THz
    # the softest mode is at N = (2 pi / a)(1/2, 1/2, 0): |q| = 1 / (sqrt(2) a) without 2 pi
    a = bcc.lattice.abc[0] * 2 / np.sqrt(3)
    q_cart = np.asarray(s.min_frequency_qpoint) @ np.linalg.inv(result.phonopy.primitive.cell).T
    assert np.linalg.norm(q_cart) == pytest.approx(1 / (np.sqrt(2) * a), rel=1e-6)
    assert fcc_phonons.summary.dynamically_stable  # same workflow, opposite verdict


def test_thermal_properties(fcc_phonons: PhononResult) -> None:
    a = fcc_phonons.arrays
    t, f, s, cv = a["temperatures"], a["free_energy"], a["entropy"], a["heat_capacity"]
    assert list(t) == T_GRID
    assert np.all(np.diff(f) < 0)  # F = E - TS falls with T
    assert np.all(np.diff(s) > 0) and np.all(np.diff(cv) > 0)
    assert cv[0] == 0 and s[0] == 0
    assert cv[-1] == pytest.approx(3 * R_GAS, rel=3e-3)  # Dulong-Petit: 24.94 J/K/mol atoms
    assert cv[T_GRID.index(300)] == pytest.approx(23.37, abs=0.05)
    # zero-point energy = sum of h nu / 2 over the mesh, in kJ/mol
    nu = a["mesh_frequencies"] * 1e12
    w = a["mesh_weights"] / a["mesh_weights"].sum()
    zpe = 0.5 * H_PLANCK * np.sum(w[:, None] * np.clip(nu, 0, None)) * N_AVOGADRO / 1000
    assert f[0] == pytest.approx(zpe, rel=1e-3)
    assert fcc_phonons.summary.zero_point_energy == pytest.approx(f[0])
    assert fcc_phonons.summary.thermal_300K["heat_capacity"] == pytest.approx(cv[T_GRID.index(300)])


def test_summary_is_small_and_arrays_are_saved(fcc_phonons: PhononResult, tmp_path: Path) -> None:
    text = fcc_phonons.summary.model_dump_json()
    assert len(text) < 2000 and "force_constants" not in text
    paths = fcc_phonons.save(tmp_path)
    with np.load(paths["arrays"]) as npz:
        assert set(npz.files) == set(fcc_phonons.arrays)
        assert np.array_equal(npz["force_constants"], fcc_phonons.arrays["force_constants"])
    assert json.loads(paths["summary"].read_text())["max_frequency"] == fcc_phonons.summary.max_frequency
    again = phonopy.load(str(paths["phonopy"]), log_level=0)  # forces -> force constants
    q = fcc_phonons.arrays["mesh_qpoints"][-5:]
    assert np.allclose(again.run_qpoints(q).frequencies, fcc_phonons.arrays["mesh_frequencies"][-5:], atol=1e-6)


def test_forces_from_an_engine_and_residual_forces(fcc: Structure) -> None:
    def emt_static(s: Structure) -> CalcResult:
        (f,) = emt_forces([s])
        return CalcResult(engine="emt", code_version="x", task="static", energy=0.0,
                          energy_per_atom=0.0, volume_per_atom=1.0, forces=f.tolist(),
                          structure=s.as_dict())

    calls: list[int] = []

    def counting(structures: list[Structure]) -> list[np.ndarray]:
        calls.append(len(structures))
        return forces_from_engine(emt_static)(structures)

    result = phonons(fcc, counting, 3, subtract_residual_forces=True, temperatures=[300])
    assert calls == [2]  # undisplaced supercell + one displacement
    assert result.summary.max_frequency == pytest.approx(8.06, abs=0.05)

    def no_forces(s: Structure) -> CalcResult:
        return emt_static(s).model_copy(update={"forces": None})

    with pytest.raises(EngineError, match="emt returned no forces"):
        phonons(fcc, forces_from_engine(no_forces), 3)
    with pytest.raises(EngineError, match="forces_fn returned 1 force arrays for 1 supercells of 27 atoms"):
        phonons(fcc, lambda structures: [np.zeros((26, 3))], 3)


@pytest.mark.slow
def test_silicon_phonons_from_quantum_espresso() -> None:
    """Real pw.x forces (LDA, 2 MPI ranks): diamond Si is stable, Γ optical mode ~15 THz."""
    from matdx.engines.registry import get_engine

    calculate = get_engine("qe").calculate
    settings = {"ecutwfc": 16.0, "kpts": [2, 2, 2], "conv_thr": 1e-10,
                "pseudopotentials": {"Si": "Si.pz-vbc.UPF"}}
    si = relax_free_si(settings, calculate)
    forces = forces_from_engine(lambda s: calculate(s, "static", settings=settings))
    result = phonons(si, forces, [2, 2, 2], mesh=[8, 8, 8], temperatures=[0, 300])
    assert result.summary.n_displacements == 1  # one symmetry-distinct displacement
    assert result.summary.dynamically_stable
    # experiment: 15.5 THz; LDA at this (low) cutoff and k-mesh lands within ~10 %
    assert 13.5 < result.summary.max_frequency < 17.0


def relax_free_si(settings: dict, calculate) -> Structure:
    """Diamond Si at the engine's own equilibrium lattice constant (vc-relax)."""
    a = 5.40
    si = Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]),
                   ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    out = calculate(si, "vc-relax", settings=settings)
    assert out.converged
    return Structure.from_dict(out.structure)
