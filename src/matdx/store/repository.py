"""Reads and writes of the property store used by the workflows and the CLI.

Writes are idempotent upserts keyed by ``material_id`` (a structure identifier),
``calc_id`` (material + settings hash) and ``<campaign>:<material_id>``: running a
campaign twice adds nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymatgen.core import Structure

from matdx.core.errors import UnknownCampaignError
from matdx.core.hashing import stable_hash
from matdx.store.bulk import Upsert, apply_upserts
from matdx.store.documents import (
    CalculationDoc,
    CampaignDoc,
    MaterialDoc,
    SummaryDoc,
    utcnow,
)


@dataclass(frozen=True)
class Caller:
    """Who is reading: a user and the groups/projects they belong to."""

    user: str
    groups: tuple[str, ...] = ()

    def tier_filter(self) -> dict[str, Any]:
        """MongoDB filter selecting the records this caller may read."""
        mine = [self.user, *self.groups]
        return {
            "$or": [
                {"tier": "open"},
                {"owner": {"$in": mine}},
                {"tier": "shared-closed", "groups": {"$in": list(self.groups) or ["\x00"]}},
            ]
        }


@dataclass(frozen=True)
class Governance:
    """Tier and rights stamped on new records (from the campaign's ``data`` section)."""

    tier: str = "open"
    owner: str = "anonymous"
    groups: tuple[str, ...] = ()
    rights: str = "CC-BY-4.0"
    export_control: bool = False

    def fields(self) -> dict[str, Any]:
        """Document fields of the governance."""
        return {
            "tier": self.tier,
            "owner": self.owner,
            "groups": list(self.groups),
            "rights": self.rights,
            "export_control": self.export_control,
        }


def calc_id(material_id: str, settings_hash: str) -> str:
    """Idempotency key of a calculation."""
    return "calc-" + stable_hash([material_id, settings_hash], 20)


def _validated(doc_cls: type, data: dict[str, Any]) -> dict[str, Any]:
    doc = doc_cls(**data)
    doc.validate()
    out = doc.to_mongo().to_dict()
    out.pop("_id", None)
    return out


@dataclass
class NewMaterial:
    """A material to upsert: identifier, structure and its descriptors."""

    material_id: str
    structure: Structure
    fingerprint: str
    source: str
    symmetry: dict[str, Any] = field(default_factory=dict)


class Store:
    """Operations on the property store (mongoengine must be connected)."""

    # campaigns -------------------------------------------------------------------------
    def campaign(self, name: str) -> CampaignDoc:
        """The campaign called ``name``.

        Raises
        ------
        UnknownCampaignError
            If there is none.
        """
        doc = CampaignDoc.objects(name=name).first()
        if doc is None:
            names = [c.name for c in CampaignDoc.objects.only("name").limit(20)]
            known = f" (known: {', '.join(names)})" if names else " (the store has no campaigns)"
            raise UnknownCampaignError(f"unknown campaign {name!r}{known}")
        return doc

    def upsert_campaign(
        self, name: str, spec: dict[str, Any], gov: Governance, **counts: int
    ) -> None:
        """Create or update a campaign record."""
        data = _validated(CampaignDoc, {"name": name, "spec": spec, **gov.fields(), **counts})
        now = utcnow()
        data.pop("created_at", None)
        data["updated_at"] = now
        apply_upserts(
            CampaignDoc._get_collection(),
            [Upsert({"name": name}, {"$set": data, "$setOnInsert": {"created_at": now}})],
        )

    def add_workflow(self, name: str, wf_id: int) -> None:
        """Record a workflow made for a campaign."""
        CampaignDoc._get_collection().update_one({"name": name}, {"$addToSet": {"wf_ids": wf_id}})

    # materials -------------------------------------------------------------------------
    def known_structures(
        self, fingerprints: Iterable[str]
    ) -> dict[str, list[tuple[str, Structure]]]:
        """Stored materials sharing one of ``fingerprints``, for deduplication."""
        out: dict[str, list[tuple[str, Structure]]] = defaultdict(list)
        fps = sorted(set(fingerprints))
        coll = MaterialDoc._get_collection()
        for start in range(0, len(fps), 500):
            cursor = coll.find(
                {"fingerprint": {"$in": fps[start : start + 500]}},
                {"material_id": 1, "structure": 1, "fingerprint": 1},
            )
            for d in cursor:
                out[d["fingerprint"]].append(
                    (d["material_id"], Structure.from_dict(d["structure"]))
                )
        return dict(out)

    def upsert_materials(
        self, campaign: str, materials: Sequence[NewMaterial], gov: Governance
    ) -> int:
        """Insert new materials and tag all of them with ``campaign``.

        Returns
        -------
        int
            Number of materials inserted or newly tagged.
        """
        ops = []
        for m in materials:
            comp = m.structure.composition
            els = sorted(el.symbol for el in comp.elements)
            data = _validated(
                MaterialDoc,
                {
                    "material_id": m.material_id,
                    "structure": m.structure.as_dict(),
                    "formula_pretty": comp.reduced_formula,
                    "chemsys": "-".join(els),
                    "elements": els,
                    "nelements": len(els),
                    "nsites": len(m.structure),
                    "symmetry": m.symmetry or None,
                    "fingerprint": m.fingerprint,
                    "source": m.source,
                    **gov.fields(),
                },
            )
            data.pop("campaigns", None)
            ops.append(
                Upsert(
                    {"material_id": m.material_id},
                    {"$setOnInsert": data, "$addToSet": {"campaigns": campaign}},
                )
            )
        return apply_upserts(MaterialDoc._get_collection(), ops)

    def material_ids(self, campaign: str) -> list[str]:
        """Identifiers of the materials of a campaign."""
        return [
            d["material_id"]
            for d in MaterialDoc._get_collection().find({"campaigns": campaign}, {"material_id": 1})
        ]

    def materials(self, material_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Material documents by identifier."""
        out = {}
        coll = MaterialDoc._get_collection()
        for start in range(0, len(material_ids), 500):
            for d in coll.find({"material_id": {"$in": list(material_ids[start : start + 500])}}):
                d.pop("_id", None)
                out[d["material_id"]] = d
        return out

    # calculations ----------------------------------------------------------------------
    def completed(self, material_ids: Sequence[str], settings_hash: str) -> set[str]:
        """Materials that already have a completed calculation with these settings."""
        ids = [calc_id(m, settings_hash) for m in material_ids]
        coll = CalculationDoc._get_collection()
        done = set()
        for start in range(0, len(ids), 500):
            for d in coll.find(
                {"calc_id": {"$in": ids[start : start + 500]}, "status": "completed"},
                {"material_id": 1},
            ):
                done.add(d["material_id"])
        return done

    def write_calculations(self, records: Sequence[dict[str, Any]]) -> int:
        """Upsert calculation records; a completed calculation is never overwritten.

        Parameters
        ----------
        records
            Fields of :class:`CalculationDoc` (``calc_id`` is derived).

        Returns
        -------
        int
            Records written.
        """
        coll = CalculationDoc._get_collection()
        prepared = []
        for r in records:
            data = _validated(
                CalculationDoc, {**r, "calc_id": calc_id(r["material_id"], r["settings_hash"])}
            )
            prepared.append(data)
        ids = [d["calc_id"] for d in prepared]
        done = {
            d["calc_id"]
            for d in coll.find({"calc_id": {"$in": ids}, "status": "completed"}, {"calc_id": 1})
        }
        ops = [
            Upsert({"calc_id": d["calc_id"]}, {"$set": d})
            for d in prepared
            if d["calc_id"] not in done
        ]
        return apply_upserts(coll, ops)

    def calculations(
        self, material_ids: Sequence[str], settings_hash: str, status: str = "completed"
    ) -> list[dict[str, Any]]:
        """Calculations of these materials with these settings."""
        ids = [calc_id(m, settings_hash) for m in material_ids]
        coll = CalculationDoc._get_collection()
        out = []
        for start in range(0, len(ids), 500):
            for d in coll.find({"calc_id": {"$in": ids[start : start + 500]}, "status": status}):
                d.pop("_id", None)
                out.append(d)
        return out

    def count_calculations(self, campaign: str) -> dict[str, int]:
        """Number of calculations of a campaign by status."""
        coll = CalculationDoc._get_collection()
        return {
            s: coll.count_documents({"campaign": campaign, "status": s})
            for s in ("completed", "failed")
        }

    # summaries -------------------------------------------------------------------------
    def write_summaries(self, campaign: str, rows: Sequence[dict[str, Any]]) -> int:
        """Replace the derived properties of a campaign's materials."""
        ops = []
        now = utcnow()
        for r in rows:
            key = f"{campaign}:{r['material_id']}"
            data = _validated(
                SummaryDoc, {**r, "key": key, "campaign": campaign, "updated_at": now}
            )
            ops.append(Upsert({"key": key}, data, replace=True))
        return apply_upserts(SummaryDoc._get_collection(), ops)

    def summaries(
        self,
        campaign: str,
        caller: Caller,
        sort: str | None = None,
        ascending: bool = True,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        """Derived properties of a campaign visible to ``caller``."""
        flt = {"$and": [{"campaign": campaign}, caller.tier_filter()]}
        cursor = SummaryDoc._get_collection().find(flt, {"_id": 0})
        rows = list(cursor)
        if sort:
            # missing values last, whatever the direction
            present = [r for r in rows if r.get(sort) is not None]
            missing = [r for r in rows if r.get(sort) is None]
            present.sort(key=lambda r: r[sort], reverse=not ascending)
            rows = present + missing
        return rows[:limit] if limit else rows
