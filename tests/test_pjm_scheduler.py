"""matdx's PJM scheduler against the PJM stand-in (tests/pjm_standin), real jobs end to end.

The stand-in follows Fugaku's user guide; these tests check that a job that fails, one
killed at its elapse limit and a step job deleted by its dependency come back as FAILED,
FAILED and CANCELLED, and that a chain of jobs built with ``step`` and ``after`` runs in
order.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from matdx.schedulers import FINAL_STATES, JobState, PjmScheduler
from matdx.sites import JobRequest, load_profile, resolve_job

STANDIN = Path(__file__).resolve().parent / "pjm_standin"


@pytest.fixture
def sched(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{STANDIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PJM_STANDIN_STATE", str(tmp_path / "pjm-state"))
    monkeypatch.setenv("PJM_STANDIN_RSCGRPS", "test:1:3600")
    monkeypatch.setenv("PJM_STANDIN_KILL_GRACE", "1")
    monkeypatch.chdir(tmp_path)
    return PjmScheduler(load_profile(STANDIN / "profile.yaml"))


def submit(sched: PjmScheduler, tmp_path: Path, name: str, body: str, **fields) -> str:
    job = resolve_job(
        sched.profile,
        JobRequest(job_name=name, command=["bash", "-c", body], use_launcher=False, **fields),
    )
    script = tmp_path / f"{name}.sh"
    script.write_text(sched.render(job))
    return sched.submit(script, job)


def wait(sched: PjmScheduler, ids: list[str], timeout: float = 30.0) -> dict[str, JobState]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        states = sched.status(ids)
        if all(s in FINAL_STATES for s in states.values()):
            return states
        time.sleep(0.2)
    raise AssertionError(f"jobs {ids} still {states} after {timeout} s")


def test_failed_and_killed_jobs_are_failed(sched, tmp_path):
    ok = submit(sched, tmp_path, "ok", "true")
    bad = submit(sched, tmp_path, "bad", "exit 3")
    killed = submit(sched, tmp_path, "slow", "sleep 60", elapse="2")
    states = wait(sched, [ok, bad, killed])
    assert states == {ok: JobState.COMPLETED, bad: JobState.FAILED, killed: JobState.FAILED}
    # what the states were read from: pjstat -H day=3 -v (EC, PC, REASON)
    text = sched.run("pjstat", sched.history_args([killed])).stdout
    assert " 143 " in text and " 11 " in text and text.rstrip().endswith("ELAPSE LIMIT EXCEEDED")


def test_step_jobs_run_in_order_and_a_failure_deletes_the_rest(sched, tmp_path):
    # the first sub-job runs long enough for the others to join its step job
    first = submit(sched, tmp_path, "s0", "sleep 8; echo 0 >> order", step=True)
    second = submit(sched, tmp_path, "s1", "echo 1 >> order; exit 1", after=first)
    third = submit(sched, tmp_path, "s2", "echo 2 >> order", after=second)
    jid = first.split("_")[0]
    assert (first, second, third) == (f"{jid}_0", f"{jid}_1", f"{jid}_2")
    states = wait(sched, [first, second, third])
    assert states == {
        first: JobState.COMPLETED,
        second: JobState.FAILED,
        third: JobState.CANCELLED,  # deleted by sd=ec!=0:all:1 (PJM code 6)
    }
    assert (tmp_path / "order").read_text() == "0\n1\n"


def test_cancel_and_cancel_after_the_end(sched, tmp_path):
    long = submit(sched, tmp_path, "long", "sleep 60")
    done = submit(sched, tmp_path, "done", "true")
    wait(sched, [done])
    sched.cancel(long)
    sched.cancel(done)  # already ended: pjdel says it does not exist, which is fine
    assert wait(sched, [long]) == {long: JobState.CANCELLED}
    assert sched.count_jobs() == 0
