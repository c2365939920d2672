"""Offline mode: compute nodes without database access, results brought back by sync."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pytest
from pymatgen.core import Structure

from matdx.execution.offline import reserve_job, sync
from matdx.execution.submit import submit
from matdx.workflows import fireworks_adapter
from matdx.workflows.campaign import load_campaign
from matdx.workflows.context import open_store
from matdx.workflows.runner import submit_campaign

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "pjm_standin"
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")
pytestmark = pytest.mark.ferretdb


def db_of(uri):
    base, name = uri.rsplit("/", 1)
    return pymongo.MongoClient(base + "/")[name]


def test_offline_jobs_through_pjm_then_sync(db_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{STANDIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PJM_STANDIN_STATE", str(tmp_path / "pjm"))
    monkeypatch.setenv("PJM_STANDIN_RSCGRPS", "test:1:3600")
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    report = submit(
        load_campaign(ROOT / "workflows" / "cu_au_pt.yaml"),
        STANDIN / "profile.yaml",
        {"elapse": "10m"},
        offline=True,
        db_uri=db_uri,
    )
    assert report.reserved == report.packing.n_tasks == 7
    from matdx.schedulers import JobState, scheduler_for
    from matdx.sites import load_profile

    scheduler = scheduler_for(load_profile(STANDIN / "profile.yaml"))
    deadline = time.monotonic() + 600
    while scheduler.status(report.job_ids)[report.job_ids[0]] not in (
        JobState.COMPLETED,
        JobState.FAILED,
    ):
        assert time.monotonic() < deadline
        time.sleep(2)
    db = db_of(db_uri)
    assert db.calculations.count_documents({}) == 0  # nothing reached the database
    assert db.fireworks.count_documents({"state": "RESERVED"}) == 7
    store, backend = open_store(db_uri)
    lp = fireworks_adapter.get_launchpad(backend)
    result = sync(lp, store, "cu-au-pt", run_dir=tmp_path / "runs", db_uri=db_uri)
    assert len(result.recovered) == 7 and not result.lost and result.analysed
    unique = db.campaign_materials.count_documents({})
    assert result.ingested == unique
    assert db.calculations.count_documents({"status": "completed"}) == unique
    assert {d["state"] for d in db.fireworks.find({})} == {"COMPLETED"}
    assert db.summaries.count_documents({}) == unique
    # syncing again changes nothing
    again = sync(lp, store, "cu-au-pt", run_dir=tmp_path / "runs", db_uri=db_uri)
    assert again.ingested == 0 and not again.recovered
    assert db.calculations.count_documents({}) == unique


SLOW = """\
name: slow-offline
chemical_space: {elements: [Cu, Au], max_components: 2}
prescreen: {engine: emt, optimizer: FIRE, fmax: 0.002, steps: 3000}
batch_size: 500
"""


def test_offline_run_killed_midway_keeps_its_records_and_is_rerun(db_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW)
    loaded = load_campaign(path)
    submit_campaign(loaded, launch=False, db_uri=db_uri)
    store, backend = open_store(db_uri)
    lp = fireworks_adapter.get_launchpad(backend)
    (launch_dir,) = reserve_job(lp, store, "slow-offline", tmp_path / "job", 10)
    # the compute node reads no database: the batch's structures go with its Firework
    spec = json.loads((launch_dir / "FW.json").read_text())["spec"]
    ids = [it["material_id"] for it in spec["_tasks"][0]["kwargs"]["items"]]
    inputs = json.loads((launch_dir / "matdx_inputs.json").read_text())
    assert ids and sorted(inputs) == sorted(ids)
    assert all(Structure.from_dict(inputs[m]) for m in ids)
    env = {**os.environ, "MATDX_DB_URI": "mongodb://127.0.0.1:9/unreachable"}
    proc = subprocess.Popen(
        [
            MPIEXEC,
            "-n",
            "2",
            sys.executable,
            "-m",
            "matdx.cli.main",
            "farm",
            "slow-offline",
            "--offline-dir",
            str(tmp_path / "job"),
        ],
        env=env,
        start_new_session=True,
    )
    records = launch_dir / "matdx_records.jsonl"
    deadline = time.monotonic() + 120
    while not (records.exists() and records.read_text().count("\n") >= 3):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)
    result = sync(
        lp, store, "slow-offline", stale_after_s=2, run_dir=tmp_path / "runs", db_uri=db_uri
    )
    assert result.lost == [lp.fireworks.find_one({"spec._matdx.kind": "compute", "spec._matdx.step": "prescreen"})["fw_id"]]
    assert result.ingested >= 3
    db = db_of(db_uri)
    done = db.calculations.count_documents({"status": "completed"})
    # the rerun (online this time) skips what the killed run finished
    report = submit_campaign(loaded, db_uri=db_uri)
    unique = report.n_unique
    assert db.calculations.count_documents({}) == unique
    assert db.calculations.count_documents({"status": "completed"}) == unique > done
    launch = db.launches.find_one({"fw_id": result.lost[0], "state": "COMPLETED"})
    assert launch is not None
