"""``matdx query`` and ``matdx data``: reading results with tiers, changing tiers, migrating."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from matdx.cli.options import (
    DbOption,
    FormatOption,
    GroupOption,
    UserOption,
    caller_of,
    service_client,
)
from matdx.cli.ui import Column, busy, console, emit, emit_json, output_format

data_app = typer.Typer(
    help="Data tiers, rights and schema migrations.", no_args_is_help=True, rich_markup_mode=None
)

def _split(text: str | None) -> list[str] | None:
    return [t for t in text.split(",") if t] if text else None


def query(
    campaign: Annotated[
        str | None, typer.Option("--campaign", help="Only this campaign's results.")
    ] = None,
    elements_all: Annotated[
        str | None,
        typer.Option("--elements-all", help="Containing all of these elements, e.g. Cu,Au."),
    ] = None,
    elements_any: Annotated[
        str | None,
        typer.Option("--elements-any", help="Containing at least one of these elements."),
    ] = None,
    elements_only: Annotated[
        str | None,
        typer.Option("--elements-only", help="Made of these elements only (any subset)."),
    ] = None,
    chemsys: Annotated[
        str | None, typer.Option("--chemsys", help="Exactly this chemical system, e.g. Au-Cu.")
    ] = None,
    formula: Annotated[
        str | None, typer.Option("--formula", help="Reduced formula, e.g. Cu3Au.")
    ] = None,
    spacegroup: Annotated[
        int | None, typer.Option("--spacegroup", help="Space group number (1-230).")
    ] = None,
    range_: Annotated[
        list[str] | None,
        typer.Option("--range", help="FIELD:MIN:MAX, e.g. energy_above_hull::0.05 (repeat)."),
    ] = None,
    tier: Annotated[
        list[str] | None,
        typer.Option("--tier", help="Only records of this tier: open, shared-closed, closed."),
    ] = None,
    fields: Annotated[
        str | None, typer.Option("--fields", help="Fields to show, comma-separated.")
    ] = None,
    sort: Annotated[str | None, typer.Option("--sort", help="Field to sort by.")] = None,
    descending: Annotated[
        bool, typer.Option("--descending", help="Sort from the largest value down.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Most records (0 = all).")] = 20,
    skip: Annotated[int, typer.Option("--skip", min=0, help="Records to skip first.")] = 0,
    fmt: FormatOption = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show the query plan.")] = False,
    count_only: Annotated[bool, typer.Option("--count", help="Only count matches.")] = False,
    db: DbOption = None,
    user: UserOption = None,
    group: GroupOption = None,
) -> None:
    """Query stored results across campaigns (filters, projection, sort, pagination).

    With ``MATDX_API_URL`` set, read through the data service with ``MATDX_TOKEN``.
    """
    from matdx.core.errors import InputError
    from matdx.store import query as q
    from matdx.workflows.context import open_store

    fmt = output_format(fmt)
    data = {
        "campaign": campaign,
        "elements_all": _split(elements_all),
        "elements_any": _split(elements_any),
        "elements_only": _split(elements_only),
        "chemsys": chemsys,
        "formula": formula,
        "spacegroup": spacegroup,
        "ranges": {k: r.model_dump() for k, r in (q.parse_range(t) for t in range_ or [])},
        "tiers": tier,
        "fields": _split(fields),
        "sort": sort,
        "ascending": not descending,
        "limit": limit,
        "skip": skip,
    }
    given = {k: v for k, v in data.items() if v is not None}
    mq = q.parse_query(given)
    client = service_client(user, group)
    if client is not None:
        if explain:
            raise InputError("--explain needs the database (the service does not show plans)")
        if count_only:
            print(client.count(**{k: v for k, v in given.items() if k != "limit"}))
            return
        with busy("querying"):
            rows = list(client.rows(**given))
    else:
        with busy("querying"):
            open_store(db, read_only=True)
            caller = caller_of(user, group)
            if explain:
                emit_json(q.explain(mq, caller))
                return
            if count_only:
                print(q.count(mq, caller))
                return
            rows = q.run_query(mq, caller)
    cols = mq.fields or [
        "material_id",
        "campaign",
        "formula_pretty",
        "energy_per_atom",
        "formation_energy_per_atom",
        "energy_above_hull",
        "tier",
    ]
    columns = [
        Column(c, text=lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)) for c in cols
    ]
    emit(rows, columns, fmt, title=f"{len(rows)} results")


@data_app.command("set-tier")
def set_tier(
    tier: Annotated[str, typer.Argument(help="open, shared-closed or closed.")],
    campaign: Annotated[
        str | None, typer.Option("--campaign", help="Every record of this campaign.")
    ] = None,
    material: Annotated[str | None, typer.Option("--material", help="A material id.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="New owner (user/project).")] = None,
    groups: Annotated[
        str | None, typer.Option("--groups", help="Comma-separated groups (shared-closed).")
    ] = None,
    rights: Annotated[str | None, typer.Option("--rights", help="Licence or rights text.")] = None,
    export_control: Annotated[
        bool | None,
        typer.Option(
            "--export-control/--no-export-control",
            help="Mark the records export-controlled, or not (default: unchanged).",
        ),
    ] = None,
    db: DbOption = None,
    user: UserOption = None,
    group: GroupOption = None,
) -> None:
    """Change the tier and rights of a campaign's or a material's records (owners only).

    With ``MATDX_API_URL`` set, the change goes through the data service and the audit
    trail records the identity of ``MATDX_TOKEN``.
    """
    from matdx.core.errors import InputError
    from matdx.store.governance import set_tier as do_set
    from matdx.workflows.context import open_store

    client = service_client(user, group)
    if client is not None:
        if campaign is None or material is not None:
            raise InputError("through the data service, give a --campaign (not --material)")
        changes = {
            "owner": owner,
            "groups": _split(groups) if groups is not None else None,
            "rights": rights,
            "export_control": export_control,
        }
        given = {k: v for k, v in changes.items() if v is not None}
        done = client.set_tier(campaign, tier, **given)
        console.print("changed: " + ", ".join(f"{k} {v}" for k, v in done.items()))
        return

    with busy("changing tiers"):
        _, backend = open_store(db)
        changed = do_set(
            caller_of(user, group),
            tier,
            campaign,
            material,
            owner,
            _split(groups) if groups is not None else None,
            rights,
            export_control,
        )
        backend.flush()
    console.print("changed: " + ", ".join(f"{k} {v}" for k, v in changed.items()))


@data_app.command()
def migrate(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count old records.")] = False,
    db: DbOption = None,
) -> None:
    """Bring stored records to the current schema version."""
    from matdx.store.documents import SCHEMA_VERSION
    from matdx.workflows.context import open_store

    with busy("migrating" if not dry_run else "counting old records"):
        store, backend = open_store(db, read_only=dry_run)
        seen = store.migrate(dry_run=dry_run)
        backend.flush()  # nothing written by a dry run
    verb = "to migrate" if dry_run else "migrated"
    console.print(f"schema v{SCHEMA_VERSION}: {verb}: " + (json.dumps(seen) if seen else "nothing"))


__all__ = ["Path", "data_app", "query"]
