"""Who may read what: data tiers, enforced on the database side and on derived values.

Tiers: ``open`` (anyone), ``shared-closed`` (the listed groups/projects), ``closed`` (the
owning project only). A record's owner is a user or a project; members of the owning
project (a group of the caller) read its closed records. An export-controlled record is
read by its owner only, whatever its tier: it never leaves the owning project through a
query, a table or a service response.

A record the caller may not read is treated everywhere as one that does not exist: the
same "unknown" message (:func:`unknown_campaign`), no count that includes it.
"""

from __future__ import annotations

from copy import copy
from dataclasses import dataclass
from typing import Any

from matdx.core.errors import UnknownCampaignError
from matdx.store.documents import SUMMARY, CampaignDoc

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
        public = {"tier": "open", "export_control": {"$ne": True}}
        if self.user == ANONYMOUS and not self.groups:
            return public
        mine = [self.user, *self.groups]
        return {
            "$or": [
                public,
                {"owner": {"$in": mine}},
                {
                    "tier": "shared-closed",
                    "groups": {"$in": list(self.groups) or ["\x00"]},
                    "export_control": {"$ne": True},
                },
            ]
        }

    def owns(self, access: dict[str, Any]) -> bool:
        """Whether the caller owns a record (is its owner or a member of the owning project)."""
        if self.user == ANONYMOUS and not self.groups:
            return False
        return access.get("owner") in (self.user, *self.groups)


def can_see(access: dict[str, Any], caller: Caller) -> bool:
    """Whether ``caller`` may read a record with this governance (same rule as the filter)."""
    if caller.owns(access):
        return True
    if access.get("export_control"):
        return False
    if access.get("tier") == "open":
        return True
    return access.get("tier") == "shared-closed" and bool(
        set(access.get("groups") or ()) & set(caller.groups)
    )


def unknown_campaign(name: str, caller: Caller | None) -> UnknownCampaignError:
    """The error for a campaign that does not exist or that ``caller`` may not read.

    Both cases give the same message, listing only campaigns the caller may read, so the
    answer does not tell whether a closed campaign of that name exists.
    """
    visible = caller.tier_filter() if caller is not None else {}
    names = [c.name for c in CampaignDoc.objects(__raw__=visible).only("name").limit(20)]
    known = f" (known: {', '.join(names)})" if names else " (the store has no campaigns)"
    return UnknownCampaignError(f"unknown campaign {name!r}{known}")


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


TIER_ORDER = {"open": 0, "shared-closed": 1, "closed": 2}
"""Tiers from least to most restrictive."""


def most_restrictive(base: dict[str, Any], inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Governance of a value derived from records: never less restrictive than an input.

    Parameters
    ----------
    base
        Governance fields of the derived record as its campaign gives them (tier, owner,
        groups, rights, export_control).
    inputs
        Governance (at least ``tier``; ``groups`` and ``export_control`` where known) of
        the records the value was computed from.

    Returns
    -------
    dict
        ``base`` with the most restrictive tier of ``base`` and ``inputs``; a shared-closed
        result keeps only the groups every shared-closed input is shared with (closed
        when an input's groups are unknown or none are common), and export control when
        any input has it.
    """
    out = dict(base)
    tiers = [base.get("tier", "open"), *(i.get("tier", "open") for i in inputs)]
    tier = max(tiers, key=lambda t: TIER_ORDER.get(t, 2))
    out["tier"] = tier
    if tier == "shared-closed":
        groups = set(base.get("groups") or ()) if base.get("tier") == "shared-closed" else None
        for i in inputs:
            if i.get("tier") != "shared-closed":
                continue
            mine = i.get("groups")
            if mine is None:
                groups = set()
                break
            groups = set(mine) if groups is None else groups & set(mine)
        out["groups"] = sorted(groups or ())
        if not out["groups"]:
            out["tier"] = "closed"
    out["export_control"] = bool(base.get("export_control")) or any(
        bool(i.get("export_control")) for i in inputs
    )
    return out
