"""The query layer: every read of results goes through here, with the caller's identity.

A :class:`MaterialQuery` is validated (known fields, typed values, element symbols, ranges)
before it becomes a MongoDB filter, so user input never supplies an operator or a field
name (no ``$where``, ``$function`` or nested ``$`` keys can get through). The caller's tier
filter is added on the database side. Values derived from other records (formation
energies, hulls) are also hidden when the caller cannot see every record they were
computed from (:func:`mask_derived`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pymatgen.core import Composition, Element

from matdx.core.errors import InputError
from matdx.store.access import Caller, can_see, mask_derived
from matdx.store.codec import unpack
from matdx.store.documents import SUMMARY, MaterialDoc, SummaryDoc

NUMERIC_FIELDS = SUMMARY.ranges
"""Fields a query can select an interval of (declared with ``range`` in the summary)."""
FIELDS = SUMMARY.projectable
"""Fields a query can return."""
SORTABLE = SUMMARY.sortable
"""Fields a query can sort by."""
MAX_LIMIT = 1_000_000
_CHEMSYS = re.compile(r"^[A-Z][a-z]?(-[A-Z][a-z]?)*$")
_FORMULA = re.compile(r"^([A-Z][a-z]?\d*(\.\d+)?)+$")


def _element(symbol: str) -> str:
    if not isinstance(symbol, str) or not Element.is_valid_symbol(symbol):
        raise ValueError(f"unknown element {symbol!r}")
    return symbol


class Range(BaseModel):
    """Closed interval; either end may be open (``None``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: float | None = None
    max: float | None = None


class MaterialQuery(BaseModel):
    """A validated query of a campaign's (or all) results."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    campaign: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    elements_all: list[str] | None = Field(None, description="Contains all of these elements.")
    elements_any: list[str] | None = Field(None, description="Contains one of these.")
    elements_only: list[str] | None = Field(None, description="Only these elements (subsets).")
    chemsys: str | None = Field(None, description="Exactly this system, e.g. Au-Cu.")
    formula: str | None = Field(None, description="Reduced formula, e.g. Cu3Au.")
    spacegroup: int | None = Field(None, ge=1, le=230, description="Space-group number.")
    ranges: dict[str, Range] = Field(default_factory=dict)
    tiers: list[Literal["open", "shared-closed", "closed"]] | None = None
    fields: list[str] | None = None
    sort: str | None = None
    ascending: bool = True
    limit: int = Field(0, ge=0, le=MAX_LIMIT)
    skip: int = Field(0, ge=0)

    @field_validator("elements_all", "elements_any", "elements_only")
    @classmethod
    def _elements(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_element(e) for e in v]

    @field_validator("chemsys")
    @classmethod
    def _chemsys(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not _CHEMSYS.fullmatch(v):
            raise ValueError(f"malformed chemical system {v!r} (e.g. Au-Cu)")
        return "-".join(sorted(_element(e) for e in v.split("-")))

    @field_validator("formula")
    @classmethod
    def _formula(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if not _FORMULA.fullmatch(v):
            raise ValueError(f"malformed formula {v!r} (e.g. Cu3Au)")
        try:
            return Composition(v).reduced_formula
        except (ValueError, KeyError):
            raise ValueError(f"malformed formula {v!r}") from None

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, v: dict[str, Range]) -> dict[str, Range]:
        for key, r in v.items():
            if key not in NUMERIC_FIELDS:
                raise ValueError(
                    f"no range on {key!r} (numeric fields: {', '.join(NUMERIC_FIELDS)})"
                )
            if r.min is not None and r.max is not None and r.min > r.max:
                raise ValueError(f"empty range on {key}: {r.min} > {r.max}")
        return v

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            for f in v:
                if f not in FIELDS:
                    raise ValueError(f"unknown field {f!r}")
        return v

    @field_validator("sort")
    @classmethod
    def _sort(cls, v: str | None) -> str | None:
        if v is not None and v not in SORTABLE:
            raise ValueError(f"cannot sort by {v!r} (sortable: {', '.join(SORTABLE)})")
        return v


def parse_query(data: dict[str, Any]) -> MaterialQuery:
    """Validate a query given as a dict (from the CLI, the API or a notebook).

    Raises
    ------
    InputError
        One line naming the offending field.
    """
    try:
        return MaterialQuery.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "query"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown query field"
        raise InputError(f"bad query, field {field}: {msg}") from None


def parse_range(text: str) -> tuple[str, Range]:
    """``"energy_above_hull:0:0.05"`` (either bound may be empty) → (field, Range)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise InputError(f"bad range {text!r}: expected FIELD:MIN:MAX (either may be empty)")
    key, lo, hi = parts
    try:
        r = Range(min=float(lo) if lo else None, max=float(hi) if hi else None)
    except ValueError:
        raise InputError(f"bad range {text!r}: bounds must be numbers") from None
    return key, r


def to_filter(q: MaterialQuery, caller: Caller) -> dict[str, Any]:
    """The MongoDB filter of a validated query, including the caller's tier filter."""
    clauses: list[dict[str, Any]] = [caller.tier_filter()]
    if q.campaign:
        clauses.append({"campaign": q.campaign})
    if q.elements_all:
        clauses.append({"elements": {"$all": q.elements_all}})
    if q.elements_any:
        clauses.append({"elements": {"$in": q.elements_any}})
    if q.elements_only:
        allowed = set(q.elements_only)
        others = sorted({e.symbol for e in Element} - allowed)
        clauses.append({"elements": {"$nin": others}})
    if q.chemsys:
        clauses.append({"chemsys": q.chemsys})
    if q.formula:
        clauses.append({"formula_pretty": q.formula})
    if q.spacegroup:
        clauses.append({"symmetry.number": q.spacegroup})
    for key, r in q.ranges.items():
        bounds: dict[str, float] = {}
        if r.min is not None:
            bounds["$gte"] = r.min
        if r.max is not None:
            bounds["$lte"] = r.max
        if bounds:
            clauses.append({key: bounds})
    if q.tiers:
        clauses.append({"tier": {"$in": list(q.tiers)}})
    return {"$and": clauses}


def summary_key(row: dict[str, Any]) -> str:
    """The key of a summary row (its ``_id``), which :func:`run_query`'s ``after`` takes."""
    return f"{row['campaign']}:{row['material_id']}"


def run_query(
    q: MaterialQuery, caller: Caller, after: str | None = None
) -> list[dict[str, Any]]:
    """Run a query on the summaries (database-side filter, sort and pagination).

    Parameters
    ----------
    q
        The query.
    caller
        Who reads.
    after
        Keyset pagination: only rows whose key (:func:`summary_key`) sorts after this one,
        in key order (``""`` for the first page). Pages then cost the same however deep
        they are, unlike ``skip``.
    """
    projection = None
    if q.fields:
        projection = {f: 1 for f in {*q.fields, "derived_access", "material_id", "campaign"}}
    flt = to_filter(q, caller)
    if after is not None:
        flt["$and"].append({"_id": {"$gt": after}})
    cursor = SummaryDoc._get_collection().find(flt, projection)
    if after is not None:
        cursor = cursor.sort("_id", 1)
    if q.sort:
        direction = 1 if q.ascending else -1
        # ties (every stable phase is 0 above the hull) by formation energy, then identifier
        cursor = cursor.sort([(q.sort, direction), ("formation_energy_per_atom", 1), ("_id", 1)])
    if q.skip:
        cursor = cursor.skip(q.skip)
    if q.limit:
        cursor = cursor.limit(q.limit)
    rows = []
    for d in cursor:
        d.pop("_id", None)
        row = mask_derived(unpack(d), caller)
        if q.fields:
            keep = [*q.fields, *(("campaign", "material_id") if after is not None else ())]
            row = {k: row.get(k) for k in keep}
        rows.append(row)
    return rows


def count(q: MaterialQuery, caller: Caller) -> int:
    """Number of results the caller may see."""
    return SummaryDoc._get_collection().count_documents(to_filter(q, caller))


def explain(q: MaterialQuery, caller: Caller) -> dict[str, Any]:
    """The server's query plan of ``q`` (which indexes a MongoDB server uses)."""
    cursor = SummaryDoc._get_collection().find(to_filter(q, caller))
    if q.sort:
        cursor = cursor.sort(q.sort, 1 if q.ascending else -1)
    return dict(cursor.explain())


def frame(q: MaterialQuery, caller: Caller, with_structures: bool = False) -> Any:
    """Query results as a pandas DataFrame — the training set of the ML models.

    Parameters
    ----------
    q
        The query.
    caller
        Who reads (tiers apply as everywhere).
    with_structures
        Add a ``structure`` column (the material's structure as a pymatgen dict).

    Returns
    -------
    pandas.DataFrame
        One row per result; the export columns (:attr:`SUMMARY.columns
        <matdx.store.fields.FieldList.columns>`) plus ``campaign``.
    """
    import pandas as pd

    rows = run_query(q.model_copy(update={"fields": None}), caller)
    records = [{**SUMMARY.flatten(r), "campaign": r.get("campaign")} for r in rows]
    df = pd.DataFrame(records, columns=[*SUMMARY.columns, "campaign"])
    if with_structures:
        ids = list(dict.fromkeys(df["material_id"]))
        coll = MaterialDoc._get_collection()
        structures = {}
        for start in range(0, len(ids), 500):
            for d in coll.find({"_id": {"$in": ids[start : start + 500]}}):
                if can_see(d, caller):
                    structures[d["_id"]] = unpack(d["structure"])
        df["structure"] = [structures.get(m) for m in df["material_id"]]
    return df
