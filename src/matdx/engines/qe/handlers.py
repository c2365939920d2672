"""custodian error handlers for pw.x, correcting the job's parameter dictionary.

Each handler watches for one failure kind of :data:`matdx.engines.qe.parse.FAILURES`
(:func:`~matdx.engines.qe.parse.diagnose` decides, so that one failed run gets one
diagnosis) and its ``correct()`` returns custodian's declarative actions,
``{"dict": "parameters", "action": {"_set": {"input_data->electrons->mixing_beta": 0.35}}}``,
after applying them to the job's parameters (:func:`~matdx.engines.base.modify`); the job
writes the next input from them. A handler with nothing left to change gives up
(:func:`~matdx.engines.base.give_up`: ``"actions": None``, unrecoverable for custodian). custodian's
``max_errors`` bounds the number of corrections; every remedy is bounded too (floors,
ceilings) so that it ends. Each correction is also appended to the job's ``history``, so
that the corrections of a call that stops at its deadline are not lost with custodian's log.

=========================  =====================================================================
handler                    correction
=========================  =====================================================================
``ScfConvergenceHandler``  ``electron_maxstep`` × 2 (at least 100, at most 1000),
                           ``mixing_beta`` × 0.5 (not below 0.1); from the second correction on,
                           also Davidson → conjugate-gradient diagonalisation
``RelaxStepsHandler``      restart from the last geometry with ``nstep`` × 2 (at least 50, at
                           most 500)
``WalltimeHandler``        ``restart_mode='restart'``: continue from pw.x's restart files
                           (SCF state; in relaxations also geometry and BFGS history); when
                           the job's deadline set ``max_seconds``, no correction: it raises
                           :class:`~matdx.core.errors.DeadlineReachedError` instead
``KilledHandler``          killed / out of memory / MPI abort without a pw.x message: half the
                           MPI ranks; on one rank, conjugate-gradient diagonalisation (less
                           memory); then unrecoverable
=========================  =====================================================================

After any other failure a relaxation restarts from its last geometry (from scratch), so
that no ionic step is repeated. An error that pw.x itself reports (``Error in routine
...``) has no handler: the run ends and the parser reports pw.x's message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from custodian.custodian import ErrorHandler
from pymatgen.core import Structure

from matdx.core.errors import DeadlineReachedError
from matdx.engines.base import give_up, modify
from matdx.engines.qe.parse import describe, diagnose, last_structure

BETA_FLOOR = 0.1
ELECTRON_MAXSTEP = (100, 1000)
NSTEP = (50, 500)


class PWJobLike(Protocol):
    """What a handler needs of the job (:class:`matdx.engines.qe.core.PWJob`)."""

    parameters: dict[str, Any]
    output_file: str
    stderr_file: str
    deadline_limited: bool
    history: list[dict[str, Any]]

    def ranks(self) -> int | None:
        """MPI ranks of the next run, ``None`` without an MPI launcher."""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


class PWErrorHandler(ErrorHandler):
    """A pw.x failure of one kind and its correction of the job's parameters.

    Parameters
    ----------
    job
        The running :class:`~matdx.engines.qe.core.PWJob`; ``correct()`` changes its
        ``parameters``.
    """

    is_monitor = False
    failure: ClassVar[str] = ""

    def __init__(self, job: PWJobLike) -> None:
        self.job = job

    def __str__(self) -> str:
        return type(self).__name__

    def _texts(self, directory: str) -> tuple[str, str]:
        d = Path(directory)
        return _read(d / self.job.output_file), _read(d / self.job.stderr_file)

    def check(self, directory: str = "./") -> bool:
        """Whether the last run failed with this handler's failure."""
        return diagnose(*self._texts(directory)) == self.failure

    def correct(self, directory: str = "./") -> dict[str, Any]:
        """Apply the remedy to the job's parameters; return errors and actions."""
        output, stderr = self._texts(directory)
        errors = [describe(output, stderr)]
        updates = self.remedy(output)
        if not updates:
            return self._record(give_up(errors[0]))
        updates.update(self._resume(output))
        actions = [{"dict": "parameters", "action": {"_set": updates}}]
        modify(self.job.parameters, actions)
        return self._record({"errors": errors, "actions": actions})

    def _record(self, correction: dict[str, Any]) -> dict[str, Any]:
        self.job.history.append({**correction, "handler": type(self).__name__})
        return correction

    def remedy(self, output: str) -> dict[str, Any] | None:
        """Settings to change (custodian ``_set`` keys), ``None`` if there is no remedy."""
        raise NotImplementedError

    def _get(self, section: str, key: str, default: Any) -> Any:
        return self.job.parameters["input_data"].get(section, {}).get(key, default)

    def _resume(self, output: str) -> dict[str, Any]:
        """A relaxation goes on from its last geometry; every run starts afresh."""
        updates: dict[str, Any] = {"input_data->control->restart_mode": "from_scratch"}
        last = self._new_geometry(output)
        if last is not None:
            updates["structure"] = last.as_dict()
        return updates

    def _new_geometry(self, output: str) -> Structure | None:
        if self.job.parameters.get("task") not in ("relax", "vc-relax"):
            return None
        last = last_structure(output)
        if last is None:
            return None
        current = Structure.from_dict(self.job.parameters["structure"])
        same = np.allclose(last.lattice.matrix, current.lattice.matrix, atol=1e-6) and np.allclose(
            last.cart_coords, current.cart_coords, atol=1e-6
        )
        return None if same else last


class ScfConvergenceHandler(PWErrorHandler):
    """SCF not converged within ``electron_maxstep`` iterations."""

    failure = "scf_unconverged"

    def remedy(self, output: str) -> dict[str, Any] | None:
        """More iterations, gentler mixing, then conjugate-gradient diagonalisation."""
        updates: dict[str, Any] = {}
        low, high = ELECTRON_MAXSTEP
        maxstep = int(self._get("electrons", "electron_maxstep", 100))
        if maxstep < high:
            updates["input_data->electrons->electron_maxstep"] = min(high, max(low, 2 * maxstep))
        beta = float(self._get("electrons", "mixing_beta", 0.7))
        if beta > BETA_FLOOR:
            updates["input_data->electrons->mixing_beta"] = round(max(BETA_FLOOR, beta / 2), 6)
        if (self.n_applied_corrections > 0 or beta <= BETA_FLOOR) and self._get(
            "electrons", "diagonalization", "david"
        ) == "david":
            updates["input_data->electrons->diagonalization"] = "cg"
        return updates or None


class RelaxStepsHandler(PWErrorHandler):
    """Relaxation stopped after ``nstep`` ionic steps."""

    failure = "relax_unconverged"

    def remedy(self, output: str) -> dict[str, Any] | None:
        """Restart from the last geometry (added by ``_resume``) with more steps."""
        low, high = NSTEP
        nstep = int(self._get("control", "nstep", low))
        if self._new_geometry(output) is None and nstep >= high:
            return None
        return {"input_data->control->nstep": min(high, max(low, 2 * nstep))}


class WalltimeHandler(PWErrorHandler):
    """pw.x stopped itself at ``max_seconds`` and wrote restart files."""

    failure = "walltime"

    def correct(self, directory: str = "./") -> dict[str, Any]:
        """Continue from the restart files, unless the deadline set ``max_seconds``.

        Raises
        ------
        DeadlineReachedError
            If the stop was the job's deadline: the restart files stay for the next call.
        """
        if self.job.deadline_limited:
            raise DeadlineReachedError(f"pw.x stopped for the deadline in {directory}")
        return super().correct(directory)

    def remedy(self, output: str) -> dict[str, Any] | None:
        """Continue from the restart files, with the input unchanged otherwise."""
        return {"input_data->control->restart_mode": "restart"}

    def _resume(self, output: str) -> dict[str, Any]:
        # pw.x restores geometry, cell and BFGS history from its restart files; a changed
        # cell in the input would not match them ("charge is wrong" in vc-relax)
        return {}


class KilledHandler(PWErrorHandler):
    """pw.x killed (signal, out of memory) or ended without 'JOB DONE' nor a message."""

    failure = "killed"

    def remedy(self, output: str) -> dict[str, Any] | None:
        """Fewer MPI ranks; on one rank, less memory-hungry diagonalisation; else none."""
        ranks = self.job.ranks()
        if ranks is not None and ranks > 1:
            return {"mpi_ranks": ranks // 2}
        if self._get("electrons", "diagonalization", "david") == "david":
            return {"input_data->electrons->diagonalization": "cg"}
        return None


HANDLERS: tuple[type[PWErrorHandler], ...] = (
    KilledHandler,
    WalltimeHandler,
    ScfConvergenceHandler,
    RelaxStepsHandler,
)
"""The handlers of every pw.x run."""


def default_handlers(job: PWJobLike) -> list[PWErrorHandler]:
    """One instance of each of :data:`HANDLERS` for ``job``."""
    return [cls(job) for cls in HANDLERS]


__all__ = [
    "HANDLERS",
    "KilledHandler",
    "PWErrorHandler",
    "RelaxStepsHandler",
    "ScfConvergenceHandler",
    "WalltimeHandler",
    "default_handlers",
]
