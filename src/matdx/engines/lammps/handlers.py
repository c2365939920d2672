"""Custodian error handlers of LAMMPS runs.

:class:`UnstableMDHandler` catches integration blow-ups ("Lost atoms", "Out of range
atoms", non-numeric coordinates, non-finite energies) and halves the timestep (a bounded
number of times), starting again from scratch (not from a checkpoint of the old timestep);
:class:`CheckpointHandler` catches a checkpoint that LAMMPS cannot read (cut by a kill while
it was written), deletes it and resumes from the other one, or from scratch;
:class:`LammpsErrorHandler` gives up on any other failure with a one-line message
(:func:`~matdx.engines.base.give_up`). Corrections are declarative custodian actions applied
to the run's parameter file (:func:`~matdx.engines.base.apply_actions`), from which the next
attempt's input script is rendered.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from custodian.custodian import ErrorHandler

from matdx.core.errors import EngineError
from matdx.engines.base import apply_actions, give_up
from matdx.engines.lammps.checkpoint import failed_reading_checkpoint, latest_checkpoint
from matdx.engines.lammps.inputs import (
    LOG_FILE,
    STDERR_FILE,
    STDOUT_FILE,
    load_parameters,
    save_parameters,
)
from matdx.engines.lammps.parse import read_text, scan_log

UNSTABLE_PATTERNS = (
    "Lost atoms",
    "Out of range atoms",
    "Non-numeric atom coords",
    "Non-numeric pressure",
    "Non-numeric box dimensions",
)
"""LAMMPS error messages of an unstable integration."""

_ERROR_PREFIX = re.compile(r"^ERROR( on proc \d+)?:\s*")
_SOURCE_SUFFIX = re.compile(r"\s*\([^()]*\.(cpp|h):\d+\)\s*$")


def _texts(directory: Path) -> list[str]:
    return [read_text(Path(directory) / name) for name in (LOG_FILE, STDOUT_FILE, STDERR_FILE)]


def instability(directory: Path) -> str | None:
    """Why the run in ``directory`` blew up, or ``None`` if it did not."""
    texts = _texts(directory)
    for pattern in UNSTABLE_PATTERNS:
        if any(pattern in text for text in texts):
            return pattern
    if scan_log(texts[0]).non_finite():
        return "non-finite energies"
    return None


def _error_line(text: str) -> str | None:
    line = next((s.strip() for s in text.splitlines() if s.strip().startswith("ERROR")), None)
    if line is None:
        return None
    return _SOURCE_SUFFIX.sub("", _ERROR_PREFIX.sub("", line))


def _first_message(text: str) -> str:
    lines = (s.strip() for s in text.splitlines())
    return next((s[:200] for s in lines if s and set(s) != {"-"}), "")


def failure(directory: Path) -> str | None:
    """Why the run in ``directory`` failed, or ``None`` if LAMMPS finished the input."""
    log_text, out, err = _texts(directory)
    for text in (log_text, out, err):
        line = _error_line(text)
        if line:
            return line
    hint = _first_message(err)
    hint = f" ({hint})" if hint else ""
    if not log_text.strip():
        return f"LAMMPS wrote no {LOG_FILE}{hint}"
    if not scan_log(log_text).finished:
        return f"{LOG_FILE} is truncated: LAMMPS stopped before the end of the input{hint}"
    return None


class UnstableMDHandler(ErrorHandler):
    """Halve the MD timestep after an integration blow-up and run again.

    Parameters
    ----------
    max_halvings
        Most halvings of the timestep; also bounded by the ``min_timestep`` setting.
    """

    is_monitor = False
    raises_runtime_error = True

    def __init__(self, max_halvings: int = 4) -> None:
        self.max_halvings = max_halvings

    def check(self, directory: str = "./") -> bool:
        """Whether the last attempt blew up."""
        return instability(Path(directory)) is not None

    def correct(self, directory: str = "./") -> dict[str, Any]:
        """Halve ``timestep`` in the parameter file.

        Gives up if the run is not MD or the bound on halvings is reached.
        """
        reason = instability(Path(directory)) or "unstable"
        params = load_parameters(Path(directory))
        if "timestep" not in params:
            return give_up(f"LAMMPS {params.get('task', 'run')} is unstable: {reason}")
        dt, done = float(params["timestep"]), int(params.get("timestep_halvings", 0))
        if done >= self.max_halvings or dt / 2 < float(params.get("min_timestep", 0.0)):
            return give_up(
                f"LAMMPS MD still unstable ({reason}) after {done} timestep halving(s), "
                f"at {dt:g} fs"
            )
        actions = [
            {
                "dict": "parameters",
                "action": {
                    "_set": {"timestep": dt / 2, "run->resume": None},
                    "_inc": {"timestep_halvings": 1},
                },
            }
        ]
        apply_actions(Path(directory), actions, load_parameters, save_parameters)
        return {"errors": [f"{reason} at timestep {dt:g} fs"], "actions": actions}


def bad_checkpoint(directory: Path) -> str | None:
    """The checkpoint the last attempt could not read, ``None`` if there is none."""
    try:
        resume = (load_parameters(Path(directory)).get("run") or {}).get("resume")
    except EngineError:
        return None
    if resume and failed_reading_checkpoint(_texts(Path(directory))):
        return str(resume["file"])
    return None


class CheckpointHandler(ErrorHandler):
    """Resume from the previous checkpoint (or from scratch) when one cannot be read."""

    is_monitor = False
    raises_runtime_error = True

    def check(self, directory: str = "./") -> bool:
        """Whether the last attempt failed reading its checkpoint."""
        return bad_checkpoint(Path(directory)) is not None

    def correct(self, directory: str = "./") -> dict[str, Any]:
        """Delete the unreadable checkpoint; resume from the latest other one, if any."""
        d = Path(directory)
        bad = bad_checkpoint(d) or ""
        (d / bad).unlink(missing_ok=True)
        other = latest_checkpoint(d, exclude=(bad,))
        resume = {"file": other[0], "step": other[1]} if other else None
        actions = [{"dict": "parameters", "action": {"_set": {"run->resume": resume}}}]
        apply_actions(d, actions, load_parameters, save_parameters)
        return {"errors": [f"cannot read checkpoint {bad} (deleted)"], "actions": actions}


class LammpsErrorHandler(ErrorHandler):
    """Give up with a one-line message on any failure no other handler fixes."""

    is_monitor = False
    raises_runtime_error = True

    def check(self, directory: str = "./") -> bool:
        """Whether the run failed for a reason no other handler treats."""
        d = Path(directory)
        return failure(d) is not None and instability(d) is None and bad_checkpoint(d) is None

    def correct(self, directory: str = "./") -> dict[str, Any]:
        """Give up (:func:`~matdx.engines.base.give_up`) with the reason of the failure."""
        return give_up(f"LAMMPS failed: {failure(Path(directory))}")
