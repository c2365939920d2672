"""What every engine shares: its machine profile, its calculation request, error recovery.

An engine is a *template* — writing inputs, running, parsing, the same on every machine —
plus an :class:`EngineProfile` holding the command for one machine (as ASE's
``GenericFileIOCalculator`` separates a calculator's template from its profile). Engines
return :class:`~matdx.schemas.results.CalcResult` whatever the code.

Error recovery follows custodian's model and uses custodian itself: a code runs as a
:class:`custodian.custodian.Job`, problems are found by
:class:`custodian.custodian.ErrorHandler` objects whose ``check()`` looks at the run and
whose ``correct()`` returns declarative actions (``{"dict": "parameters", "action":
{"_set": {"mixing_beta": 0.3}}}``), applied with custodian's ``Modder`` to the engine's
parameter dictionary before the next attempt; :func:`run_with_recovery` runs custodian
with a bound on corrections and returns every correction so that it is stored in the
calculation's provenance.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matdx.core.errors import EngineError


@dataclass(frozen=True)
class EngineProfile:
    """The command that runs a code on one machine.

    Attributes
    ----------
    command
        Program and arguments, e.g. ``["/usr/bin/mpirun", "--allow-run-as-root", "-np",
        "2", "pw.x"]`` here or ``["mpiexec", "pw.x"]`` on Fugaku.
    env
        Extra environment of the run.
    data
        Site data paths (pseudopotential directory, potentials directory, ...).
    """

    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_text(cls, command: str, **kwargs: Any) -> EngineProfile:
        """Build a profile from a command line (split like a shell, never run by one)."""
        return cls(tuple(shlex.split(command)), **kwargs)

    def check(self) -> None:
        """Raise :class:`EngineError` if the program is not found."""
        import shutil

        if not self.command:
            raise EngineError("empty engine command")
        # the launcher (first word) and the program (last word: pw.x, lmp, vasp_std)
        for prog in dict.fromkeys((self.command[0], self.command[-1])):
            if shutil.which(prog) is None and not Path(prog).is_file():
                raise EngineError(f"executable {prog!r} not found")


def run_with_recovery(
    job: Any,
    handlers: Sequence[Any],
    max_errors: int = 5,
    directory: Path | None = None,
) -> list[dict[str, Any]]:
    """Run a custodian ``Job`` with ``handlers``; return the corrections made.

    Parameters
    ----------
    job
        A :class:`custodian.custodian.Job`.
    handlers
        :class:`custodian.custodian.ErrorHandler` objects.
    max_errors
        Most corrections before giving up.
    directory
        Working directory of the run.

    Returns
    -------
    list of dict
        One entry per correction: ``{"errors": [...], "actions": [...], "handler": name}``.

    Raises
    ------
    EngineError
        If the run still fails after ``max_errors`` corrections, or a handler has no fix.
    """
    import logging

    from custodian import Custodian
    from custodian.custodian import CustodianError

    # corrections are returned and stored; custodian's own log lines stay out of the terminal
    logging.getLogger("custodian").addHandler(logging.NullHandler())

    c = Custodian(
        list(handlers),
        [job],
        max_errors=max_errors,
        directory=str(directory or "."),
        gzipped_output=False,
        checkpoint=False,
        terminate_on_nonzero_returncode=False,
    )
    try:
        log = c.run()
    except CustodianError as exc:
        raise EngineError(f"{type(job).__name__} failed: {exc}") from None
    corrections = []
    for entry in log:
        for corr in entry.get("corrections", []):
            corrections.append(
                {
                    "errors": list(corr.get("errors", [])),
                    "actions": corr.get("actions"),
                    "handler": type(corr.get("handler")).__name__
                    if corr.get("handler") is not None
                    else None,
                }
            )
    return corrections


MIN_SEPARATION = 0.5
"""Atoms closer than this (Å) make a structure physically meaningless."""


def check_structure(structure: Any, min_separation: float = MIN_SEPARATION) -> None:
    """Refuse a structure with overlapping atoms or a (nearly) singular cell.

    Raises
    ------
    InputError
        One line saying what is wrong.
    """
    import numpy as np

    from matdx.core.errors import InputError

    volume = float(abs(np.linalg.det(structure.lattice.matrix)))
    if not np.isfinite(volume) or volume < 1e-3 * len(structure):
        raise InputError(f"structure has a singular cell (volume {volume:.3g} Å³)")
    centers, neighbors, _, dist = structure.get_neighbor_list(min_separation)
    if len(dist):
        k = int(np.argmin(dist))
        raise InputError(
            f"structure has atoms {int(centers[k])} and {int(neighbors[k])} {dist[k]:.3f} Å "
            f"apart (closer than {min_separation} Å)"
        )


DEADLINE_MARGIN_FRACTION = 0.1
"""Share of the time left before a deadline that a run keeps free."""

DEADLINE_MIN_MARGIN_S = 5.0
"""Smallest margin (s) a run keeps before its deadline."""

MIN_RUN_S = 2.0
"""Shortest run time (s) worth starting a program for; with less, the deadline has come."""


def deadline_budget(deadline: float | None, now: float | None = None) -> float | None:
    """Seconds a run starting now may take: the time left minus a safety margin.

    The margin is :data:`DEADLINE_MARGIN_FRACTION` of the time left, at least
    :data:`DEADLINE_MIN_MARGIN_S`. ``None`` without a deadline; may be below
    :data:`MIN_RUN_S` or negative when the deadline is near.
    """
    if deadline is None:
        return None
    left = deadline - (time.time() if now is None else now)
    return left - max(DEADLINE_MIN_MARGIN_S, DEADLINE_MARGIN_FRACTION * left)
