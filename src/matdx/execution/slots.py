"""The slot farm: MPI tasks on cores and nodes of their own, never more than a node has.

One process per batch job (the job script runs it, no ``mpiexec``) claims a campaign's
Fireworks one at a time, asks each for its step's resources
(:func:`matdx.sites.slots.resolve_request`), takes a slot of free cores for it from the
job's :class:`~matdx.sites.slots.CorePool` and runs it in a worker process: an MPI engine's
program starts on that slot through the site's task launcher
(:func:`~matdx.sites.slots.launch_prefix`; a Slurm job step with ``srun --exact``, a
Fujitsu MPI ``mpiexec --vcoordfile``, Open MPI's ``mpirun`` on a core set), given to the
engine by :func:`~matdx.engines.base.task_launch`; a serial task (EMT, the step analyses)
computes in the worker itself, pinned to its one core on the job's first node. Tasks wait
in claim order: one that needs more cores than are free waits (with the tasks behind it)
until running ones end, so that the sum of ranks × threads of the running tasks on a node
never exceeds its cores.

Walltime: no task starts with less than ``task_estimate_s`` left; engines get the job's
deadline (:func:`~matdx.execution.farm.set_deadline`), so a resumable calculation still
running then stops cleanly and continues in the next job, as in the MPI farm.

    matdx farm <campaign> --slots hpc_profiles/ci_slurm.yaml --walltime 3600
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matdx.core.errors import InputError
from matdx.engines.base import TaskLaunch, task_launch
from matdx.execution.farm import WALLTIME_MARGIN_S, FarmReport, job_clock, run_firework
from matdx.sites.models import SiteProfile
from matdx.sites.slots import (
    MAX_LAUNCHES,
    SERIAL,
    WHOLE_NODES,
    CorePool,
    Slot,
    SlotRequest,
    launch_prefix,
    rank_output,
    resolve_request,
    slot_env,
    vcoord_text,
)

PRELOAD = ("matdx.execution.farm", "matdx.workflows.fireworks_adapter", "matdx.workflows.compute")
"""Modules each worker process imports when it starts."""

MAX_WORKERS = 4096
"""Most tasks one farm process runs at once."""


@dataclass
class SlotRun:
    """What :func:`run_slots` ran."""

    states: dict[int, str] = field(default_factory=dict)
    stopped: bool = False
    unstarted: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)


def run_slots(
    pool: CorePool,
    claim: Callable[[], int | None],
    request_of: Callable[[int], SlotRequest],
    start: Callable[[int, Slot], Future[tuple[int, str]]],
    time_left: Callable[[], float],
    task_estimate: float,
    max_mpi: int | None = None,
) -> SlotRun:
    """Run claimed tasks on disjoint slots of ``pool`` until none is left or time is up.

    A claimed task that finds too few free cores waits, first in line, for running ones
    to end. A task larger than the job is refused (``refused``) and never started.

    Parameters
    ----------
    pool
        The job's cores.
    claim
        Next task id, ``None`` if there is none now.
    request_of
        What a task needs.
    start
        Starts a task on its slot; the future gives ``(task id, final state)``.
    time_left
        Seconds left for starting tasks.
    task_estimate
        No task starts with less time left.
    max_mpi
        Most MPI tasks running at once (the launcher's limit, see
        :data:`~matdx.sites.slots.MAX_LAUNCHES`).
    """
    result = SlotRun()
    running: dict[Future[tuple[int, str]], Slot] = {}
    waiting: tuple[int, SlotRequest] | None = None
    exhausted = False
    while True:
        if not result.stopped and time_left() < task_estimate:
            result.stopped = True
            if waiting is not None:
                result.unstarted.append(waiting[0])
                waiting = None
        while not result.stopped:
            if waiting is None:
                if exhausted:
                    break
                task = claim()
                if task is None:
                    exhausted = True
                    break
                try:
                    request = request_of(task)
                except InputError as exc:
                    result.refused[task] = str(exc)
                    continue
                if not pool.fits(request):
                    result.refused[task] = (
                        f"needs {request.describe()}; the job has {pool.nodes} node(s) of "
                        f"{pool.node.cores_per_node} cores"
                    )
                    continue
                waiting = (task, request)
            task, request = waiting
            mpi_running = sum(1 for s in running.values() if s.request.mpi)
            if request.mpi and max_mpi is not None and mpi_running >= max_mpi:
                break
            slot = pool.take(request, first_node_only=not request.mpi)
            if slot is None:
                break
            waiting = None
            running[start(task, slot)] = slot
        if not running:
            if waiting is not None:  # cannot happen: an empty pool fits every request
                result.unstarted.append(waiting[0])
            return result
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for fut in done:
            pool.give(running.pop(fut))
            task, state = fut.result()
            result.states[task] = state
        # a finished Firework may have made others READY (the analysis after the batches)
        exhausted = False


def job_hosts(profile: SiteProfile, env: dict[str, str] | None = None) -> list[str]:
    """Host names of the job's nodes, in order (Slurm: ``SLURM_JOB_NODELIST``)."""
    env = dict(os.environ if env is None else env)
    if profile.scheduler == "slurm" and env.get("SLURM_JOB_NODELIST"):
        out = subprocess.run(
            [profile.command("scontrol"), "show", "hostnames", env["SLURM_JOB_NODELIST"]],
            capture_output=True, text=True, check=True, timeout=profile.command_timeout,
        )
        return out.stdout.split()
    return list(profile.node.hostnames) or [socket.gethostname()]


def job_nodes(env: dict[str, str] | None = None) -> int:
    """Nodes of the current job (Slurm ``SLURM_JOB_NUM_NODES``, PJM ``PJM_NODE``), else 1."""
    env = dict(os.environ if env is None else env)
    for key in ("SLURM_JOB_NUM_NODES", "PJM_NODE"):
        if env.get(key, "").isdigit():
            return int(env[key])
    return 1


def firework_request(lp: Any, profile: SiteProfile, fw_id: int) -> SlotRequest:
    """What Firework ``fw_id`` needs: its step's resources for an MPI engine, else a core."""
    from matdx.engines.specs import ENGINES
    from matdx.schemas.names import COMPUTE, SPEC

    doc = lp.fireworks.find_one({"fw_id": fw_id}, {"spec": 1}) or {}
    spec = doc.get("spec", {})
    if spec.get(SPEC, {}).get("kind") != COMPUTE:
        return SERIAL
    step = spec["_tasks"][0]["kwargs"]["step"]
    step = json.loads(step) if isinstance(step, str) else step
    engine = ENGINES.get(step["engine"])
    mpi = engine is not None and engine.mpi
    return resolve_request(profile, step.get("resources"), mpi, f"step {step['name']}")


def slot_launch(
    profile: SiteProfile, slot: Slot, hosts: list[str], vcoord_path: Path
) -> TaskLaunch:
    """How an MPI task starts its program on ``slot``: prefix, environment, rank output.

    On a PJM site the slot's VCOORD file is written to ``vcoord_path`` first.
    """
    vcoord = ""
    if profile.scheduler == "pjm":
        vcoord_path.write_text(vcoord_text(slot))
        vcoord = str(vcoord_path)
    prefix = launch_prefix(profile, slot, hosts, vcoord)
    return TaskLaunch(prefix, slot_env(slot), rank_output(profile, prefix))


def _preload() -> None:
    from importlib import import_module

    for name in PRELOAD:
        import_module(name)


def run_in_slot(
    fw_id: int,
    campaign: str,
    run_dir: str,
    db_uri: str | None,
    deadline: float | None,
    launch: TaskLaunch | None,
    cores: tuple[int, ...] | None,
) -> tuple[int, str]:
    """Worker side: run a Firework with its slot's launch, or pinned to its cores if serial."""
    everything = os.sched_getaffinity(0) if cores else None
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        with task_launch(launch):
            return run_firework(fw_id, campaign, run_dir, db_uri, deadline)
    finally:
        if everything:
            os.sched_setaffinity(0, everything)


def slot_farm(
    campaign: str,
    profile: SiteProfile,
    nodes: int | None = None,
    walltime_s: float | None = None,
    task_estimate_s: float = 60.0,
    run_dir: Path | None = None,
    db_uri: str | None = None,
    stale_after_s: float = 60.0,
    margin_s: float = WALLTIME_MARGIN_S,
) -> FarmReport:
    """Run a campaign's Fireworks on slots of the current job's nodes (see the module).

    Parameters
    ----------
    campaign
        Campaign whose Fireworks to run.
    profile
        The site: its nodes, scheduler and task launcher.
    nodes
        Nodes of the job (default: from the scheduler's environment, else 1).
    walltime_s, task_estimate_s, run_dir, db_uri, stale_after_s, margin_s
        As :func:`matdx.execution.farm.farm`.
    """
    from matdx.core.retry import retry_db
    from matdx.core.settings import get_settings
    from matdx.execution.lostruns import recover_lost
    from matdx.workflows import fireworks_adapter as fwa
    from matdx.workflows.context import open_store
    from matdx.workflows.coordination import claim_next, release_unstarted

    begin = time.monotonic()
    settings = get_settings(db_uri=db_uri)
    run_dir = run_dir or settings.runs_dir / campaign
    time_left, deadline = job_clock(walltime_s, margin_s, begin)
    store, backend = open_store(db_uri)
    if backend.target.kind == "embedded":
        raise InputError(
            "the embedded store is single-process: farm needs a MongoDB server (set MATDX_DB_URI)"
        )
    store.campaign(campaign)
    lp = fwa.get_launchpad(backend)
    where = backend.target.display
    pool = CorePool(nodes or job_nodes(), profile.node, WHOLE_NODES[profile.scheduler])
    hosts = job_hosts(profile)
    # at most one task per core runs at once; workers start when needed
    report = FarmReport(workers=min(pool.nodes * profile.node.cores_per_node, MAX_WORKERS))
    report.recovered = retry_db(
        lambda: recover_lost(lp, campaign, stale_after_s), "recover lost runs", where
    )
    owner = f"{socket.gethostname()}:{os.getpid()}"
    slot_dir = Path(run_dir) / "slots"
    slot_dir.mkdir(parents=True, exist_ok=True)
    failed: set[int] = set()

    def claim() -> int | None:
        return retry_db(
            lambda: claim_next(lp, campaign, owner, exclude=failed, stale_after=stale_after_s),
            "claim a Firework",
            where,
        )

    # workers start from a fresh interpreter: no database connection of this process
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(
        report.workers, mp_context=context, initializer=_preload
    ) as workers:

        def start(fw_id: int, slot: Slot) -> Future[tuple[int, str]]:
            launch, cores = None, None
            if slot.request.mpi:
                launch = slot_launch(profile, slot, hosts, slot_dir / f"vcoord.{fw_id}")
                print(f"matdx farm: Firework {fw_id} on node(s) {list(slot.nodes)} cores "
                      f"{slot.core_list()}: {shlex.join(launch.prefix)}", flush=True)
            elif profile.scheduler == "local" or pool.nodes == 1:
                cores = slot.cores
            return workers.submit(
                run_in_slot, fw_id, campaign, str(run_dir), backend.target.uri, deadline,
                launch, cores,
            )

        def request_of(fw_id: int) -> SlotRequest:
            return retry_db(lambda: firework_request(lp, profile, fw_id), "read a Firework", where)

        ran = run_slots(pool, claim, request_of, start, time_left, task_estimate_s,
                        MAX_LAUNCHES.get(profile.scheduler))
    for fw_id, why in ran.refused.items():
        print(f"matdx farm: Firework {fw_id}: not run: {why}", flush=True)
    failed |= set(ran.unstarted) | set(ran.refused)
    report.states, report.stopped_for_walltime = ran.states, ran.stopped
    retry_db(lambda: release_unstarted(lp, failed), "release claims", where)
    report.elapsed_s = time.monotonic() - begin
    return report
