"""What each stored field is for: the declaration that queries, exports and masks read.

A document field of :mod:`matdx.store.documents` carries an :class:`About` (mongoengine
keeps extra keyword arguments of a field as its attributes): a description and unit, the
part of the record it belongs to, and its uses. :class:`FieldList` reads them:

* the fields a query may return (:attr:`FieldList.projectable`), filter by an interval
  (:attr:`FieldList.ranges`) and sort by (:attr:`FieldList.sortable`);
* the columns of table exports, in order (:attr:`FieldList.columns`, :meth:`FieldList.flatten`);
* the values derived from other records, hidden from a caller who may not read all of
  them (:attr:`FieldList.masked`).

A new summary field is therefore one line in
:class:`~matdx.store.documents.SummaryDoc` plus the code that computes it. An optional
field needs no migration: records written before it read as ``None``.

This module imports no other module of the store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from mongoengine import ListField

Kind = Literal["material", "property", "governance", "provenance", "internal"]
KINDS: tuple[Kind, ...] = ("material", "property", "governance", "provenance", "internal")
"""Parts of a record, in the order of the export columns."""


@dataclass(frozen=True)
class About:
    """What a field is for.

    Attributes
    ----------
    text
        Description.
    unit
        Unit of a quantity (``"eV/atom"``), or ``None``.
    kind
        ``material`` (identity and descriptors of the crystal), ``property`` (computed
        values), ``governance`` (tier and rights), ``provenance`` (how it was computed) or
        ``internal`` (bookkeeping that queries do not return).
    export
        A column of table exports (CSV, Parquet, JSON, DataFrames). A list or dictionary
        stays one (JSON, Parquet, DataFrames) or is written as JSON text (CSV).
    column
        Name of that column, if not the field's (the Materials Project's name).
    columns
        Instead of one column, these columns taken from the field's dictionary value:
        ``(column, key)`` pairs.
    range
        Queries can select an interval of it (``--range FIELD:MIN:MAX``) and sort by it;
        a ``property`` with a range is also a ``_matdx_`` property of OPTIMADE exports.
    sort
        Queries can sort by it (implied by ``range``).
    derived
        Computed from other records (references, competing phases): hidden, also in the
        results of later steps, from a caller who may not read every record it comes from
        (the summary's ``derived_access``).
    """

    text: str = ""
    unit: str | None = None
    kind: Kind = "property"
    export: bool = False
    column: str | None = None
    columns: tuple[tuple[str, str], ...] = ()
    range: bool = False
    sort: bool = False
    derived: bool = False


_UNDECLARED = About(kind="internal")


def about(field: Any) -> About:
    """The :class:`About` of a mongoengine field (an internal one if it has none)."""
    found = getattr(field, "about", None)
    return found if isinstance(found, About) else _UNDECLARED


class FieldList:
    """The declared fields of a document class and what derives from them.

    Parameters
    ----------
    doc_cls
        A mongoengine document class whose fields carry :class:`About` declarations.

    Attributes
    ----------
    about
        Declaration of every field, in declaration order.
    columns
        Columns of table exports: grouped by kind (:data:`KINDS`), in declaration order
        within a kind.
    projectable
        Fields a query may return (all but ``internal`` ones).
    ranges
        Fields with a query range, the ``property`` ones first.
    sortable
        Query sort keys: the ranges, then the fields declared ``sort``.
    quantities
        The ``property`` fields with a range (OPTIMADE ``_matdx_`` properties).
    masked
        Derived fields and the value they show when hidden (``[]`` for a list, else
        ``None``).
    """

    def __init__(self, doc_cls: type) -> None:
        fields: dict[str, Any] = doc_cls._fields  # type: ignore[attr-defined]
        ordered = sorted(fields.items(), key=lambda kv: kv[1].creation_counter)
        self.doc_cls = doc_cls
        self.fields: dict[str, Any] = dict(ordered)
        self.about: dict[str, About] = {name: about(f) for name, f in ordered}
        by_kind = sorted(self.about, key=lambda n: KINDS.index(self.about[n].kind))
        exported = [n for n in by_kind if self.about[n].export or self.about[n].columns]
        self.exported: tuple[str, ...] = tuple(exported)
        self.columns: tuple[str, ...] = tuple(
            col
            for n in exported
            for col in (
                [c for c, _ in self.about[n].columns]
                if self.about[n].columns
                else [self.about[n].column or n]
            )
        )
        # how flatten builds the columns: from a dict's keys, or one field each
        self._split = [(n, self.about[n].columns) for n in exported if self.about[n].columns]
        self._plain = [
            (n, self.about[n].column or n) for n in exported if not self.about[n].columns
        ]
        self.projectable: tuple[str, ...] = tuple(
            n for n, a in self.about.items() if a.kind != "internal" and n != "id"
        )
        # the computed properties first: they are what queries select on most
        self.ranges: tuple[str, ...] = tuple(
            sorted(
                (n for n, a in self.about.items() if a.range),
                key=lambda n: self.about[n].kind != "property",
            )
        )
        self.sortable: tuple[str, ...] = (
            *self.ranges,
            *(n for n, a in self.about.items() if a.sort and not a.range),
        )
        self.quantities: tuple[str, ...] = tuple(
            n for n in self.ranges if self.about[n].kind == "property"
        )
        self.masked: dict[str, Any] = {
            n: ([] if isinstance(self.fields[n], ListField) else None)
            for n, a in self.about.items()
            if a.derived
        }

    def flatten(
        self, row: dict[str, Any], nested: bool = False, text: bool = False
    ) -> dict[str, Any]:
        """One document as an export record.

        Parameters
        ----------
        row
            A stored document.
        nested
            Keep a field split into :attr:`About.columns` as one dictionary under its
            name (the JSON export's shape); else the flat :attr:`columns`.
        text
            Write lists and dictionaries as JSON text (CSV).
        """
        flat: dict[str, Any] = {} if nested else dict.fromkeys(self.columns)
        get = row.get
        for name, col in self._plain:
            flat[col] = get(name)
        for name, columns in self._split:
            sub = get(name) or {}
            if nested:
                flat[name] = {key: sub.get(key) for _, key in columns}
            else:
                for col, key in columns:
                    flat[col] = sub.get(key)
        if text:
            for key, value in flat.items():
                if isinstance(value, list | dict):
                    flat[key] = json.dumps(value, default=str, sort_keys=True)
        return flat

    def describe(self) -> list[dict[str, Any]]:
        """Every field with its declaration (name, type, unit, kind, uses, description)."""
        return [
            {
                "name": name,
                "type": type(self.fields[name]).__name__,
                "unit": a.unit,
                "kind": a.kind,
                "columns": [c for c, _ in a.columns] or ([a.column or name] if a.export else []),
                "range": a.range,
                "sortable": name in self.sortable,
                "derived": a.derived,
                "text": a.text,
            }
            for name, a in self.about.items()
        ]


__all__ = ["KINDS", "About", "FieldList", "Kind", "about"]
