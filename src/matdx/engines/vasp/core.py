"""Run VASP: pymatgen inputs, custodian's ``VaspJob`` and handlers, pymatgen parsing.

:meth:`VaspEngine.calculate` writes the inputs of a task into a work directory, runs the profile's
command as a custodian :class:`~custodian.vasp.jobs.VaspJob` under the task's handlers
(:mod:`.handlers`) through :func:`~matdx.engines.base.run_with_recovery`, and parses the
final run into a :class:`~matdx.schemas.results.CalcResult` whose ``corrections`` are
custodian's.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from custodian.vasp.jobs import VaspJob
from pymatgen.core import Structure
from pymatgen.io.vasp.inputs import Incar

from matdx.core.errors import EngineError, InputError
from matdx.engines.base import Engine, EngineProfile, run_with_recovery
from matdx.engines.vasp.handlers import default_handlers
from matdx.engines.vasp.inputs import write_inputs
from matdx.engines.vasp.outputs import parse_run
from matdx.schemas.results import CalcResult

COMMAND_ENV = "MATDX_VASP_COMMAND"
"""Environment variable holding the VASP command line, e.g. ``mpirun -np 2 vasp_std``."""

_OUTPUT_FILES = ("vasprun.xml", "vasprun.xml.gz", "OUTCAR", "OUTCAR.gz", "custodian.json")


def default_profile() -> EngineProfile:
    """The VASP profile of this machine, from ``MATDX_VASP_COMMAND``.

    Raises
    ------
    EngineError
        If the variable is unset or empty.
    """
    command = os.environ.get(COMMAND_ENV, "").strip()
    if not command:
        raise EngineError(f"{COMMAND_ENV} is not set (e.g. 'mpirun -np 2 vasp_std')")
    return EngineProfile.from_text(command)


@contextmanager
def _environment(extra: Mapping[str, str]) -> Iterator[None]:
    """Set ``extra`` in ``os.environ`` for the run (VaspJob inherits the environment)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _workdir(workdir: str | Path | None, task: str) -> Path:
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix=f"vasp-{task}-", dir=Path.cwd()))
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    stale = [f for f in _OUTPUT_FILES if (path / f).exists()]
    if stale:
        raise InputError(f"work directory {path} already holds VASP output ({', '.join(stale)})")
    return path


def _failure(directory: Path, fallback: str) -> str:
    """What custodian's log (``custodian.json``) says ended the run, in one line."""
    try:
        last_job = json.loads((directory / "custodian.json").read_text())[-1]
        corr = last_job["corrections"][-1]
        handler = corr["handler"]["@class"]
        errors = ", ".join(map(str, corr["errors"]))
    except (OSError, ValueError, LookupError, TypeError):
        return fallback
    if last_job.get("max_errors") or last_job.get("max_errors_per_job"):
        n = len(last_job["corrections"])
        return f"still failing after {n} corrections (last: {handler}: {errors})"
    if not corr.get("actions"):
        return f"{handler} found {errors} and has no correction for it"
    return fallback


class VaspEngine(Engine):
    """VASP: ``relax`` (pymatgen's ``MPRelaxSet``) or ``static`` (``MPStaticSet``).

    Parameters
    ----------
    profile
        Command and environment; default :func:`default_profile`.
    max_corrections
        Most custodian corrections before giving up.
    handlers
        custodian error handlers; default those of the task
        (:data:`matdx.engines.vasp.handlers.HANDLER_SETS`).
    monitor
        Let custodian's monitoring handlers watch the running VASP (custodian polls every
        10 s). ``False`` checks every handler once VASP has exited, without the polling
        delay: for short runs.
    """

    key = "vasp"

    def __init__(
        self,
        profile: EngineProfile | None = None,
        max_corrections: int = 5,
        handlers: Sequence[Any] | None = None,
        monitor: bool = True,
    ) -> None:
        super().__init__(profile, max_corrections)
        self.handlers = handlers
        self.monitor = monitor

    def run(
        self,
        structure: Structure,
        task: str,
        settings: dict[str, Any],
        workdir: str | Path | None,
        deadline: float | None,
    ) -> CalcResult:
        """Run one VASP calculation with custodian's error recovery.

        Parameters
        ----------
        structure
            Structure to compute.
        task
            ``"relax"`` (pymatgen's ``MPRelaxSet``) or ``"static"`` (``MPStaticSet``).
        settings
            Input overrides: ``incar``, ``kpoints``, ``potcar``, ``potcar_functional`` (see
            :func:`matdx.engines.vasp.inputs.input_set`).
        workdir
            Directory of the run (created; must hold no earlier VASP output). Default: a new
            ``vasp-<task>-*`` directory in the current directory.
        deadline
            VASP cannot stop early: nothing starts once the deadline has passed.

        Returns
        -------
        CalcResult
            Energy, forces, stress (eV/Å³), final structure, band gap, magnetic moments,
            convergence, VASP version, custodian's corrections; ``parameters`` holds the
            inputs written (``incar``) and the INCAR of the last run (``incar_final``).

        Raises
        ------
        InputError
            Unknown setting, or a work directory with old output.
        EngineError
            Missing executable, unrecoverable VASP error, too many corrections, or missing
            or unreadable output.
        """
        start = time.perf_counter()
        profile = self.profile or default_profile()
        profile.check()
        directory = _workdir(workdir, task)
        parameters = write_inputs(structure, task, directory, settings)
        job = VaspJob(list(profile.command), output_file="vasp.out", stderr_file="std_err.txt")
        active = list(self.handlers) if self.handlers is not None else default_handlers(task)
        if not self.monitor:
            for handler in active:
                handler.is_monitor = False
        with _environment(profile.env):
            try:
                corrections = run_with_recovery(
                    job, active, max_errors=self.max_corrections, directory=directory
                )
            except EngineError as exc:
                detail = _failure(directory, str(exc))
                raise EngineError(f"VASP failed in {directory}: {detail}") from None
            except Exception as exc:  # a handler or job failing on odd output
                text = " ".join(str(exc).split())[:200]
                raise EngineError(
                    f"custodian failed in {directory}: {type(exc).__name__}: {text}"
                ) from None
        fields = parse_run(directory)
        parameters["incar_final"] = dict(Incar.from_file(directory / "INCAR"))
        fields["extra"]["workdir"] = str(directory)
        return CalcResult(
            engine="vasp",
            task=task,
            parameters=parameters,
            corrections=corrections,
            wall_time_s=time.perf_counter() - start,
            **fields,
        )


__all__ = ["COMMAND_ENV", "VaspEngine", "default_profile"]
