"""``matdx query`` and ``matdx data``: reading results with tiers, changing tiers, migrating."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from matdx.cli.options import DbOption, GroupOption, UserOption, caller_of, service_client
from matdx.cli.ui import console

data_app = typer.Typer(help="Data tiers, rights and schema migrations.", no_args_is_help=True)

def _split(text: str | None) -> list[str] | None:
    return [t for t in text.split(",") if t] if text else None


def query(
    campaign: Annotated[str | None, typer.Option("--campaign")] = None,
    elements_all: Annotated[str | None, typer.Option("--elements-all", help="Cu,Au")] = None,
    elements_any: Annotated[str | None, typer.Option("--elements-any")] = None,
    elements_only: Annotated[str | None, typer.Option("--elements-only")] = None,
    chemsys: Annotated[str | None, typer.Option("--chemsys", help="Au-Cu")] = None,
    formula: Annotated[str | None, typer.Option("--formula", help="Cu3Au")] = None,
    spacegroup: Annotated[int | None, typer.Option("--spacegroup")] = None,
    range_: Annotated[
        list[str] | None,
        typer.Option("--range", help="FIELD:MIN:MAX, e.g. energy_above_hull::0.05 (repeat)."),
    ] = None,
    tier: Annotated[list[str] | None, typer.Option("--tier")] = None,
    fields: Annotated[str | None, typer.Option("--fields", help="Comma-separated.")] = None,
    sort: Annotated[str | None, typer.Option("--sort")] = None,
    descending: Annotated[bool, typer.Option("--descending")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0)] = 20,
    skip: Annotated[int, typer.Option("--skip", min=0)] = 0,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
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

    if fmt not in ("table", "json", "csv"):
        raise InputError(f"unknown output format {fmt!r} (table, json or csv)")
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
            console.print(str(client.count(**{k: v for k, v in given.items() if k != "limit"})))
            return
        rows = list(client.rows(**given))
    else:
        open_store(db)
        caller = caller_of(user, group)
        if explain:
            console.print_json(json.dumps(q.explain(mq, caller), default=str))
            return
        if count_only:
            console.print(str(q.count(mq, caller)))
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
    if fmt == "json":
        console.print_json(json.dumps([{c: r.get(c) for c in cols} for r in rows], default=str))
    elif fmt == "csv":
        import pandas as pd

        print(
            pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols).to_csv(
                index=False
            ),
            end="",
        )
    else:
        table = Table(title=f"{len(rows)} results")
        for c in cols:
            table.add_column(c)
        for r in rows:
            table.add_row(
                *(f"{r.get(c):.4f}" if isinstance(r.get(c), float) else str(r.get(c)) for c in cols)
            )
        console.print(table)


@data_app.command("set-tier")
def set_tier(
    tier: Annotated[str, typer.Argument(help="open, shared-closed or closed.")],
    campaign: Annotated[str | None, typer.Option("--campaign")] = None,
    material: Annotated[str | None, typer.Option("--material", help="A material id.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="New owner (user/project).")] = None,
    groups: Annotated[
        str | None, typer.Option("--groups", help="Comma-separated groups (shared-closed).")
    ] = None,
    rights: Annotated[str | None, typer.Option("--rights", help="Licence or rights text.")] = None,
    export_control: Annotated[
        bool | None, typer.Option("--export-control/--no-export-control")
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

    store, backend = open_store(db)
    seen = store.migrate(dry_run=dry_run)
    backend.flush()
    verb = "to migrate" if dry_run else "migrated"
    console.print(f"schema v{SCHEMA_VERSION}: {verb}: " + (json.dumps(seen) if seen else "nothing"))


__all__ = ["Path", "data_app", "query"]
