"""Run pw.x: the custodian job, this machine's profile, and the public entry points.

``QeEngine.calculate`` builds the parameter dictionary (:mod:`.inputs`, :mod:`.pseudo`), runs a
:class:`PWJob` under the handlers of :mod:`.handlers` through
:func:`~matdx.engines.base.run_with_recovery`, and parses the last run (:mod:`.parse`) into
a :class:`~matdx.schemas.results.CalcResult` whose ``corrections`` are custodian's.

With ``deadline=`` (seconds since the epoch) every attempt gets ``max_seconds`` from
:func:`.resume.time_limit`; a run that pw.x stops at that limit is not restarted in the same
call: its restart files stay in the work directory, :data:`.resume.STATE_FILE` records it as
``stopped`` and :class:`~matdx.core.errors.DeadlineReachedError` is raised. The next call
for the same calculation and directory continues it with ``restart_mode='restart'`` (its
result has ``extra["resumed"]`` > 0 and a ``DeadlineResume`` correction first); a run
killed without a clean stop starts again from scratch, its ``outdir`` removed first.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from custodian.custodian import Job
from pymatgen.core import Structure

from matdx.core.errors import DeadlineReachedError, EngineError
from matdx.core.rank_output import RankOutput
from matdx.core.symmetry import spacegroup
from matdx.engines.base import Engine, EngineProfile, run_with_recovery, slot_profile
from matdx.engines.program import start_program
from matdx.engines.qe import resume
from matdx.engines.qe.handlers import default_handlers
from matdx.engines.qe.inputs import build_parameters, pools, write_input
from matdx.engines.qe.parse import describe, read_output
from matdx.engines.qe.pseudo import available_elements
from matdx.engines.qe.resume import RunState
from matdx.schemas.results import CalcResult

COMMAND_ENV = "MATDX_QE_COMMAND"
PSEUDO_DIR_ENV = "MATDX_QE_PSEUDO_DIR"
PSEUDO_FAMILY_ENV = "MATDX_QE_PSEUDO_FAMILY"
DEFAULT_COMMAND = "/usr/bin/mpirun --allow-run-as-root -np 2 pw.x"
DEFAULT_PSEUDO_DIR = "/usr/share/espresso/pseudo"
DEFAULT_PSEUDO_FAMILY = "debian"

OWN_TASKS = {"static": "scf", "relax": "relax", "vc-relax": "vc-relax"}
"""Campaign task → pw.x's ``calculation``."""

_RANK_FLAGS = ("-np", "-n", "--np", "-c")


def default_profile() -> EngineProfile:
    """The pw.x profile of this machine.

    Command from ``MATDX_QE_COMMAND`` (default ``/usr/bin/mpirun --allow-run-as-root -np 2
    pw.x``); ``data``: ``pseudo_dir`` from ``MATDX_QE_PSEUDO_DIR`` (default
    ``/usr/share/espresso/pseudo``), ``pseudo_family`` from ``MATDX_QE_PSEUDO_FAMILY``
    (default ``debian``); ``env``: ``OMP_NUM_THREADS`` (default 1). Within a task slot
    (:func:`~matdx.engines.base.task_launch`) pw.x runs after the slot's launch prefix.
    """
    return slot_profile(
        os.environ.get(COMMAND_ENV, "").strip() or DEFAULT_COMMAND,
        env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
        data={
            "pseudo_dir": os.environ.get(PSEUDO_DIR_ENV, "").strip() or DEFAULT_PSEUDO_DIR,
            "pseudo_family": os.environ.get(PSEUDO_FAMILY_ENV, "").strip() or DEFAULT_PSEUDO_FAMILY,
        },
    )


class PWJob(Job):
    """One pw.x calculation as a custodian job.

    Every attempt writes the input from the current ``parameters`` (which the handlers
    correct between attempts; custodian calls ``setup`` only once) and starts the command,
    never through a shell, in the work directory. The outputs of earlier attempts are kept
    as ``pw.out.1``, ``pw.out.2``, ...

    Parameters
    ----------
    parameters
        The parameter dictionary (:func:`matdx.engines.qe.inputs.build_parameters`).
    command
        Launcher and program, e.g. ``["mpirun", "-np", "2", "pw.x"]``; ``-in <input>`` is
        appended. ``parameters["mpi_ranks"]``, when set, replaces the value of ``-np``.
    env
        Extra environment.
    input_file, output_file, stderr_file
        File names in the work directory.
    deadline
        Seconds since the epoch: each attempt's ``max_seconds`` is set from it (and from
        ``max_seconds``) by :func:`.resume.time_limit`; ``deadline_limited`` says whether
        the deadline set the last one.
    max_seconds
        The user's ``max_seconds`` (``None``: none).
    output
        Where the launcher writes rank 0's output instead of passing it on (the
        profile's ``output``): collected into ``output_file`` and ``stderr_file``.

    Attributes
    ----------
    history
        The corrections the handlers made, in order (see :mod:`.handlers`).
    """

    def __init__(
        self,
        parameters: dict[str, Any],
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        input_file: str = "pw.in",
        output_file: str = "pw.out",
        stderr_file: str = "pw.err",
        deadline: float | None = None,
        max_seconds: float | None = None,
        output: RankOutput | None = None,
    ) -> None:
        self.parameters = parameters
        self.command = list(command)
        self.env = dict(env or {})
        self.input_file = input_file
        self.output_file = output_file
        self.stderr_file = stderr_file
        self.deadline = deadline
        self.max_seconds = max_seconds
        self.output = output
        self.deadline_limited = False
        self.history: list[dict[str, Any]] = []
        self.process: subprocess.Popen[bytes] | None = None

    def _rank_index(self) -> int | None:
        return next((i + 1 for i, w in enumerate(self.command[:-1]) if w in _RANK_FLAGS), None)

    def ranks(self) -> int | None:
        """MPI ranks of the next run (``None`` if the command has no ``-np``)."""
        index = self._rank_index()
        if self.parameters.get("mpi_ranks"):
            return int(self.parameters["mpi_ranks"])
        try:
            return int(self.command[index]) if index is not None else None
        except ValueError:
            return None

    def command_line(self) -> list[str]:
        """The command of the next run (with ``-nk``, k-point pools, for more than one)."""
        command = list(self.command)
        index = self._rank_index()
        if index is not None and self.parameters.get("mpi_ranks"):
            command[index] = str(self.parameters["mpi_ranks"])
        n = pools(self.parameters, self.ranks())
        return [*command, *(["-nk", str(n)] if n > 1 else []), "-in", self.input_file]

    def setup(self, directory: str = "./") -> None:
        """Write the first input."""
        write_input(self.parameters, Path(directory) / self.input_file)

    def _set_time_limit(self) -> None:
        """Set ``max_seconds`` of the next attempt from the deadline and the user's limit.

        Raises
        ------
        DeadlineReachedError
            If less than :data:`.resume.MIN_RUN_S` is left before the deadline's margin.
        """
        limit, self.deadline_limited = resume.time_limit(self.deadline, self.max_seconds)
        control = self.parameters["input_data"]["control"]
        if limit is None:
            control.pop("max_seconds", None)
            return
        if self.deadline_limited and limit < resume.MIN_RUN_S:
            raise DeadlineReachedError("no time left before the deadline")
        control["max_seconds"] = limit

    def run(self, directory: str = "./") -> subprocess.Popen[bytes]:
        """Keep earlier outputs, write the input, start pw.x; return the process.

        Raises
        ------
        DeadlineReachedError
            If the deadline leaves no time for this attempt (nothing is started).
        """
        self._set_time_limit()
        d = Path(directory)
        if (d / self.output_file).exists():
            n = 1 + sum(1 for _ in d.glob(f"{self.output_file}.*"))
            for name in (self.input_file, self.output_file, self.stderr_file):
                if (d / name).exists():
                    (d / name).rename(d / f"{name}.{n}")
        write_input(self.parameters, d / self.input_file)
        self.process = start_program(
            self.command_line(), d, self.output_file, self.stderr_file,
            {**os.environ, **self.env}, self.output,
        )
        return self.process

    def postprocess(self, directory: str = "./") -> None:
        """Nothing to do: the results are parsed by :class:`QeEngine`."""


@contextmanager
def _work_directory(workdir: str | Path | None) -> Iterator[tuple[Path, bool]]:
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="matdx-qe-") as tmp:
            yield Path(tmp), True
        return
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    yield path, False


def _failure(directory: Path, job: PWJob, exc: Exception) -> str:
    """Why the run failed, in one line: pw.x's state and custodian's verdict."""
    output = (
        (directory / job.output_file).read_text(errors="replace")
        if (directory / job.output_file).exists()
        else ""
    )
    stderr = (
        (directory / job.stderr_file).read_text(errors="replace")
        if (directory / job.stderr_file).exists()
        else ""
    )
    state, verdict = describe(output, stderr), " ".join(str(exc).split())[:200]
    return state if verdict == state else f"{state} ({verdict})"


def _continuation(
    directory: Path, parameters: dict[str, Any], request: str, temporary: bool
) -> RunState:
    """The run of this call: a new one, or the one an earlier call stopped for its deadline.

    A stopped run continues from its restart files, with its parameters, first namelists,
    corrections and counts; leftovers of any other earlier run recorded in ``directory``
    (killed, failed, finished, another calculation) are not read by pw.x: their ``outdir``
    is removed.
    """
    new = RunState(request, "running", parameters, copy.deepcopy(parameters["input_data"]))
    if temporary:
        return new
    state = RunState.load(directory)
    if state is not None and resume.resumable(directory, state, request):
        state.parameters["input_data"]["control"]["restart_mode"] = "restart"
        state.corrections = [*state.corrections, resume.resume_correction(state.parameters)]
        state.status, state.resumed = "running", state.resumed + 1
        return state
    control = parameters["input_data"]["control"]
    if (directory / resume.STATE_FILE).exists() and control.get("restart_mode") != "restart":
        _remove_outdir(directory, parameters)
    return new


def _remove_outdir(directory: Path, parameters: dict[str, Any]) -> None:
    """Remove pw.x's ``outdir`` if it is a subdirectory of ``directory``."""
    outdir = resume.outdir_of(directory, parameters).resolve()
    if outdir != directory.resolve() and outdir.is_relative_to(directory.resolve()):
        shutil.rmtree(outdir, ignore_errors=True)


def _run(
    job: PWJob,
    directory: Path,
    temporary: bool,
    state: RunState,
    max_corrections: int,
) -> list[dict[str, Any]]:
    """Run ``job`` under the handlers; record the outcome in ``state`` (kept directories).

    Raises
    ------
    DeadlineReachedError
        pw.x stopped for the deadline, or no time was left to start it.
    EngineError
        A failure the handlers could not correct.
    """

    def record(status: str) -> None:
        if not temporary:
            state.status, state.parameters = status, job.parameters
            state.corrections = [*state.corrections, *job.history]
            state.save(directory)

    try:
        return run_with_recovery(
            job, default_handlers(job), max_errors=max_corrections, directory=directory
        )
    except DeadlineReachedError:
        if job.process is None and state.resumed > 0:
            # no time to start the continuation: the stopped run stays as it was
            state.resumed, state.corrections = state.resumed - 1, state.corrections[:-1]
            stopped = True
        else:
            ran = job.process is not None
            stopped = ran and resume.stopped_at_max_seconds(directory, job.output_file)
            if stopped:
                state.ionic_steps += resume.completed_steps(directory / job.output_file)
        record("stopped" if stopped else "running")
        where = "(temporary directory, not kept)" if temporary else f"resumable in {directory}"
        what = "pw.x stopped at max_seconds" if stopped else "no time to start pw.x"
        raise DeadlineReachedError(f"{what} before the deadline; {where}") from None
    except EngineError as exc:
        record("failed")
        where = "" if temporary else f" in {directory}"
        raise EngineError(f"pw.x failed{where}: {_failure(directory, job, exc)}") from None
    except Exception as exc:  # a handler or the job failing on odd output
        record("failed")
        text = " ".join(str(exc).split())[:200]
        raise EngineError(f"custodian failed: {type(exc).__name__}: {text}") from None


class QeEngine(Engine):
    """Quantum ESPRESSO pw.x: ``static`` (``scf``), ``relax`` and ``vc-relax``.

    ``profile``: command, environment, pseudopotential directory and family (default
    :func:`default_profile`); ``max_corrections``: most corrections before giving up.
    """

    key = "qe"

    def supported_elements(self) -> frozenset[str]:
        """Elements with a pseudopotential in the profile's family and directory."""
        data = (self.profile or default_profile()).data
        return available_elements(
            data.get("pseudo_family", DEFAULT_PSEUDO_FAMILY),
            Path(data.get("pseudo_dir", DEFAULT_PSEUDO_DIR)),
        )

    def run(
        self,
        structure: Structure,
        task: str,
        settings: dict[str, Any],
        workdir: str | Path | None,
        deadline: float | None,
    ) -> CalcResult:
        """Run one pw.x calculation with custodian's error recovery.

        Parameters
        ----------
        structure
            Structure to compute.
        task
            ``"static"`` (pw.x's ``scf``), ``"relax"`` (positions) or ``"vc-relax"`` (positions
            and cell).
        settings
            pw.x keywords and engine settings (:mod:`matdx.engines.qe.inputs`).
        workdir
            Directory of the run (created; earlier outputs in it are renamed, not deleted; a
            run of the same calculation stopped there for a deadline is continued).
            Default: a temporary directory, removed afterwards.
        deadline
            Seconds since the epoch by which the call must have returned: pw.x gets
            ``max_seconds`` from it (:func:`.resume.time_limit`) and, stopped there, is left to
            be continued by the next call with the same ``workdir``.

        Returns
        -------
        CalcResult
            ``engine="qe"``; ``parameters`` holds the final namelists (``input_data``), the
            first ones (``input_data_initial``), k-points, pseudopotential family/files/MD5
            (``pseudo``) and the command; ``corrections`` custodian's corrections (those of
            earlier calls of a resumed run first, then a ``DeadlineResume`` entry for each
            continuation); ``extra`` the Fermi energy, metallicity, total magnetisation, SCF
            iterations, pw.x's wall time and ``resumed`` (continuations from restart files);
            ``n_steps`` counts the ionic steps of the stopped runs too.

        Raises
        ------
        InputError
            Unknown setting.
        DeadlineReachedError
            pw.x stopped at the deadline's ``max_seconds`` (or there was no time to start it);
            the work directory holds what the next call continues from.
        EngineError
            Missing executable or pseudopotential, a pw.x error, a failure the handlers could
            not correct within ``max_corrections``, or unreadable output.
        """
        start = time.perf_counter()
        profile = self.profile or default_profile()
        own = OWN_TASKS[task]
        profile.check()
        parameters = build_parameters(
            structure,
            own,
            settings,
            pseudo_dir=profile.data.get("pseudo_dir"),
            pseudo_family=profile.data.get("pseudo_family", DEFAULT_PSEUDO_FAMILY),
        )
        request = resume.request_id(parameters)
        user_limit = parameters["input_data"]["control"].get("max_seconds")
        limit, by_deadline = resume.time_limit(deadline, user_limit)
        if by_deadline and limit is not None and limit < resume.MIN_RUN_S:
            where = f" in {workdir}" if workdir is not None else ""
            raise DeadlineReachedError(f"no time to start pw.x before the deadline{where}")
        with _work_directory(workdir) as (directory, temporary):
            state = _continuation(directory, parameters, request, temporary)
            parameters, initial = state.parameters, state.input_data_initial
            job = PWJob(
                parameters, profile.command, profile.env, deadline=deadline,
                max_seconds=user_limit, output=profile.output,
            )
            if not temporary:
                state.save(directory)
            corrections = state.corrections + _run(
                job, directory, temporary, state, self.max_corrections
            )
            out = read_output(directory / job.output_file, "pw.x output" if temporary else None)
            if not temporary:
                state.status, state.corrections = "done", corrections
                state.save(directory)
            if not temporary and not (settings or {}).get("keep_outdir", False):
                # wavefunctions and charge density are only needed to restart a failed run
                _remove_outdir(directory, job.parameters)
        final = out.structure
        n = len(final)
        symbol, number = spacegroup(final)
        recorded = {k: v for k, v in parameters.items() if k != "structure"}
        return CalcResult(
            engine="qe",
            code_version=out.code_version,
            task=task,
            parameters={
                **recorded,
                "input_data_initial": initial,
                "command": job.command_line(),
                "settings": dict(settings or {}),
            },
            energy=out.energy,
            energy_per_atom=out.energy / n,
            volume_per_atom=final.volume / n,
            forces=out.forces,
            stress=out.stress,
            structure=final.as_dict(),
            spacegroup_symbol=symbol,
            spacegroup_number=number,
            converged=out.converged,
            n_steps=out.n_ionic_steps + state.ionic_steps,
            band_gap=out.band_gap,
            magmoms=out.magmoms,
            wall_time_s=time.perf_counter() - start,
            corrections=corrections,
            extra={
                "fermi_energy": out.fermi_energy,
                "is_metal": out.is_metal,
                "total_magnetization": out.total_magnetization,
                "n_scf_iterations": out.n_scf_iterations,
                "pw_wall_time_s": out.wall_time_s,
                "workdir": None if temporary else str(directory),
                "resumed": state.resumed,
            },
        )


__all__ = [
    "COMMAND_ENV",
    "PSEUDO_DIR_ENV",
    "PSEUDO_FAMILY_ENV",
    "PWJob",
    "QeEngine",
    "default_profile",
]
