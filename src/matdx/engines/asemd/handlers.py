"""Custodian error handlers of ASE MD runs.

:class:`UnstableIntegrationHandler` reacts to a run stopped by the stability observer
(non-finite energy, runaway temperature, drift of the conserved energy) by halving the
timestep, a bounded number of times; :class:`AseMdErrorHandler` gives up on any other
failure with a one-line message (:func:`~matdx.engines.base.give_up`). Corrections are
custodian actions applied to the run's parameter file
(:func:`~matdx.engines.base.apply_actions`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from custodian.custodian import ErrorHandler

from matdx.engines.asemd.dynamics import STATUS_FILE, load_parameters, save_parameters
from matdx.engines.base import apply_actions, give_up


def read_status(directory: Path) -> dict[str, Any]:
    """Status of the last run in ``directory`` (``failed`` if there is none)."""
    try:
        return dict(json.loads((Path(directory) / STATUS_FILE).read_text()))
    except (OSError, ValueError):
        return {"status": "failed", "reason": f"the run wrote no valid {STATUS_FILE}"}


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
        """Halve ``timestep`` in the parameter file; give up past the bound."""
        reason = read_status(Path(directory)).get("reason", "unstable")
        params = load_parameters(Path(directory))
        dt, done = float(params["timestep"]), int(params.get("timestep_halvings", 0))
        if done >= self.max_halvings or dt / 2 < float(params.get("min_timestep", 0.0)):
            return give_up(
                f"ASE MD still unstable ({reason}) after {done} timestep halving(s), at {dt:g} fs"
            )
        actions = [
            {
                "dict": "parameters",
                "action": {"_set": {"timestep": dt / 2}, "_inc": {"timestep_halvings": 1}},
            }
        ]
        apply_actions(Path(directory), actions, load_parameters, save_parameters)
        return {"errors": [f"{reason} at timestep {dt:g} fs"], "actions": actions}


class AseMdErrorHandler(ErrorHandler):
    """Give up with a one-line message when the run failed for another reason."""

    is_monitor = False
    raises_runtime_error = True

    def check(self, directory: str = "./") -> bool:
        """Whether the last run failed (not counting instabilities)."""
        return read_status(Path(directory))["status"] not in ("ok", "unstable")

    def correct(self, directory: str = "./") -> dict[str, Any]:
        """Give up (:func:`~matdx.engines.base.give_up`) with the reason."""
        return give_up(f"ASE MD failed: {read_status(Path(directory)).get('reason')}")
