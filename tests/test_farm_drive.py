"""The farm's dispatch loop (:func:`matdx.execution.farm.drive`) on a real thread pool.

The MPI farm runs the same loop over an ``MPICommExecutor`` (see test_offline, test_faults
and test_hpc_submit); here the executor's threads stand in for ranks so that the queue,
the walltime stop and the cancellation of queued tasks can be checked exactly.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import pytest

from matdx.execution.farm import drive


class Tasks:
    """Claimable tasks; each run records when it started and how many ran at once."""

    def __init__(self, n: int, seconds: float) -> None:
        self.todo = list(range(n))
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.started: list[int] = []
        self.submitted = 0
        self.finished = 0
        self.most_outstanding = 0

    def claim(self) -> int | None:
        return self.todo.pop(0) if self.todo else None

    def run(self, task_id: int) -> tuple[int, str]:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.started.append(task_id)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
            self.finished += 1
        return task_id, "COMPLETED"

    def submit(self, ex: Executor, task_id: int) -> Future[tuple[int, str]]:
        self.submitted += 1
        with self.lock:
            outstanding = self.submitted - self.finished
        self.most_outstanding = max(self.most_outstanding, outstanding)
        return ex.submit(self.run, task_id)


@pytest.mark.parametrize("queued", [0, 1, 3])
def test_every_task_runs_once_with_at_most_workers_plus_queued_claimed(queued):
    tasks = Tasks(12, 0.02)
    with ThreadPoolExecutor(2) as ex:
        ran = drive(ex, 2, tasks.claim, tasks.submit, lambda: 1e9, 0.02, queued=queued)
    assert sorted(ran.states) == list(range(12))
    assert set(ran.states.values()) == {"COMPLETED"}
    assert sorted(tasks.started) == list(range(12))
    assert not ran.stopped and ran.unstarted == []
    assert tasks.most_running <= 2
    # claimed and not finished: never more than the workers plus the queue, and the
    # queue is used
    assert tasks.most_outstanding == 2 + queued


def test_walltime_stops_claiming_and_cancels_queued_tasks_without_losing_any():
    tasks = Tasks(20, 0.05)
    start = time.monotonic()

    def time_left() -> float:  # a 0.32 s job
        return 0.32 - (time.monotonic() - start)

    with ThreadPoolExecutor(2) as ex:
        ran = drive(ex, 2, tasks.claim, tasks.submit, time_left, 0.05, queued=2)
    assert ran.stopped
    started = set(tasks.started)
    assert set(ran.states) == started
    # every claimed task either ran or is handed back as unstarted; the rest stay claimable
    assert started.isdisjoint(ran.unstarted)
    assert sorted([*started, *ran.unstarted, *tasks.todo]) == list(range(20))
    assert time.monotonic() - start < 0.32 + 0.05


def test_a_queued_task_is_cancelled_when_a_long_task_leaves_no_time_for_it():
    # one worker; the first task takes 0.4 s where 0.1 s was expected, in a 0.45 s job
    tasks = Tasks(5, 0.4)
    start = time.monotonic()
    with ThreadPoolExecutor(1) as ex:
        ran = drive(
            ex, 1, tasks.claim, tasks.submit, lambda: 0.45 - (time.monotonic() - start), 0.1,
            queued=2,
        )
    # task 1 had started when task 0 ended (nothing can stop that); task 2 had not
    assert tasks.started == [0, 1]
    assert ran.stopped and ran.unstarted == [2]
    assert sorted(ran.states) == [0, 1] and tasks.todo == [3, 4]


def test_a_task_is_queued_only_with_time_for_two():
    tasks = Tasks(10, 0.01)
    # enough time for one task but not for a task that waits for another: nothing queued
    with ThreadPoolExecutor(2) as ex:
        drive(ex, 2, tasks.claim, tasks.submit, lambda: 1.5, 1.0, queued=2)
    assert tasks.most_outstanding == 2
    assert sorted(tasks.started) == list(range(10))


def test_the_dispatching_rank_runs_tasks_too_one_at_a_time():
    tasks = Tasks(30, 0.02)
    where: dict[int, str] = {}
    run = tasks.run

    def run_and_note(task_id: int) -> tuple[int, str]:
        where[task_id] = threading.current_thread().name
        return run(task_id)

    tasks.run = run_and_note  # type: ignore[method-assign]
    with (
        ThreadPoolExecutor(2, thread_name_prefix="remote") as remote,
        ThreadPoolExecutor(1, thread_name_prefix="local") as local,
    ):
        ran = drive(remote, 2, tasks.claim, tasks.submit, lambda: 1e9, 0.02, local=local)
    assert sorted(ran.states) == list(range(30)) == sorted(tasks.started)
    here = [t for t, name in where.items() if name.startswith("local")]
    # the local slot took its share (a third of the slots) and never ran two at once
    assert 5 <= len(here) <= 15
    assert tasks.most_running <= 3
    assert tasks.most_outstanding <= 2 + 1 + 1


def test_a_task_queued_behind_a_long_one_is_taken_over_by_a_free_slot():
    # remote: one worker, one queued task; task 0 runs long there, task 2 short locally
    durations = {0: 0.6, 1: 0.3, 2: 0.05}
    tasks = Tasks(3, 0.0)
    where: dict[int, str] = {}

    def run(task_id: int) -> tuple[int, str]:
        where[task_id] = threading.current_thread().name
        time.sleep(durations[task_id])
        return task_id, "COMPLETED"

    tasks.run = run  # type: ignore[method-assign]
    start = time.monotonic()
    with (
        ThreadPoolExecutor(1, thread_name_prefix="remote") as remote,
        ThreadPoolExecutor(1, thread_name_prefix="local") as local,
    ):
        ran = drive(remote, 1, tasks.claim, tasks.submit, lambda: 1e9, 0.05, queued=1, local=local)
    assert sorted(ran.states) == [0, 1, 2]
    assert where[0].startswith("remote") and where[1].startswith("local")
    assert time.monotonic() - start < 0.8  # task 1 did not wait for task 0 (0.9 s)
