"""The MPI task farm: one batch job, many ranks, many Fireworks.

Rank 0 dispatches: it recovers lost Fireworks of the campaign, claims READY Fireworks one
at a time (see :func:`matdx.workflows.coordination.claim_next`) and hands each to a free rank
through :class:`mpi4py.futures.MPICommExecutor`. The other ranks run them (EMT batches
run serially on their rank; MPI engines run through the site's launcher), and so does
rank 0 itself, in one thread beside the dispatching (:func:`local_slot`): every process
of the job computes, and none competes with the others for a core. Dispatching takes
little: the claims, and mpi4py's thread that hands tasks out and collects results. Rank
0 stops claiming when the time left before the job's walltime is below a task's
estimate, waits for the tasks in flight, and exits; what is left stays READY for the
next job. A task cut by the walltime is found by its stale heartbeat and rerun.

    mpiexec -n 48 python -m matdx.cli.main farm <campaign> --walltime 3600

With ``--no-root-works`` rank 0 only dispatches; launch one process more than ranks
that compute.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matdx.core.errors import InputError

WALLTIME_MARGIN_S = 30.0
"""Time kept free at the end of a job for the last writes."""

QUEUED_TASKS = 1
"""Claimed tasks kept waiting in the executor's queue beyond one per worker."""

DISPATCH_POLL_S = 0.005
"""Longest sleep of mpi4py's dispatching thread between looks for finished tasks.

mpi4py's default, 1 ms, wakes that thread about 1,000 times a second on rank 0, and each
wake-up takes the core and the GIL of the task that rank 0 runs beside it: its EMT
relaxations ran 6 % slower than in a plain process (2 to 3 % at 5 ms, with the ranks
bound to cores). A finished task waits at most this long to hand back its result, and
tasks last seconds to hours. ``MPI4PY_FUTURES_BACKOFF``, if set, takes precedence.
"""


@dataclass
class FarmReport:
    """What one farm run did."""

    workers: int
    recovered: list[int] = field(default_factory=list)
    states: dict[int, str] = field(default_factory=dict)
    stopped_for_walltime: bool = False
    elapsed_s: float = 0.0


@dataclass
class DriveResult:
    """What :func:`drive` ran."""

    states: dict[int, str] = field(default_factory=dict)
    stopped: bool = False
    unstarted: list[int] = field(default_factory=list)


def walltime_from_env(env: dict[str, str] | None = None) -> float | None:
    """Seconds of walltime the current batch job has, from the scheduler's environment.

    Reads ``MATDX_WALLTIME_S`` (set in matdx-rendered scripts), Slurm's
    ``SLURM_JOB_END_TIME`` (epoch seconds) and PJM's ``PJM_ELAPSE_LIMIT`` (seconds).
    """
    env = dict(os.environ if env is None else env)
    if env.get("MATDX_WALLTIME_S"):
        return float(env["MATDX_WALLTIME_S"])
    if env.get("SLURM_JOB_END_TIME"):
        return max(float(env["SLURM_JOB_END_TIME"]) - time.time(), 0.0)
    if env.get("PJM_ELAPSE_LIMIT"):
        return float(env["PJM_ELAPSE_LIMIT"])
    return None


RANKS_ENV = "MATDX_FARM_RANKS"
"""Number of ranks the job launched the farm with (set in matdx-rendered job scripts)."""


def check_world_size(size: int, env: dict[str, str] | None = None) -> None:
    """Refuse to start when MPI sees another number of ranks than the job launched.

    A launcher of another MPI than the one mpi4py was built with starts every process
    as a world of its own (size 1): each would then run the whole farm alone.

    Raises
    ------
    InputError
        Naming both numbers and the fix.
    """
    expected = (os.environ if env is None else env).get(RANKS_ENV)
    if expected and expected.isdigit() and int(expected) != size:
        raise InputError(
            f"farm: MPI sees {size} rank(s) but the job launched {expected} ({RANKS_ENV}): "
            f"the launcher does not belong to the MPI of this Python's mpi4py; set the "
            f"profile's farm_launcher to that MPI's mpiexec"
        )


DEADLINE_ENV = "MATDX_DEADLINE"
"""Epoch seconds by which a worker's calculations must have stopped (resumable engines
stop cleanly before it and are queued again, see :func:`matdx.workflows.compute.compute_batch`)."""


def set_deadline(deadline: float | None) -> None:
    """Tell this process's calculations the job's deadline (``None``: no limit)."""
    if deadline is None:
        os.environ.pop(DEADLINE_ENV, None)
    else:
        os.environ[DEADLINE_ENV] = f"{deadline:.0f}"


def job_clock(
    walltime_s: float | None, margin_s: float | None, start: float
) -> tuple[Callable[[], float], float | None]:
    """``(time_left, deadline)`` of a job that began at ``start`` (``time.monotonic()``).

    The job's walltime is ``walltime_s``, else the scheduler's (:func:`walltime_from_env`),
    else unlimited. ``time_left()`` is what remains for starting tasks and ``deadline``
    (epoch seconds, see :func:`set_deadline`) is when calculations must stop; both keep
    ``margin_s`` (default :data:`WALLTIME_MARGIN_S`) free before the end.
    """
    walltime = walltime_s if walltime_s is not None else walltime_from_env()
    if walltime is None:
        return (lambda: float("inf")), None
    end = start + walltime - (WALLTIME_MARGIN_S if margin_s is None else margin_s)
    return (lambda: end - time.monotonic()), time.time() + end - time.monotonic()


def run_firework(
    fw_id: int, campaign: str, run_dir: str, db_uri: str | None, deadline: float | None = None
) -> tuple[int, str]:
    """Worker side: run one claimed Firework; return ``(fw_id, final state)``.

    An error (the database gone while FireWorks records the end of the launch, say) is
    returned as the state ``"ERROR: ..."`` rather than raised: the master goes on, and the
    Firework, left RUNNING without a heartbeat, is rerun as a lost run.
    """
    from matdx.workflows.context import default_db, open_store

    set_deadline(deadline)
    try:
        _, backend = open_store(db_uri)
        from matdx.workflows import fireworks_adapter as fwa

        lp = fwa.get_launchpad(backend)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        launch_dir = Path(run_dir) / f"launcher_{stamp}_{fw_id}"
        with default_db(backend.target.uri):
            state = fwa.run_one(lp, fw_id, campaign, launch_dir)
    except Exception as exc:  # reported to the master, which carries on
        return fw_id, f"ERROR: {type(exc).__name__}: {str(exc)[:300]}"
    return fw_id, state


def _take_queued(
    in_flight: dict[Future[tuple[int, str]], tuple[int, int]], other_than: int
) -> int | None:
    """Cancel one task queued (not started) in another pool; return its id."""
    for fut, (task_id, where) in list(in_flight.items()):
        if where != other_than and fut.cancel():
            del in_flight[fut]
            return task_id
    return None


@contextmanager
def farm_executors(
    comm: Any, root_works: bool = True
) -> Iterator[tuple[Executor | None, Executor | None]]:
    """``(MPI executor, local slot)`` on rank 0, ``(None, None)`` on the other ranks.

    The other ranks serve the executor's tasks until rank 0 leaves the block. Every rank
    first checks that MPI sees the ranks the job launched (:func:`check_world_size`).
    """
    from mpi4py.futures import MPICommExecutor

    check_world_size(comm.Get_size())

    options = {} if "MPI4PY_FUTURES_BACKOFF" in os.environ else {"backoff": DISPATCH_POLL_S}
    with MPICommExecutor(comm, root=0, **options) as executor:
        if executor is None:
            yield None, None
            return
        with local_slot(comm, root_works) as local:
            yield executor, local


@contextmanager
def local_slot(comm: Any, enabled: bool = True) -> Iterator[Executor | None]:
    """An executor of one thread in which the dispatching rank (0 of ``comm``) runs tasks too.

    ``None`` on the other ranks, and in a single process: that runs its tasks in
    mpi4py's own thread already, and two threads of one process must not run tasks at
    once (a launch changes the working directory).
    """
    if not enabled or comm.Get_rank() != 0 or comm.Get_size() < 2:
        yield None
        return
    with ThreadPoolExecutor(1, thread_name_prefix="matdx-farm-rank0") as ex:
        yield ex


def drive(
    executor: Executor,
    workers: int,
    claim: Callable[[], int | None],
    submit: Callable[[Executor, int], Future[tuple[int, str]]],
    time_left: Callable[[], float],
    task_estimate: float,
    on_result: Callable[[int, str], None] | None = None,
    queued: int = QUEUED_TASKS,
    local: Executor | None = None,
) -> DriveResult:
    """Keep every worker busy until there is nothing to claim or no time.

    Besides one task per worker, up to ``queued`` claimed tasks wait in the executor's
    queue, so that a worker that finishes starts the next one at once instead of waiting
    for this loop to claim it. A queued task may start only after a running one ends, so
    one is queued only while the time left is at least twice ``task_estimate``; when time
    runs out, queued tasks that have not started are cancelled. When nothing is left to
    claim, a free slot takes over a task still queued for another.

    Parameters
    ----------
    executor
        Runs tasks on ``workers`` workers (the other MPI ranks).
    local
        Runs one task at a time in this process, besides ``executor`` (see
        :func:`local_slot`).

    Returns
    -------
    DriveResult
        Final state of every task run, whether claiming stopped for time, and the tasks
        claimed but never started (their claims are to be given back).
    """
    # (executor, tasks it runs at once, tasks queued beyond those)
    pools = [(executor, workers, queued)] + ([(local, 1, 0)] if local is not None else [])
    in_flight: dict[Future[tuple[int, str]], tuple[int, int]] = {}
    result = DriveResult()
    exhausted = False
    while True:
        if not result.stopped and time_left() < task_estimate:
            result.stopped = True
        if result.stopped:
            # tasks still queued now would start with less time left than they need
            for fut in [f for f in in_flight if f.cancel()]:
                result.unstarted.append(in_flight.pop(fut)[0])
        for index, (ex, slots, extra) in enumerate(pools):
            while not exhausted and not result.stopped:
                held = sum(1 for _, where in in_flight.values() if where == index)
                if held >= slots + extra or (
                    held >= slots and time_left() < 2 * task_estimate
                ):
                    break
                task_id = claim()
                if task_id is None:
                    exhausted = True
                    # a free slot takes over a task still queued for a busy one
                    task_id = _take_queued(in_flight, other_than=index)
                    if task_id is not None:
                        in_flight[submit(ex, task_id)] = (task_id, index)
                    break
                in_flight[submit(ex, task_id)] = (task_id, index)
        if not in_flight:
            return result
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for fut in done:
            in_flight.pop(fut)
            task_id, state = fut.result()
            result.states[task_id] = state
            if on_result is not None:
                on_result(task_id, state)
        # a finished Firework may have made others READY (the analysis after the batches)
        exhausted = False


def farm(
    campaign: str,
    walltime_s: float | None = None,
    task_estimate_s: float = 60.0,
    run_dir: Path | None = None,
    db_uri: str | None = None,
    stale_after_s: float = 60.0,
    margin_s: float = WALLTIME_MARGIN_S,
    root_works: bool = True,
) -> FarmReport | None:
    """Run a campaign's Fireworks over the ranks of ``MPI.COMM_WORLD``.

    Parameters
    ----------
    campaign
        Campaign whose Fireworks to run.
    walltime_s
        The job's walltime (default: from the scheduler environment, else unlimited).
    task_estimate_s
        Expected duration of one Firework; none is started with less time left.
    run_dir
        Directory for launch directories (default: ``<data_dir>/runs/<campaign>``).
    db_uri
        Database (a server: the embedded store is single-process).
    stale_after_s
        Heartbeat age after which a RUNNING Firework counts as lost.
    margin_s
        Time kept free before the walltime.
    root_works
        Rank 0 runs Fireworks too, besides dispatching them (see :func:`local_slot`).

    Returns
    -------
    FarmReport or None
        On rank 0; ``None`` on worker ranks.
    """
    from mpi4py import MPI

    from matdx.core.settings import get_settings
    from matdx.workflows.context import open_store

    start = time.monotonic()
    comm = MPI.COMM_WORLD
    settings = get_settings(db_uri=db_uri)
    run_dir = run_dir or settings.runs_dir / campaign
    time_left, deadline = job_clock(walltime_s, margin_s, start)
    with farm_executors(comm, root_works) as (executor, local):
        if executor is None:
            return None
        store, backend = open_store(db_uri)
        if backend.target.kind == "embedded":
            raise InputError(
                "the embedded store is single-process: farm needs a MongoDB server "
                "(set MATDX_DB_URI)"
            )
        store.campaign(campaign)
        from matdx.execution.lostruns import recover_lost
        from matdx.workflows import fireworks_adapter as fwa
        from matdx.workflows.coordination import claim_next, release_unstarted

        lp = fwa.get_launchpad(backend)
        workers = max(comm.Get_size() - 1, 1)
        report = FarmReport(workers=workers + (local is not None))
        from matdx.core.retry import retry_db

        where = backend.target.display
        report.recovered = retry_db(
            lambda: recover_lost(lp, campaign, stale_after_s), "recover lost runs", where
        )
        owner = f"{socket.gethostname()}:{os.getpid()}"

        def submit(ex: Executor, fw_id: int) -> Future[tuple[int, str]]:
            return ex.submit(
                run_firework, fw_id, campaign, str(run_dir), backend.target.uri, deadline
            )

        failed: set[int] = set()

        def claim() -> int | None:
            return retry_db(
                lambda: claim_next(lp, campaign, owner, exclude=failed, stale_after=stale_after_s),
                "claim a Firework",
                where,
            )

        def on_result(fw_id: int, state: str) -> None:
            if state.startswith("ERROR"):
                print(f"matdx farm: Firework {fw_id}: {state}", file=sys.stderr, flush=True)
                failed.add(fw_id)

        # no queued tasks online: a claim held by a queued task of a job that is killed
        # would keep its Firework from every other job
        ran = drive(
            executor,
            workers,
            claim,
            submit,
            time_left,
            task_estimate_s,
            on_result,
            queued=0,
            local=local,
        )
        report.states, report.stopped_for_walltime = ran.states, ran.stopped
        # Fireworks that never started here (e.g. an unwritable scratch directory) stay
        # READY: give their claims back so that another job can run them
        retry_db(lambda: release_unstarted(lp, failed), "release claims", where)
        report.elapsed_s = time.monotonic() - start
        return report


def before_exit() -> None:
    """Make the end of a farm process quick: keep the garbage collector off its objects.

    When an interpreter that has loaded pymatgen, SciPy and ASE exits, its last garbage
    collections walk every object it holds: about 0.2 s, paid by every rank at the end of
    the job. Moving them to the collector's permanent generation (:func:`gc.freeze`)
    skips that walk; the exit is otherwise normal (exit handlers run, MPI is finalised).
    Only for MPI ranks: a single process (no ``mpiexec``, e.g. in tests) is left as is.
    """
    import gc

    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_size() > 1:
        gc.freeze()


def summarise(report: FarmReport) -> dict[str, Any]:
    """A JSON-friendly summary of a farm run."""
    counts: dict[str, int] = {}
    for state in report.states.values():
        counts[state] = counts.get(state, 0) + 1
    return {
        "workers": report.workers,
        "fireworks": counts,
        "recovered": report.recovered,
        "stopped_for_walltime": report.stopped_for_walltime,
        "elapsed_s": round(report.elapsed_s, 1),
    }
