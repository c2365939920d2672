"""LAMMPS (EAM) under custodian: molecular dynamics and minimization as CalcResult.

The command comes from an :class:`~matdx.engines.base.EngineProfile` (default from
``MATDX_LAMMPS_COMMAND``, e.g. ``/usr/bin/mpirun --allow-run-as-root -np 2 lmp``) and is
run as a subprocess with ``-in in.lammps``, never through a shell. EAM potentials are
chosen per element set from the profile's ``potentials_dir`` (``MATDX_LAMMPS_POTENTIALS``).

MD runs write checkpoints every ``checkpoint_interval`` steps; with ``deadline=`` they stop
cleanly before it and raise :class:`~matdx.core.errors.DeadlineReachedError`; called again
on the same work directory with the same settings and structure, an MD run that stopped or
was killed continues from its latest checkpoint for the remaining steps, and its result
covers the whole production run (:mod:`.checkpoint` describes how). Minimization and static
runs only refuse to start without time left before the deadline.
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
from matdx.core.errors import DeadlineReachedError, EngineError
from matdx.core.rank_output import RankOutput
from matdx.core.symmetry import spacegroup
from matdx.engines.base import Engine, EngineProfile, run_with_recovery, slot_profile
from matdx.engines.emt.core import to_atoms, to_structure
from matdx.engines.lammps import checkpoint
from matdx.engines.lammps.handlers import (
    CheckpointHandler,
    LammpsErrorHandler,
    UnstableMDHandler,
)
from matdx.engines.lammps.inputs import (
    DATA_FILE,
    DEFAULT_POTENTIALS_DIR,
    FINAL_DUMP,
    INPUT_FILE,
    LOG_FILE,
    PARAMETERS_FILE,
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
from matdx.engines.lammps.parse import LammpsLog, read_final_structure, read_log, read_text
from matdx.engines.program import start_program
from matdx.schemas.results import CalcResult

_ATTEMPT_FILES = (INPUT_FILE, LOG_FILE, STDOUT_FILE, STDERR_FILE)
_UNFINISHED_CRITERIA = ("max iterations", "max force evaluations")


def default_profile() -> EngineProfile:
    """Profile from ``MATDX_LAMMPS_COMMAND`` (default ``lmp``) and ``MATDX_LAMMPS_POTENTIALS``.

    Within a task slot (:func:`~matdx.engines.base.task_launch`) ``lmp`` runs after the
    slot's launch prefix.
    """
    return slot_profile(
        os.environ.get("MATDX_LAMMPS_COMMAND", "lmp"),
        data={"potentials_dir": os.environ.get("MATDX_LAMMPS_POTENTIALS", DEFAULT_POTENTIALS_DIR)},
    )


class LammpsJob(Job):
    """A custodian job running LAMMPS on the input rendered from the run's parameter file.

    Parameters
    ----------
    command
        Program and arguments (``-in in.lammps -log log.lammps`` are appended).
    env
        Extra environment (``OMP_NUM_THREADS`` defaults to 1).
    deadline
        Seconds since the epoch: MD attempts get ``timer timeout`` from it
        (:func:`.checkpoint.timeout_seconds`); no attempt starts without time left.
    output
        Where the launcher writes rank 0's output instead of passing it on (the
        profile's ``output``): collected into ``lammps.out`` and ``lammps.err``.
    """

    def __init__(
        self,
        command: list[str],
        env: dict[str, str] | None = None,
        deadline: float | None = None,
        output: RankOutput | None = None,
    ) -> None:
        self.command = list(command)
        self.env = dict(env or {})
        self.deadline = deadline
        self.output = output

    def setup(self, directory: str = "./") -> None:
        """Nothing to do: the data and parameter files are written before the job."""

    def run(self, directory: str = "./") -> subprocess.Popen[bytes]:
        """Render ``in.lammps``, keep the previous attempt's files, start LAMMPS.

        An MD attempt from scratch deletes the checkpoints of earlier ones; one resumed
        from a checkpoint keeps the trajectory up to the checkpoint's step.

        Raises
        ------
        DeadlineReachedError
            If the deadline leaves no time for this attempt (nothing is started).
        """
        d = Path(directory)
        timeout = checkpoint.timeout_seconds(self.deadline)
        if timeout is not None and timeout < checkpoint.MIN_RUN_S:
            raise DeadlineReachedError("no time left before the deadline")
        params = load_parameters(d)
        md = params["task"] == "md"
        run = params.setdefault("run", {})
        resume = run.get("resume") if md else None
        _archive_attempt(d, keep_trajectory=resume is not None)
        if md and resume is None:
            checkpoint.remove_checkpoints(d)
            run["segments"] = []
            save_parameters(d, params)
        elif resume is not None:
            checkpoint.truncate_trajectory(d / TRAJECTORY_FILE, int(resume["step"]))
        (d / INPUT_FILE).write_text(render_input({**params, "timeout_s": timeout if md else None}))
        env = {"OMP_NUM_THREADS": "1", **os.environ, **self.env}
        try:
            return start_program(
                [*self.command, "-in", INPUT_FILE, "-log", LOG_FILE], d, STDOUT_FILE,
                STDERR_FILE, env, self.output,
            )
        except OSError as exc:
            raise EngineError(f"cannot start {self.command[0]}: {exc.strerror}") from None

    def postprocess(self, directory: str = "./") -> None:
        """Nothing to do: outputs are parsed by :class:`LammpsEngine`."""


def _archive_attempt(d: Path, keep_trajectory: bool = False) -> str | None:
    """Move the files of a previous attempt to ``attempt.N/`` and drop its dumps.

    Returns the name of ``attempt.N`` (``None`` if there was no attempt); the trajectory
    stays if ``keep_trajectory`` (a resumed run appends to it).
    """
    if not (d / LOG_FILE).exists() and not (d / STDOUT_FILE).exists():
        return None
    n = 1
    while (d / f"attempt.{n}").exists():
        n += 1
    (d / f"attempt.{n}").mkdir()
    for name in _ATTEMPT_FILES:
        if (d / name).exists():
            (d / name).rename(d / f"attempt.{n}" / name)
    for name in (FINAL_DUMP,) if keep_trajectory else (TRAJECTORY_FILE, FINAL_DUMP):
        (d / name).unlink(missing_ok=True)
    return f"attempt.{n}"


def _prepare(d: Path, params: dict[str, Any], request: str) -> dict[str, Any]:
    """The parameters of this call: a fresh run, or the unfinished MD run to continue.

    An MD run recorded in ``d`` for the same request, ``running`` (killed) or ``stopped``
    (deadline), with a readable checkpoint, continues from the latest checkpoint: the files
    of its last attempt become a segment, a ``CheckpointResume`` correction is recorded.
    """
    fresh = {"request_id": request, "state": "running", "resume": None, "segments": []}
    params["run"] = {**fresh, "corrections": []}
    if params["task"] != "md":
        return params
    try:
        prior = load_parameters(d) if (d / PARAMETERS_FILE).is_file() else None
    except EngineError:  # leftovers of a run killed while writing: start afresh
        prior = None
    run = dict((prior or {}).get("run") or {})
    found = checkpoint.latest_checkpoint(d)
    if (
        prior is None
        or run.get("request_id") != request
        or run.get("state") not in ("running", "stopped")
        or found is None
    ):
        # nothing to continue: no checkpoint of another run may be taken for this one's
        checkpoint.remove_checkpoints(d)
        return params
    name, step = found
    prior["checkpoint_interval"] = params["checkpoint_interval"]
    segments = list(run.get("segments") or [])
    corrections = list(run.get("corrections") or [])
    archived = _archive_attempt(d, keep_trajectory=True)
    if archived is not None:
        segments.append(checkpoint.segment_record(d, archived, LOG_FILE))
    elif corrections and corrections[-1].get("handler") == checkpoint.RESUME_HANDLER:
        corrections.pop()  # the last call continued nothing: it had no time to start
    ended = segments[-1]["ended"] if segments else "interrupted"
    prior["run"] = {
        **run,
        "state": "running",
        "resume": {"file": name, "step": step},
        "segments": segments,
        "corrections": [*corrections, checkpoint.resume_correction(name, step, ended)],
    }
    return prior


def _initial_atoms(structure: Structure | Atoms, supercell: Any) -> Atoms:
    atoms = structure.copy() if isinstance(structure, Atoms) else to_atoms(structure)
    atoms.pbc = True
    if supercell:
        atoms = atoms.repeat(supercell)
    return atoms


class LammpsEngine(Engine):
    """LAMMPS with an EAM potential: ``md``, ``relax`` (minimization) or ``static``.

    ``relax`` relaxes the cell too with the ``relax_cell`` setting.

    ``profile``: command and potentials directory (default :func:`default_profile`);
    ``max_corrections``: most error corrections (timestep halvings) before giving up.
    """

    key = "lammps"

    def supported_elements(self) -> frozenset[str]:
        """Elements with an EAM potential in the profile's potentials directory."""
        profile = self.profile or default_profile()
        return available_elements(profile.data.get("potentials_dir", DEFAULT_POTENTIALS_DIR))

    def run(
        self,
        structure: Structure | Atoms,
        task: str,
        settings: dict[str, Any],
        workdir: str | Path | None,
        deadline: float | None,
    ) -> CalcResult:
        """Run LAMMPS; a cell relaxation that lost symmetry runs again from the symmetrised cell.

        See :meth:`run_once` for the parameters. LAMMPS's cell relaxation moves the six
        cell parameters of its own (upper-triangular) frame, which need not keep the
        crystal's point group: along a soft shear a cell can end, stress-free, slightly
        distorted (R-3m → P1). When the relaxed structure's space group (tolerance
        :data:`~matdx.core.symmetry.SYMPREC`) is lower than the input's, it is symmetrised
        back to the input's group (ASE's ``refine_symmetry``, the smallest tolerance of
        :data:`SYMMETRISE_TOLERANCES` that finds it) and relaxed again, in the
        subdirectory ``symmetrised`` of ``workdir``; that result is kept if it has the
        input's group. ``extra["symmetry_kept"]`` says whether the result has it.
        """
        result = self.run_once(structure, task, settings, workdir, deadline)
        if task != "relax" or not settings.get("relax_cell", True):
            return result
        start = to_structure(_initial_atoms(structure, settings.get("supercell")))
        wanted = spacegroup(start)[1]
        if wanted is None or (result.spacegroup_number or 0) >= wanted:
            result.extra["symmetry_kept"] = result.spacegroup_number == wanted
            return result
        refined = _symmetrised(Structure.from_dict(result.structure), wanted)
        if refined is not None:
            where = Path(workdir) / "symmetrised" if workdir is not None else None
            again = self.run_once(refined, task, {**settings, "supercell": None}, where, deadline)
            if again.spacegroup_number == wanted:
                again.corrections = [
                    *result.corrections,
                    {"handler": "SymmetryRestore", "from": result.spacegroup_number},
                    *again.corrections,
                ]
                again.extra["symmetry_kept"] = True
                return again
        result.extra["symmetry_kept"] = False
        return result

    def run_once(
        self,
        structure: Structure | Atoms,
        task: str,
        settings: dict[str, Any],
        workdir: str | Path | None,
        deadline: float | None,
    ) -> CalcResult:
        """Run LAMMPS once.

        Parameters
        ----------
        structure
            Starting structure (pymatgen or ASE).
        task
            ``"md"``, ``"relax"`` or ``"static"``.
        settings
            Task settings; see :data:`matdx.engines.lammps.inputs.TASK_DEFAULTS`. MD:
            ``ensemble`` (nve, nvt, npt, langevin), ``temperature`` (K), ``pressure`` (bar),
            ``timestep`` (fs), ``steps``, ``equilibration`` (steps before production; default
            five damping times of the thermostat, of the barostat for NPT),
            ``thermo_interval``, ``dump_interval`` (0: no trajectory), ``seed``,
            ``checkpoint_interval`` (steps between checkpoints, default 1000; 0: none). All
            tasks: ``potential`` (file), ``potentials_dir``, ``supercell``.
        workdir
            Run directory (default: a new temporary directory, kept after a finished MD run
            because the trajectory stays there, removed otherwise). An unfinished MD run of the
            same settings and structure there (stopped at a deadline, or killed) is continued
            from its latest checkpoint.
        deadline
            Seconds since the epoch by which the call must have returned: an MD run stops at
            ``timer timeout`` before it, writes a checkpoint and can be continued by the next
            call with the same ``workdir``; other tasks only check that time is left.

        Returns
        -------
        CalcResult
            Final-frame energy, forces, stress and structure; for MD, ``extra`` holds the
            production averages and standard errors of temperature, pressure, energies,
            volume and density, the energy drift and the trajectory path, and for a continued
            run ``resumed`` (number of earlier segments), ``segments`` and
            ``resumed_from_step``; ``corrections`` then start with those of earlier calls and
            a ``CheckpointResume`` entry per continuation.

        Raises
        ------
        DeadlineReachedError
            The run stopped before the deadline (or there was no time to start it).
        EngineError
            No potential, no executable, bad settings, or a failure the handlers cannot fix.
        """
        start = time.perf_counter()
        profile = self.profile or default_profile()
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
        request = checkpoint.request_id(params, atoms)
        profile.check()
        timeout = checkpoint.timeout_seconds(deadline)
        if timeout is not None and timeout < checkpoint.MIN_RUN_S:
            where = f" in {workdir}" if workdir is not None else ""
            raise DeadlineReachedError(f"no time to start LAMMPS before the deadline{where}")
        d = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="matdx-lammps-"))
        d.mkdir(parents=True, exist_ok=True)
        done = False
        try:
            write_structure(atoms, d / DATA_FILE, specorder)
            save_parameters(d, _prepare(d, params, request))
            corrections = run_with_recovery(
                LammpsJob(list(profile.command), profile.env, deadline, profile.output),
                [UnstableMDHandler(), CheckpointHandler(), LammpsErrorHandler()],
                max_errors=self.max_corrections,
                directory=d,
            )
            params = load_parameters(d)
            run = params["run"]
            run["corrections"] = [*run.get("corrections", []), *corrections]
            stop = checkpoint.stopped_step(read_text(d / LOG_FILE)) if task == "md" else None
            if stop is not None:
                run["state"] = "stopped"
                save_parameters(d, params)
                where = f"resumable in {d}" if workdir is not None else "(temporary directory)"
                end = int(params["equilibration"]) + int(params["steps"])
                raise DeadlineReachedError(
                    f"LAMMPS md stopped at step {stop} of {end} before the deadline; {where}"
                )
            log = read_log(d / LOG_FILE)
            final, forces = read_final_structure(d / FINAL_DUMP, np.asarray(atoms.cell), len(atoms))
            result = _result(params, log, final, forces, atoms, d, run["corrections"])
            result.wall_time_s = time.perf_counter() - start
            run["state"] = "done"
            checkpoint.remove_checkpoints(d)
            save_parameters(d, params)
            if workdir is None and task != "md":
                result.extra["workdir"] = None  # removed below
            done = True
            return result
        finally:
            # a directory made here is kept only for a finished MD run (it holds the trajectory)
            if workdir is None and not (done and task == "md"):
                shutil.rmtree(d, ignore_errors=True)


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


SYMMETRISE_TOLERANCES = (0.01, 0.03, 0.1, 0.2)
"""Tolerances (Å) tried, in order, to find a relaxed cell's lost space group."""


def _symmetrised(structure: Structure, number: int) -> Structure | None:
    """``structure`` made exactly symmetric in space group ``number`` (same frame), if found."""
    from ase.spacegroup.symmetrize import check_symmetry, refine_symmetry

    atoms = to_atoms(structure)
    for tol in SYMMETRISE_TOLERANCES:
        if check_symmetry(atoms, tol).number == number:
            refine_symmetry(atoms, tol)
            return to_structure(atoms)
    return None


def _residual_stress_kbar(row: dict[str, float], pressure_bar: float) -> float:
    """Largest principal stress (kbar, magnitude) away from the target pressure.

    The spectral norm of the stress tensor minus the target: the same in every frame, and
    no component is larger.
    """
    p = np.array(
        [
            [row["pxx_bar"], row["pxy_bar"], row["pxz_bar"]],
            [row["pxy_bar"], row["pyy_bar"], row["pyz_bar"]],
            [row["pxz_bar"], row["pyz_bar"], row["pzz_bar"]],
        ]
    ) - pressure_bar * np.eye(3)
    return float(np.max(np.abs(np.linalg.eigvalsh(p))) / 1000.0)


def _md_extra(params: dict[str, Any], n: int, d: Path) -> dict[str, Any]:
    traj = d / TRAJECTORY_FILE
    run = params.get("run") or {}
    segments = list(run.get("segments") or [])
    logs = [d / seg["dir"] / LOG_FILE for seg in segments] + [d / LOG_FILE]
    table = checkpoint.production_table(
        logs,
        int(params["equilibration"]),
        int(params["steps"]),
        int(params["thermo_interval"]),
        float(params["timestep"]),
    )
    resume = run.get("resume")
    return {
        "ensemble": params["ensemble"],
        **summarize_thermo(table, n),
        "resumed": len(segments),
        "resumed_from_step": int(resume["step"]) if resume else None,
        "segments": segments,
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
    residual = None
    if task == "relax":
        converged = log.stopping_criterion not in _UNFINISHED_CRITERIA and bool(
            np.max(np.linalg.norm(forces, axis=1)) <= params["fmax"] * 1.001
        )
        if params["relax_cell"]:
            residual = _residual_stress_kbar(row, float(params["pressure"]))
            converged = converged and residual <= float(params["stress_tol"]) * 1.001
    symbol, number = spacegroup(final) if task != "md" else (None, None)
    extra: dict[str, Any] = {
        "workdir": str(d),
        "potential": params["potential"],
        "stopping_criterion": log.stopping_criterion,
    }
    if residual is not None:
        extra["residual_stress_kbar"] = residual
    if task == "md":
        extra.update(_md_extra(params, n, d))
    return CalcResult(
        engine="lammps",
        code_version=f"LAMMPS {log.version}" if log.version else "LAMMPS",
        task=task,
        parameters={k: v for k, v in params.items() if k != "run"},
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
