"""ASE molecular dynamics (EMT) under custodian, with the API and results of the LAMMPS engine.

The integration runs in this process (no external program, so ``profile`` is accepted
for a uniform API and not used); custodian still drives it, so that an unstable run is
retried with a smaller timestep and the correction is recorded.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ase
import numpy as np
from ase import Atoms
from ase.calculators.emt import EMT
from ase.io import read, write
from custodian.custodian import Job
from pymatgen.core import Structure

from matdx.analysis.md import summarize_thermo
from matdx.core.errors import EngineError
from matdx.core.symmetry import spacegroup
from matdx.engines.asemd.dynamics import (
    FINAL_FILE,
    INITIAL_FILE,
    STATUS_FILE,
    THERMO_COLUMNS,
    THERMO_FILE,
    TRAJECTORY_FILE,
    build_parameters,
    load_parameters,
    run_md,
    save_parameters,
)
from matdx.engines.asemd.handlers import AseMdErrorHandler, UnstableIntegrationHandler
from matdx.engines.base import Engine, run_with_recovery
from matdx.engines.emt import core as emt
from matdx.schemas.results import CalcResult

SUPPORTED_ELEMENTS = emt.SUPPORTED_ELEMENTS
"""Elements the EMT calculator treats."""


class AseMdJob(Job):
    """A custodian job running the MD described by the run directory's parameter file."""

    def setup(self, directory: str = "./") -> None:
        """Nothing to do: the starting atoms and parameters are written before the job."""

    def run(self, directory: str = "./") -> None:
        """Keep the previous attempt's status and thermo table, then integrate (in-process)."""
        d = Path(directory)
        if (d / STATUS_FILE).exists():
            n = 1
            while (d / f"attempt.{n}").exists():
                n += 1
            (d / f"attempt.{n}").mkdir()
            for name in (STATUS_FILE, THERMO_FILE):
                if (d / name).exists():
                    (d / name).rename(d / f"attempt.{n}" / name)
            (d / TRAJECTORY_FILE).unlink(missing_ok=True)
        run_md(d)

    def postprocess(self, directory: str = "./") -> None:
        """Nothing to do: outputs are read by :class:`AseMdEngine`."""


def _initial_atoms(structure: Structure | Atoms, supercell: Any, calculator: str = "emt") -> Atoms:
    atoms = structure.copy() if isinstance(structure, Atoms) else emt.to_atoms(structure)
    atoms.pbc = True
    atoms.calc = None
    atoms.set_constraint()
    missing = sorted(set(atoms.get_chemical_symbols()) - SUPPORTED_ELEMENTS)
    if calculator == "emt" and missing:
        raise EngineError(f"EMT has no parameters for {', '.join(missing)}")
    return atoms.repeat(supercell) if supercell else atoms


def _read_thermo(path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.loadtxt(path, ndmin=2)
    except (OSError, ValueError):
        raise EngineError(f"cannot read {path.name}: missing or corrupt") from None
    if data.shape[0] == 0 or data.shape[1] != len(THERMO_COLUMNS):
        raise EngineError(f"{path.name} has no complete thermo rows")
    return {name: data[:, i] for i, name in enumerate(THERMO_COLUMNS)}


class AseMdEngine(Engine):
    """ASE MD with EMT (``md``), or an EMT relaxation (``relax``) or single point (``static``).

    Settings of ``md``: see :data:`matdx.engines.asemd.dynamics.MD_DEFAULTS`: ``ensemble``
    (nve, langevin, nvt, nvt_berendsen, npt, npt_iso, npt_berendsen), ``temperature`` (K),
    ``pressure`` (bar), ``timestep`` (fs), ``steps``, ``equilibration``,
    ``thermo_interval``, ``dump_interval`` (0: no trajectory), ``seed``, ``supercell``.
    ``relax`` takes those of :func:`matdx.engines.emt.core.relax` (``relax_cell``,
    ``optimizer``, ``fmax``, ``steps``); ``static`` only ``supercell``.

    The MD ``workdir`` defaults to a new temporary directory, kept after a finished run
    because the trajectory stays there, removed after a failure. The integration runs in
    this process (``profile`` is unused); ``max_corrections`` bounds the timestep halvings.
    The run cannot stop early: a deadline only keeps it from starting once passed.

    The result holds the final-frame energy, forces, stress (with the kinetic part) and
    structure; ``extra`` the production averages, standard errors, energy drift and the
    ``.traj`` path.
    """

    key = "asemd"

    def supported_elements(self) -> frozenset[str]:
        """Elements the EMT calculator treats."""
        return SUPPORTED_ELEMENTS

    def run(
        self,
        structure: Structure | Atoms,
        task: str,
        settings: dict[str, Any],
        workdir: str | Path | None,
        deadline: float | None,
    ) -> CalcResult:
        """Run a declared task (see the class)."""
        if task == "relax":
            if isinstance(structure, Atoms):
                structure = emt.to_structure(structure)
            return emt.relax(structure, **settings)
        if task == "static":
            return _static(structure, settings)
        return md(structure, settings, workdir, self.max_corrections)


def md(
    structure: Structure | Atoms,
    settings: dict[str, Any],
    workdir: str | Path | None,
    max_corrections: int,
) -> CalcResult:
    """Run MD under custodian in ``workdir`` (default: a new temporary directory).

    ``settings`` as :class:`AseMdEngine`'s ``md``, and ``calculator``: a name of
    :data:`~matdx.engines.asemd.dynamics.CALCULATORS`.
    """
    start = time.perf_counter()
    params = build_parameters(settings)
    atoms = _initial_atoms(structure, params["supercell"], params["calculator"])
    d = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="matdx-asemd-"))
    d.mkdir(parents=True, exist_ok=True)
    done = False
    try:
        write(d / INITIAL_FILE, atoms)
        save_parameters(d, params)
        corrections = run_with_recovery(
            AseMdJob(),
            [UnstableIntegrationHandler(), AseMdErrorHandler()],
            max_errors=max_corrections,
            directory=d,
        )
        result = _md_result(d, corrections)
        result.wall_time_s = time.perf_counter() - start
        done = True
        return result
    finally:
        if workdir is None and not done:  # a directory made here is kept only on success
            shutil.rmtree(d, ignore_errors=True)


def _md_result(d: Path, corrections: list[dict[str, Any]]) -> CalcResult:
    params = load_parameters(d)
    table = _read_thermo(d / THERMO_FILE)
    production = {k: v[table["step"] >= int(params["equilibration"])] for k, v in table.items()}
    try:
        final = read(d / FINAL_FILE)
        energy = float(final.get_potential_energy())
        forces = final.get_forces()
        stress = final.get_stress(voigt=True, include_ideal_gas=True)
    except Exception:
        raise EngineError(f"cannot read {FINAL_FILE}: missing or corrupt") from None
    n = len(final)
    final.wrap()
    traj = d / TRAJECTORY_FILE
    extra = {
        "workdir": str(d),
        "ensemble": params["ensemble"],
        **summarize_thermo(production, n),
        "production_steps": int(params["steps"]),
        "equilibration_steps": int(params["equilibration"]),
        "timestep_fs": params["timestep"],
        "trajectory": str(traj) if traj.is_file() else None,
        "trajectory_format": "traj",
        "trajectory_interval_ps": int(params["dump_interval"]) * params["timestep"] / 1000,
    }
    return CalcResult(
        engine="asemd",
        code_version=f"ASE {ase.__version__}",
        task="md",
        parameters=params,
        energy=energy,
        energy_per_atom=energy / n,
        volume_per_atom=float(final.get_volume()) / n,
        forces=forces.tolist(),
        stress=stress.tolist(),
        structure=emt.to_structure(final).as_dict(),
        converged=True,
        n_steps=int(table["step"][-1]),
        corrections=corrections,
        extra=extra,
    )


def _static(structure: Structure | Atoms, settings: dict[str, Any]) -> CalcResult:
    if set(settings) - {"supercell"}:
        raise EngineError(f"unknown static setting(s): {', '.join(sorted(settings))}")
    start = time.perf_counter()
    atoms = _initial_atoms(structure, settings.get("supercell"))
    atoms.calc = EMT()
    energy, n = float(atoms.get_potential_energy()), len(atoms)
    symbol, number = spacegroup(atoms)
    return CalcResult(
        engine="asemd",
        code_version=f"ASE {ase.__version__}",
        task="static",
        parameters=dict(settings),
        energy=energy,
        energy_per_atom=energy / n,
        volume_per_atom=float(atoms.get_volume()) / n,
        forces=atoms.get_forces().tolist(),
        stress=atoms.get_stress(voigt=True).tolist(),
        structure=emt.to_structure(atoms).as_dict(),
        spacegroup_symbol=symbol,
        spacegroup_number=number,
        wall_time_s=time.perf_counter() - start,
    )
