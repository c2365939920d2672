"""Claims on Fireworks: one process per attempt; a claim whose process died is taken over."""

from __future__ import annotations

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
