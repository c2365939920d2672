"""``matdx serve`` (the data service) and ``matdx token`` (its API keys).

Both run on the database path: only the service's host and its administrators hold the
database credentials (``MATDX_DB_URI``, best from the environment or an env file, never a
``--db`` with a password, which other users of the machine see in ``ps``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from matdx.cli.options import DbOption
from matdx.cli.ui import console

token_app = typer.Typer(
    help="API keys of the data service (administrators: needs the database).",
    no_args_is_help=True,
)


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")
    ] = 8000,
    public_url: Annotated[
        str | None,
        typer.Option("--public-url", help="URL clients reach the service at (behind a proxy)."),
    ] = None,
    oidc_issuer: Annotated[
        str | None,
        typer.Option(
            "--oidc-issuer", envvar="MATDX_OIDC_ISSUER", help="Issuer of accepted OIDC tokens."
        ),
    ] = None,
    oidc_audience: Annotated[
        str | None,
        typer.Option(
            "--oidc-audience", envvar="MATDX_OIDC_AUDIENCE", help="Audience OIDC tokens must name."
        ),
    ] = None,
    oidc_key_file: Annotated[
        Path | None,
        typer.Option("--oidc-key-file", envvar="MATDX_OIDC_KEY_FILE", help="Issuer's PEM key."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Serve the store over HTTP: tiered reads for token holders, OPTIMADE at /optimade."""
    import uvicorn

    from matdx.core.errors import InputError
    from matdx.core.settings import get_settings
    from matdx.service.app import create_service
    from matdx.service.auth import OidcSettings

    oidc = None
    given = [oidc_issuer, oidc_audience, oidc_key_file]
    if any(given):
        if not all(given):
            raise InputError("OIDC needs --oidc-issuer, --oidc-audience and --oidc-key-file")
        oidc = OidcSettings.from_files(str(oidc_issuer), str(oidc_audience), Path(oidc_key_file))  # type: ignore[arg-type]
    uri = get_settings(db_uri=db).db_uri
    app = create_service(uri, base_url=public_url or f"http://{host}:{port}", oidc=oidc)
    console.print(f"matdx data service on http://{host}:{port} (OPTIMADE at /optimade/v1)")
    uvicorn.run(app, host=host, port=port, log_level=os.environ.get("MATDX_LOG_LEVEL", "warning"))


@token_app.command("issue")
def issue(
    user: Annotated[str, typer.Option("--user", help="Identity the key stands for.")],
    group: Annotated[
        list[str] | None, typer.Option("--group", help="Group of that user (repeat).")
    ] = None,
    days: Annotated[float, typer.Option("--days", help="Valid for this many days.")] = 90,
    db: DbOption = None,
) -> None:
    """Issue an API key; it is printed once and stored only as a digest."""
    from matdx.cli.options import open_db
    from matdx.store import tokens

    open_db(db)
    kid, key = tokens.issue(user, group or [], days, by=_admin())
    console.print(f"key id {kid} for {user} ({', '.join(group or []) or 'no groups'})")
    print(key)


@token_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (from `matdx token list`).")],
    db: DbOption = None,
) -> None:
    """Revoke an API key at once."""
    from matdx.cli.options import open_db
    from matdx.store import tokens

    open_db(db)
    tokens.revoke(key_id)
    console.print(f"revoked {key_id}")


@token_app.command("list")
def list_(db: DbOption = None) -> None:
    """List the API keys (ids, identities, expiry; never the keys)."""
    from matdx.cli.options import open_db
    from matdx.store import tokens

    open_db(db)
    table = Table(title="API keys")
    for col in ("key id", "user", "groups", "created", "expires", "revoked"):
        table.add_column(col)
    for d in tokens.records():
        table.add_row(
            d["_id"],
            d["user"],
            ",".join(d.get("groups") or []),
            str(d["created_at"])[:19],
            str(d["expires_at"])[:19],
            str(d["revoked_at"])[:19] if d.get("revoked_at") else "",
        )
    console.print(table)


def _admin() -> str:
    from matdx.core.settings import get_settings

    return get_settings().user


__all__ = ["serve", "token_app"]
