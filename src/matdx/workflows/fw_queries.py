"""Plain queries on a LaunchPad's collections (MongoDB, FerretDB and mongomock alike).

No FireWorks import: these read the ``fireworks`` collection that FireWorks writes, by the
``spec._matdx`` metadata matdx puts on every Firework (:mod:`matdx.schemas.names`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from matdx.schemas.names import (
    CAMPAIGN,
    COMPUTE,
    KIND,
    MATERIAL_IDS,
    N_MATERIALS,
    PRESCREEN,
    SPEC,
    STEP,
    spec_key,
)

ACTIVE_STATES = ("WAITING", "READY", "RESERVED", "RUNNING", "PAUSED")
FINAL_STATES = ("COMPLETED", "FIZZLED", "DEFUSED")


def active_fireworks(lp: Any, campaign: str) -> int:
    """Number of Fireworks of ``campaign`` not in a final state."""
    return int(
        lp.fireworks.count_documents(
            {spec_key(CAMPAIGN): campaign, "state": {"$in": list(ACTIVE_STATES)}}
        )
    )


def json_step_name(step: str | dict[str, Any]) -> str:
    """Name of a step carried as JSON text (or a dict)."""
    import json

    return str((json.loads(step) if isinstance(step, str) else step)["name"])


def queued_material_ids(lp: Any, campaign: str, step: str = PRESCREEN) -> set[str]:
    """Materials in Fireworks of a campaign's step that have not reached a final state."""
    out: set[str] = set()
    for d in lp.fireworks.find(
        {
            spec_key(CAMPAIGN): campaign,
            spec_key(KIND): COMPUTE,
            spec_key(STEP): step,
            "state": {"$in": list(ACTIVE_STATES)},
        },
        {spec_key(MATERIAL_IDS): 1},
    ):
        out.update(d["spec"][SPEC][MATERIAL_IDS])
    return out


def state_counts(lp: Any, campaign: str) -> dict[str, Any]:
    """Fireworks and candidates of a campaign by FireWorks state.

    Returns
    -------
    dict
        ``{"fireworks": {state: n}, "candidates": {state: n}, "steps": {step: {state:
        n}}}``: candidates of the pre-screen, and materials of each later step.
    """
    fws: Counter[str] = Counter()
    cands: Counter[str] = Counter()
    steps: dict[str, Counter[str]] = {}
    for d in lp.fireworks.find(
        {spec_key(CAMPAIGN): campaign},
        {"state": 1, spec_key(N_MATERIALS): 1, spec_key(KIND): 1, spec_key(STEP): 1},
    ):
        fws[d["state"]] += 1
        meta = d["spec"][SPEC]
        if meta.get(KIND) != COMPUTE:
            continue
        if meta.get(STEP) == PRESCREEN:
            cands[d["state"]] += meta.get(N_MATERIALS, 0)
        else:
            steps.setdefault(meta.get(STEP, "?"), Counter())[d["state"]] += meta.get(
                N_MATERIALS, 0
            )
    return {
        "fireworks": dict(fws),
        "candidates": dict(cands),
        "steps": {k: dict(v) for k, v in steps.items()},
    }


__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "active_fireworks",
    "json_step_name",
    "queued_material_ids",
    "state_counts",
]
