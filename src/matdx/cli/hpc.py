"""``matdx submit``, ``farm``, ``sync`` and ``recover``: campaigns on batch systems."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from matdx.cli.options import DbOption, open_db
from matdx.cli.ui import busy, console

CampaignArg = Annotated[str, typer.Argument(help="Campaign name.")]
StaleAfterOption = Annotated[
    float, typer.Option("--stale-after", help="Heartbeat age (s) that marks a run lost.")
]


def _launchpad(db: str | None, campaign: str) -> tuple[Any, Any, Any]:
    """``(store, backend, LaunchPad)`` of an existing campaign's database."""
    store, backend = open_db(db)
    store.campaign(campaign)
    from matdx.workflows import fireworks_adapter as fwa

    return store, backend, fwa.get_launchpad(backend)


def farm(
    campaign: CampaignArg,
    walltime: Annotated[
        float | None,
        typer.Option("--walltime", help="Job walltime in s (default: from the scheduler)."),
    ] = None,
    task_estimate: Annotated[
        float, typer.Option("--task-estimate", help="Expected seconds per Firework.")
    ] = 60.0,
    stale_after: StaleAfterOption = 60.0,
    margin: Annotated[
        float, typer.Option("--margin", help="Seconds kept free before the walltime.")
    ] = 30.0,
    offline_dir: Annotated[
        Path | None,
        typer.Option(
            "--offline-dir",
            help="Run the Fireworks reserved in this job directory (or in its "
            "job-$MATDX_ARRAY_INDEX) without a database (see `matdx sync`).",
        ),
    ] = None,
    root_works: Annotated[
        bool,
        typer.Option(
            "--root-works/--no-root-works",
            help="Rank 0 runs Fireworks too, besides handing them out (default); with "
            "--no-root-works it only hands them out (launch one process more).",
        ),
    ] = True,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="KEY=VALUE lines added to the environment first (how submitted jobs "
            "receive MATDX_DB_URI without it being written into the script).",
        ),
    ] = None,
    slots: Annotated[
        Path | None,
        typer.Option(
            "--slots",
            help="Site profile: run in one process (no mpiexec), each Firework on cores and "
            "nodes of its own, MPI programs started through the profile's task launcher.",
        ),
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option("--nodes", min=1, help="Nodes of the job (--slots; default: from the "
                     "scheduler's environment)."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Run a campaign's Fireworks over MPI ranks (inside a batch job, under mpiexec)."""
    import json
    import os

    from matdx.execution.farm import before_exit

    if env_file is not None:
        for line in env_file.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip():
                os.environ.setdefault(key.strip(), value.strip())
    if offline_dir is not None:
        from matdx.execution.offline import farm_offline

        sub = offline_dir / f"job-{os.environ.get('MATDX_ARRAY_INDEX', '0')}"
        target = sub if sub.is_dir() else offline_dir
        result = farm_offline(target, walltime, task_estimate, margin, root_works)
    elif slots is not None:
        from matdx.execution.farm import summarise
        from matdx.execution.slots import slot_farm
        from matdx.sites.models import load_profile

        result = summarise(
            slot_farm(campaign, load_profile(slots), nodes, walltime, task_estimate,
                      db_uri=db, stale_after_s=stale_after, margin_s=margin)
        )
    else:
        from matdx.execution.farm import farm as run_farm
        from matdx.execution.farm import summarise

        report = run_farm(
            campaign,
            walltime,
            task_estimate,
            db_uri=db,
            stale_after_s=stale_after,
            margin_s=margin,
            root_works=root_works,
        )
        result = None if report is None else summarise(report)
    if result is not None:  # rank 0
        console.print(json.dumps(result), highlight=False)
    if slots is None:  # the slot farm is one process, not an MPI rank
        before_exit()


def sync(
    campaign: CampaignArg,
    stale_after: StaleAfterOption = 60.0,
    db: DbOption = None,
) -> None:
    """Bring offline results (compute nodes without database) into the store."""
    from matdx.execution.offline import sync as do_sync

    with busy(f"syncing {campaign}"):
        store, backend, lp = _launchpad(db, campaign)
        r = do_sync(lp, store, campaign, stale_after, db_uri=backend.target.uri)
    console.print(
        f"ingested {r.ingested} records; {len(r.recovered)} offline runs recovered, "
        f"{len(r.lost)} lost and made READY again, {len(r.running)} still running"
        + ("; analysis done" if r.analysed else "")
    )


def recover(
    campaign: CampaignArg,
    stale_after: StaleAfterOption = 60.0,
    db: DbOption = None,
) -> None:
    """Find a campaign's lost runs (stale heartbeat) and make them READY again."""
    from matdx.execution.lostruns import recover_lost

    with busy(f"looking for lost runs of {campaign}"):
        lost = recover_lost(_launchpad(db, campaign)[2], campaign, stale_after)
    console.print(f"{len(lost)} lost Fireworks made READY again: {lost}")


def submit(
    campaign_file: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
    profile: Annotated[Path, typer.Option("--profile", help="Site profile YAML.")],
    nodes: Annotated[int | None, typer.Option("--nodes", help="Nodes per job.")] = None,
    ranks_per_node: Annotated[
        int | None, typer.Option("--ranks-per-node", help="MPI ranks per node.")
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="Threads per rank.")] = None,
    elapse: Annotated[
        str | None,
        typer.Option("--elapse", help="Walltime per job: seconds, HH:MM:SS or 2h, 30m."),
    ] = None,
    rscgrp: Annotated[
        str | None, typer.Option("--rscgrp", help="Resource group / partition.")
    ] = None,
    account: Annotated[
        str | None,
        typer.Option(
            "--account", "-g", help="Account (PJM group, Slurm account) charged for the jobs."
        ),
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Compute nodes without database access.")
    ] = False,
    task_estimate: Annotated[
        float | None, typer.Option("--task-estimate", help="Seconds per Firework.")
    ] = None,
    max_jobs: Annotated[
        int | None, typer.Option("--max-jobs", min=1, help="Submit at most this many jobs.")
    ] = None,
    margin: Annotated[
        float, typer.Option("--margin", help="Seconds kept free before each job's walltime.")
    ] = 30.0,
    stale_after: StaleAfterOption = 60.0,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print what would be queued and submitted and the job script; change nothing.",
        ),
    ] = False,
    slots: Annotated[
        bool,
        typer.Option("--slots", help="Run each job as a slot farm: every MPI task on cores and "
                     "nodes of its own (steps' resources), started by the profile's task "
                     "launcher."),
    ] = False,
    db: DbOption = None,
) -> None:
    """Submit a campaign to a batch system: few jobs, each packing many tasks (MPI farm)."""
    from matdx.execution.submit import submit as do_submit
    from matdx.workflows.campaign import load_campaign

    loaded = load_campaign(campaign_file)
    job = {
        k: v
        for k, v in {
            "nodes": nodes,
            "ranks_per_node": ranks_per_node,
            "threads_per_rank": threads,
            "elapse": elapse,
            "rscgrp": rscgrp,
            "group": account,
        }.items()
        if v is not None
    }
    with busy(f"planning {loaded.spec.name}"):
        r = do_submit(
            loaded,
            profile,
            job,
            offline=offline,
            task_estimate_s=task_estimate,
            max_jobs=max_jobs,
            db_uri=db,
            dry_run=dry_run,
            stale_after_s=stale_after,
            margin_s=margin,
            slots=slots,
        )
    p = r.packing
    would = "would be " if dry_run else ""
    console.print(
        ("dry run, nothing changed: " if dry_run else "")
        + f"{loaded.spec.name}: {r.run.n_unique} unique candidates "
        f"({r.run.n_done_before} computed, {r.run.n_queued_before} queued before), "
        f"{r.run.n_submitted} {would}newly queued"
        + (f", {len(r.recovered)} lost runs {would}made READY again" if r.recovered else "")
        + f"; {p.n_tasks if p else 0} tasks"
        + (
            f" → {p.n_jobs} job(s) × {p.tasks_per_job} task slots ({p.workers_per_job} "
            f"workers, ~{p.task_estimate_s:g} s per task)"
            if p and p.n_jobs
            else ""
        )
    )
    if dry_run:
        if offline and r.reserved:
            console.print(f"{r.reserved} Fireworks would be reserved for offline runs")
        if r.script_text is not None:
            console.print(f"job script ({r.job_dir / 'job.sh' if r.job_dir else ''}):")
            print(r.script_text, end="" if r.script_text.endswith("\n") else "\n")
    elif r.script is not None:
        console.print(
            f"script: {r.script}" + (f" (reserved {r.reserved} offline)" if offline else "")
        )
    if r.job_ids:
        console.print(f"submitted: {', '.join(r.job_ids)}")
