"""``matdx campaign``: close the loop — model the results, pick and queue what comes next.

Wired into the main CLI with ``app.add_typer(campaign_app, name="campaign")``. Errors are
:class:`~matdx.core.errors.MatdxError` one-liners, printed by :func:`matdx.cli.main.main`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from matdx.cli.options import DbOption, FormatOption, GroupOption, UserOption, caller_of
from matdx.cli.ui import Column, RichProgress, busy, console, emit, fixed, output_format

campaign_app = typer.Typer(
    help="Active learning on a campaign: choose, queue and run the next calculations.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)

@campaign_app.command("next")
def next_(
    campaign_file: Annotated[Path, typer.Argument(help="Campaign YAML file (already run).")],
    budget: Annotated[int, typer.Option("--budget", help="Materials to pick.")] = 50,
    strategy: Annotated[
        str, typer.Option("--strategy", help="ucb, greedy, uncertainty or random.")
    ] = "ucb",
    kappa: Annotated[
        float, typer.Option("--kappa", help="Weight of the uncertainty in ucb.")
    ] = 1.0,
    run: Annotated[
        bool, typer.Option("--run", help="Compute the picks in this process (else only queue).")
    ] = False,
    db: DbOption = None,
    user: UserOption = None,
    group: GroupOption = None,
) -> None:
    """Train on the results you may read, pick the BUDGET most promising candidates, queue them.

    The model predicts the formation energy with an uncertainty (spread of a random
    forest's trees); candidates are ranked by predicted distance to the hull of what is
    computed. The pick (model snapshot, strategy, CV error, predictions) is stored.
    """
    from matdx.workflows.active import CV_FOLDS, next_batch
    from matdx.workflows.campaign import load_campaign

    loaded = load_campaign(campaign_file)
    r = next_batch(
        loaded,
        budget,
        strategy,
        caller=caller_of(user, group),  # type: ignore[arg-type]
        run=run,
        db_uri=db,
        progress=RichProgress(),
        kappa=kappa,
    )
    console.print(
        f"[bold]{r.campaign}[/]: {r.n_unique} unique candidates; {r.n_done} computed, "
        f"{r.n_queued} queued, {r.n_failed} failed; {r.n_pool} left to choose from"
    )
    if not r.picks:
        console.print("nothing left to pick: every candidate is computed or queued")
        return
    cv = f"{r.cv_mae:.4f} ± {r.cv_mae_std:.4f} eV/atom" if r.cv_mae is not None else "–"
    console.print(
        f"model: random forest of E_form on {r.n_train} results (snapshot {r.snapshot_id}), "
        f"{min(CV_FOLDS, r.n_train)}-fold CV MAE {cv}"
    )
    table = Table(title=f"{r.pick_id}: {len(r.picks)} picked by {r.strategy}")
    for col, just in (
        ("#", "right"),
        ("material_id", "left"),
        ("formula", "left"),
        ("E_form pred (eV/at)", "right"),
        ("± std", "right"),
        ("Δ hull pred (eV/at)", "right"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for p in r.picks:
        table.add_row(
            str(p["rank"]),
            p["material_id"],
            p["formula_pretty"],
            f"{p['predicted_mean']:.4f}",
            f"{p['predicted_std']:.4f}",
            f"{p['predicted_hull_distance']:.4f}",
        )
    console.print(table)
    c = r.states.get("candidates", {})
    console.print(
        f"queued as workflow {r.wf_id}; candidates by state: "
        + ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if v)
    )


PICK_COLUMNS = (
    Column("pick_id"),
    Column("created_at", "when", lambda t: str(t or "")[:19]),
    Column("by"),
    Column("strategy"),
    Column("n", justify="right"),
    Column("n_train", "trained on", justify="right"),
    Column("snapshot_id", "snapshot"),
    Column("cv_mae", "CV MAE (eV/at)", fixed(4), "right"),
)
"""Columns of ``matdx campaign picks``."""


@campaign_app.command()
def picks(
    campaign: Annotated[str, typer.Argument(help="Campaign name.")],
    fmt: FormatOption = None,
    db: DbOption = None,
    user: UserOption = None,
    group: GroupOption = None,
) -> None:
    """List the recorded picks of a campaign (what `matdx campaign next` chose, and why)."""
    from matdx.store.picks import picks as stored_picks
    from matdx.workflows.context import open_store

    fmt = output_format(fmt)
    with busy("reading picks"):
        store, _ = open_store(db, read_only=True)
        caller = caller_of(user, group)
        store.campaign(campaign, caller)  # type: ignore[arg-type]
        rows = stored_picks(campaign, caller)  # type: ignore[arg-type]
    flat = [{**d, "pick_id": d["_id"], "n": len(d.get("picks", []))} for d in rows]
    emit(flat, PICK_COLUMNS, fmt, title=f"{campaign}: {len(rows)} picks")


__all__ = ["campaign_app"]
