"""Deadlines and resumption of pw.x runs kept in a work directory.

A batch job ends at its walltime; a pw.x run given ``deadline=`` (seconds since the epoch)
stops cleanly before it. :func:`time_limit` turns the deadline into pw.x's ``max_seconds``
for each attempt: the time left minus a safety margin (:data:`MARGIN_FRACTION` of the time
left, at least :data:`MIN_MARGIN_S`), or the user's own ``max_seconds`` if that is smaller.
The margin covers what pw.x does after ``max_seconds`` — finishing the SCF iteration,
writing its restart files — and the start of ``mpirun``.

Every calculation of :class:`matdx.engines.qe.core.QeEngine` in a work directory records its run in
:data:`STATE_FILE` (:class:`RunState`): which calculation it is (:func:`request_id`, a hash
of the parameter dictionary without ``max_seconds``), the parameters of the last attempt (as
the handlers corrected them), the first namelists, the corrections so far and the status —
``running`` (also what a run killed with ``kill -9`` leaves), ``stopped`` (pw.x stopped at
``max_seconds`` for the deadline and wrote its restart files), ``done`` or ``failed``. A
later call for the same calculation finds a ``stopped`` run (:func:`resumable`: same request,
last output stopped at ``max_seconds``, ``<outdir>/<prefix>.save`` present) and continues it
with ``restart_mode='restart'``; anything else starts from scratch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from matdx.engines import base
from matdx.engines.base import (
    DEADLINE_MARGIN_FRACTION as MARGIN_FRACTION,
)
from matdx.engines.base import (
    DEADLINE_MIN_MARGIN_S as MIN_MARGIN_S,
)
from matdx.engines.base import MIN_RUN_S, deadline_budget
from matdx.engines.qe.parse import diagnose

STATE_FILE = "matdx_qe_state.json"
"""Record of the run in its work directory."""


RESUME_HANDLER = "DeadlineResume"
"""``handler`` of the correction that records a continuation from restart files."""

STATUSES = ("running", "stopped", "done", "failed")
_RESTART_MODE = "input_data->control->restart_mode"


def time_limit(
    deadline: float | None, user_limit: float | None, now: float | None = None
) -> tuple[float | None, bool]:
    """pw.x's ``max_seconds`` for a run starting now, and whether the deadline sets it.

    Parameters
    ----------
    deadline
        Seconds since the epoch, or ``None``.
    user_limit
        The ``max_seconds`` the user asked for, or ``None``.
    now
        The current time (default :func:`time.time`).

    Returns
    -------
    tuple
        Seconds (``None``: no limit; may be below :data:`MIN_RUN_S` or negative when the
        deadline is near) and ``True`` if they come from the deadline.
    """
    budget = deadline_budget(deadline, now)
    if budget is None:
        return user_limit, False
    if user_limit is not None and float(user_limit) <= budget:
        return float(user_limit), False
    return round(budget, 1), True


def request_id(parameters: dict[str, Any]) -> str:
    """Hash of a calculation's parameters but ``max_seconds``, MPI ranks and pools.

    Those change how pw.x runs, not what it computes.
    """
    data = copy.deepcopy({k: v for k, v in parameters.items() if k not in ("mpi_ranks", "pools")})
    data["input_data"]["control"].pop("max_seconds", None)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class RunState:
    """What :data:`STATE_FILE` holds about the run in a work directory.

    ``resumed`` counts the continuations from restart files, ``ionic_steps`` the ionic
    steps (converged SCF cycles) that the stopped runs completed.
    """

    request: str
    status: str
    parameters: dict[str, Any]
    input_data_initial: dict[str, Any]
    corrections: list[dict[str, Any]] = field(default_factory=list)
    resumed: int = 0
    ionic_steps: int = 0
    updated: float = field(default_factory=time.time)

    def save(self, directory: Path) -> None:
        """Write the record (atomically: a killed writer leaves the old one)."""
        self.updated = time.time()
        path = Path(directory) / STATE_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True, default=str))
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: Path) -> RunState | None:
        """The record in ``directory``; ``None`` if there is none or it is unreadable."""
        try:
            data = json.loads((Path(directory) / STATE_FILE).read_text())
            state = cls(**data)
        except (OSError, ValueError, TypeError):
            return None
        if state.status not in STATUSES or not isinstance(state.parameters, dict):
            return None
        return state


def outdir_of(directory: Path, parameters: dict[str, Any]) -> Path:
    """pw.x's ``outdir`` of ``parameters`` in ``directory``."""
    return Path(directory) / str(parameters["input_data"]["control"].get("outdir", "./out"))


def stopped_at_max_seconds(directory: Path, output_file: str = "pw.out") -> bool:
    """Whether the last pw.x output in ``directory`` ends with a ``max_seconds`` stop."""
    try:
        text = (Path(directory) / output_file).read_text(errors="replace")
    except OSError:
        return False
    return diagnose(text) == "walltime"


def completed_steps(output: Path) -> int:
    """Converged SCF cycles (``!    total energy``) in a pw.x output."""
    try:
        return Path(output).read_text(errors="replace").count("!    total energy")
    except OSError:
        return 0


def resumable(
    directory: Path, state: RunState | None, request: str, output_file: str = "pw.out"
) -> bool:
    """Whether the run recorded in ``directory`` can continue from pw.x's restart files."""
    if state is None or state.status != "stopped" or state.request != request:
        return False
    try:
        control = state.parameters["input_data"]["control"]
        save = outdir_of(directory, state.parameters) / f"{control.get('prefix', 'pwscf')}.save"
    except (KeyError, TypeError):
        return False
    return save.is_dir() and stopped_at_max_seconds(directory, output_file)


def resume_correction(parameters: dict[str, Any]) -> dict[str, Any]:
    """The correction entry recording that a call continued a stopped run."""
    limit = parameters["input_data"]["control"].get("max_seconds")
    return base.resume_correction(
        f"pw.x stopped at max_seconds ({limit} s) before an earlier call's deadline",
        {_RESTART_MODE: "restart"},
        RESUME_HANDLER,
    )


__all__ = [
    "MARGIN_FRACTION",
    "MIN_MARGIN_S",
    "MIN_RUN_S",
    "RESUME_HANDLER",
    "STATE_FILE",
    "RunState",
    "completed_steps",
    "outdir_of",
    "request_id",
    "resumable",
    "resume_correction",
    "stopped_at_max_seconds",
    "time_limit",
]
