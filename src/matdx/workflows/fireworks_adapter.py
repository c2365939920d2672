"""The one module that imports FireWorks.

It turns a campaign plan into an ordinary FireWorks workflow (one Firework per batch of
candidates and one analysis Firework after them), runs Fireworks in this process, and
reads their states with plain queries (which work on MongoDB, FerretDB and mongomock).
Workflows made here are normal FireWorks workflows: ``lpad get_wflows``,
``lpad rerun_fws`` and ``rlaunch`` work on them, given ``MATDX_DB_URI`` in the worker's
environment.

Import :mod:`matdx.store.backend` (``open_backend``) before this module when using the
embedded store: FireWorks picks its client class when first imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from threading import Event, Thread, current_thread
from typing import Any

from fireworks import Firework, FWAction, FWorker, LaunchPad, Workflow
from fireworks.core.firework import FiretaskBase
from fireworks.fw_config import WFLOCK_EXPIRATION_SECS
from fireworks.utilities.fw_utilities import explicit_serialize

from matdx.schemas.names import (
    ANALYSE,
    CAMPAIGN,
    COMPUTE,
    KIND,
    SPEC,
    STAGE,
    firework_meta,
    spec_key,
)
from matdx.store.backend import Backend
from matdx.workflows.fw_lock import WorkflowLocking
from matdx.workflows.fw_queries import (
    ACTIVE_STATES,
    FINAL_STATES,
    active_fireworks,
    json_step_name,
    queued_material_ids,
    state_counts,
)


@explicit_serialize
class MatdxTask(FiretaskBase):
    """Run one registered matdx step (see :data:`matdx.workflows.steps.STEPS`).

    Parameters
    ----------
    kind
        Kind of work (:data:`~matdx.schemas.names.COMPUTE`, ``ANALYSE``, ``STAGE``).
    kwargs
        Arguments of the step.
    """

    required_params = ("kind", "kwargs")

    def run_task(self, fw_spec: dict[str, Any]) -> FWAction:
        """Run the step, with a heartbeat while it runs, and store its summary."""
        from matdx.workflows.coordination import file_heartbeat, heartbeat
        from matdx.workflows.steps import STEPS

        kwargs = dict(self["kwargs"])
        fw_id = getattr(self, "fw_id", None)
        if self["kind"] == COMPUTE:
            kwargs["fw_id"] = fw_id
        lp = getattr(self, "launchpad", None)
        if lp is None:  # offline: FireWorks gives the task no LaunchPad
            import os

            beat = file_heartbeat(os.getcwd())
        else:
            beat = heartbeat(lp.db, fw_id)
        try:
            with beat:
                summary = STEPS[self["kind"]](**kwargs)
        except Exception:
            raise
        except BaseException as exc:  # Ctrl-C, a signal raised as an exception, an exit
            _INTERRUPTS.append(exc)
            raise
        detour = summary.pop("detour", None)
        if detour is None:
            if summary.get("failed"):
                # FIZZLED, so that `lpad get_fws -s FIZZLED` finds it and `lpad rerun_fws`
                # retries just the failed calculations (the others are skipped)
                from matdx.core.errors import BatchFailedError

                errors = "; ".join(summary.get("errors", []))
                raise BatchFailedError(
                    f"{summary['failed']} calculation(s) failed (reasons stored): {errors}"
                )
            return FWAction(stored_data={"summary": summary})
        campaign = kwargs["campaign"]
        fws = step_fireworks(campaign, summary["step"], detour["batches"], detour["analysis"])
        name = f"matdx:{campaign}:{summary['step']}"
        return FWAction(stored_data={"summary": summary}, detours=[Workflow(fws, name=name)])


_INTERRUPTS: list[BaseException] = []
"""The interruption of the running task, if any. FireWorks' Rocket catches every exception
of a task, interruptions included, as the task's failure and goes on; :func:`run_one`
raises it again, so that an interrupted process stops instead of taking the next Firework."""

ID_CLAIMS = "matdx_id_claims"
"""Collection whose unique ``_id`` s make Firework and launch ids unique (see below)."""


class MatdxLaunchPad(WorkflowLocking, LaunchPad):
    """A LaunchPad whose new ids and workflow locks are unique on FerretDB too.

    FireWorks takes ids with ``find_one_and_update`` and ``$inc``. MongoDB does that
    atomically; FerretDB 1.x reads and then writes, so two workers starting launches at
    the same moment can get the same launch id (a ``DuplicateKeyError`` on ``launches``).
    Here each id handed out is also inserted as a unique key; an id that another process
    got first is skipped and the next one taken. Workflows are rewritten under
    :func:`~matdx.workflows.fw_lock.workflow_lock` (FireWorks' own lock does not exclude
    on FerretDB either).
    """

    wf_lock_stale_after_s = float(WFLOCK_EXPIRATION_SECS)

    def _claim_ids(self, kind: str, first: int, quantity: int) -> bool:
        from pymongo.errors import BulkWriteError

        docs = [{"_id": f"{kind}:{first + i}"} for i in range(quantity)]
        try:
            self.db[ID_CLAIMS].insert_many(docs, ordered=True)
        except BulkWriteError as exc:
            done = int(exc.details.get("nInserted", 0))
            if done:  # give back the part of the range that was taken
                self.db[ID_CLAIMS].delete_many({"_id": {"$in": [d["_id"] for d in docs[:done]]}})
            return False
        return True

    def get_new_fw_id(self, quantity: int = 1) -> int:
        """First of ``quantity`` new Firework ids, unique across processes."""
        while True:
            first = int(super().get_new_fw_id(quantity))
            if self._claim_ids("fw", first, quantity):
                return first

    def get_new_launch_id(self, quantity: int = 1) -> int:
        """First of ``quantity`` new launch ids, unique across processes."""
        while True:
            n = int(self.fw_id_assigner.find_one_and_update(
                {}, {"$inc": {"next_launch_id": quantity}})["next_launch_id"])
            if self._claim_ids("launch", n, quantity):
                return n


def get_launchpad(backend: Backend, init: bool = True) -> LaunchPad:
    """A LaunchPad on the same database as the store, initialised if new.

    Parameters
    ----------
    backend
        Opened backend (embedded or server).
    init
        Initialise a new LaunchPad (a write); ``False`` for callers that only read.

    Returns
    -------
    LaunchPad
        Ready to take workflows.
    """
    target = backend.target
    if target.kind == "embedded":
        from fireworks import fw_config

        if "mongomock" not in getattr(fw_config.MongoClient, "__module__", ""):
            raise RuntimeError("FireWorks was imported before the embedded store was opened")
        lp = MatdxLaunchPad(
            host="localhost",
            name=target.db_name,
            strm_lvl="ERROR",
            mongoclient_kwargs=dict(backend.client_kwargs),
        )
    else:
        lp = MatdxLaunchPad(
            host=target.uri,
            name=target.db_name,
            uri_mode=True,
            strm_lvl="ERROR",
            mongoclient_kwargs=dict(backend.client_kwargs),
        )
    if init and lp.fw_id_assigner.count_documents({}) == 0:
        lp.reset("", require_password=False, max_reset_wo_password=0)
        lp.db[ID_CLAIMS].delete_many({})
    return lp


def run_one(lp: LaunchPad, fw_id: int, campaign: str, launch_dir: Path) -> str:
    """Run Firework ``fw_id`` (claimed by the caller) in ``launch_dir``; return its state.

    Parameters
    ----------
    lp
        LaunchPad.
    fw_id
        A READY Firework that no other worker will run (see
        :func:`matdx.workflows.coordination.claim_next`).
    campaign
        Its campaign (the worker only accepts Fireworks of it).
    launch_dir
        New directory for the launch.

    Returns
    -------
    str
        The Firework's state afterwards.
    """
    import io
    import os
    import sys

    from fireworks.core.rocket_launcher import launch_rocket

    launch_dir.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(launch_dir)
    _quiet_rocket_logs()
    from matdx.workflows.coordination import release_unstarted

    tracebacks = io.StringIO()
    del _INTERRUPTS[:]
    interrupt: BaseException | None = None
    try:
        with serial_heartbeat():
            launch_rocket(lp, campaign_fworker(campaign), fw_id=fw_id, strm_lvl="ERROR",
                          err_file=tracebacks)
    except Exception:
        raise
    except BaseException as exc:  # outside the task: while FireWorks reserves or records
        interrupt = exc
    finally:
        os.chdir(cwd)
    interrupt = interrupt or (_INTERRUPTS.pop() if _INTERRUPTS else None)
    if interrupt is not None:
        # not the calculation's failure: the Firework is READY and unclaimed again for the
        # next run (a resumable calculation continues from its directory); this process stops
        lp.rerun_fw(fw_id)
        release_unstarted(lp, {fw_id})
        raise interrupt
    sys.stderr.write(tracebacks.getvalue())
    doc = lp.fireworks.find_one({"fw_id": fw_id}, {"state": 1})
    return doc["state"] if doc else "UNKNOWN"


def campaign_workflow(
    campaign: str,
    step0: str,
    batches: Sequence[dict[str, Any]],
    analysis: dict[str, Any],
    stages: Sequence[dict[str, Any]] = (),
) -> Workflow:
    """Step 0's batches and analysis, then a stage Firework per later step.

    With no batches (every candidate done) the workflow is the analysis and the stages:
    they compute only what is missing (e.g. after a step was added to the campaign file).

    Parameters
    ----------
    campaign
        Campaign name (in each Firework's ``spec._matdx`` and the workflow's metadata).
    step0
        Name of step 0.
    batches
        Keyword arguments of :func:`matdx.workflows.compute.compute_batch`, one per batch.
    analysis
        Keyword arguments of :func:`matdx.workflows.analyse.analyse_step`.
    stages
        Keyword arguments of :func:`matdx.workflows.stage.stage_step`, one per later step.

    Returns
    -------
    Workflow
        The workflow, not yet added.
    """
    fws = step_fireworks(campaign, step0, batches, analysis)
    fws += stage_fireworks(campaign, stages, fws[-1:])
    return Workflow(fws, name=f"matdx:{campaign}", metadata={"matdx_campaign": campaign})


def step_fireworks(
    campaign: str,
    step: str,
    batches: Sequence[dict[str, Any]],
    analysis: dict[str, Any] | None,
) -> list[Firework]:
    """The Fireworks of one campaign step: one per batch, then the step's analysis.

    The analysis runs even if a batch fizzles. Without ``analysis`` (a continuation of
    batches stopped at a job's deadline: the step's analysis already waits) only the
    batches are made.
    """
    fws = []
    for i, kwargs in enumerate(batches):
        ids = [it["material_id"] for it in kwargs["items"]]
        fws.append(
            Firework(
                [MatdxTask(kind=COMPUTE, kwargs=kwargs)],
                spec={SPEC: firework_meta(campaign, COMPUTE, step, ids),
                      "_add_launchpad_and_fw_id": True},
                name=f"{campaign}:{step}:{i:04d}",
            )
        )
    if analysis is None:
        return fws
    final = Firework(
        [MatdxTask(kind=ANALYSE, kwargs=analysis)],
        spec={SPEC: firework_meta(campaign, ANALYSE, step), "_allow_fizzled_parents": True},
        name=f"{campaign}:{step}:analyse",
        parents=fws or None,
    )
    return [*fws, final]


def stage_fireworks(
    campaign: str, stages: Sequence[dict[str, Any]], parents: Sequence[Firework]
) -> list[Firework]:
    """A chain of stage Fireworks (one per later campaign step) after ``parents``.

    Each stage selects its materials when it runs and inserts their batches (and the
    step's analysis) before the next stage (see :func:`step_fireworks`).
    """
    fws: list[Firework] = []
    for kwargs in stages:
        name = json_step_name(kwargs["step"])
        fws.append(
            Firework(
                [MatdxTask(kind=STAGE, kwargs=kwargs)],
                spec={SPEC: firework_meta(campaign, STAGE, name), "_allow_fizzled_parents": True},
                name=f"{campaign}:{name}:stage",
                parents=[fws[-1]] if fws else (list(parents) or None),
            )
        )
    return fws


def add_workflow(lp: LaunchPad, wf: Workflow) -> int:
    """Add a workflow; return the id of its first Firework (the workflow's handle)."""
    id_map = lp.add_wf(wf)
    return min(id_map.values())


def campaign_fworker(campaign: str) -> FWorker:
    """A worker that only takes Fireworks of ``campaign``."""
    return FWorker(name=f"matdx-{campaign}", query={spec_key(CAMPAIGN): campaign})


def reserve_offline(lp: LaunchPad, fw_id: int, campaign: str, launch_dir: Path) -> int:
    """Reserve claimed Firework ``fw_id`` for an offline run in ``launch_dir``.

    Writes ``FW.json`` and ``FW_offline.json`` there and records the offline run, as
    FireWorks' own ``qlaunch --reserve`` does; ``matdx sync`` (``recover_offline``) brings
    the result back. Returns the launch id.
    """
    import json

    launch_dir.mkdir(parents=True, exist_ok=True)
    fw, launch_id = lp.reserve_fw(campaign_fworker(campaign), str(launch_dir), fw_id=fw_id)
    if fw is None:
        raise RuntimeError(f"Firework {fw_id} could not be reserved")
    fw.to_file(str(launch_dir / "FW.json"))
    (launch_dir / "FW_offline.json").write_text(json.dumps({"launch_id": launch_id}))
    lp.add_offline_run(launch_id, fw.fw_id, fw.name)
    return int(launch_id)


@contextmanager
def _offline_zopen() -> Iterator[None]:
    """Let FireWorks' offline Rocket open files with current monty.

    The Rocket reads ``FW_offline.json`` with ``zopen(path)``; monty's ``zopen`` now
    requires the mode. Within this block the Rocket's ``zopen`` defaults it to ``"rt"``.
    """
    from fireworks.core import rocket
    from monty.io import zopen

    original = rocket.zopen
    rocket.zopen = lambda path, mode="rt", **kwargs: zopen(path, mode, **kwargs)
    try:
        yield
    finally:
        rocket.zopen = original


def run_offline(launch_dir: Path) -> None:
    """Run the reserved Firework of ``launch_dir`` without a database (compute node side)."""
    import os

    from fireworks.core.rocket_launcher import launch_rocket

    cwd = os.getcwd()
    os.chdir(launch_dir)
    _quiet_rocket_logs()
    try:
        with _offline_zopen():
            launch_rocket(None, FWorker(), strm_lvl="ERROR")
        _join_ping_threads()
    finally:
        os.chdir(cwd)


def _join_ping_threads(timeout: float = 5.0) -> None:
    """Wait for the Rocket's ping thread to end.

    Offline, the thread writes ``FW_ping.json`` into the working directory once more
    after the launch ends; waiting for it keeps that file in the launch directory rather
    than wherever the process goes next. Threads are named ``Thread-N (ping_launch)``
    after their target.
    """
    import threading

    for thread in threading.enumerate():
        if thread.name.endswith("(ping_launch)") and thread is not threading.current_thread():
            thread.join(timeout)


def _quiet_rocket_logs() -> None:
    """Keep FireWorks' per-launch INFO lines off the terminal (progress bars show progress).

    Rockets register a stream handler at ``ROCKET_STREAM_LOGLEVEL``; registering it first
    and raising its level makes later registrations reuse the quiet handler.
    """
    from fireworks import fw_config
    from fireworks.utilities.fw_utilities import get_fw_logger

    for level in {fw_config.ROCKET_STREAM_LOGLEVEL, "ERROR"}:
        logger = get_fw_logger("rocket.launcher", stream_level=level)
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            handler.setLevel(logging.WARNING)


def _periodic_ping(
    launchpad: LaunchPad, launch_id: int, stop_event: Event, master_thread: Thread
) -> None:
    from fireworks.core.rocket import PING_TIME_SECS, do_ping

    while not stop_event.wait(PING_TIME_SECS) and master_thread.is_alive():
        do_ping(launchpad, launch_id)


@contextmanager
def serial_heartbeat() -> Iterator[None]:
    """Stop FireWorks' heartbeat thread from pinging after it is told to stop.

    FireWorks' heartbeat pings once more when the Firework ends, concurrently with the
    write that completes the launch. MongoDB applies both updates atomically; FerretDB 1.x
    applies an update as read-then-replace, so that last ping can put a COMPLETED launch
    back to RUNNING. Within this block the heartbeat pings only on its period (the Rocket
    still pings once itself, in sequence). The heartbeat is a daemon thread, registered
    before it starts and stopped when the block ends: a heartbeat the Rocket did not stop
    (it was interrupted) would otherwise keep the process alive for up to the ping period.
    """
    from fireworks.core import rocket

    stops: list[Event] = []
    original = rocket.start_ping_launch

    def start(launchpad: LaunchPad, launch_id: int) -> Event | None:
        if rocket.FWData().MULTIPROCESSING:
            return original(launchpad, launch_id)
        stop = Event()
        stops.append(stop)
        Thread(
            target=_periodic_ping, args=(launchpad, launch_id, stop, current_thread()),
            name=f"matdx-fw-ping-{launch_id}", daemon=True,
        ).start()
        return stop

    rocket.start_ping_launch = start
    try:
        yield
    finally:
        rocket.start_ping_launch = original
        for stop in stops:
            stop.set()


def run_fireworks(
    lp: LaunchPad,
    campaign: str,
    run_dir: Path,
    on_progress: Callable[[int], None] | None = None,
    kinds: tuple[str, ...] | None = None,
    ahead: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Run this campaign's READY Fireworks in this process until none is left.

    Each Firework is claimed first (see :func:`matdx.workflows.coordination.claim_next`), so
    several processes running the same campaign never run the same Firework.

    Parameters
    ----------
    lp
        LaunchPad.
    campaign
        Campaign whose Fireworks to run.
    run_dir
        Directory under which each launch gets its own ``launcher_*`` directory.
    on_progress
        Called with the number of candidates whose Firework reached a final state.
    kinds
        Only run Fireworks of these kinds (:mod:`matdx.schemas.names`).
    ahead
        Called with the arguments of each batch Firework as soon as it is claimed; with
        it, the next Firework is claimed before the current one runs (so that its
        calculations can start while this process records the current one's end; see
        :func:`matdx.workflows.compute.prefetch_batch`).
    """
    import os
    import socket
    from datetime import UTC, datetime

    from matdx.workflows.coordination import claim_next, release_unstarted

    run_dir.mkdir(parents=True, exist_ok=True)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    claimed: list[int] = []

    def top_up() -> None:
        while len(claimed) < (2 if ahead is not None else 1):
            fw_id = claim_next(lp, campaign, owner, exclude=set(claimed), kinds=kinds)
            if fw_id is None:
                return
            claimed.append(fw_id)
            if ahead is not None:
                doc = lp.fireworks.find_one({"fw_id": fw_id}, {"spec": 1}) or {}
                spec = doc.get("spec", {})
                if spec.get(SPEC, {}).get(KIND) == COMPUTE:
                    ahead(dict(spec["_tasks"][0]["kwargs"]))

    try:
        while True:
            top_up()
            if not claimed:
                return
            fw_id = claimed.pop(0)
            top_up()
            stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S-%f")
            run_one(lp, fw_id, campaign, run_dir / f"launcher_{stamp}_{fw_id}")
            if on_progress is not None:
                counts = state_counts(lp, campaign)["candidates"]
                on_progress(sum(counts.get(s, 0) for s in FINAL_STATES))
    finally:
        if claimed:  # claimed ahead, never started: free for other workers at once
            release_unstarted(lp, set(claimed))


__all__ = [  # the queries are re-exported: callers use them with the adapter
    "ACTIVE_STATES",
    "FINAL_STATES",
    "MatdxLaunchPad",
    "MatdxTask",
    "active_fireworks",
    "add_workflow",
    "campaign_workflow",
    "get_launchpad",
    "queued_material_ids",
    "reserve_offline",
    "run_fireworks",
    "run_offline",
    "run_one",
    "state_counts",
    "step_fireworks",
]
