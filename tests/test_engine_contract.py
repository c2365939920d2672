"""The engine contract: one ``calculate`` per engine, capabilities as registry data.

Also: EMT through the contract gives exactly today's relaxations (checked against plain
ASE), a handler gives up in one way, and one structure gets one space group whichever
engine's result path analyses it.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS
from custodian.custodian import ErrorHandler, Job
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from matdx.core.errors import EngineError, InputError
from matdx.core.symmetry import spacegroup
from matdx.engines.base import Engine, give_up, run_with_recovery
from matdx.engines.emt.core import relax, to_atoms, to_structure
from matdx.engines.registry import ENGINES, check_elements, check_task, get_engine

ALL_TASKS = ("relax", "vc-relax", "static", "md", "phonons")
EMT_SETTINGS = {"optimizer": "BFGS", "fmax": 0.05, "steps": 300}
VASP_DATA = Path(__file__).parent / "data" / "vasp"


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_every_engine_implements_the_contract(name: str) -> None:
    spec = ENGINES[name]
    engine = get_engine(name)
    assert isinstance(engine, Engine) and engine.name == name == spec.name
    assert (engine.description, engine.tasks, engine.resumable) == (
        spec.description,
        spec.tasks,
        spec.resumable,
    )
    assert engine.elements_setting == spec.elements_setting
    assert engine.seconds_per_structure == spec.seconds_per_structure > 0
    assert set(spec.tasks) <= {"relax", "vc-relax", "static", "md"}
    for task in spec.tasks:
        check_task(name, task)
    for task in set(ALL_TASKS) - set(spec.tasks):
        message = f"engine {name!r} has no task {task!r} (it has: {', '.join(spec.tasks)})"
        with pytest.raises(InputError) as exc:
            check_task(name, task)
        assert str(exc.value) == message
        with pytest.raises(InputError) as exc:  # refused before anything runs
            engine.calculate(bulk("Cu", "fcc", a=3.6), task, {})
        assert str(exc.value) == message


def test_registry_errors_and_elements() -> None:
    with pytest.raises(InputError) as exc:
        get_engine("castep")
    assert str(exc.value) == f"unknown engine 'castep' (known: {', '.join(sorted(ENGINES))})"
    with pytest.raises(InputError, match="unknown engine 'castep'"):
        check_task("castep", "relax")
    check_elements("emt", ["Cu", "Au"])
    with pytest.raises(InputError, match=r"^engine 'emt' does not support Fe \(supported: "):
        check_elements("emt", ["Cu", "Fe"])
    assert get_engine("vasp").supported_elements() is None
    assert ENGINES["qe"].elements_setting == "pseudo_elements"


def test_registry_imports_no_engine() -> None:
    code = (
        "import sys, matdx.engines.registry as r\n"
        "assert r.ENGINES['qe'].tasks and r.ENGINES['lammps'].seconds_per_structure\n"
        "bad = [m for m in sys.modules if m.startswith(('ase', 'custodian', 'pymatgen'))\n"
        "       or m.startswith('matdx.engines.') and m.count('.') > 2]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _plain_ase(structure: Structure, relax_cell: bool) -> tuple[float, np.ndarray, np.ndarray]:
    """EMT + (FrechetCellFilter) + BFGS written out with ASE alone."""
    atoms = to_atoms(structure)
    atoms.calc = EMT()
    opt = BFGS(FrechetCellFilter(atoms) if relax_cell else atoms, logfile=None)
    opt.run(fmax=0.05, steps=300)
    return atoms.get_potential_energy(), np.asarray(atoms.cell), atoms.positions


def _structures() -> list[Structure]:
    cu3au = bulk("Cu", "fcc", a=3.7, cubic=True)
    cu3au.symbols[0] = "Au"
    nial = bulk("Ni", "bcc", a=2.9, cubic=True)
    nial.symbols[1] = "Al"
    rattled = bulk("Pt", "fcc", a=3.9) * (2, 1, 1)
    rattled.rattle(0.05, seed=3)
    return [to_structure(a) for a in (cu3au, nial, rattled)]


@pytest.mark.parametrize("relax_cell", [True, False])
def test_emt_calculate_gives_todays_relaxation(relax_cell: bool) -> None:
    engine = get_engine("emt")
    task = "vc-relax" if relax_cell else "relax"
    for structure in _structures():
        today = relax(structure, relax_cell=relax_cell, **EMT_SETTINGS)
        result = engine.calculate(structure, task, EMT_SETTINGS)
        skip = {"task", "wall_time_s"}
        assert result.model_dump(exclude=skip) == today.model_dump(exclude=skip)
        assert result.task == task and result.parameters["relax_cell"] is relax_cell
        energy, cell, positions = _plain_ase(structure, relax_cell)
        final = Structure.from_dict(result.structure)
        assert result.energy == energy
        assert np.array_equal(final.lattice.matrix, cell)
        assert np.allclose(final.cart_coords, positions, atol=1e-12, rtol=0)


class _Failing(Job):
    def setup(self, directory: str = "./") -> None:
        """Nothing to set up."""

    def run(self, directory: str = "./") -> None:
        """Fail at once."""

    def postprocess(self, directory: str = "./") -> None:
        """Nothing to do."""


class _Hopeless(ErrorHandler):
    is_monitor = False
    raises_runtime_error = True

    def check(self, directory: str = "./") -> bool:
        return True

    def correct(self, directory: str = "./") -> dict[str, Any]:
        return give_up("the run is hopeless: nothing left to change")


def test_a_handler_gives_up_with_its_one_line_message(tmp_path: Path) -> None:
    with pytest.raises(EngineError) as exc:
        run_with_recovery(_Failing(), [_Hopeless()], directory=tmp_path)
    assert str(exc.value) == "the run is hopeless: nothing left to change"


# --- one space group whatever the engine ------------------------------------------------


def sheared_al() -> Structure:
    """Simple cubic Al with γ = 89.5°: Cmmm for spglib at 0.01 Å, Pm-3m with a 5° tolerance."""
    return Structure(Lattice.from_parameters(2.86, 2.86, 2.86, 90, 90, 89.5), ["Al"], [[0, 0, 0]])


def test_the_old_paths_disagreed_on_the_sheared_cell() -> None:
    s = sheared_al()
    assert SpacegroupAnalyzer(s, symprec=0.01).get_space_group_number() == 221
    assert spacegroup(s) == ("Cmmm", 65) == spacegroup(to_atoms(s))


def test_emt_path() -> None:
    for name in ("emt", "asemd"):
        result = get_engine(name).calculate(sheared_al(), "static", {})
        assert (result.spacegroup_symbol, result.spacegroup_number) == ("Cmmm", 65)


class _Final:
    """A recorded ``Vasprun`` whose final structure is replaced."""

    def __init__(self, recorded: Any, structure: Structure) -> None:
        self._recorded, self.final_structure = recorded, structure

    def __getattr__(self, name: str) -> Any:
        return getattr(self._recorded, name)


def test_vasp_parse_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matdx.engines.vasp import outputs

    shutil.copytree(VASP_DATA / "postprocess", tmp_path / "run")
    recorded = outputs.read_vasprun(tmp_path / "run")
    fields = outputs.parse_run(tmp_path / "run")
    expected = spacegroup(Structure.from_dict(fields["structure"]))
    assert (fields["spacegroup_symbol"], fields["spacegroup_number"]) == expected
    monkeypatch.setattr(outputs, "read_vasprun", lambda d: _Final(recorded, sheared_al()))
    fields = outputs.parse_run(tmp_path / "run")
    assert (fields["spacegroup_symbol"], fields["spacegroup_number"]) == ("Cmmm", 65)


def test_qe_result_path(tmp_path: Path) -> None:
    if shutil.which("pw.x") is None or not Path("/usr/bin/mpirun").is_file():
        pytest.fail("pw.x and /usr/bin/mpirun are needed (Debian: quantum-espresso, openmpi-bin)")
    from matdx.engines.qe.core import QeEngine, default_profile

    profile = dataclasses.replace(
        default_profile(), command=("/usr/bin/mpirun", "--allow-run-as-root", "-np", "1", "pw.x")
    )
    settings = {"ecutwfc": 12, "kpts": [2, 2, 2], "pseudopotentials": {"Al": "Al.pz-vbc.UPF"}}
    result = QeEngine(profile).calculate(sheared_al(), "static", settings, tmp_path)
    assert (
        result.task == "static"
        and result.parameters["input_data"]["control"]["calculation"] == "scf"
    )
    assert (result.spacegroup_symbol, result.spacegroup_number) == ("Cmmm", 65)
