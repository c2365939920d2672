"""Run pw.x: the custodian job, this machine's profile, and the public entry points.

``calculate`` builds the parameter dictionary (:mod:`.inputs`, :mod:`.pseudo`), runs a
:class:`PWJob` under the handlers of :mod:`.handlers` through
:func:`~matdx.engines.base.run_with_recovery`, and parses the last run (:mod:`.parse`) into
a :class:`~matdx.schemas.results.CalcResult` whose ``corrections`` are custodian's.
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
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from matdx.core.errors import EngineError, InputError
from matdx.engines.base import EngineProfile, run_with_recovery
from matdx.engines.qe.handlers import default_handlers
from matdx.engines.qe.inputs import TASKS, build_parameters, write_input
from matdx.engines.qe.parse import describe, read_output
from matdx.engines.qe.pseudo import available_elements
from matdx.schemas.results import CalcResult

COMMAND_ENV = "MATDX_QE_COMMAND"
PSEUDO_DIR_ENV = "MATDX_QE_PSEUDO_DIR"
PSEUDO_FAMILY_ENV = "MATDX_QE_PSEUDO_FAMILY"
DEFAULT_COMMAND = "/usr/bin/mpirun --allow-run-as-root -np 2 pw.x"
DEFAULT_PSEUDO_DIR = "/usr/share/espresso/pseudo"
DEFAULT_PSEUDO_FAMILY = "debian"

RESULT_TASKS = {"scf": "static", "static": "static", "relax": "relax", "vc-relax": "vc-relax"}
"""Task of :func:`calculate` → ``CalcResult.task``."""

_RANK_FLAGS = ("-np", "-n", "--np", "-c")
_SPACEGROUP_SYMPREC = 0.01


def default_profile() -> EngineProfile:
    """The pw.x profile of this machine.

    Command from ``MATDX_QE_COMMAND`` (default ``/usr/bin/mpirun --allow-run-as-root -np 2
    pw.x``); ``data``: ``pseudo_dir`` from ``MATDX_QE_PSEUDO_DIR`` (default
    ``/usr/share/espresso/pseudo``), ``pseudo_family`` from ``MATDX_QE_PSEUDO_FAMILY``
    (default ``debian``); ``env``: ``OMP_NUM_THREADS`` (default 1).
    """
    return EngineProfile.from_text(
        os.environ.get(COMMAND_ENV, "").strip() or DEFAULT_COMMAND,
        env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
        data={
            "pseudo_dir": os.environ.get(PSEUDO_DIR_ENV, "").strip() or DEFAULT_PSEUDO_DIR,
            "pseudo_family": os.environ.get(PSEUDO_FAMILY_ENV, "").strip() or DEFAULT_PSEUDO_FAMILY,
        },
    )


def supported_elements() -> frozenset[str]:
    """Elements with a pseudopotential in the default profile's family and directory."""
    data = default_profile().data
    return available_elements(data["pseudo_family"], Path(data["pseudo_dir"]))


def __getattr__(name: str) -> Any:
    """``SUPPORTED_ELEMENTS`` is computed on first use (it reads the pseudopotential files)."""
    if name == "SUPPORTED_ELEMENTS":
        return supported_elements()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    """

    def __init__(
        self,
        parameters: dict[str, Any],
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        input_file: str = "pw.in",
        output_file: str = "pw.out",
        stderr_file: str = "pw.err",
    ) -> None:
        self.parameters = parameters
        self.command = list(command)
        self.env = dict(env or {})
        self.input_file = input_file
        self.output_file = output_file
        self.stderr_file = stderr_file
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
        """The command of the next run."""
        command = list(self.command)
        index = self._rank_index()
        if index is not None and self.parameters.get("mpi_ranks"):
            command[index] = str(self.parameters["mpi_ranks"])
        return [*command, "-in", self.input_file]

    def setup(self, directory: str = "./") -> None:
        """Write the first input."""
        write_input(self.parameters, Path(directory) / self.input_file)

    def run(self, directory: str = "./") -> subprocess.Popen[bytes]:
        """Keep earlier outputs, write the input, start pw.x; return the process."""
        d = Path(directory)
        if (d / self.output_file).exists():
            n = 1 + sum(1 for _ in d.glob(f"{self.output_file}.*"))
            for name in (self.input_file, self.output_file, self.stderr_file):
                if (d / name).exists():
                    (d / name).rename(d / f"{name}.{n}")
        write_input(self.parameters, d / self.input_file)
        with open(d / self.output_file, "wb") as out, open(d / self.stderr_file, "wb") as err:
            self.process = subprocess.Popen(
                self.command_line(),
                cwd=d,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, **self.env},
            )
        return self.process

    def postprocess(self, directory: str = "./") -> None:
        """Nothing to do: the results are parsed by :func:`calculate`."""


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
    verdict = " ".join(str(exc).split())[:200]
    return f"{describe(output, stderr)} ({verdict})"


def calculate(
    structure: Structure,
    task: str = "scf",
    settings: Mapping[str, Any] | None = None,
    workdir: str | Path | None = None,
    profile: EngineProfile | None = None,
    max_corrections: int = 5,
) -> CalcResult:
    """Run one pw.x calculation with custodian's error recovery.

    Parameters
    ----------
    structure
        Structure to compute.
    task
        ``"scf"`` (static), ``"relax"`` (positions) or ``"vc-relax"`` (positions and cell).
    settings
        pw.x keywords and engine settings (:mod:`matdx.engines.qe.inputs`).
    workdir
        Directory of the run (created; earlier outputs in it are renamed, not deleted).
        Default: a temporary directory, removed afterwards.
    profile
        Command, environment, pseudopotential directory and family; default
        :func:`default_profile`.
    max_corrections
        Most corrections before giving up.

    Returns
    -------
    CalcResult
        ``engine="qe"``; ``parameters`` holds the final namelists (``input_data``), the
        first ones (``input_data_initial``), k-points, pseudopotential family/files/MD5
        (``pseudo``) and the command; ``corrections`` custodian's corrections; ``extra``
        the Fermi energy, metallicity, total magnetisation, SCF iterations and pw.x's wall
        time.

    Raises
    ------
    InputError
        Unknown task or setting.
    EngineError
        Missing executable or pseudopotential, a pw.x error, a failure the handlers could
        not correct within ``max_corrections``, or unreadable output.
    """
    if task not in TASKS:
        raise InputError(f"unknown pw.x task {task!r} (known: {', '.join(TASKS)})")
    start = time.perf_counter()
    profile = profile or default_profile()
    profile.check()
    parameters = build_parameters(
        structure,
        task,
        settings,
        pseudo_dir=profile.data.get("pseudo_dir"),
        pseudo_family=profile.data.get("pseudo_family", DEFAULT_PSEUDO_FAMILY),
    )
    initial = copy.deepcopy(parameters["input_data"])
    with _work_directory(workdir) as (directory, temporary):
        job = PWJob(parameters, profile.command, profile.env)
        try:
            corrections = run_with_recovery(
                job, default_handlers(job), max_errors=max_corrections, directory=directory
            )
        except EngineError as exc:
            where = "" if temporary else f" in {directory}"
            raise EngineError(f"pw.x failed{where}: {_failure(directory, job, exc)}") from None
        except Exception as exc:  # a handler or the job failing on odd output
            text = " ".join(str(exc).split())[:200]
            raise EngineError(f"custodian failed: {type(exc).__name__}: {text}") from None
        out = read_output(directory / job.output_file, "pw.x output" if temporary else None)
        if not temporary and not (settings or {}).get("keep_outdir", False):
            # wavefunctions and charge density are only needed to restart a failed run
            outdir = directory / str(job.parameters["input_data"]["control"]["outdir"])
            if outdir.resolve().is_relative_to(directory.resolve()):
                shutil.rmtree(outdir, ignore_errors=True)
    final = out.structure
    n = len(final)
    try:
        sga = SpacegroupAnalyzer(final, symprec=_SPACEGROUP_SYMPREC)
        symbol, number = sga.get_space_group_symbol(), sga.get_space_group_number()
    except Exception:  # spglib gives up on odd cells; the space group is optional
        symbol, number = None, None
    recorded = {k: v for k, v in parameters.items() if k != "structure"}
    return CalcResult(
        engine="qe",
        code_version=out.code_version,
        task=RESULT_TASKS[task],
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
        n_steps=out.n_ionic_steps,
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
        },
    )


def relax(
    structure: Structure,
    *,
    profile: EngineProfile | None = None,
    max_corrections: int = 5,
    **settings: Any,
) -> CalcResult:
    """Relax positions and cell (``vc-relax``) in a temporary directory.

    ``settings`` are those of :func:`calculate`; this is the engine's registry entry point.
    """
    return calculate(structure, "vc-relax", settings, None, profile, max_corrections)


__all__ = [
    "COMMAND_ENV",
    "PSEUDO_DIR_ENV",
    "PSEUDO_FAMILY_ENV",
    "PWJob",
    "calculate",
    "default_profile",
    "relax",
    "supported_elements",
]
