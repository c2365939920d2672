"""The registry of workflow steps that a workflow manager runs.

Each step takes plain JSON-serialisable arguments (so any manager can carry them), does
its work through the engines and the store, and returns a JSON-serialisable summary.
:data:`STEPS` is the registry the FireWorks adapter dispatches on, by the kind of work
a Firework does (:mod:`matdx.schemas.names`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from matdx.schemas.names import ANALYSE, COMPUTE, STAGE
from matdx.workflows.analyse import analyse_step
from matdx.workflows.compute import compute_batch
from matdx.workflows.stage import stage_step

STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    COMPUTE: compute_batch,
    ANALYSE: analyse_step,
    STAGE: stage_step,
}
"""Workflow steps by kind: ``compute`` runs calculations (any node), the others read the
database (quick; run where it is reachable)."""

__all__ = ["STEPS"]
