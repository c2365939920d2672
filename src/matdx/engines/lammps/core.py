"""LAMMPS (EAM) under custodian: molecular dynamics and minimization as CalcResult.

The command comes from an :class:`~matdx.engines.base.EngineProfile` (default from
``MATDX_LAMMPS_COMMAND``, e.g. ``/usr/bin/mpirun --allow-run-as-root -np 2 lmp``) and is
run as a subprocess with ``-in in.lammps``, never through a shell. EAM potentials are
chosen per element set from the profile's ``potentials_dir`` (``MATDX_LAMMPS_POTENTIALS``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.lammps.coordinatetransform import Prism
from custodian.custodian import Job
from pymatgen.core import Structure

from matdx.analysis.md import summarize_thermo
from matdx.core.errors import EngineError
from matdx.engines.base import EngineProfile, run_with_recovery
from matdx.engines.emt.core import spacegroup, to_atoms, to_structure
from matdx.engines.lammps.handlers import LammpsErrorHandler, UnstableMDHandler
from matdx.engines.lammps.inputs import (
    DATA_FILE,
    DEFAULT_POTENTIALS_DIR,
    FINAL_DUMP,
    INPUT_FILE,
    LOG_FILE,
    STDERR_FILE,
    STDOUT_FILE,
    TRAJECTORY_FILE,
    available_elements,
    build_parameters,
    find_potential,
    load_parameters,
    render_input,
    save_parameters,
    write_structure,
)
from matdx.engines.lammps.parse import LammpsLog, read_final_structure, read_log
from matdx.schemas.results import CalcResult

_ATTEMPT_FILES = (INPUT_FILE, LOG_FILE, STDOUT_FILE, STDERR_FILE)
_UNFINISHED_CRITERIA = ("max iterations", "max force evaluations")


def default_profile() -> EngineProfile:
    """Profile from ``MATDX_LAMMPS_COMMAND`` (default ``lmp``) and ``MATDX_LAMMPS_POTENTIALS``."""
    return EngineProfile.from_text(
        os.environ.get("MATDX_LAMMPS_COMMAND", "lmp"),
        data={"potentials_dir": os.environ.get("MATDX_LAMMPS_POTENTIALS", DEFAULT_POTENTIALS_DIR)},
    )


def __getattr__(name: str) -> Any:
    # SUPPORTED_ELEMENTS depends on the potentials directory: computed on access, not import
    if name == "SUPPORTED_ELEMENTS":
        return available_elements(default_profile().data["potentials_dir"])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class LammpsJob(Job):
    """A custodian job running LAMMPS on the input rendered from the run's parameter file.

    Parameters
    ----------
    command
        Program and arguments (``-in in.lammps -log log.lammps`` are appended).
    env
        Extra environment (``OMP_NUM_THREADS`` defaults to 1).
    """

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.command = list(command)
        self.env = dict(env or {})

    def setup(self, directory: str = "./") -> None:
        """Nothing to do: the data and parameter files are written before the job."""

    def run(self, directory: str = "./") -> subprocess.Popen[bytes]:
        """Render ``in.lammps``, keep the previous attempt's files, start LAMMPS."""
        d = Path(directory)
        params = load_parameters(d)
        _archive_attempt(d)
        (d / INPUT_FILE).write_text(render_input(params))
        env = {"OMP_NUM_THREADS": "1", **os.environ, **self.env}
        with open(d / STDOUT_FILE, "wb") as out, open(d / STDERR_FILE, "wb") as err:
            try:
                return subprocess.Popen(
                    [*self.command, "-in", INPUT_FILE, "-log", LOG_FILE],
                    cwd=d,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=env,
                )
            except OSError as exc:
                raise EngineError(f"cannot start {self.command[0]}: {exc.strerror}") from None

    def postprocess(self, directory: str = "./") -> None:
        """Nothing to do: outputs are parsed by :func:`calculate`."""


def _archive_attempt(d: Path) -> None:
    """Move the files of a previous attempt to ``attempt.N/`` and drop its dumps."""
    if not (d / LOG_FILE).exists() and not (d / STDOUT_FILE).exists():
        return
    n = 1
    while (d / f"attempt.{n}").exists():
        n += 1
    (d / f"attempt.{n}").mkdir()
    for name in _ATTEMPT_FILES:
        if (d / name).exists():
            (d / name).rename(d / f"attempt.{n}" / name)
    for name in (TRAJECTORY_FILE, FINAL_DUMP):
        (d / name).unlink(missing_ok=True)


def _initial_atoms(structure: Structure | Atoms, supercell: Any) -> Atoms:
    atoms = structure.copy() if isinstance(structure, Atoms) else to_atoms(structure)
    atoms.pbc = True
    if supercell:
        atoms = atoms.repeat(supercell)
    return atoms


def calculate(
    structure: Structure | Atoms,
    task: str = "md",
    settings: dict[str, Any] | None = None,
    workdir: Path | None = None,
    profile: EngineProfile | None = None,
    max_corrections: int = 5,
) -> CalcResult:
    """Run LAMMPS with an EAM potential.

    Parameters
    ----------
    structure
        Starting structure (pymatgen or ASE).
    task
        ``"md"``, ``"relax"`` (minimization, with the cell if ``relax_cell``) or ``"static"``.
    settings
        Task settings; see :data:`matdx.engines.lammps.inputs.TASK_DEFAULTS`. MD:
        ``ensemble`` (nve, nvt, npt, langevin), ``temperature`` (K), ``pressure`` (bar),
        ``timestep`` (fs), ``steps``, ``equilibration`` (steps before production),
        ``thermo_interval``, ``dump_interval`` (0: no trajectory), ``seed``. All tasks:
        ``potential`` (file), ``potentials_dir``, ``supercell``.
    workdir
        Run directory (default: a new temporary directory, kept after a finished MD run
        because the trajectory stays there, removed otherwise).
    profile
        Command and potentials directory (default :func:`default_profile`).
    max_corrections
        Most error corrections (timestep halvings) before giving up.

    Returns
    -------
    CalcResult
        Final-frame energy, forces, stress and structure; for MD, ``extra`` holds the
        production averages and standard errors of temperature, pressure, energies,
        volume and density, the energy drift and the trajectory path.

    Raises
    ------
    EngineError
        No potential, no executable, bad settings, or a failure the handlers cannot fix.
    """
    start = time.perf_counter()
    settings = dict(settings or {})
    profile = profile or default_profile()
    atoms = _initial_atoms(structure, settings.get("supercell"))
    specorder = sorted(set(atoms.get_chemical_symbols()))
    pot_dir = (
        settings.get("potentials_dir")
        or profile.data.get("potentials_dir")
        or DEFAULT_POTENTIALS_DIR
    )
    potential = find_potential(specorder, pot_dir, settings.get("potential"))
    triclinic = bool(Prism(np.asarray(atoms.cell), reduce_cell=True).is_skewed())
    params = build_parameters(
        task, settings, triclinic=triclinic, potential=potential, specorder=specorder
    )
    params["potentials_dir"] = str(pot_dir)
    profile.check()
    d = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="matdx-lammps-"))
    d.mkdir(parents=True, exist_ok=True)
    done = False
    try:
        write_structure(atoms, d / DATA_FILE, specorder)
        save_parameters(d, params)
        corrections = run_with_recovery(
            LammpsJob(list(profile.command), profile.env),
            [UnstableMDHandler(), LammpsErrorHandler()],
            max_errors=max_corrections,
            directory=d,
        )
        params = load_parameters(d)
        log = read_log(d / LOG_FILE)
        final, forces = read_final_structure(d / FINAL_DUMP, np.asarray(atoms.cell), len(atoms))
        result = _result(params, log, final, forces, atoms, d, corrections)
        result.wall_time_s = time.perf_counter() - start
        if workdir is None and task != "md":
            result.extra["workdir"] = None  # removed below
        done = True
        return result
    finally:
        # a directory made here is kept only for a finished MD run (it holds the trajectory)
        if workdir is None and not (done and task == "md"):
            shutil.rmtree(d, ignore_errors=True)


def relax(structure: Structure | Atoms, **settings: Any) -> CalcResult:
    """Minimize with LAMMPS (registry entry point): ``calculate(structure, "relax", settings)``."""
    return calculate(structure, "relax", settings)


def _stress(row: dict[str, float], cell: np.ndarray) -> list[float]:
    """ASE-convention Voigt stress (eV/Å³) in the input frame from LAMMPS pressures (bar)."""
    p = np.array(
        [
            [row["pxx_bar"], row["pxy_bar"], row["pxz_bar"]],
            [row["pxy_bar"], row["pyy_bar"], row["pyz_bar"]],
            [row["pxz_bar"], row["pyz_bar"], row["pzz_bar"]],
        ]
    )
    s = -Prism(cell).tensor2_to_ase(p) * units.bar
    return [
        float(s[0, 0]),
        float(s[1, 1]),
        float(s[2, 2]),
        float(s[1, 2]),
        float(s[0, 2]),
        float(s[0, 1]),
    ]


def _md_extra(params: dict[str, Any], log: LammpsLog, n: int, d: Path) -> dict[str, Any]:
    traj = d / TRAJECTORY_FILE
    return {
        "ensemble": params["ensemble"],
        **summarize_thermo(log.blocks[-1].table(), n),
        "production_steps": int(params["steps"]),
        "equilibration_steps": int(params["equilibration"]),
        "timestep_fs": params["timestep"],
        "trajectory": str(traj) if traj.is_file() else None,
        "trajectory_format": "lammps-dump-text",
        "trajectory_interval_ps": int(params["dump_interval"]) * params["timestep"] / 1000,
    }


def _result(
    params: dict[str, Any],
    log: LammpsLog,
    final: Atoms,
    forces: np.ndarray,
    initial: Atoms,
    d: Path,
    corrections: list[dict[str, Any]],
) -> CalcResult:
    task = params["task"]
    last = log.blocks[-1].table()
    row = {k: float(v[-1]) for k, v in last.items()}
    n = len(final)
    converged = True
    if task == "relax":
        converged = log.stopping_criterion not in _UNFINISHED_CRITERIA and bool(
            np.max(np.linalg.norm(forces, axis=1)) <= params["fmax"] * 1.001
        )
    symbol, number = spacegroup(final) if task != "md" else (None, None)
    extra: dict[str, Any] = {
        "workdir": str(d),
        "potential": params["potential"],
        "stopping_criterion": log.stopping_criterion,
    }
    if task == "md":
        extra.update(_md_extra(params, log, n, d))
    return CalcResult(
        engine="lammps",
        code_version=f"LAMMPS {log.version}" if log.version else "LAMMPS",
        task=task,
        parameters=params,
        energy=row["potential_energy_eV"],
        energy_per_atom=row["potential_energy_eV"] / n,
        volume_per_atom=float(final.get_volume()) / n,
        forces=forces.tolist(),
        stress=_stress(row, np.asarray(initial.cell)),
        structure=to_structure(final).as_dict(),
        spacegroup_symbol=symbol,
        spacegroup_number=number,
        converged=converged,
        n_steps=int(row["step"]),
        corrections=corrections,
        extra=extra,
    )
