"""``matdx``: run campaigns, follow them, rank, export and plot their results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.table import Table

from matdx.cli.options import (
    DbOption,
    GroupOption,
    UserOption,
    caller_of,
    open_db,
    service_client,
)
from matdx.cli.ui import RichProgress, console, one_line
from matdx.core.errors import InputError, MatdxError, StoreUnavailableError

app = typer.Typer(
    name="matdx",
    help="High-throughput materials screening: campaign file → candidates → calculations → "
    "ranked, stored, exportable results.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_subcommands() -> None:
    from matdx.cli.campaign import campaign_app
    from matdx.cli.data import data_app, query
    from matdx.cli.doctor import doctor
    from matdx.cli.hpc import farm, recover, submit, sync
    from matdx.cli.profile import profile_app
    from matdx.cli.serve import serve, token_app

    app.add_typer(profile_app, name="profile")
    app.add_typer(data_app, name="data")
    app.add_typer(campaign_app, name="campaign")
    app.add_typer(token_app, name="token")
    app.command()(serve)
    app.command()(query)
    app.command()(doctor)
    for command in (submit, farm, sync, recover):
        app.command()(command)


_register_subcommands()


@app.command()
def run(
    campaign_file: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
    db: DbOption = None,
    no_launch: Annotated[
        bool, typer.Option("--no-launch", help="Only queue the Fireworks; workers run them.")
    ] = False,
) -> None:
    """Generate, deduplicate, queue and run a campaign, then show the top results."""
    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.runner import submit_campaign

    loaded = load_campaign(campaign_file)
    report = submit_campaign(loaded, RichProgress(), launch=not no_launch, db_uri=db)
    c = report.states.get("candidates", {})
    console.print(
        f"[bold]{report.campaign}[/]: {report.n_raw} raw candidates → {report.n_unique} unique "
        f"({report.n_reused} already in the store); "
        f"{report.n_done_before} computed before, {report.n_queued_before} already queued, "
        f"{report.n_submitted} submitted" + (f" (workflow {report.wf_id})" if report.wf_id else "")
    )
    console.print(
        "candidates by state: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if v)
        if c
        else "no Fireworks"
    )
    if not no_launch:
        results(report.campaign, top=10, db=db)


@app.command()
def status(
    campaign: Annotated[str, typer.Argument(help="Campaign name.")],
    db: DbOption = None,
    user: UserOption = None,
    group: GroupOption = None,
) -> None:
    """Progress of a campaign: candidates and Fireworks by state, calculations by outcome."""
    store, backend = open_db(db)  # type: ignore[misc]
    from matdx.workflows import fireworks_adapter as fwa  # after the store: see its docstring

    doc = store.campaign(campaign, caller_of(user, group))
    lp = fwa.get_launchpad(backend)
    states = fwa.state_counts(lp, campaign)
    calcs = store.count_calculations(campaign)
    table = Table(title=f"campaign {campaign}", show_header=True)
    table.add_column("state")
    table.add_column("fireworks", justify="right")
    table.add_column("candidates", justify="right")
    for name in states["steps"]:
        table.add_column(f"step {name}", justify="right")
    for s in (
        "WAITING",
        "READY",
        "RESERVED",
        "RUNNING",
        "COMPLETED",
        "FIZZLED",
        "DEFUSED",
        "PAUSED",
    ):
        table.add_row(
            s,
            str(states["fireworks"].get(s, 0)),
            str(states["candidates"].get(s, 0)),
            *(str(c.get(s, 0)) for c in states["steps"].values()),
        )
    console.print(
        f"candidates: {doc.n_raw} raw, {doc.n_unique} unique ({doc.n_reused} already in the "
        f"store); workflows {list(doc.wf_ids)}"
    )
    console.print(table)
    console.print(f"calculations: {calcs['completed']} completed, {calcs['failed']} failed")


RANK_KEYS = ("energy_above_hull", "formation_energy_per_atom", "energy_per_atom", "volume_per_atom")


def _step_rows(rows: list[dict[str, Any]], step: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Summaries with the values of ``step`` in place of the pre-screen's."""
    names = [s.get("name") for s in spec.get("steps") or []]
    if step not in names:
        raise InputError(
            f"campaign has no step {step!r} (steps: {', '.join(map(str, names)) or 'none'})"
        )
    out = []
    for r in rows:
        block = (r.get("steps") or {}).get(step)
        if block:
            sym = {"symbol": block.get("spacegroup"), "number": block.get("spacegroup_number")}
            out.append({**r, **block, "symmetry": sym})
    return out


@app.command()
def results(
    campaign: Annotated[str, typer.Argument(help="Campaign name.")],
    top: Annotated[int, typer.Option("--top", min=0, help="Rows to show (0 = all).")] = 20,
    sort: Annotated[
        str | None, typer.Option("--sort", help=f"Ranking key: {', '.join(RANK_KEYS)}.")
    ] = None,
    step: Annotated[
        str | None,
        typer.Option("--step", help="Show the results of this later step (default: pre-screen)."),
    ] = None,
    db: DbOption = None,
    user: UserOption = None,
    group: GroupOption = None,
) -> None:
    """Ranked table of a campaign's results (of the pre-screen, or of one later step).

    With ``MATDX_API_URL`` set, read through the data service with ``MATDX_TOKEN``.
    """
    client = service_client(user, group)
    if client is not None:
        spec = client.campaign(campaign)["spec"]

        def fetch(**kw: Any) -> list[dict[str, Any]]:
            return client.result_rows(campaign, **kw)
    else:
        store, _ = open_db(db)  # type: ignore[misc]
        caller = caller_of(user, group)
        spec = store.campaign(campaign, caller).spec

        def fetch(**kw: Any) -> list[dict[str, Any]]:
            return store.summaries(campaign, caller, **kw)

    ranking = spec.get("ranking", {})
    key = sort or ranking.get("key", "energy_above_hull")
    if key not in RANK_KEYS:
        raise InputError(f"unknown ranking key {key!r} (choose from {', '.join(RANK_KEYS)})")
    if step is None:
        rows = fetch(sort=key, ascending=ranking.get("ascending", True), limit=top)
    else:
        rows = _step_rows(fetch(), step, spec)
        rows.sort(key=lambda r: (r.get(key) is None, r.get(key) or 0.0))
        if not ranking.get("ascending", True):
            rows.reverse()
        rows = rows[:top] if top else rows
    where = f" step {step}" if step else ""
    table = Table(title=f"{campaign}{where}: top {len(rows)} by {key}")
    for col, just in (
        ("#", "right"),
        ("material_id", "left"),
        ("formula", "left"),
        ("spacegroup", "left"),
        ("nsites", "right"),
        ("E (eV/at)", "right"),
        ("E_form (eV/at)", "right"),
        ("E_hull (eV/at)", "right"),
        ("V (Å³/at)", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]

    def f(x: float | None, fmt: str = "{:.4f}") -> str:
        return "–" if x is None else fmt.format(x)

    for i, r in enumerate(rows, 1):
        sym = r.get("symmetry") or {}
        table.add_row(
            str(i),
            r["material_id"],
            r["formula_pretty"],
            f"{sym.get('symbol')} ({sym.get('number')})",
            str(r["nsites"]),
            f(r.get("energy_per_atom")),
            f(r.get("formation_energy_per_atom")),
            f(r.get("energy_above_hull")),
            f(r.get("volume_per_atom"), "{:.2f}"),
        )
    console.print(table)


@app.command()
def export(
    campaign: Annotated[str, typer.Argument(help="Campaign name.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write.")],
    fmt: Annotated[
        str, typer.Option("--format", help="parquet, csv, json, extxyz or optimade.")
    ] = "parquet",
    allow_export_controlled: Annotated[
        bool,
        typer.Option("--allow-export-controlled", help="Include export-controlled records."),
    ] = False,
    db: DbOption = None,
    user: UserOption = None,
    group: GroupOption = None,
) -> None:
    """Write a campaign's results to a file (written whole or not at all)."""
    from matdx.store.export import FORMATS
    from matdx.store.export import export as do_export
    from matdx.workflows.campaign import validate_campaign

    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    store, _ = open_db(db)  # type: ignore[misc]
    doc = store.campaign(campaign, caller_of(user, group))
    from matdx.workflows.campaign import LoadedCampaign

    spec = validate_campaign(doc.spec, {}, f"stored campaign {campaign}")
    loaded = LoadedCampaign(spec, Path(campaign), doc.spec)
    n = do_export(
        store,
        campaign,
        caller_of(user, group),
        fmt,
        output,
        loaded.settings_hash,
        allow_export_controlled,
    )
    console.print(f"wrote {n} records to {output} ({fmt})")


@app.command()
def plot(
    campaign: Annotated[str, typer.Argument(help="Campaign name.")],
    kind: Annotated[str, typer.Argument(help="hull or distribution.")] = "hull",
    output: Annotated[Path, typer.Option("-o", "--output", help="Image file.")] = Path("hull.png"),
    chemsys: Annotated[
        str | None, typer.Option("--chemsys", help="One system, e.g. Au-Cu or Au-Cu-Pt.")
    ] = None,
    db: DbOption = None,
    user: UserOption = None,
    group: GroupOption = None,
) -> None:
    """Plot convex hulls or property distributions of a campaign."""
    from matdx.analysis.plots import PLOTS

    if kind not in PLOTS:
        raise InputError(f"unknown plot {kind!r} (choose from {', '.join(PLOTS)})")
    store, _ = open_db(db)  # type: ignore[misc]
    store.campaign(campaign, caller_of(user, group))
    rows = store.summaries(campaign, caller_of(user, group))
    if not rows:
        raise InputError(f"campaign {campaign!r} has no results yet")
    PLOTS[kind](rows, output, chemsys)
    console.print(f"wrote {output}")


def _error(message: str) -> None:
    """Print a user error as exactly one line on stderr."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one line and an exit code.

    Parameters
    ----------
    argv
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit code.
    """
    try:
        rv = app(args=argv, prog_name="matdx", standalone_mode=False)
    except click.exceptions.ClickException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except click.exceptions.Abort:
        return 130
    except MatdxError as exc:
        _error(str(exc))
        return exc.exit_code
    except Exception as exc:
        # a command that never imported pymongo cannot have raised its errors (and farm
        # ranks and database-free commands are spared the import)
        errors = sys.modules.get("pymongo.errors")
        if errors is None or not isinstance(exc, errors.PyMongoError):
            raise
        from matdx.core.dburi import redact_uri

        msg = redact_uri(one_line(str(exc)).split(", Timeout")[0])
        _error(f"database operation failed: {msg}")
        return StoreUnavailableError.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
