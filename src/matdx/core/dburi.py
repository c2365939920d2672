"""Parsing and redaction of database URIs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from matdx.core.errors import InputError

DEFAULT_DB_NAME = "matdx"
_PASSWORD = re.compile(r"(?P<scheme>[a-z+]+://)(?P<user>[^:/@]*):(?P<pw>[^@]*)@", re.I)
SECRET_OPTIONS = (
    "password",
    "tlsCertificateKeyFilePassword",
    "sslPEMKeyPassword",
    "authMechanismProperties",
    "proxyPassword",
)
"""URI options whose values are credentials (``authMechanismProperties`` may hold an AWS
session token or a cloud key)."""
_SECRET_OPTION = re.compile(
    r"(?P<key>[?&;](?:" + "|".join(SECRET_OPTIONS) + r"))=(?P<value>[^&;\s'\"]*)", re.I
)
_USERINFO = re.compile(r"(?P<scheme>[a-z+]+://)(?P<userinfo>[^/@\s]*)@", re.I)


@dataclass(frozen=True)
class DbTarget:
    """Where the LaunchPad and the store live.

    Attributes
    ----------
    kind
        ``"embedded"`` for the file-persisted in-process store, ``"mongodb"`` for a server.
    uri
        The URI as given (may hold a password: never print it, use :attr:`display`).
    db_name
        Database name.
    path
        File of the embedded store (``None`` for a server).
    """

    kind: Literal["embedded", "mongodb"]
    uri: str
    db_name: str
    path: Path | None = None

    @property
    def display(self) -> str:
        """The URI with any password replaced by ``***``."""
        return redact_uri(self.uri)


def redact_uri(uri: str) -> str:
    """Replace every credential of a URI (or of a message holding URIs) by ``***``.

    The password of ``scheme://user:password@host`` and the values of the options in
    :data:`SECRET_OPTIONS` (``tlsCertificateKeyFilePassword=…``,
    ``authMechanismProperties=…``) are replaced.

    Parameters
    ----------
    uri
        A database URI, or a text that may contain some.

    Returns
    -------
    str
        The text, safe to print.
    """
    out = _PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", uri)
    return _SECRET_OPTION.sub(lambda m: f"{m['key']}=***", out)


def strip_credentials(uri: str) -> str:
    """The URI without user, password and credential options (to be stored or shown).

    Parameters
    ----------
    uri
        A database URI.

    Returns
    -------
    str
        ``mongodb://host/db?…`` with no user information and no secret option.
    """
    out = _USERINFO.sub(lambda m: m["scheme"], uri)
    out = _SECRET_OPTION.sub("", out)
    return out.replace("/?&", "/?").rstrip("?&")


def without_credentials(spec: dict[str, Any]) -> dict[str, Any]:
    """A campaign file's contents with its ``store.uri`` stripped of credentials."""
    store = spec.get("store")
    if not isinstance(store, dict) or not isinstance(store.get("uri"), str):
        return spec
    return {**spec, "store": {**store, "uri": strip_credentials(store["uri"])}}


def parse_db_uri(uri: str, data_dir: Path) -> DbTarget:
    """Interpret a ``MATDX_DB_URI`` value.

    Parameters
    ----------
    uri
        ``"embedded"``, ``"embedded:/path/file.json"`` or a ``mongodb://``/``mongodb+srv://`` URI
        (database name taken from the path, default ``matdx``).
    data_dir
        Directory holding the default embedded store file.

    Returns
    -------
    DbTarget
        The parsed target.

    Raises
    ------
    InputError
        If the URI has an unknown scheme.
    """
    uri = uri.strip()
    if uri == "embedded":
        return DbTarget("embedded", uri, DEFAULT_DB_NAME, data_dir / "embedded_store.json")
    if uri.startswith("embedded:"):
        path = Path(uri.removeprefix("embedded:")).expanduser()
        return DbTarget("embedded", uri, DEFAULT_DB_NAME, path.resolve())
    if uri.startswith(("mongodb://", "mongodb+srv://")):
        rest = uri.split("://", 1)[1]
        path = rest.split("/", 1)[1] if "/" in rest else ""
        name = path.split("?", 1)[0] or DEFAULT_DB_NAME
        return DbTarget("mongodb", uri, name)
    raise InputError(
        f"database URI {redact_uri(uri)!r} is not 'embedded', 'embedded:<file>' or mongodb://..."
    )
