"""Options and helpers that several ``matdx`` commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URI (default: MATDX_DB_URI, else the embedded store)."),
]
UserOption = Annotated[str | None, typer.Option("--user", help="Act as this user.")]
GroupOption = Annotated[
    list[str] | None,
    typer.Option("--group", help="Act as a member of this group (repeat the option)."),
]
FormatOption = Annotated[
    str | None,
    typer.Option(
        "--format",
        help="table, json or csv (default: a table on a terminal, CSV otherwise).",
    ),
]


def caller_of(user: str | None, groups: list[str] | None) -> Any:
    """The caller identity from the ``--user``/``--group`` flags, else from the settings.

    This is the direct database path (administrators, compute jobs), where whoever holds
    the database credentials may read everything anyway. With ``MATDX_API_URL`` set the
    caller is a reader of the data service, and a command that would read the database
    directly with a claimed identity is refused.
    """
    import os

    from matdx.core.errors import InputError
    from matdx.core.settings import get_settings
    from matdx.store.access import Caller

    if os.environ.get("MATDX_API_URL"):
        raise InputError(
            "this command reads the database directly; with MATDX_API_URL set, read through "
            "the data service (matdx results, matdx query, matdx.client) or unset it"
        )
    s = get_settings(user=user)
    return Caller(s.user, tuple(groups if groups is not None else s.groups))


def open_db(db: str | None, read_only: bool = False) -> Any:
    """``(store, backend)`` for ``--db`` (see :func:`matdx.workflows.context.open_store`)."""
    from matdx.workflows.context import open_store

    return open_store(db, read_only)


def output_file(path: Path) -> Path:
    """Check that ``path`` can be written: its directory exists and it is no directory.

    Raises
    ------
    InputError
        Otherwise (nothing is created).
    """
    from matdx.core.errors import InputError

    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist")
    if path.is_dir():
        raise InputError(f"cannot write {str(path)!r}: it is a directory")
    return path


def service_client(user: str | None, groups: list[str] | None) -> Any:
    """The data-service client when ``MATDX_API_URL`` is set (else ``None``).

    Through the service the identity is the token's (``MATDX_TOKEN``): ``--user`` and
    ``--group``, which only select a view on the direct database path, are refused.
    """
    from matdx.client import from_environment
    from matdx.core.errors import InputError

    client = from_environment()
    if client is not None and (user is not None or groups):
        raise InputError(
            "--user/--group do not apply through the data service (MATDX_API_URL): "
            "the identity is the token's (MATDX_TOKEN)"
        )
    return client
