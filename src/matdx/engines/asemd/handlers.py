"""Custodian error handlers of ASE MD runs.

:class:`UnstableIntegrationHandler` reacts to a run stopped by the stability observer
(non-finite energy, runaway temperature, drift of the conserved energy) by halving the
timestep, a bounded number of times; :class:`AseMdErrorHandler` turns any other failure
into a one-line :class:`EngineError`. Corrections are custodian actions applied with
custodian's ``Modder`` to the run's parameter file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from custodian.ansible.interpreter import Modder
from custodian.custodian import ErrorHandler

from matdx.core.errors import EngineError
from matdx.engines.asemd.dynamics import STATUS_FILE, load_parameters, save_parameters


def read_status(directory: Path) -> dict[str, Any]:
    """Status of the last run in ``directory`` (``failed`` if there is none)."""
    try:
        return dict(json.loads((Path(directory) / STATUS_FILE).read_text()))
    except (OSError, ValueError):
        return {"status": "failed", "reason": f"the run wrote no valid {STATUS_FILE}"}


def apply_actions(directory: Path, actions: list[dict[str, Any]]) -> None:
    """Apply custodian actions on ``"parameters"`` to the parameter file of a run."""
    params = load_parameters(directory)
    modder = Modder()
    for act in actions:
        if act.get("dict") == "parameters":
            modder.modify(act["action"], params)
    save_parameters(directory, params)


class UnstableIntegrationHandler(ErrorHandler):
    """Halve the timestep after an unstable integration and run again.

    Parameters
    ----------
    max_halvings
        Most halvings; also bounded by the ``min_timestep`` setting.
    """

    is_monitor = False
    raises_runtime_error = True

    def __init__(self, max_halvings: int = 4) -> None:
        self.max_halvings = max_halvings

    def check(self, directory: str = "./") -> bool:
        """Whether the last run was stopped as unstable."""
        return read_status(Path(directory))["status"] == "unstable"

    def correct(self, directory: str = "./") -> dict[str, Any]:
        """Halve ``timestep`` in the parameter file (:class:`EngineError` past the bound)."""
        reason = read_status(Path(directory)).get("reason", "unstable")
        params = load_parameters(Path(directory))
        dt, done = float(params["timestep"]), int(params.get("timestep_halvings", 0))
        if done >= self.max_halvings or dt / 2 < float(params.get("min_timestep", 0.0)):
            raise EngineError(
                f"ASE MD still unstable ({reason}) after {done} timestep halving(s), at {dt:g} fs"
            )
        actions = [
            {
                "dict": "parameters",
                "action": {"_set": {"timestep": dt / 2}, "_inc": {"timestep_halvings": 1}},
            }
        ]
        apply_actions(Path(directory), actions)
        return {"errors": [f"{reason} at timestep {dt:g} fs"], "actions": actions}


class AseMdErrorHandler(ErrorHandler):
    """Stop with a one-line :class:`EngineError` when the run failed for another reason."""

    is_monitor = False
    raises_runtime_error = True

    def check(self, directory: str = "./") -> bool:
        """Whether the last run failed (not counting instabilities)."""
        return read_status(Path(directory))["status"] not in ("ok", "unstable")

    def correct(self, directory: str = "./") -> dict[str, Any]:
        """Raise :class:`EngineError` with the reason."""
        raise EngineError(f"ASE MD failed: {read_status(Path(directory)).get('reason')}")
