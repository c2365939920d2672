"""``matdx profile``: check a site profile and preview the batch script of a job.

Wired into the main CLI with ``app.add_typer(profile_app, name="profile")``. Errors are
:class:`~matdx.core.errors.InputError` one-liners, printed by :func:`matdx.cli.main.main`.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from matdx.core.errors import InputError

profile_app = typer.Typer(
    help="Site profiles (hpc_profiles/*.yaml): validate them and preview batch scripts.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ProfileFile = Annotated[Path, typer.Argument(help="Site profile YAML file.")]


@profile_app.command()
def check(file: ProfileFile) -> None:
    """Validate a site profile; print 'ok: <site> (<scheduler>)' and how matdx runs on its nodes.

    Fails (one line, exit status 1) when the compute nodes are of another architecture than
    this host and the profile names no Python for them; warns of ``spack load`` specs that
    may match several installs.
    """
    from matdx.sites import load_profile
    from matdx.sites.nodes import report

    p = load_profile(file)
    lines = report(p)
    typer.echo(f"ok: {p.site} ({p.scheduler})")
    for line in lines:
        typer.echo(line)


@profile_app.command()
def show(
    file: ProfileFile,
    nodes: Annotated[int | None, typer.Option("--nodes", help="Number of nodes.")] = None,
    ranks_per_node: Annotated[
        int | None, typer.Option("--ranks-per-node", help="MPI ranks per node.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="OpenMP threads per rank.")
    ] = None,
    elapse: Annotated[
        str | None, typer.Option("--elapse", help="Wall time: HH:MM:SS, 72h, 30m or seconds.")
    ] = None,
    group: Annotated[
        str | None,
        typer.Option("--account", "-g", help="Account: PJM group (-g) or Slurm account."),
    ] = None,
    rscgrp: Annotated[
        str | None, typer.Option("--rscgrp", help="Resource group (PJM) or partition (Slurm).")
    ] = None,
    job_name: Annotated[str | None, typer.Option("--job-name", help="Job name.")] = None,
    array: Annotated[
        str | None, typer.Option("--array", help="Bulk/array range, e.g. 0-9.")
    ] = None,
    command: Annotated[
        str | None,
        typer.Option("--command", help="Program and arguments, e.g. 'pw.x -in scf.in'."),
    ] = None,
    campaign: Annotated[
        Path | None,
        typer.Option("--campaign", help="Campaign file: print how the job's nodes are split "
                     "into task slots for each of its steps (matdx farm --slots)."),
    ] = None,
) -> None:
    """Resolve a job against a profile; print its layout and its batch script."""
    from matdx.schedulers import scheduler_for
    from matdx.sites import format_hms, load_profile, parse_job_request, resolve_job

    profile = load_profile(file)
    fields: dict[str, Any] = {
        "nodes": nodes,
        "ranks_per_node": ranks_per_node,
        "threads_per_rank": threads,
        "elapse": elapse,
        "group": group,
        "rscgrp": rscgrp,
        "job_name": job_name,
        "array": array,
    }
    if command is not None:
        try:
            fields["command"] = shlex.split(command)
        except ValueError as exc:
            raise InputError(f"--command cannot be split into words ({exc})") from None
    request = parse_job_request(
        {k: v for k, v in fields.items() if v is not None}, what="job options"
    )
    job = resolve_job(profile, request, what="job options")
    node, rg = profile.node, job.resource_group
    typer.echo(f"site: {profile.site} ({profile.scheduler})")
    typer.echo(
        f"resource group: {job.rscgrp} (nodes {rg.min_nodes}-{rg.max_nodes}, "
        f"elapse up to {format_hms(rg.max_elapse)})"
    )
    typer.echo(f"group: {job.group or '-'}")
    typer.echo(f"nodes: {job.nodes}")
    typer.echo(f"total ranks: {job.total_ranks} ({job.ranks_per_node} per node)")
    typer.echo(f"threads per rank: {job.threads_per_rank}")
    typer.echo(
        f"cores per node: {job.cores_used_per_node} used of {node.cores_per_node} "
        f"({node.numa_domains} {node.numa_name} x {node.cores_per_domain} cores, "
        f"{node.memory_gib:g} GiB)"
    )
    typer.echo(f"elapse: {job.elapse_hms}")
    typer.echo(f"{node.numa_name} mapping (each node):")
    for p in job.placement():
        doms = ", ".join(str(d) for d in p.domains)
        word = node.numa_name + ("s" if len(p.domains) > 1 else "")
        typer.echo(f"  rank {p.rank}: cores {p.first_core}-{p.last_core} ({word} {doms})")
    if campaign is not None:
        _show_slots(profile, job.nodes, campaign)
    typer.echo("batch script:")
    typer.echo(scheduler_for(profile).render(job), nl=False)


def _show_slots(profile: Any, nodes: int, campaign: Path) -> None:
    """Each step's task request, and the slots a job of ``nodes`` nodes runs at once."""
    from matdx.engines.specs import ENGINES
    from matdx.sites.slots import launch_prefix, plan_job, resolve_request
    from matdx.workflows.campaign import load_campaign

    plan = load_campaign(campaign).step_plan()
    hosts = [f"<host{i}>" for i in range(nodes)]
    typer.echo(f"task slots of a {nodes}-node job (matdx farm --slots):")
    for step in plan:
        mpi = ENGINES[step["engine"]].mpi
        request = resolve_request(profile, step["resources"], mpi, f"step {step['name']}")
        slots = plan_job(profile, nodes, request)
        where = "on the first node" if not mpi else f"on {nodes} node(s)"
        typer.echo(f"  {step['name']} ({step['engine']}): {request.describe()} per task; "
                   f"{len(slots)} at once {where}")
        if mpi and slots:
            first = slots[0]
            cores = f"cores {first.cores[0]}-{first.cores[-1]}" if first.cores else ""
            typer.echo(f"    slot 0: node(s) {list(first.nodes)} {cores}: "
                       f"{shlex.join(launch_prefix(profile, first, hosts, '<vcoord.0>'))}")
