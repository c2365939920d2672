"""Changing data tiers and rights, with an audit trail; schema migrations.

Only the owner of a record (the user, or a member of the owning project) may change its
tier. Every change appends ``{by, at, from_tier, to_tier}`` to the record's
``tier_history``, ``by`` being the caller's principal (through the data service: the
identity of the verified token). A target the caller may not read is answered as unknown,
with the same message as one that does not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from matdx.core.errors import InputError
from matdx.store.access import Caller, unknown_campaign
from matdx.store.documents import (
    SCHEMA_VERSION,
    TIERS,
    CalculationDoc,
    CampaignDoc,
    CampaignMaterialDoc,
    MaterialDoc,
    SummaryDoc,
    utcnow,
)
from matdx.store.picks import PickDoc

GOVERNED = (CampaignDoc, MaterialDoc, CalculationDoc, SummaryDoc, PickDoc)


def set_tier(
    caller: Caller,
    tier: str,
    campaign: str | None = None,
    material_id: str | None = None,
    owner: str | None = None,
    groups: list[str] | None = None,
    rights: str | None = None,
    export_control: bool | None = None,
) -> dict[str, int]:
    """Change the tier (and optionally owner, groups, rights, export control) of records.

    Parameters
    ----------
    caller
        Who asks; must own the records.
    tier
        ``open``, ``shared-closed`` or ``closed``.
    campaign
        All records of this campaign: the campaign, its calculations, summaries and picks
        (``matdx campaign next``), and the materials it stored first.
    material_id
        Or one material with its calculations and summaries.
    owner, groups, rights, export_control
        New values, where given.

    Returns
    -------
    dict
        Records changed per collection.

    Raises
    ------
    InputError
        For an unknown tier, no target, or records the caller does not own.
    """
    if tier not in TIERS:
        raise InputError(f"unknown tier {tier!r} (choose from {', '.join(TIERS)})")
    if (campaign is None) == (material_id is None):
        raise InputError("give either a campaign or a material id")
    selectors = _selectors(campaign, material_id, caller)
    mine = {caller.user, *caller.groups}
    changed: dict[str, int] = {}
    for doc_cls, flt in selectors.items():
        coll = doc_cls._get_collection()
        docs = list(coll.find(flt, {"owner": 1, "tier": 1}))
        foreign = [d["_id"] for d in docs if d.get("owner") not in mine]
        if foreign:
            raise InputError(
                f"{len(foreign)} {doc_cls._meta['collection']} record(s) are owned by others; "
                "only their owner may change their tier"
            )
        changes: dict[str, Any] = {"tier": tier}
        if owner is not None:
            changes["owner"] = owner
        if groups is not None:
            changes["groups"] = list(groups)
        if rights is not None:
            changes["rights"] = rights
        if export_control is not None:
            changes["export_control"] = export_control
        n = 0
        for from_tier in {d.get("tier") for d in docs}:
            entry = {"by": caller.user, "at": utcnow(), "from_tier": from_tier, "to_tier": tier}
            res = coll.update_many(
                {"$and": [flt, {"tier": from_tier}]},
                {"$set": changes, "$push": {"tier_history": entry}},
            )
            n += res.modified_count
        changed[doc_cls._meta["collection"]] = n
    return changed


def _selectors(
    campaign: str | None, material_id: str | None, caller: Caller
) -> dict[type, dict[str, Any]]:
    """The records a change applies to; a target the caller may not read is "unknown"."""
    visible = caller.tier_filter()
    if material_id is not None:
        flt = {"$and": [{"_id": material_id}, visible]}
        if MaterialDoc._get_collection().count_documents(flt) == 0:
            raise InputError(f"unknown material {material_id!r}")
        return {
            MaterialDoc: {"_id": material_id},
            CalculationDoc: {"material_id": material_id},
            SummaryDoc: {"material_id": material_id},
        }
    if CampaignDoc._get_collection().count_documents({"$and": [{"_id": campaign}, visible]}) == 0:
        raise unknown_campaign(str(campaign), caller)
    first = [
        d["material_id"]
        for d in CampaignMaterialDoc._get_collection().find(
            {"campaign": campaign, "reused": False}, {"material_id": 1}
        )
    ]
    return {
        CampaignDoc: {"_id": campaign},
        MaterialDoc: {"_id": {"$in": first}},
        CalculationDoc: {"campaign": campaign},
        SummaryDoc: {"campaign": campaign},
        PickDoc: {"campaign": campaign},
    }


# --- schema migrations ------------------------------------------------------------------

Migration = Callable[[Any], int]


def _v1_to_v2(db: Any) -> int:
    """Version 2 added ``derived_access`` to summaries (empty: nothing hidden)."""
    res = db[SummaryDoc._meta["collection"]].update_many(
        {"derived_access": {"$exists": False}}, {"$set": {"derived_access": []}}
    )
    return res.modified_count


def _v2_to_v3(db: Any) -> int:
    """Version 3 added the OPTIMADE properties to materials (from their structures)."""
    from matdx.store.codec import unpack
    from matdx.store.optimade import formula_attributes

    coll = db[MaterialDoc._meta["collection"]]
    todo = coll.find({"chemical_formula_anonymous": {"$exists": False}}, {"structure": 1})
    n = 0
    for d in todo:
        attrs = formula_attributes(unpack(d["structure"]))
        n += coll.update_one({"_id": d["_id"]}, {"$set": attrs}).modified_count
    return n


def _parts(value: Any) -> Any:
    """A ``decomposes_to`` of version 3 (formulas) in the shape of version 4."""
    if not isinstance(value, list):
        return value
    return [
        {"material_id": None, "formula": p, "amount": None} if isinstance(p, str) else p
        for p in value
    ]


def _v3_to_v4(db: Any) -> int:
    """Version 4 stores ``decomposes_to`` as ``{material_id, formula, amount}`` entries.

    The formulas of version 3 are kept; id and amount are unknown (``None``) until the
    campaign's analysis runs again (``matdx run`` on the finished campaign).
    """
    from matdx.store.bulk import Upsert, apply_upserts

    coll = db[SummaryDoc._meta["collection"]]
    ops = []
    for d in coll.find({"schema_version": 3}, {"decomposes_to": 1, "steps": 1}):
        update = {}
        if any(isinstance(p, str) for p in d.get("decomposes_to") or ()):
            update["decomposes_to"] = _parts(d["decomposes_to"])
        for step, block in (d.get("steps") or {}).items():
            if any(isinstance(p, str) for p in (block or {}).get("decomposes_to") or ()):
                update[f"steps.{step}.decomposes_to"] = _parts(block["decomposes_to"])
        if update:
            ops.append(Upsert({"_id": d["_id"]}, {"$set": update}))
    return apply_upserts(coll, ops)


MIGRATIONS: dict[int, Migration] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}
"""``MIGRATIONS[v]`` brings data from schema version ``v`` to ``v + 1``."""


def migrate(db: Any, dry_run: bool = False) -> dict[str, int]:
    """Bring every record to :data:`SCHEMA_VERSION`.

    Returns
    -------
    dict
        Records found per old version, or migrated.
    """
    seen: dict[str, int] = {}
    for doc_cls in GOVERNED:
        coll = db[doc_cls._meta["collection"]]
        for version in range(1, SCHEMA_VERSION):
            n = coll.count_documents({"schema_version": version})
            if n:
                seen[f"{doc_cls._meta['collection']}@v{version}"] = n
    if dry_run:
        return seen
    for version in range(1, SCHEMA_VERSION):
        MIGRATIONS[version](db)
        for doc_cls in GOVERNED:
            db[doc_cls._meta["collection"]].update_many(
                {"schema_version": version}, {"$set": {"schema_version": version + 1}}
            )
    return seen
