"""Checkpoints, deadlines and resumption of LAMMPS MD runs.

*Checkpoints.* An MD script writes a LAMMPS restart file every ``checkpoint_interval`` steps
(setting, default 1000; 0: none), alternately to the two :data:`~.inputs.CHECKPOINT_FILES`,
so that one of them is whole while the other is being written.

*Deadline.* With ``deadline=`` (seconds since the epoch) each attempt gets ``timer timeout``
(:func:`timeout_seconds`: the time left minus :data:`MARGIN_FRACTION` of it, at least
:data:`MIN_MARGIN_S`; whole seconds); when the timer ends a run early the script writes
:data:`~.inputs.STOP_FILE`, prints :data:`~.inputs.STOP_MARK` and the step
(:func:`stopped_step`) and skips the rest. The engine then records the run as ``stopped``
and raises :class:`~matdx.core.errors.DeadlineReachedError`.

*Resumption.* The parameter file of the run holds a ``run`` record: ``request_id``
(:func:`request_id`: the settings — ``checkpoint_interval`` aside — and the structure),
``state`` (``running``, ``stopped``, ``done``), ``resume`` (checkpoint file and step of the
current attempt, ``None`` from scratch), ``segments`` (the earlier pieces of the current
trajectory, each an ``attempt.N`` directory with its log) and ``corrections`` of earlier
calls. A call for the same request on a directory whose run is ``running`` (killed, e.g. by
``kill -9``) or ``stopped`` continues from the latest readable checkpoint
(:func:`latest_checkpoint`, by the step in its header, :func:`restart_step`) with
``read_restart`` and ``run N upto``: only the remaining steps run. Trajectory frames at or
after that step are cut (:func:`truncate_trajectory`) and the new ones appended.

*Results of a resumed run.* The thermo output of the segments and of the last attempt is
joined (:func:`production_table`): each piece replaces the rows from its first step on, so
that rows a killed segment wrote after its last checkpoint are dropped, and only the steps an
uninterrupted run prints are kept (the start and end of production and multiples of
``thermo_interval``); LAMMPS restarts its ``time`` at 0 after ``read_restart``, so times are
shifted back to step × timestep. Averages, standard errors and drift are those of the whole
production run, as if it had not been interrupted; a Nosé–Hoover or Parrinello–Rahman state
comes back from the checkpoint, a Langevin bath gets a new seed per segment. The continued
trajectory is not bitwise the uninterrupted one (neighbour lists are rebuilt at other
steps), only the same to rounding at first, then statistically.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from matdx.engines import base
from matdx.engines.base import (
    DEADLINE_MARGIN_FRACTION as MARGIN_FRACTION,
)
from matdx.engines.base import (
    DEADLINE_MIN_MARGIN_S as MIN_MARGIN_S,
)
from matdx.engines.base import MIN_RUN_S, deadline_budget
from matdx.engines.lammps.inputs import CHECKPOINT_FILES, STOP_FILE, STOP_MARK
from matdx.engines.lammps.parse import read_text, scan_log

RESUME_HANDLER = "CheckpointResume"
"""``handler`` of the correction that records a continuation from a checkpoint."""

_MAGIC = b"LammpS RestartT"
# header records of a restart file in metal units: UNITS (4) "metal", then NTIMESTEP (5)
_UNITS_THEN_STEP = struct.pack("<ii", 4, 6) + b"metal\0" + struct.pack("<i", 5)
_STOP = re.compile(rf"^{STOP_MARK} (\d+)\s*$", re.M)


def timeout_seconds(deadline: float | None, now: float | None = None) -> int | None:
    """Whole seconds for ``timer timeout`` of a run starting now (``None``: no deadline)."""
    budget = deadline_budget(deadline, now)
    return None if budget is None else int(np.floor(budget))


def request_id(params: dict[str, Any], atoms: Atoms) -> str:
    """Hash of a run's settings (``checkpoint_interval`` and run record aside) and structure."""
    settings = {k: v for k, v in params.items() if k not in ("checkpoint_interval", "run")}
    structure = {
        "numbers": atoms.numbers.tolist(),
        "cell": np.round(np.asarray(atoms.cell), 8).tolist(),
        "positions": np.round(atoms.positions, 8).tolist(),
    }
    text = json.dumps([settings, structure], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def restart_step(path: Path) -> int | None:
    """The timestep in the header of a LAMMPS restart file (metal units, little-endian).

    Returns ``None`` for a missing, empty or foreign file; a file cut after its header
    still gives a step (LAMMPS itself finds out when it reads the rest).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except OSError:
        return None
    at = head.find(_UNITS_THEN_STEP)
    if not head.startswith(_MAGIC) or at < 0 or len(head) < at + len(_UNITS_THEN_STEP) + 8:
        return None
    start = at + len(_UNITS_THEN_STEP)
    return int(struct.unpack("<q", head[start : start + 8])[0])


def latest_checkpoint(directory: Path, exclude: Sequence[str] = ()) -> tuple[str, int] | None:
    """File name and step of the checkpoint with the highest step, ``None`` if there is none."""
    found = []
    for name in (STOP_FILE, *CHECKPOINT_FILES):
        path = Path(directory) / name
        step = restart_step(path) if name not in exclude else None
        if step is not None and step >= 0:
            found.append((step, path.stat().st_mtime, name))
    if not found:
        return None
    step, _, name = max(found)
    return name, step


def remove_checkpoints(directory: Path) -> None:
    """Delete the checkpoint files of a run."""
    for name in (STOP_FILE, *CHECKPOINT_FILES):
        (Path(directory) / name).unlink(missing_ok=True)


def stopped_step(log_text: str) -> int | None:
    """The step at which the run of ``log_text`` stopped for its deadline, if it did."""
    found = _STOP.findall(log_text)
    return int(found[-1]) if found else None


def failed_reading_checkpoint(texts: Sequence[str]) -> bool:
    """Whether LAMMPS failed on ``read_restart`` (outputs: log, stdout, stderr)."""
    return any(
        "ERROR" in text and re.search(r"^Last command:\s*read_restart", text, re.M)
        for text in texts
    )


def truncate_trajectory(path: Path, step: int) -> None:
    """Cut a LAMMPS text dump before its first frame at or after ``step``."""
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        offset, previous = 0, b""
        for line in fh:
            if previous.startswith(b"ITEM: TIMESTEP"):
                try:
                    frame_step = int(line.split()[0])
                except (ValueError, IndexError):
                    frame_step = step  # a damaged frame: cut there
                if frame_step >= step:
                    cut = offset - len(previous)
                    break
            offset += len(line)
            previous = line
        else:
            return
    with open(path, "r+b") as fh:
        fh.truncate(cut)


def _rows(text: str) -> tuple[list[str], dict[int, np.ndarray]]:
    """Thermo columns and rows by step of one log (a later row of the same step wins)."""
    columns: list[str] = []
    rows: dict[int, np.ndarray] = {}
    for block in scan_log(text).blocks:
        if not block.rows:
            continue
        columns = columns or block.columns
        if block.columns != columns:
            continue
        step_col = block.columns.index("step")
        for row in block.rows:
            rows[int(row[step_col])] = np.asarray(row, dtype=float)
    return columns, rows


def production_table(
    logs: Sequence[Path], equilibration: int, steps: int, thermo_interval: int, timestep: float
) -> dict[str, np.ndarray]:
    """Thermo table of the production part of a run made of several pieces.

    Parameters
    ----------
    logs
        Logs of the pieces in order (earlier segments, then the last attempt).
    equilibration, steps, thermo_interval
        The run's settings: production covers steps ``equilibration`` to
        ``equilibration + steps``.
    timestep
        The timestep (fs): LAMMPS counts ``time`` from 0 again after ``read_restart``, so a
        piece that starts at step *s* gets *s* × timestep added to its times.

    Returns
    -------
    dict
        Columns by name, one row per step that an uninterrupted run prints.
    """
    columns: list[str] = []
    merged: dict[int, np.ndarray] = {}
    for log in logs:
        cols, rows = _rows(read_text(Path(log)))
        if not rows:
            continue
        columns = columns or cols
        first = min(rows)
        if "time_ps" in cols:
            t = cols.index("time_ps")
            shift = first * timestep / 1000 - rows[first][t]
            if abs(shift) > 1e-9:
                for row in rows.values():
                    row[t] += shift
        merged = {s: r for s, r in merged.items() if s < first}
        merged.update(rows)
    end = equilibration + steps
    kept = sorted(
        s
        for s in merged
        if equilibration <= s <= end and (s in (equilibration, end) or s % thermo_interval == 0)
    )
    data = np.array([merged[s] for s in kept], dtype=float).reshape(len(kept), len(columns))
    return {name: data[:, i] for i, name in enumerate(columns)}


def segment_record(directory: Path, name: str, log_file: str) -> dict[str, Any]:
    """The record of an earlier piece of a run, kept in ``directory / name``."""
    text = read_text(Path(directory) / name / log_file)
    _, rows = _rows(text)
    stop = stopped_step(text)
    return {
        "dir": name,
        "first_step": min(rows) if rows else None,
        "last_step": stop if stop is not None else (max(rows) if rows else None),
        "ended": "deadline" if stop is not None else "interrupted",
    }


def resume_correction(name: str, step: int, ended: str) -> dict[str, Any]:
    """The correction entry recording a continuation from checkpoint ``name`` at ``step``."""
    why = "stopped at its deadline" if ended == "deadline" else "was interrupted"
    return base.resume_correction(
        f"an earlier LAMMPS run of this calculation {why}",
        {"run->resume": {"file": name, "step": step}},
        RESUME_HANDLER,
    )


__all__ = [
    "MARGIN_FRACTION",
    "MIN_MARGIN_S",
    "MIN_RUN_S",
    "RESUME_HANDLER",
    "failed_reading_checkpoint",
    "latest_checkpoint",
    "production_table",
    "remove_checkpoints",
    "request_id",
    "restart_step",
    "resume_correction",
    "segment_record",
    "stopped_step",
    "timeout_seconds",
    "truncate_trajectory",
]
