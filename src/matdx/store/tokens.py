"""API keys of the data service: issued and revoked by an administrator, stored hashed.

A key is ``mdx_<key id>_<secret>``: the key id names the record, the secret (256 random
bits) is shown once when the key is issued and never stored. The record keeps the
SHA-256 digest of the whole key (a fast digest suffices for a random 256-bit secret: there
is no password to guess), the identity the key stands for (user and groups), its expiry
and, once revoked, when. :func:`verify` is the only way from a key to a
:class:`~matdx.store.access.Caller`: identity comes from the record an administrator
wrote, never from what a caller says.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from mongoengine.connection import get_db

from matdx.core.errors import InputError
from matdx.store.access import ANONYMOUS, Caller
from matdx.store.documents import ALIAS, utcnow

COLLECTION = "api_keys"
PREFIX = "mdx_"
_KEY = re.compile(r"^mdx_(?P<kid>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class TokenError(Exception):
    """A presented key is malformed, unknown, expired or revoked (the reason is not told)."""


def _collection() -> Any:
    return get_db(ALIAS)[COLLECTION]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue(
    user: str, groups: list[str] | tuple[str, ...] = (), days: float = 90, by: str = "admin"
) -> tuple[str, str]:
    """Create a key for ``user`` (member of ``groups``), valid for ``days``.

    Returns
    -------
    key_id, key
        The key id (to list or revoke it) and the key itself, which is not stored and
        cannot be shown again.

    Raises
    ------
    InputError
        For a malformed user or group name, the reserved name ``anonymous`` or a
        non-positive lifetime.
    """
    for name in (user, *groups):
        if not _NAME.fullmatch(name):
            raise InputError(f"bad user or group name {name!r} (letters, digits, _.@-)")
    if user == ANONYMOUS:
        raise InputError(f"{ANONYMOUS!r} is the identity of callers without a key")
    if not days > 0:
        raise InputError(f"a key must be valid for a positive number of days (got {days})")
    kid = secrets.token_hex(6)
    key = f"{PREFIX}{kid}_{secrets.token_urlsafe(32)}"
    now = utcnow()
    _collection().insert_one(
        {
            "_id": kid,
            "sha256": _digest(key),
            "user": user,
            "groups": sorted(set(groups)),
            "created_at": now,
            "expires_at": now + timedelta(days=days),
            "revoked_at": None,
            "issued_by": by,
        }
    )
    return kid, key


def revoke(key_id: str) -> None:
    """Revoke a key at once (the next request with it is refused).

    Raises
    ------
    InputError
        For an unknown key id.
    """
    res = _collection().update_one({"_id": key_id}, {"$set": {"revoked_at": utcnow()}})
    if res.matched_count == 0:
        raise InputError(f"unknown key id {key_id!r}")


def records() -> list[dict[str, Any]]:
    """Every key record, without digests (for ``matdx token list``)."""
    return [
        {k: v for k, v in d.items() if k != "sha256"}
        for d in _collection().find({}, sort=[("created_at", 1)])
    ]


def verify(key: str, now: datetime | None = None) -> Caller:
    """The identity a key stands for.

    Raises
    ------
    TokenError
        If the key is malformed, unknown, does not match its record, has expired or was
        revoked.
    """
    m = _KEY.fullmatch(key)
    if m is None:
        raise TokenError("malformed key")
    doc = _collection().find_one({"_id": m["kid"]})
    if doc is None or not hmac.compare_digest(doc["sha256"], _digest(key)):
        raise TokenError("unknown key")
    if doc.get("revoked_at") is not None:
        raise TokenError("revoked key")
    if (now or utcnow()) >= doc["expires_at"]:
        raise TokenError("expired key")
    return Caller(doc["user"], tuple(doc.get("groups") or ()))


__all__ = ["TokenError", "issue", "records", "revoke", "verify"]
