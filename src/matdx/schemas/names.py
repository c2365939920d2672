"""Names shared by everything that builds, queries or runs a campaign's Fireworks.

Every Firework matdx makes carries ``spec._matdx`` (:func:`firework_meta`): the campaign,
the *kind* of work (:data:`COMPUTE`, :data:`ANALYSE`, :data:`STAGE`), the campaign step
it belongs to (:data:`PRESCREEN` for step 0, else the step's name in the campaign file),
and the materials it computes. Queries select on these keys through :func:`spec_key`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PRESCREEN = "prescreen"
"""Name of step 0, the pre-screen every unique candidate goes through."""

COMPUTE = "compute"
"""Kind of a Firework that computes a batch of materials (any node, also offline)."""
ANALYSE = "analyse"
"""Kind of a Firework that derives a step's formation energies and hull (needs the store)."""
STAGE = "stage"
"""Kind of a Firework that selects a later step's materials and queues their batches."""

NODE_KINDS = (COMPUTE,)
"""Kinds that run on compute nodes; the others read the database."""
DB_KINDS = (ANALYSE, STAGE)
"""Kinds that need the database (run where it is reachable, offline at ``matdx sync``)."""

SPEC = "_matdx"
"""Key of matdx's metadata in a Firework's spec."""
CAMPAIGN = "campaign"
KIND = "kind"
STEP = "step"
N_MATERIALS = "n"
MATERIAL_IDS = "material_ids"
PICK_ID = "pick_id"


def spec_key(key: str) -> str:
    """Dotted path of a metadata key in the ``fireworks`` collection (for queries)."""
    return f"spec.{SPEC}.{key}"


def firework_meta(
    campaign: str, kind: str, step: str, material_ids: Sequence[str] = ()
) -> dict[str, Any]:
    """The ``spec._matdx`` block of a Firework.

    Parameters
    ----------
    campaign
        Campaign name.
    kind
        :data:`COMPUTE`, :data:`ANALYSE` or :data:`STAGE`.
    step
        Campaign step (:data:`PRESCREEN` or a step name).
    material_ids
        Materials the Firework computes.
    """
    ids = list(material_ids)
    return {CAMPAIGN: campaign, KIND: kind, STEP: step, N_MATERIALS: len(ids), MATERIAL_IDS: ids}


__all__ = [
    "ANALYSE",
    "COMPUTE",
    "DB_KINDS",
    "NODE_KINDS",
    "PRESCREEN",
    "SPEC",
    "STAGE",
    "firework_meta",
    "spec_key",
]
