"""``matdx``: run campaigns, follow them, rank, export and plot their results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main

from matdx.cli.options import (
    DbOption,
    FormatOption,
    GroupOption,
    UserOption,
    caller_of,
    open_db,
    output_file,
    service_client,
)
from matdx.cli.ui import (
    Column,
    RichProgress,
    busy,
    console,
    emit,
    emit_json,
    fixed,
    one_line,
    output_format,
)
from matdx.core.errors import InputError, MatdxError, StoreUnavailableError

app = typer.Typer(
    name="matdx",
    help="High-throughput materials screening: campaign file → candidates → calculations → "
    "ranked, stored, exportable results.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        from matdx import __version__

        print(f"matdx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_show_version,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Options of ``matdx`` itself (the help shown is the app's)."""


def _register_subcommands() -> None:
    from matdx.cli.campaign import campaign_app
    from matdx.cli.converge import converge
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
    app.command()(converge)
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
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes computing the pre-screen (default: every core; 1: this one).",
        ),
    ] = None,
) -> None:
    """Generate, deduplicate, queue and run a campaign, then show the top results."""
    import signal

    from matdx.workflows.campaign import load_campaign
    from matdx.workflows.runner import submit_campaign

    # `kill` stops a run as Ctrl-C does: the programs it started end with it, and the
    # Firework it was running is READY for the next run
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    loaded = load_campaign(campaign_file)
    report = submit_campaign(
        loaded, RichProgress(), launch=not no_launch, db_uri=db, workers=workers
    )
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


FW_STATES = ("WAITING", "READY", "RESERVED", "RUNNING", "COMPLETED", "FIZZLED", "DEFUSED", "PAUSED")


@app.command()
def status(
    campaign: Annotated[str, typer.Argument(help="Campaign name.")],
    fmt: FormatOption = None,
    db: DbOption = None,
    user: UserOption = None,
    group: GroupOption = None,
) -> None:
    """Progress of a campaign: candidates and Fireworks by state, calculations by outcome."""
    fmt = output_format(fmt)
    with busy("reading the campaign"):
        store, backend = open_db(db, read_only=True)  # type: ignore[misc]
        from matdx.workflows import fireworks_adapter as fwa  # after the store: its docstring

        doc = store.campaign(campaign, caller_of(user, group))
        lp = fwa.get_launchpad(backend, init=False)
        states = fwa.state_counts(lp, campaign)
        calcs = store.count_calculations(campaign)
    columns = [
        Column("state"),
        Column("fireworks", justify="right"),
        Column("candidates", justify="right"),
        *(Column(f"step {name}", justify="right") for name in states["steps"]),
    ]
    rows = [
        {
            "state": s,
            "fireworks": states["fireworks"].get(s, 0),
            "candidates": states["candidates"].get(s, 0),
            **{f"step {n}": c.get(s, 0) for n, c in states["steps"].items()},
        }
        for s in FW_STATES
    ]
    if fmt == "json":
        emit_json(
            {
                "campaign": campaign,
                "n_raw": doc.n_raw,
                "n_unique": doc.n_unique,
                "n_reused": doc.n_reused,
                "workflows": list(doc.wf_ids),
                "states": states,
                "calculations": calcs,
            }
        )
        return
    if fmt == "csv":
        emit(rows, columns, fmt)
        return
    console.print(
        f"candidates: {doc.n_raw} raw, {doc.n_unique} unique ({doc.n_reused} already in the "
        f"store); workflows {list(doc.wf_ids)}"
    )
    emit(rows, columns, fmt, title=f"campaign {campaign}")
    console.print(f"calculations: {calcs['completed']} completed, {calcs['failed']} failed")


RANK_KEYS = ("energy_above_hull", "formation_energy_per_atom", "energy_per_atom", "volume_per_atom")


def _step_rows(rows: list[dict[str, Any]], step: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Summaries with the values of ``step`` only (none of the pre-screen's)."""
    from matdx.store.export import step_rows

    _check_step(step, spec)
    return step_rows(rows, step)


def _check_step(step: str, spec: dict[str, Any]) -> None:
    names = [s.get("name") for s in spec.get("steps") or []]
    if step not in names:
        raise InputError(
            f"campaign has no step {step!r} (steps: {', '.join(map(str, names)) or 'none'})"
        )


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
    fmt: FormatOption = None,
    db: DbOption = None,
    user: UserOption = None,
    group: GroupOption = None,
) -> None:
    """Ranked table of a campaign's results (of the pre-screen, or of one later step).

    With ``MATDX_API_URL`` set, read through the data service with ``MATDX_TOKEN``.
    """
    fmt = output_format(fmt)
    with busy("reading results"):
        rows, title = _results(campaign, top, sort, step, db, user, group)
    emit(rows, RESULT_COLUMNS, fmt, title=title)


def _results(
    campaign: str,
    top: int,
    sort: str | None,
    step: str | None,
    db: str | None,
    user: str | None,
    group: list[str] | None,
) -> tuple[list[dict[str, Any]], str]:
    """The ranked rows of ``matdx results`` and their title."""
    client = service_client(user, group)
    if client is not None:
        spec = client.campaign(campaign)["spec"]

        def fetch(**kw: Any) -> list[dict[str, Any]]:
            return client.result_rows(campaign, **kw)  # type: ignore[no-any-return]
    else:
        store, _ = open_db(db, read_only=True)  # type: ignore[misc]
        caller = caller_of(user, group)
        spec = store.campaign(campaign, caller).spec

        def fetch(**kw: Any) -> list[dict[str, Any]]:
            return store.summaries(campaign, caller, **kw)  # type: ignore[no-any-return]

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
    flat = [
        {
            "rank": i,
            **r,
            "campaign": campaign,
            "spacegroup_symbol": (r.get("symmetry") or {}).get("symbol"),
            "spacegroup_number": (r.get("symmetry") or {}).get("number"),
        }
        for i, r in enumerate(rows, 1)
    ]
    return flat, f"{campaign}{where}: top {len(rows)} by {key}"


RESULT_COLUMNS = (
    Column("rank", "#", justify="right"),
    Column("campaign", table=False),
    Column("material_id"),
    Column("formula_pretty", "formula"),
    Column("spacegroup_symbol", "spacegroup"),
    Column("spacegroup_number", "#sg", justify="right"),
    Column("nsites", justify="right"),
    Column("energy_per_atom", "E (eV/at)", fixed(4), "right"),
    Column("formation_energy_per_atom", "E_form (eV/at)", fixed(4), "right"),
    Column("energy_above_hull", "E_hull (eV/at)", fixed(4), "right"),
    Column("volume_per_atom", "V (Å³/at)", fixed(2), "right"),
)
"""Columns of ``matdx results`` (JSON and CSV use the keys, in eV/atom and Å³/atom)."""


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
    step: Annotated[
        str | None,
        typer.Option("--step", help="Export the results of this later step (default: pre-screen)."),
    ] = None,
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
    output_file(output)
    with busy(f"exporting {campaign}"):
        store, _ = open_db(db, read_only=True)  # type: ignore[misc]
        doc = store.campaign(campaign, caller_of(user, group))
        from matdx.workflows.campaign import LoadedCampaign

        spec = validate_campaign(doc.spec, {}, f"stored campaign {campaign}")
        loaded = LoadedCampaign(spec, Path(campaign), doc.spec)
        if step is not None:
            _check_step(step, doc.spec)
        plan = {s["name"]: s for s in loaded.step_plan()}
        settings_hash = plan[step]["settings_hash"] if step else loaded.settings_hash
        n = do_export(
            store,
            campaign,
            caller_of(user, group),
            fmt,
            output,
            settings_hash,
            allow_export_controlled,
            step=step,
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
    output_file(output)
    with busy(f"plotting {campaign}"):
        store, _ = open_db(db, read_only=True)  # type: ignore[misc]
        doc = store.campaign(campaign, caller_of(user, group))
        rows = store.summaries(campaign, caller_of(user, group))
        if not rows:
            raise InputError(f"campaign {campaign!r} has no results yet")
        engine = (doc.spec.get("prescreen") or {}).get("engine", "emt")
        PLOTS[kind](rows, output, chemsys, f"{campaign} · {engine} pre-screen")
    console.print(f"wrote {output}")


def command() -> Any:
    """The click command of the CLI, its options' values named as in click's help.

    Every option that takes a value shows it by its name (``--db DB``), every argument by
    its name in capitals, and flags as flags, whatever the version of Typer.
    """
    cmd = typer.main.get_command(app)
    _name_values(cmd)
    return cmd


def _name_values(cmd: Any) -> None:
    for param in cmd.params:
        if param.metavar is not None or getattr(param, "is_flag", False):
            continue
        if param.param_type_name == "argument":
            param.metavar = param.name.upper()
        elif param.param_type_name == "option" and param.opts:
            param.metavar = max(param.opts, key=len).lstrip("-").upper().replace("-", "_")
    for sub in getattr(cmd, "commands", {}).values():
        _name_values(sub)


def _error(message: str) -> None:
    """Print a user error as exactly one line on stderr."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


def _click_kind(exc: BaseException) -> str | None:
    """What a command-line library exception is, by its class names.

    Typer raises click's exceptions, or those of its own copy of click
    (``typer._click``); both keep click's class names, which is what is matched here.
    """
    names = {c.__name__ for c in type(exc).__mro__}
    for kind in ("NoArgsIsHelpError", "Exit", "Abort", "ClickException"):
        if kind in names:
            return kind
    return None


def _library_exit(exc: BaseException) -> int:
    """Exit code for an exception of the command-line library (see :func:`_click_kind`)."""
    kind = _click_kind(exc)
    if kind == "NoArgsIsHelpError":  # a group called without a command: its help
        print(exc.format_message(), flush=True)  # type: ignore[attr-defined]
        return 0
    if kind == "Exit":
        return int(getattr(exc, "exit_code", 0) or 0)
    if kind == "Abort":  # the library's form of Ctrl-C
        _error("interrupted")
        return 130
    _error(exc.format_message())  # type: ignore[attr-defined]
    return int(getattr(exc, "exit_code", 2))


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
        rv = command().main(args=argv, prog_name="matdx", standalone_mode=False)
    except MatdxError as exc:
        _error(str(exc))
        return exc.exit_code
    except Exception as exc:
        if _click_kind(exc) is not None:
            return _library_exit(exc)
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
    except SystemExit as exc:  # a library that exits by itself
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if rv == 130:  # typer returns Ctrl-C within a command as exit code 130
        _error("interrupted")
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
