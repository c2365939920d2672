"""The VASP engine against a fake ``vasp_std`` that checks our inputs and replays real outputs.

VASP cannot run here. ``tests/fake_vasp/fake_vasp.py`` is given to the engine as the profile's
command (the only seam patched): it checks the INCAR/KPOINTS/POSCAR/POTCAR.spec that matdx
wrote against the expectations of each step of a plan and replays recorded VASP output from
``tests/data/vasp`` (a copy of the shared recorded outputs: custodian's test files).
pymatgen writes and parses, custodian runs the job and its handlers, for real.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import pytest
from custodian.vasp.handlers import NonConvergingErrorHandler, UnconvergedErrorHandler
from pymatgen.core import Structure
from pymatgen.io.vasp import Incar, Kpoints, Outcar, Poscar, Vasprun

from fake_vasp.fake_vasp import read_log, write_plan
from matdx.core.errors import EngineError, InputError
from matdx.engines.base import EngineProfile
from matdx.engines.vasp.core import VaspEngine, default_profile
from matdx.engines.vasp.inputs import potcar_library, write_inputs
from matdx.engines.vasp.outputs import parse_run


def calculate(
    structure, task, settings=None, workdir=None, profile=None, max_corrections=5, *,
    handlers=None, monitor=True,
):
    """The VASP engine's ``calculate`` with the given profile, handlers and monitoring."""
    engine = VaspEngine(profile, max_corrections, handlers, monitor)
    return engine.calculate(structure, task, settings, workdir)


def relax(structure, *, workdir=None, profile=None, max_corrections=5, monitor=True, **settings):
    """``calculate(structure, "relax", settings, ...)``."""
    return calculate(structure, "relax", settings, workdir, profile, max_corrections, monitor=monitor)


def static(structure, *, workdir=None, profile=None, max_corrections=5, monitor=True, **settings):
    """``calculate(structure, "static", settings, ...)``."""
    return calculate(structure, "static", settings, workdir, profile, max_corrections, monitor=monitor)

ROOT = Path(__file__).resolve().parents[1]
FAKE = Path(__file__).resolve().parent / "fake_vasp" / "fake_vasp.py"
DATA = Path(os.environ.get("MATDX_VASP_TEST_DATA", ROOT / "tests" / "data" / "vasp"))

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore:.*is an unconverged VASP run"),
]


@pytest.fixture(scope="module")
def data() -> Path:
    if not (DATA / "SOURCE.md").is_file():
        pytest.fail(f"recorded VASP outputs not found in {DATA} (set MATDX_VASP_TEST_DATA)")
    return DATA


@pytest.fixture
def fake(tmp_path: Path, data: Path):
    """``fake(steps) -> (profile, plan)``: an engine profile running the fake VASP."""

    def make(steps: list[dict[str, Any]]) -> tuple[EngineProfile, Path]:
        plan = write_plan(tmp_path / "plan.json", steps, data)
        profile = EngineProfile((sys.executable, str(FAKE)), env={"FAKE_VASP_PLAN": str(plan)})
        return profile, plan

    return make


def vasprun(data: Path, case: str) -> Vasprun:
    return Vasprun(str(data / case / "vasprun.xml.gz"), parse_potcar_file=False)


def geometry(s: Structure) -> dict[str, Any]:
    """POSCAR expectations for the fake (pymatgen input sets sort by electronegativity)."""
    species = list(dict.fromkeys(site.specie.symbol for site in s))
    return {
        "species": species,
        "counts": [sum(site.specie.symbol == el for site in s) for el in species],
        "lattice": s.lattice.matrix.tolist(),
        "frac": s.frac_coords.tolist(),
    }



@pytest.fixture(scope="module")
def feo(data: Path) -> Structure:
    """Fe2O2 (postprocess case): MP's +U and magnetic moments apply."""
    return Structure.from_file(data / "postprocess" / "POSCAR")


# --- inputs ---------------------------------------------------------------------------------


def test_relax_inputs_are_mprelaxset_with_overrides(tmp_path: Path, feo: Structure) -> None:
    params = write_inputs(
        feo, "relax", tmp_path, {"incar": {"ENCUT": 600, "NELM": 150}, "kpoints": {"reciprocal_density": 50}}
    )
    incar = Incar.from_file(tmp_path / "INCAR")
    assert incar["IBRION"] == 2 and incar["ISIF"] == 3 and incar["NSW"] == 99
    assert incar["ENCUT"] == 600 and incar["NELM"] == 150  # user overrides
    assert incar["EDIFF"] == pytest.approx(5e-5 * 4)  # MP: EDIFF_PER_ATOM
    assert "EDIFFG" not in incar  # MP relaxes to VASP's energy criterion (10 x EDIFF)
    assert incar["ALGO"] == "Fast" and incar["PREC"] == "Accurate" and incar["ISPIN"] == 2
    assert incar["LDAU"] is True and incar["LDAUU"] == [5.3, 0]  # MP's U for Fe in oxides
    assert incar["LDAUL"] == [2, 0]
    assert incar["MAGMOM"] == [5, 5, 0.6, 0.6]
    assert incar["ISMEAR"] == -5 and incar["LREAL"] == "Auto"
    kpoints = Kpoints.from_file(tmp_path / "KPOINTS")
    assert kpoints.style.name == "Gamma"
    assert tuple(kpoints.kpts[0]) == tuple(Kpoints.automatic_density_by_vol(feo, 50).kpts[0])
    poscar = Poscar.from_file(tmp_path / "POSCAR").structure
    assert [s.symbol for s in poscar.species] == ["Fe", "Fe", "O", "O"]
    assert np.allclose(poscar.lattice.matrix, feo.lattice.matrix)
    assert np.allclose(poscar.frac_coords, feo.frac_coords)
    if potcar_library() is None:
        assert (tmp_path / "POTCAR.spec").read_text().split() == ["Fe_pv", "O"]
        assert not (tmp_path / "POTCAR").exists()
    assert params["input_set"] == "MPRelaxSet" and params["potcar_symbols"] == ["Fe_pv", "O"]
    assert params["potcar_functional"] == "PBE"
    json.dumps(params)  # storable as is


def test_static_inputs_are_mpstaticset(tmp_path: Path, feo: Structure) -> None:
    params = write_inputs(feo, "static", tmp_path)
    incar = Incar.from_file(tmp_path / "INCAR")
    assert incar["NSW"] == 0 and "IBRION" not in incar and "ISIF" not in incar
    assert incar["LCHARG"] is True and incar["LREAL"] is False and incar["ISMEAR"] == -5
    assert incar["LDAUU"] == [5.3, 0]
    kpoints = Kpoints.from_file(tmp_path / "KPOINTS")
    assert tuple(kpoints.kpts[0]) == (10, 10, 5)  # MPStaticSet: reciprocal density 100
    assert params["input_set"] == "MPStaticSet"


def test_unknown_task_or_setting_is_an_input_error(tmp_path: Path, feo: Structure) -> None:
    with pytest.raises(InputError, match="unknown VASP task 'md'"):
        write_inputs(feo, "md", tmp_path)
    with pytest.raises(InputError, match="unknown VASP setting"):
        write_inputs(feo, "relax", tmp_path, {"incar_settings": {"ENCUT": 500}})


# --- parsing real converged output ----------------------------------------------------------


def test_static_replay_parses_like_pymatgen_and_ase(fake, feo: Structure, data: Path, tmp_path: Path) -> None:
    expect = {
        "incar": {"NSW": 0, "ISMEAR": -5, "ENCUT": 520, "LDAU": True, "LDAUU": [5.3, 0],
                  "MAGMOM": [5, 5, 0.6, 0.6], "LCHARG": True, "EDIFF": 2e-4},
        "incar_absent": ["IBRION", "EDIFFG"],
        "kpoints": {"style": "Gamma", "grid": [10, 10, 5]},
        "poscar": geometry(feo),
        "potcar": ["Fe_pv", "O"],
    }
    profile, plan = fake([{"expect": expect, "replay": "postprocess"}])
    result = calculate(feo, "static", workdir=tmp_path / "run", profile=profile, monitor=False)

    (run,) = read_log(plan)
    assert run["errors"] == [] and len(run["passed"]) == 13 and run["replayed"] == "postprocess"
    vr = vasprun(data, "postprocess")
    assert result.energy == pytest.approx(-28.21851457) == vr.final_energy
    assert result.energy_per_atom == pytest.approx(-28.21851457 / 4)
    assert result.band_gap == pytest.approx(1.7962) == vr.eigenvalue_band_properties[0]
    assert result.extra["is_gap_direct"] is True
    assert np.allclose(result.forces, vr.ionic_steps[-1]["forces"])
    assert result.extra["max_force"] == pytest.approx(0.010745, abs=1e-6)
    # stress: kBar -> eV/A^3 with ASE's sign and Voigt order, checked against ASE's own reader
    atoms = ase.io.read(data / "postprocess" / "vasprun.xml.gz", format="vasp-xml", index=-1)
    assert np.allclose(result.stress, atoms.get_stress(voigt=True), rtol=1e-6, atol=1e-12)
    assert result.stress[0] == pytest.approx(1.98922371 * 0.1 / 160.21766, rel=1e-5)  # -(-1.99 kBar)
    assert result.energy == pytest.approx(atoms.get_potential_energy())
    assert result.magmoms == [3.007, 1.397, -0.189, -0.189]
    assert [m["tot"] for m in Outcar(str(data / "postprocess" / "OUTCAR.gz")).magnetization] == result.magmoms
    assert result.extra["total_magnetization"] == pytest.approx(4.0)
    assert result.code_version == "5.3.5"
    assert result.converged and result.n_steps == 28 and result.corrections == []
    assert Structure.from_dict(result.structure) == vr.final_structure
    assert result.spacegroup_number == 12
    assert result.parameters["potcar_spec"] is (potcar_library() is None)
    json.dumps(result.model_dump())


def test_metal_static_with_custodian_monitoring(fake, data: Path, tmp_path: Path) -> None:
    """Default path (monitoring handlers on): Al, a metal with zero gap and isotropic stress."""
    al = Structure.from_file(data / "static_smearing" / "POSCAR")
    expect = {"incar": {"NSW": 0, "EDIFF": 5e-5}, "kpoints": {"grid": [11, 11, 11]},
              "poscar": geometry(al), "potcar": ["Al"]}
    profile, plan = fake([{"expect": expect, "replay": "static_smearing"}])
    result = static(al, workdir=tmp_path / "run", profile=profile)
    assert read_log(plan)[0]["errors"] == []
    assert result.energy == pytest.approx(-3.74599651)
    assert result.band_gap == 0.0
    s = -1.29096679 * -0.1 / 160.21766208  # VASP -1.29 kBar (tensile) -> +eV/A^3
    assert np.allclose(result.stress, [s, s, s, 0, 0, 0], rtol=1e-6, atol=1e-12)
    assert result.magmoms is None  # no OUTCAR in this recording
    assert result.corrections == []


# --- custodian's corrections ----------------------------------------------------------------


def test_unconverged_electronic_run_is_corrected(fake, data: Path, tmp_path: Path) -> None:
    first = vasprun(data, "unconverged_electronic")
    assert not first.converged_electronic  # the recording is what the test says it is
    v2o5 = first.initial_structure
    expect1 = {"incar": {"ALGO": "Fast", "IBRION": 2, "NSW": 99, "LDAUU": [3.25, 0], "EDIFF": 7e-4},
               "poscar": geometry(v2o5), "potcar": ["V_pv", "O"]}
    expect2 = {"incar": {"ALGO": "Normal", "IBRION": 2}, "poscar": geometry(v2o5)}
    profile, plan = fake([
        {"expect": expect1, "replay": "unconverged_electronic"},
        {"expect": expect2, "replay": "postprocess"},
    ])
    result = relax(v2o5, workdir=tmp_path / "run", profile=profile, monitor=False)
    runs = read_log(plan)
    assert [r["errors"] for r in runs] == [[], []]
    assert runs[1]["seen"]["incar"]["ALGO"] == "Normal"
    assert result.corrections == [{
        "errors": ["Unconverged"],
        "actions": [{"dict": "INCAR", "action": {"_set": {"ALGO": "Normal"}}}],
        "handler": "UnconvergedErrorHandler",
    }]
    assert result.parameters["incar"]["ALGO"] == "Fast"
    assert result.parameters["incar_final"]["ALGO"] == "Normal"
    assert result.converged and result.energy == pytest.approx(-28.21851457)


def test_max_force_run_continues_from_contcar_with_tighter_ediffg(fake, data: Path, tmp_path: Path) -> None:
    first = vasprun(data, "max_force")
    assert first.converged
    assert np.linalg.norm(first.ionic_steps[-1]["forces"], axis=1).max() > 0.25
    s = Structure.from_file(data / "max_force" / "POSCAR")
    expect1 = {"incar": {"EDIFF": 0.006, "NSW": 99, "ISMEAR": 0}, "incar_absent": ["EDIFFG"],
               "kpoints": {"grid": [1, 3, 1]}, "poscar": geometry(s), "potcar": ["Sb", "Xe", "Cl", "F"]}
    expect2 = {"incar": {"EDIFFG": 0.03, "EDIFF": 0.006}, "poscar_is_previous_contcar": True}
    profile, plan = fake([
        {"expect": expect1, "replay": "max_force"},
        {"expect": expect2, "replay": "postprocess"},
    ])
    result = relax(s, workdir=tmp_path / "run", profile=profile, monitor=False)
    runs = read_log(plan)
    assert [r["errors"] for r in runs] == [[], []]
    assert "POSCAR is the CONTCAR replayed from max_force" in runs[1]["passed"]
    assert result.corrections == [{
        "errors": ["MaxForce"],
        "actions": [{"file": "CONTCAR", "action": {"_file_copy": {"dest": "POSCAR"}}},
                    {"dict": "INCAR", "action": {"_set": {"EDIFFG": 0.03}}}],
        "handler": "MaxForceErrorHandler",
    }]
    assert result.converged


def test_non_converging_scf_with_custom_handlers(fake, data: Path, tmp_path: Path) -> None:
    """nonconv: every ionic step hit NELM = 10; custodian's NonConvergingErrorHandler fires."""
    si = Structure.from_file(data / "nonconv" / "POSCAR")
    handlers = [NonConvergingErrorHandler(nionic_steps=3), UnconvergedErrorHandler()]
    profile, plan = fake([
        {"expect": {"incar": {"NELM": 10, "ALGO": "Fast"}, "potcar": ["Si"]}, "replay": "nonconv"},
        {"expect": {"incar": {"NELM": 10, "ALGO": "Normal"}}, "replay": "static_smearing"},
    ])
    result = calculate(si, "relax", {"incar": {"NELM": 10}}, tmp_path / "run", profile,
                       handlers=handlers, monitor=False)
    assert [r["errors"] for r in read_log(plan)] == [[], []]
    assert result.corrections == [{
        "errors": ["Non-converging job"],
        "actions": [{"dict": "INCAR", "action": {"_set": {"ALGO": "Normal"}}}],
        "handler": "NonConvergingErrorHandler",
    }]


def test_too_few_bands_in_stdout_raises_nbands(fake, data: Path, tmp_path: Path) -> None:
    si = Structure.from_file(data / "nonconv" / "POSCAR")
    profile, plan = fake([
        {"expect": {"incar": {"NBANDS": 40}}, "stdout": "errors_stdout/vasp.out.too_few_bands"},
        {"expect": {"incar": {"NBANDS": 44}}, "replay": "static_smearing"},
    ])
    result = static(si, incar={"NBANDS": 40}, workdir=tmp_path / "run", profile=profile, monitor=False)
    assert [r["errors"] for r in read_log(plan)] == [[], []]
    assert result.corrections == [{
        "errors": ["too_few_bands"],
        "actions": [{"dict": "INCAR", "action": {"_set": {"NBANDS": 44}}}],  # max(1.1 n, n + 1)
        "handler": "VaspErrorHandler",
    }]


def test_too_few_bands_without_nbands_is_unrecoverable(fake, data: Path, tmp_path: Path) -> None:
    si = Structure.from_file(data / "nonconv" / "POSCAR")
    profile, _ = fake([{"stdout": "errors_stdout/vasp.out.too_few_bands"}])
    with pytest.raises(EngineError, match="VaspErrorHandler found too_few_bands and has no correction") as err:
        static(si, workdir=tmp_path / "run", profile=profile, monitor=False)
    assert "\n" not in str(err.value)


def test_out_of_memory_in_stderr_halves_kpar(fake, data: Path, tmp_path: Path) -> None:
    si = Structure.from_file(data / "nonconv" / "POSCAR")
    profile, plan = fake([
        {"expect": {"incar": {"KPAR": 4}}, "stderr": "errors_stdout/std_err.txt.oom", "returncode": 137},
        {"expect": {"incar": {"KPAR": 2}}, "replay": "static_smearing"},
    ])
    result = static(si, incar={"KPAR": 4}, workdir=tmp_path / "run", profile=profile, monitor=False)
    assert [r["errors"] for r in read_log(plan)] == [[], []]
    assert result.corrections == [{
        "errors": ["out_of_memory"],
        "actions": [{"dict": "INCAR", "action": {"_set": {"KPAR": 2}}}],
        "handler": "StdErrHandler",
    }]
    # without KPAR > 1 custodian has nothing to reduce
    profile, _ = fake([{"stderr": "errors_stdout/std_err.txt.oom", "returncode": 137}])
    with pytest.raises(EngineError, match="StdErrHandler found out_of_memory and has no correction"):
        static(si, workdir=tmp_path / "run2", profile=profile, monitor=False)


def test_corrections_are_bounded(fake, data: Path, tmp_path: Path) -> None:
    v2o5 = vasprun(data, "unconverged_electronic").initial_structure
    profile, plan = fake([{"replay": "unconverged_electronic"}] * 2)
    with pytest.raises(EngineError, match=r"still failing after 2 corrections \(last: UnconvergedErrorHandler: Unconverged\)"):
        relax(v2o5, workdir=tmp_path / "run", profile=profile, max_corrections=2, monitor=False)
    assert len(read_log(plan)) == 2


# --- bad output, bad setup ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "message"),
    [("empty", r"vasprun\.xml is empty"),
     ("truncate", r"cannot parse .*vasprun\.xml: XMLSyntaxError: "),
     ("garbage", r"cannot parse .*vasprun\.xml: XMLSyntaxError: ")],
)
def test_broken_vasprun_is_a_one_line_engine_error(fake, feo: Structure, tmp_path: Path, how: str, message: str) -> None:
    profile, _ = fake([{"replay": "postprocess", "damage": {"vasprun.xml": how}}])
    with pytest.raises(EngineError, match=message) as err:
        static(feo, workdir=tmp_path / "run", profile=profile, monitor=False)
    assert "\n" not in str(err.value)


def test_fake_vasp_rejects_inputs_that_differ(fake, feo: Structure, tmp_path: Path) -> None:
    profile, plan = fake([{"expect": {"incar": {"ALGO": "All"}, "potcar": ["Fe", "O"]}, "replay": "postprocess"}])
    with pytest.raises(EngineError, match=r"no vasprun\.xml .*FAKE VASP INPUT ERROR: ") as err:
        static(feo, workdir=tmp_path / "run", profile=profile, monitor=False)
    assert "\n" not in str(err.value)
    assert read_log(plan)[0]["errors"] == [
        "INCAR ALGO = 'Fast', expected 'All'",
        "POTCAR symbols ['Fe_pv', 'O'], expected ['Fe', 'O']",
    ]


def test_missing_executable_or_command(feo: Structure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EngineError, match="executable '/nonexistent/vasp_std' not found"):
        static(feo, workdir=tmp_path / "a", profile=EngineProfile(("/nonexistent/vasp_std",)))
    assert not (tmp_path / "a").exists()  # checked before anything is written
    monkeypatch.delenv("MATDX_VASP_COMMAND", raising=False)
    with pytest.raises(EngineError, match="MATDX_VASP_COMMAND is not set"):
        static(feo, workdir=tmp_path / "b")
    monkeypatch.setenv("MATDX_VASP_COMMAND", "mpirun -np 2 vasp_std")
    assert default_profile().command == ("mpirun", "-np", "2", "vasp_std")


def test_workdir_with_old_output_is_refused(fake, feo: Structure, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "vasprun.xml").write_text("<old/>")
    profile, _ = fake([])
    with pytest.raises(InputError, match="already holds VASP output"):
        static(feo, workdir=tmp_path / "run", profile=profile)


def test_parse_run_without_vasprun(tmp_path: Path) -> None:
    (tmp_path / "std_err.txt").write_text("forrtl: severe (174): SIGSEGV, segmentation fault occurred\n")
    with pytest.raises(EngineError, match=r"VASP wrote no vasprun\.xml .*SIGSEGV"):
        parse_run(tmp_path)
