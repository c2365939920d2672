"""Claims on Fireworks: one process per attempt; a claim whose process died is taken over."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta

import pytest

from matdx.workflows import fireworks_adapter as fwa
from matdx.workflows.context import open_store
from matdx.workflows.coordination import CLAIMS, claim_next

pytestmark = pytest.mark.ferretdb


@pytest.fixture
def lp(db_uri):
    from fireworks import Firework, ScriptTask, Workflow

    _, backend = open_store(db_uri)
    lp = fwa.get_launchpad(backend)
    spec = {"_matdx": {"campaign": "c", "kind": "compute", "step": "prescreen"}}
    lp.add_wf(Workflow([Firework(ScriptTask.from_str("true"), spec=spec)]))
    return lp


def age_claim(lp, key: str, seconds: float) -> None:
    then = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds)
    assert lp.db[CLAIMS].update_one({"_id": key}, {"$set": {"at": then}}).matched_count == 1


def test_a_claim_is_held_until_its_process_is_presumed_dead(lp):
    fw_id = claim_next(lp, "c", "job-1")
    assert fw_id is not None
    assert claim_next(lp, "c", "job-2") is None  # job-1 holds it
    # job-1 is killed after claiming, before launching: the Firework stays READY, claimed
    assert lp.fireworks.find_one({"fw_id": fw_id})["state"] == "READY"
    age_claim(lp, f"{fw_id}:0", 120)
    assert claim_next(lp, "c", "job-2", stale_after=300) is None  # not stale for this limit
    assert claim_next(lp, "c", "job-2", stale_after=60) == fw_id
    assert lp.db[CLAIMS].find_one({"_id": f"{fw_id}:0"})["owner"] == "job-2"
    assert claim_next(lp, "c", "job-3", stale_after=60) is None  # job-2's claim is fresh


# FireWorks finds ScriptTask by importing its task modules, its own tests among them
@pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")
def test_a_rerun_is_a_new_attempt_with_its_own_claim(lp, tmp_path):
    fw_id = claim_next(lp, "c", "job-1")
    fwa.run_one(lp, fw_id, "c", tmp_path / "launch")
    assert lp.fireworks.find_one({"fw_id": fw_id})["state"] == "COMPLETED"
    assert claim_next(lp, "c", "job-2") is None  # nothing READY
    lp.rerun_fw(fw_id)
    assert claim_next(lp, "c", "job-2") == fw_id  # attempt 1: the old claim is not in the way
    assert lp.db[CLAIMS].count_documents({}) == 2


WORKER = """
import sys
from pathlib import Path
from matdx.workflows import fireworks_adapter as fwa
from matdx.workflows.context import open_store
from matdx.workflows.coordination import claim_next

_, backend = open_store(sys.argv[1])
lp = fwa.get_launchpad(backend, init=False)
n = 0
while (fw_id := claim_next(lp, "c", sys.argv[2])) is not None:
    fwa.run_one(lp, fw_id, "c", Path(sys.argv[3]) / str(fw_id))
    n += 1
print(n)
"""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnknownMarkWarning")
def test_fireworks_completed_at_once_by_many_processes_all_reach_the_workflow(db_uri, tmp_path):
    # FireWorks' workflow lock is a read-then-write on FerretDB: two processes completing
    # Fireworks of one workflow together each rewrote it with only their own state, and the
    # child waited for a parent the workflow document did not know had completed
    import subprocess
    import sys

    from fireworks import Firework, ScriptTask, Workflow

    _, backend = open_store(db_uri)
    lp = fwa.get_launchpad(backend)
    spec = {"_matdx": {"campaign": "c", "kind": "compute", "step": "prescreen"}}
    parents = [Firework(ScriptTask.from_str("true"), spec=spec) for _ in range(32)]
    child = Firework(ScriptTask.from_str("true"), parents=parents, spec={"_matdx": {}})
    lp.add_wf(Workflow([*parents, child]))
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, db_uri, f"w{i}", str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    ran = [int(w.communicate(timeout=600)[0].split()[-1]) for w in workers]
    assert sum(ran) == 32 and min(ran) > 0  # every parent ran once, in every process
    wf = lp.workflows.find_one({"nodes": child.fw_id})
    assert lp.fireworks.count_documents({"state": "COMPLETED"}) == 32
    assert sorted(wf["fw_states"].values()) == ["COMPLETED"] * 32 + ["READY"]
    assert lp.fireworks.find_one({"fw_id": child.fw_id})["state"] == "READY"
    assert lp.db["matdx_locks"].count_documents({}) == 0


HOLDER = """
import sys, time
import pymongo
from matdx.workflows.coordination import exclusive

db = pymongo.MongoClient(sys.argv[1]).get_default_database()
with exclusive(db, "wf:1", stale_after_s=300):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_lock_whose_holder_was_killed_is_broken_at_once(db_uri):
    import signal
    import subprocess
    import sys

    import pymongo

    from matdx.core.errors import StoreBusyError
    from matdx.workflows.coordination import LOCKS, exclusive

    db = pymongo.MongoClient(db_uri).get_default_database()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, db_uri], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = pytest.raises(StoreBusyError, match="wf:1 is held by")
        with busy, exclusive(db, "wf:1", stale_after_s=300, timeout_s=1):  # alive: it holds it
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert db[LOCKS].count_documents({"_id": "wf:1"}) == 1  # left behind by the killed holder
    with exclusive(db, "wf:1", stale_after_s=300, timeout_s=1):  # its process is gone
        me = f":{os.getpid()}:{threading.get_ident()}"
        assert db[LOCKS].find_one({"_id": "wf:1"})["owner"].endswith(me)
    assert db[LOCKS].count_documents({}) == 0
