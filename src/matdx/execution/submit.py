"""``matdx submit``: a campaign to batch jobs that pack many Fireworks each.

The campaign is planned and its workflow added as by ``matdx run --no-launch``; then
:func:`pack` decides how many jobs and how many tasks each, from the site profile (ranks
per job, walltime) and a per-task time estimate, and one batch submission (an array/bulk
job when more than one job is needed) runs the MPI task farm (:mod:`matdx.execution.farm`)
in each job. 1,000 small tasks become a handful of jobs, not 1,000.

Online, the farm ranks reach the database themselves. Offline (``offline=True``), the
Fireworks of each job are reserved now into ``job-<k>`` directories, the jobs run them
without a database, and ``matdx sync`` brings the results back.

Database credentials never enter a job script: the URI goes to a ``matdx.env`` file
readable by the owner only, which the farm reads (``--env-file``).
"""

from __future__ import annotations

import math
import os
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matdx.core.errors import InputError
from matdx.core.settings import get_settings
from matdx.engines.registry import ENGINES
from matdx.execution.lostruns import lost_fireworks, recover_lost
from matdx.schemas.names import CAMPAIGN, COMPUTE, KIND, PRESCREEN, SPEC, STAGE, STEP, spec_key
from matdx.workflows.campaign import LoadedCampaign
from matdx.workflows.runner import RunReport, campaign_db_uri, submit_campaign

if TYPE_CHECKING:
    from matdx.sites.job import ResolvedJob

ENV_FILE = "matdx.env"


@dataclass(frozen=True)
class Packing:
    """How a campaign's tasks are spread over batch jobs."""

    n_tasks: int
    task_estimate_s: float
    workers_per_job: int
    tasks_per_job: int
    n_jobs: int


def pack(
    n_tasks: int,
    workers: int,
    elapse_s: float,
    task_estimate_s: float,
    margin_s: float = 30.0,
    max_jobs: int | None = None,
) -> Packing:
    """Decide the number of jobs for ``n_tasks`` tasks.

    Each of a job's ``workers`` ranks can run ``floor((elapse - margin) / estimate)`` tasks
    (at least one); jobs are added until every task has a slot, up to ``max_jobs``.

    Parameters
    ----------
    n_tasks
        Fireworks to run.
    workers
        Worker ranks per job.
    elapse_s
        Walltime of a job.
    task_estimate_s
        Expected duration of one task.
    margin_s
        Time kept free at the end of a job.
    max_jobs
        Upper bound on the number of jobs.

    Returns
    -------
    Packing
        The decision.
    """
    per_worker = max(int((elapse_s - margin_s) // max(task_estimate_s, 1e-9)), 1)
    per_job = workers * per_worker
    n_jobs = max(math.ceil(n_tasks / per_job), 1) if n_tasks else 0
    if max_jobs is not None:
        n_jobs = min(n_jobs, max_jobs)
    return Packing(n_tasks, task_estimate_s, workers, per_job, n_jobs)


@dataclass
class SubmitReport:
    """What ``matdx submit`` did."""

    run: RunReport
    packing: Packing | None = None
    job_ids: list[str] = field(default_factory=list)
    script: Path | None = None
    job_dir: Path | None = None
    reserved: int = 0
    recovered: list[int] = field(default_factory=list)
    dry_run: bool = False
    script_text: str | None = None
    """The job script (also of a dry run, which writes no file)."""


def farm_launch_argv(job: ResolvedJob, host: str | None = None) -> list[str]:
    """How ``job`` starts the task farm: its farm launcher, then the Python that runs it.

    The launcher is the profile's ``farm_launcher`` (else its ``launcher``) with the job's
    layout filled in. The Python is the compute nodes' (:func:`matdx.sites.nodes.node_env`):
    the profile's ``compute_env.python`` or container, else this one, in which case a
    bare launcher name is looked up next to it first (the ``mpiexec`` that belongs to
    its mpi4py). Nothing of this host's environment is used for nodes of another
    architecture.
    """
    from matdx.schedulers.base import format_launcher
    from matdx.sites.nodes import node_env

    profile = job.profile
    env = node_env(profile, host)
    template = (profile.farm_launcher or profile.launcher).command
    argv = shlex.split(format_launcher(template, job))
    if env.from_host and argv and "/" not in argv[0]:
        local = Path(sys.executable).parent / argv[0]
        if local.exists():
            argv[0] = str(local)
    return [*argv, *env.python]


def write_env_file(job_dir: Path, db_uri: str) -> Path:
    """Write the job's database URI to a file only its owner can read."""
    path = job_dir / ENV_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f"MATDX_DB_URI={db_uri}\n")
    return path


def submit(
    loaded: LoadedCampaign,
    profile_path: Path,
    job: dict[str, Any] | None = None,
    offline: bool = False,
    task_estimate_s: float | None = None,
    max_jobs: int | None = None,
    db_uri: str | None = None,
    dry_run: bool = False,
    stale_after_s: float = 60.0,
    margin_s: float = 30.0,
    slots: bool = False,
) -> SubmitReport:
    """Plan a campaign and submit batch jobs that run it on a site.

    Parameters
    ----------
    loaded
        Validated campaign.
    profile_path
        Site profile (``hpc_profiles/*.yaml``).
    job
        Job request fields overriding the profile defaults (nodes, ranks_per_node,
        threads_per_rank, elapse, rscgrp, group).
    offline
        Reserve the Fireworks now and run them without database access.
    task_estimate_s
        Expected seconds per Firework (default: batch size × the engine's estimate).
    max_jobs
        Most jobs to submit.
    db_uri
        Database URI.
    dry_run
        Plan only: report what would be queued, recovered, reserved and submitted, and the
        job script (:attr:`SubmitReport.script_text`), and change nothing (no database
        write, no file).
    stale_after_s
        Heartbeat age after which the farm reruns a RUNNING Firework.
    margin_s
        Time each job keeps free before its walltime.
    slots
        Run each job as a slot farm (``matdx farm --slots``, one process, each MPI task
        on cores and nodes of its own; see :mod:`matdx.execution.slots`) instead of the
        MPI farm.

    Returns
    -------
    SubmitReport
        Counts, the packing decision and the job ids.
    """
    from matdx.schedulers import scheduler_for
    from matdx.sites import load_profile, parse_job_request, resolve_job

    profile = load_profile(profile_path)
    if slots and offline:
        raise InputError("--slots needs the database: it cannot run offline")
    base = parse_job_request(
        {"job_name": _job_name(loaded.spec.name), **(job or {})}, what="job options"
    )
    resolved = resolve_job(profile, base, what="job options")
    settings = get_settings(db_uri=db_uri or campaign_db_uri(loaded))
    from matdx.sites.llio import check_data_dir, job_volumes, node_paths

    check_data_dir(profile, settings.data_dir)
    from matdx.workflows.context import open_store

    store, backend = open_store(settings.db_uri, read_only=dry_run)
    if backend.target.kind == "embedded" and not offline:
        raise InputError(
            "the embedded store is single-process: submit needs a MongoDB server "
            "(set MATDX_DB_URI), or use offline mode"
        )
    from matdx.workflows import fireworks_adapter as fwa

    if dry_run:
        lp = fwa.get_launchpad(backend, init=False)
        report, ready = _plan_only(loaded, store, lp)
        report.recovered = lost_fireworks(lp, loaded.spec.name, stale_after_s)
        ready[PRESCREEN] += len(report.recovered)
    else:
        report = SubmitReport(submit_campaign(loaded, launch=False, db_uri=settings.db_uri))
        lp = fwa.get_launchpad(backend)
        report.recovered = recover_lost(lp, loaded.spec.name, stale_after_s)
        ready = _ready_tasks(lp, loaded.spec.name)
    report.dry_run = dry_run
    n_tasks = sum(ready.values())
    # a task is one batch of a step: the estimate of the longest that can come next (a
    # stage queues its step's batches)
    plan = loaded.step_plan()
    estimates = [
        p["batch_size"] * ENGINES[p["engine"]].seconds_per_structure
        for p in plan
        if p["name"] in ready or not ready
    ]
    estimate = task_estimate_s or max(estimates)
    # every rank of the job runs tasks: rank 0 hands them out besides (see farm.local_slot);
    # a slot farm runs as many as the job holds slots of the smallest-packing step
    workers = resolved.total_ranks if not slots else _slot_workers(profile, resolved.nodes, plan)
    report.packing = pack(n_tasks, workers, resolved.elapse, estimate, margin_s, max_jobs)
    if report.packing.n_jobs == 0:
        return report

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    job_dir = settings.runs_dir / loaded.spec.name / f"submit-{stamp}"
    report.job_dir = job_dir
    n_jobs = report.packing.n_jobs
    if dry_run and offline:
        report.reserved = min(n_tasks, n_jobs * report.packing.tasks_per_job)
    elif offline:
        job_dir.mkdir(parents=True, exist_ok=True)
        from matdx.execution.offline import reserve_job

        for k in range(n_jobs):
            report.reserved += len(
                reserve_job(
                    lp, store, loaded.spec.name, job_dir / f"job-{k}", report.packing.tasks_per_job
                )
            )
        backend.flush()

    if dry_run:
        env_file = job_dir / ENV_FILE
    else:
        job_dir.mkdir(parents=True, exist_ok=True)
        env_file = write_env_file(job_dir, settings.db_uri)
    if slots:
        from matdx.sites.nodes import node_env

        launch = [*node_env(profile).python]
    else:
        launch = farm_launch_argv(resolved)
    argv = [
        *launch,
        "-m",
        "matdx.cli.main",
        "farm",
        loaded.spec.name,
        "--walltime",
        str(resolved.elapse),
        "--task-estimate",
        f"{estimate:g}",
        "--stale-after",
        f"{stale_after_s:g}",
        "--margin",
        f"{margin_s:g}",
        "--env-file",
        str(env_file),
    ]
    if offline:
        argv += ["--offline-dir", str(job_dir)]
    if slots:
        argv += ["--slots", str(Path(profile_path).resolve()), "--nodes", str(resolved.nodes)]
    request = base.model_copy(
        update={
            "command": argv,
            "use_launcher": False,
            "use_container": False,  # the launcher starts the container (sites.nodes)
            "workdir": str(job_dir),
            "llio_gfscache": job_volumes(profile, [job_dir, *node_paths(profile)])
            if profile.scheduler == "pjm"
            else None,
            "array": f"0-{n_jobs - 1}" if n_jobs > 1 else None,
            "stdout": None,
            "env": {
                **base.env,
                "MATDX_DATA_DIR": str(settings.data_dir),
                "MATDX_WALLTIME_S": str(resolved.elapse),
                "MATDX_FARM_RANKS": str(resolved.total_ranks),
            },
        }
    )
    final = resolve_job(profile, request, what="job options")
    scheduler = scheduler_for(profile)
    script = job_dir / "job.sh"
    text = scheduler.render(final)
    from matdx.sites.nodes import check_job_text

    check_job_text(profile, text)
    report.script_text = text
    if not dry_run:
        script.write_text(text, encoding="utf-8")
        report.script = script
        cwd = os.getcwd()
        os.chdir(job_dir)  # the batch system's default output files land in the job directory
        try:
            report.job_ids.append(scheduler.submit(script, final))
        finally:
            os.chdir(cwd)
    return report


def _slot_workers(profile: Any, nodes: int, plan: list[dict[str, Any]]) -> int:
    """Tasks a slot-farm job runs at once: the fewest slots of any of the campaign's steps."""
    from matdx.sites.slots import plan_job, resolve_request

    counts = [
        len(plan_job(profile, nodes, resolve_request(
            profile, p["resources"], ENGINES[p["engine"]].mpi, f"step {p['name']}")))
        for p in plan
    ]
    return max(min(counts), 1)


def _ready_tasks(lp: Any, campaign: str) -> Counter[str]:
    """READY compute and stage Fireworks of a campaign, by step."""
    return Counter(
        d["spec"][SPEC][STEP]
        for d in lp.fireworks.find(
            {
                spec_key(CAMPAIGN): campaign,
                spec_key(KIND): {"$in": [COMPUTE, STAGE]},
                "state": "READY",
            },
            {spec_key(STEP): 1},
        )
    )


def _plan_only(loaded: LoadedCampaign, store: Any, lp: Any) -> tuple[SubmitReport, Counter[str]]:
    """What :func:`submit_campaign` would queue, found by reading only.

    Returns the report and the READY tasks by step after the queueing: those already
    READY plus the new batches of the pre-screen.
    """
    from matdx.core.progress import NullProgress
    from matdx.workflows import fireworks_adapter as fwa
    from matdx.workflows.runner import plan_materials

    name = loaded.spec.name
    plan = plan_materials(loaded, store, NullProgress())
    ids = [m.material_id for m in plan.materials]
    done = store.completed(ids, loaded.settings_hash)
    queued = fwa.queued_material_ids(lp, name) if fwa.active_fireworks(lp, name) else set()
    todo = [i for i in ids if i not in done and i not in queued]
    run = RunReport(
        name,
        n_raw=plan.n_raw,
        n_unique=len(ids),
        n_reused=plan.n_reused,
        n_done_before=len(done),
        n_queued_before=len(queued & set(ids)),
        n_submitted=len(todo),
    )
    ready = _ready_tasks(lp, name)
    ready[PRESCREEN] += math.ceil(len(todo) / loaded.spec.batch_size)
    return SubmitReport(run), ready


def _job_name(campaign: str) -> str:
    safe = "".join(c if c.isalnum() or c in "_-" else "-" for c in campaign)
    return f"mdx-{safe}"[:32]
