"""Who may read what: data tiers, enforced on the database side and on derived values.

Tiers: ``open`` (anyone), ``shared-closed`` (the listed groups/projects), ``closed`` (the
owning project only). A record's owner is a user or a project; members of the owning
project (a group of the caller) read its closed records.
"""

from __future__ import annotations

from copy import copy
from dataclasses import dataclass
from typing import Any

from matdx.store.documents import SUMMARY

DERIVED_FIELDS = tuple(SUMMARY.masked)
"""Summary fields computed from other records (declared ``derived`` in the summary)."""
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Caller:
    """Who is reading: a user and the groups/projects they belong to."""

    user: str
    groups: tuple[str, ...] = ()

    def tier_filter(self) -> dict[str, Any]:
        """MongoDB filter selecting the records this caller may read."""
        if self.user == ANONYMOUS and not self.groups:
            return {"tier": "open"}
        mine = [self.user, *self.groups]
        return {
            "$or": [
                {"tier": "open"},
                {"owner": {"$in": mine}},
                {"tier": "shared-closed", "groups": {"$in": list(self.groups) or ["\x00"]}},
            ]
        }


def can_see(access: dict[str, Any], caller: Caller) -> bool:
    """Whether ``caller`` may read a record with this governance (same rule as the filter)."""
    if access.get("tier") == "open":
        return True
    if caller.user == ANONYMOUS and not caller.groups:
        return False
    if access.get("owner") in (caller.user, *caller.groups):
        return True
    return access.get("tier") == "shared-closed" and bool(
        set(access.get("groups") or ()) & set(caller.groups)
    )


def mask_derived(row: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """Hide values computed from records the caller may not see.

    The fields declared ``derived`` (:data:`DERIVED_FIELDS`) become ``None`` (``[]`` for a
    list), in the summary and in the block of every later step.
    """
    access = row.get("derived_access")
    if access and not all(can_see(a, caller) for a in access):
        hidden = SUMMARY.masked
        row = dict(row)
        for key, blank in hidden.items():
            if key in row:
                row[key] = copy(blank)
        if row.get("steps"):
            row["steps"] = {
                name: {k: copy(hidden[k]) if k in hidden else v for k, v in block.items()}
                for name, block in row["steps"].items()
            }
        row["derived_hidden"] = True
    return row
