"""Reads and writes of the property store used by the workflows and the CLI.

Writes are idempotent upserts keyed by ``_id``: the material id (a structure
identifier), the calculation id (material + settings hash), ``<campaign>:<material_id>``
for summaries and the name for campaigns. Running a campaign twice adds nothing.
Nested arrays are packed (see :mod:`matdx.store.codec`) on the way in and unpacked on
the way out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymatgen.core import Structure

from matdx.core.dburi import without_credentials
from matdx.core.errors import InputError
from matdx.core.hashing import stable_hash
from matdx.store.access import Caller, can_see, mask_derived, unknown_campaign
from matdx.store.bulk import Upsert, apply_upserts, find_by_ids, insert_missing, insert_new
from matdx.store.codec import pack, unpack
from matdx.store.documents import (
    ALL_DOCUMENTS,
    SUMMARY,
    CalculationDoc,
    CampaignDoc,
    CampaignMaterialDoc,
    MaterialDoc,
    SummaryDoc,
    document_fields,
    utcnow,
)
from matdx.store.governance import migrate
from matdx.store.optimade import formula_attributes
from matdx.store.query import MaterialQuery, run_query

CHUNK = 500
"""Identifiers per ``$in`` query."""


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


def _validated(
    doc_cls: type, data: dict[str, Any], trusted: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Validate with the mongoengine fields; return the packed document (with ``_id``).

    Fields named in ``trusted`` (large dictionaries already validated by their pydantic
    schema, such as a calculation's output) are checked to be dictionaries and then added
    as they are: mongoengine's recursive validation of them costs milliseconds per record.
    """
    big = {k: data[k] for k in trusted if k in data}
    for k, v in big.items():
        if not isinstance(v, dict):
            raise TypeError(f"{doc_cls.__name__}.{k} must be a dict")
    out = document_fields(doc_cls, {k: v for k, v in data.items() if k not in big})
    out.update(big)
    return pack(out)


def _merge_access(
    a: list[dict[str, Any]] | None, b: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Union of two ``derived_access`` lists (each entry once, in a stable order)."""
    seen: dict[str, dict[str, Any]] = {}
    for entry in [*(a or []), *(b or [])]:
        seen.setdefault(json.dumps(entry, sort_keys=True, default=str), entry)
    return [seen[k] for k in sorted(seen)]


def _differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    skip = {"updated_at", "_id"}
    keys = (set(old) | set(new)) - skip
    return any(old.get(k) != new.get(k) for k in keys)


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start : start + CHUNK])


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
    def campaign(self, name: str, caller: Caller | None = None) -> CampaignDoc:
        """The campaign called ``name`` (as ``caller`` may see it, if given).

        Raises
        ------
        UnknownCampaignError
            If there is none, or the caller may not see it (the message is the same, so
            that a closed campaign's existence is not revealed).
        """
        visible = caller.tier_filter() if caller is not None else {}
        doc = CampaignDoc.objects(__raw__={"$and": [{"_id": name}, visible]}).first()
        if doc is None:
            raise unknown_campaign(name, caller)
        return doc

    def claim_campaign(self, name: str, gov: Governance) -> Governance:
        """The governance a run of campaign ``name`` writes with; refuses another's name.

        A campaign belongs to the owner that first stored it. A campaign file naming a
        stored campaign of another owner is refused (one line that names neither the owner
        nor the tier); for the owner's own campaign the stored governance stays, since
        tier, rights and owner change only through :func:`.governance.set_tier`, which
        records who changed them.

        Raises
        ------
        InputError
            If the name belongs to a campaign of another owner.
        """
        doc = CampaignDoc._get_collection().find_one({"_id": name}, {"spec": 0, "wf_ids": 0})
        if doc is None:
            return gov
        if doc.get("owner") != gov.owner:
            raise InputError(
                f"campaign name {name!r} is taken by another owner: rename the campaign"
            )
        return Governance(
            tier=doc["tier"],
            owner=doc["owner"],
            groups=tuple(doc.get("groups") or ()),
            rights=doc.get("rights", gov.rights),
            export_control=bool(doc.get("export_control")),
        )

    def upsert_campaign(
        self, name: str, spec: dict[str, Any], gov: Governance, **counts: int
    ) -> None:
        """Create or update a campaign record.

        ``gov`` must come from :meth:`claim_campaign` (the stored governance of an existing
        campaign); the owner is written only when the record is created, and a record of
        another owner is never updated. The credentials of a ``store.uri`` are never
        stored.
        """
        now = utcnow()
        data = _validated(
            CampaignDoc,
            {"id": name, "name": name, "spec": without_credentials(spec), **gov.fields(), **counts},
        )
        for key in ("_id", "created_at", "wf_ids"):
            data.pop(key, None)
        data["updated_at"] = now
        data.pop("owner", None)  # set by the filter on insert, never changed here
        data["groups"] = list(gov.groups)
        update = {"$set": data, "$setOnInsert": {"created_at": now, "wf_ids": []}}
        apply_upserts(
            CampaignDoc._get_collection(), [Upsert({"_id": name, "owner": gov.owner}, update)]
        )

    def add_workflow(self, name: str, wf_id: int) -> None:
        """Record a workflow made for a campaign."""
        CampaignDoc._get_collection().update_one({"_id": name}, {"$addToSet": {"wf_ids": wf_id}})

    # materials -------------------------------------------------------------------------
    def known_structures(
        self, fingerprints: Iterable[str], reader: Caller | None = None
    ) -> dict[str, list[tuple[str, Structure]]]:
        """Stored materials sharing one of ``fingerprints``, for deduplication.

        With a ``reader``, only the materials it may read: a campaign is never deduplicated
        against (nor told about) records its owner may not see.
        """
        out: dict[str, list[tuple[str, Structure]]] = defaultdict(list)
        coll = MaterialDoc._get_collection()
        visible = reader.tier_filter() if reader is not None else {}
        for chunk in _chunks(sorted(set(fingerprints))):
            flt = {"$and": [{"fingerprint": {"$in": chunk}}, visible]}
            for d in coll.find(flt, {"structure": 1, "fingerprint": 1}):
                structure = Structure.from_dict(unpack(d["structure"]))
                out[d["fingerprint"]].append((d["_id"], structure))
        return dict(out)

    def hidden_ids(self, material_ids: Sequence[str], reader: Caller) -> set[str]:
        """Those of ``material_ids`` that are stored but that ``reader`` may not read."""
        fields = {"tier": 1, "owner": 1, "groups": 1, "export_control": 1}
        coll = MaterialDoc._get_collection()
        return {d["_id"] for d in find_by_ids(coll, material_ids, fields) if not can_see(d, reader)}

    def add_materials(
        self, campaign: str, materials: Sequence[NewMaterial], gov: Governance
    ) -> int:
        """Insert the materials not stored yet and link all of them to ``campaign``.

        Existing materials are never modified: a material's record belongs to the campaign
        that first stored it; later campaigns only link to it.

        Returns
        -------
        int
            Number of materials inserted.
        """
        ids = [m.material_id for m in materials]
        mcoll = MaterialDoc._get_collection()
        existing = {d["_id"] for d in find_by_ids(mcoll, ids, {"_id": 1})}
        docs = []
        for m in materials:
            if m.material_id in existing:
                continue
            comp = m.structure.composition
            els = sorted(el.symbol for el in comp.elements)
            structure = m.structure.as_dict()
            docs.append(
                _validated(
                    MaterialDoc,
                    {
                        "id": m.material_id,
                        "material_id": m.material_id,
                        "structure": structure,
                        "formula_pretty": comp.reduced_formula,
                        "chemsys": "-".join(els),
                        "elements": els,
                        "nelements": len(els),
                        "nsites": len(m.structure),
                        "symmetry": m.symmetry or None,
                        "fingerprint": m.fingerprint,
                        "source": m.source,
                        **formula_attributes(structure),
                        **gov.fields(),
                    },
                )
            )
        inserted = insert_new(mcoll, docs)
        links = [
            _validated(
                CampaignMaterialDoc,
                {
                    "id": f"{campaign}:{m.material_id}",
                    "campaign": campaign,
                    "material_id": m.material_id,
                    "source": m.source,
                    "reused": m.material_id in existing,
                },
            )
            for m in materials
        ]
        insert_missing(CampaignMaterialDoc._get_collection(), links)
        return inserted

    def material_ids(self, campaign: str) -> list[str]:
        """Identifiers of the materials of a campaign."""
        coll = CampaignMaterialDoc._get_collection()
        return [d["material_id"] for d in coll.find({"campaign": campaign}, {"material_id": 1})]

    def materials(self, material_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Material documents by identifier."""
        coll = MaterialDoc._get_collection()
        return {d["_id"]: unpack(d) for d in find_by_ids(coll, material_ids)}

    def structures(self, material_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored input structures (pymatgen dicts) by material id; unknown ids left out."""
        return {mid: d["structure"] for mid, d in self.materials(material_ids).items()}

    # calculations ----------------------------------------------------------------------
    def completed(self, material_ids: Sequence[str], settings_hash: str) -> set[str]:
        """Materials that already have a completed calculation with these settings."""
        ids = [calc_id(m, settings_hash) for m in material_ids]
        coll = CalculationDoc._get_collection()
        return {
            d["material_id"]
            for d in find_by_ids(coll, ids, {"material_id": 1, "status": 1})
            if d.get("status") == "completed"
        }

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
        if not records:
            return 0
        coll = CalculationDoc._get_collection()
        prepared = []
        for r in records:
            key = calc_id(r["material_id"], r["settings_hash"])
            prepared.append(
                _validated(
                    CalculationDoc,
                    {**r, "id": key, "calc_id": key},
                    trusted=("output", "provenance", "settings"),
                )
            )
        existed = insert_missing(coll, prepared)
        if not existed:
            return len(prepared)
        # a failed attempt is replaced by a later one; a completed result never is
        status = {
            d["_id"]: d.get("status") for d in find_by_ids(coll, list(existed), {"status": 1})
        }
        retried = [
            Upsert({"_id": d["_id"], "status": {"$ne": "completed"}}, d, replace=True)
            for d in prepared
            if status.get(d["_id"]) == "failed"
        ]
        return len(prepared) - len(existed) + apply_upserts(coll, retried)

    def calculations(
        self, material_ids: Sequence[str], settings_hash: str, status: str = "completed"
    ) -> list[dict[str, Any]]:
        """Calculations of these materials with these settings."""
        ids = [calc_id(m, settings_hash) for m in material_ids]
        coll = CalculationDoc._get_collection()
        return [unpack(d) for d in find_by_ids(coll, ids) if d.get("status") == status]

    def count_calculations(self, campaign: str) -> dict[str, int]:
        """Number of calculations of a campaign by status."""
        coll = CalculationDoc._get_collection()
        return {
            s: coll.count_documents({"campaign": campaign, "status": s})
            for s in ("completed", "failed")
        }

    # summaries -------------------------------------------------------------------------
    def write_summaries(self, campaign: str, rows: Sequence[dict[str, Any]]) -> int:
        """Store the derived properties of a campaign's materials, writing only changes.

        Returns
        -------
        int
            Number of summaries inserted or replaced.
        """
        coll = SummaryDoc._get_collection()
        current = {d["_id"]: d for d in coll.find({"campaign": campaign})}
        now = utcnow()
        new, changed = [], []
        for r in rows:
            key = f"{campaign}:{r['material_id']}"
            data = _validated(SummaryDoc, {**r, "id": key, "campaign": campaign, "updated_at": now})
            old = current.get(key)
            if old is not None and old.get("steps"):
                data["steps"] = old["steps"]  # the results of later steps stay
                data["derived_access"] = _merge_access(
                    data.get("derived_access"), old.get("derived_access")
                )
            if old is None:
                new.append(data)
            elif _differs(old, data):
                changed.append(Upsert({"_id": key}, data, replace=True))
        return insert_new(coll, new) + apply_upserts(coll, changed)

    def write_step_summaries(
        self,
        campaign: str,
        step: str,
        blocks: dict[str, dict[str, Any]],
        access: dict[str, list[dict[str, Any]]],
    ) -> int:
        """Store the results of a campaign step under ``steps.<step>`` of each summary.

        Parameters
        ----------
        campaign
            Campaign name.
        step
            Step name.
        blocks
            ``material_id`` → values of the step (energies, hull, flags).
        access
            ``material_id`` → governance of the records the step's derived values come
            from; added to the summary's ``derived_access``.

        Returns
        -------
        int
            Summaries changed.
        """
        coll = SummaryDoc._get_collection()
        keys = [f"{campaign}:{mid}" for mid in blocks]
        current = {d["_id"]: d for d in find_by_ids(coll, keys, {"steps": 1, "derived_access": 1})}
        ops = []
        for mid, block in blocks.items():
            key = f"{campaign}:{mid}"
            old = current.get(key)
            if old is None:
                continue  # no pre-screen summary: nothing to attach the step to
            if ((old.get("steps") or {}).get(step)) == block:
                continue
            merged = _merge_access(old.get("derived_access"), access.get(mid))
            update = {f"steps.{step}": block, "derived_access": merged, "updated_at": utcnow()}
            ops.append(Upsert({"_id": key}, {"$set": update}))
        return apply_upserts(coll, ops)

    def summaries(
        self,
        campaign: str,
        caller: Caller,
        sort: str | None = None,
        ascending: bool = True,
        limit: int = 0,
    ) -> list[dict[str, Any]]:
        """Derived properties of a campaign visible to ``caller`` (see :mod:`.query`)."""
        q = MaterialQuery(campaign=campaign, sort=sort, ascending=ascending, limit=limit)
        return run_query(q, caller)

    def summary_rows(
        self, campaign: str, fields: Sequence[str], caller: Caller | None = None
    ) -> list[dict[str, Any]]:
        """Some fields of every summary of a campaign, in storage order.

        Parameters
        ----------
        campaign
            Campaign name.
        fields
            Summary fields to return (``material_id`` always comes along), e.g. the
            energies and the ``steps`` block a later step selects its materials from.
        caller
            Only the summaries this caller may read, with derived values hidden as in
            every query; ``None`` (the workflows' own reads) reads all of them as stored.

        Raises
        ------
        InputError
            For a field the summaries do not have.
        """
        unknown = [f for f in fields if f not in SUMMARY.projectable]
        if unknown:
            raise InputError(f"unknown summary field(s) {', '.join(map(repr, unknown))}")
        names = ["material_id", *(f for f in fields if f != "material_id")]
        projection = dict.fromkeys(names, 1)
        flt: dict[str, Any] = {"campaign": campaign}
        if caller is not None:
            projection["derived_access"] = 1
            flt = {"$and": [flt, caller.tier_filter()]}
        rows = []
        for d in SummaryDoc._get_collection().find(flt, projection):
            row = unpack(d)
            if caller is not None:
                row = mask_derived(row, caller)
            rows.append({k: row[k] for k in names if k in row})
        return rows

    # maintenance -----------------------------------------------------------------------
    def migrate(self, dry_run: bool = False) -> dict[str, int]:
        """Bring every record to the current schema version (see :func:`.governance.migrate`).

        Returns
        -------
        dict
            Records found per collection and old version (``"summaries@v1"``), or migrated.
        """
        return migrate(SummaryDoc._get_db(), dry_run=dry_run)

    def collection(self, name: str) -> Any:
        """The database collection of a document kind (``"summaries"``, ``"calculations"``…).

        For measurements and repairs that compare with, or need, plain pymongo calls;
        the store's reads and writes go through the methods above.

        Raises
        ------
        InputError
            For a name that is not a collection of the store.
        """
        colls = {d._meta["collection"]: d for d in ALL_DOCUMENTS}
        if name not in colls:
            raise InputError(f"no collection {name!r} (collections: {', '.join(sorted(colls))})")
        return colls[name]._get_collection()
