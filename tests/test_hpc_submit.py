"""Campaigns through real batch systems: Slurm (single-node cluster) and the PJM stand-in.

`matdx submit` packs the campaign's Fireworks into few jobs running the MPI task farm;
the results must end up in the store (FerretDB), every candidate with exactly one result.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pymongo
import pytest

from matdx.execution.submit import farm_launch_argv, pack, submit
from matdx.schedulers import JobState, scheduler_for
from matdx.sites import JobRequest, load_profile, resolve_job
from matdx.workflows.campaign import load_campaign

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "pjm_standin"
FINAL = {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}

pytestmark = pytest.mark.ferretdb


def wait_jobs(profile, job_ids, timeout=600.0) -> dict:
    scheduler = scheduler_for(profile)
    deadline = time.monotonic() + timeout
    while True:
        states = scheduler.status(job_ids)
        if all(s in FINAL for s in states.values()):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"jobs {job_ids} still {states} after {timeout} s")
        time.sleep(2)


def db_of(uri):
    base, name = uri.rsplit("/", 1)
    return pymongo.MongoClient(base + "/")[name]


def assert_complete(db, campaign: str) -> int:
    unique = db.campaign_materials.count_documents({"campaign": campaign})
    assert unique > 0
    states = {d["state"] for d in db.fireworks.find({"spec._matdx.campaign": campaign})}
    assert states == {"COMPLETED"}, states
    # every candidate has exactly one result: 0 lost, 0 duplicated
    assert db.calculations.count_documents({"campaign": campaign, "status": "completed"}) == unique
    assert db.calculations.count_documents({"campaign": campaign}) == unique
    assert db.summaries.count_documents({"campaign": campaign}) == unique
    return unique


def test_packing_turns_many_small_tasks_into_few_jobs():
    p = pack(1000, workers=47, elapse_s=3600, task_estimate_s=15)
    assert p.n_jobs == 1 and p.tasks_per_job >= 1000
    p = pack(1000, workers=3, elapse_s=600, task_estimate_s=60, margin_s=30)
    assert p.tasks_per_job == 27 and p.n_jobs == 38
    assert pack(1000, workers=3, elapse_s=600, task_estimate_s=60, max_jobs=5).n_jobs == 5
    assert pack(0, workers=3, elapse_s=600, task_estimate_s=60).n_jobs == 0


@pytest.mark.parametrize("layout", [
    {},  # the profile's 2 ranks x 1 thread: a core each
    {"ranks_per_node": 1, "threads_per_rank": 2},  # one rank on both cores
])
def test_local_farm_ranks_are_bound_to_their_cores(layout):
    """The local profile's farm launcher pins each rank to its share of the cores."""
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs two cores")
    job = resolve_job(load_profile(ROOT / "hpc_profiles" / "local.yaml"),
                      JobRequest(job_name="bind", **layout))
    argv = farm_launch_argv(job)
    assert argv[1:5] == ["-bind-to", f"core:{job.threads_per_rank}", "-n", str(job.total_ranks)]
    show = ("import json, os; from mpi4py import MPI; "
            "g = MPI.COMM_WORLD.gather(sorted(os.sched_getaffinity(0))); g and print(json.dumps(g))")
    out = subprocess.run([*argv, "-c", show], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    cores = [set(c) for c in json.loads(out)]  # by rank
    assert len(cores) == job.total_ranks
    if job.total_ranks == 1:
        assert len(cores[0]) >= 2  # both cores for its two threads
    else:
        assert not cores[0] & cores[1] and cores[0] | cores[1] <= allowed  # a core each


@pytest.mark.slurm
def test_campaign_through_slurm(db_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    profile_path = ROOT / "hpc_profiles" / "ci_slurm.yaml"
    report = submit(
        load_campaign(ROOT / "workflows" / "cu_au_pt.yaml"),
        profile_path,
        {"elapse": "10m"},
        db_uri=db_uri,
    )
    assert report.packing.n_jobs == 1 and len(report.job_ids) == 1
    script = report.script.read_text()
    assert "#SBATCH --partition=debug" in script and db_uri not in script
    states = wait_jobs(load_profile(profile_path), report.job_ids)
    assert set(states.values()) == {JobState.COMPLETED}
    assert assert_complete(db_of(db_uri), "cu-au-pt") > 200


@pytest.fixture
def pjm(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{STANDIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PJM_STANDIN_STATE", str(tmp_path / "pjm-state"))
    monkeypatch.setenv("PJM_STANDIN_RSCGRPS", "test:1:3600")
    monkeypatch.setenv("MATDX_DATA_DIR", str(tmp_path / "data"))
    return load_profile(STANDIN / "profile.yaml")


def test_campaign_through_pjm_as_a_bulk_job(db_uri, pjm):
    # a task estimate close to the walltime forces several jobs: one bulk submission
    report = submit(
        load_campaign(ROOT / "workflows" / "cu_au_pt.yaml"),
        STANDIN / "profile.yaml",
        {"elapse": "90"},
        task_estimate_s=40,
        margin_s=5,
        db_uri=db_uri,
    )
    p = report.packing
    assert p.n_tasks == 7 and p.workers_per_job == 2 and p.n_jobs == 2
    script = report.script.read_text()
    assert '#PJM -L "rscgrp=test"' in script and "PJM_BULKNUM" in script
    (job_id,) = report.job_ids
    wait_jobs(pjm, [job_id])
    hist = subprocess.run(["pjstat", "-H", "-E"], capture_output=True, text=True).stdout
    assert f"{job_id}[0]" in hist and f"{job_id}[1]" in hist
    assert_complete(db_of(db_uri), "cu-au-pt")


SLOW = """\
name: slow-cu-au
chemical_space: {elements: [Cu, Au], max_components: 2}
prescreen: {engine: emt, optimizer: FIRE, fmax: 0.002, steps: 3000}
batch_size: 500
"""


def test_job_killed_at_its_elapse_is_rerun_by_the_next_job(db_uri, pjm, tmp_path):
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW)
    loaded = load_campaign(path)
    first = submit(
        loaded,
        STANDIN / "profile.yaml",
        {"elapse": "12"},
        task_estimate_s=1,
        margin_s=0,
        stale_after_s=5,
        db_uri=db_uri,
    )
    assert first.packing.n_tasks == 1 and len(first.job_ids) == 1
    wait_jobs(pjm, first.job_ids)
    hist = subprocess.run(
        ["pjstat", "-H", "-v", first.job_ids[0]], capture_output=True, text=True
    ).stdout
    assert "ELAPSE" in hist.upper()
    db = db_of(db_uri)
    batch = db.fireworks.find_one({"spec._matdx.kind": "compute", "spec._matdx.step": "prescreen"})
    assert batch["state"] == "RUNNING"  # cut by the limit: its heartbeat stops
    partial = db.calculations.count_documents({})
    time.sleep(6)
    second = submit(
        loaded, STANDIN / "profile.yaml", {"elapse": "10m"}, stale_after_s=5, db_uri=db_uri
    )
    assert second.recovered == [batch["fw_id"]]
    wait_jobs(pjm, second.job_ids)
    unique = assert_complete(db, "slow-cu-au")
    batch = db.fireworks.find_one({"fw_id": batch["fw_id"]})
    assert len(batch["archived_launches"]) == 1 and len(batch["launches"]) == 1
    assert partial < unique


MD_WALLTIME = """\
name: md-walltime
chemical_space: {elements: [Cu], min_components: 1, max_components: 1, prototypes: [fcc]}
prescreen: {engine: emt}
steps:
  - name: md
    engine: lammps
    task: md
    select: {top: 1}
    settings:
      potential: CuNi.eam.alloy
      ensemble: nvt
      temperature: 300
      timestep: 2.0
      equilibration: 2000
      steps: 120000
      supercell: [6, 6, 6]
      thermo_interval: 100
      dump_interval: 10000
      checkpoint_interval: 5000
"""


@pytest.mark.slow
def test_md_stopped_at_the_walltime_resumes_from_its_checkpoint_in_the_next_job(
    db_uri, pjm, tmp_path
):
    """A LAMMPS MD step longer than the job: it stops before the elapse limit, its batch is
    queued again, and the next job continues the run from its checkpoint (not from step 0)."""
    path = tmp_path / "md.yaml"
    path.write_text(MD_WALLTIME)
    loaded = load_campaign(path)
    first = submit(
        loaded, STANDIN / "profile.yaml", {"elapse": "40"}, task_estimate_s=1, margin_s=5,
        db_uri=db_uri,
    )
    assert first.packing.n_jobs == 1
    # the job ends by itself before its limit (the stand-in would report EXT otherwise)
    assert set(wait_jobs(pjm, first.job_ids, timeout=120).values()) == {JobState.COMPLETED}
    db = db_of(db_uri)
    md = {"campaign": "md-walltime", "task": "md"}
    assert db.calculations.count_documents(md) == 0  # stopped, so nothing stored yet
    waiting = list(db.fireworks.find({"spec._matdx.campaign": "md-walltime",
                                      "state": {"$ne": "COMPLETED"}}))
    assert waiting and any(d["state"] == "READY" for d in waiting)  # the continuation batch
    workdirs = list((tmp_path / "data" / "runs" / "md-walltime" / "steps" / "md").iterdir())
    assert len(workdirs) == 1
    stopped = json.loads((workdirs[0] / "parameters.json").read_text())["run"]["state"]
    assert stopped == "stopped"

    second = submit(loaded, STANDIN / "profile.yaml", {"elapse": "10m"}, db_uri=db_uri)
    assert set(wait_jobs(pjm, second.job_ids, timeout=600).values()) == {JobState.COMPLETED}
    assert {d["state"] for d in db.fireworks.find({"spec._matdx.campaign": "md-walltime"})} == {
        "COMPLETED"
    }
    (calc,) = db.calculations.find(md)  # exactly one MD result
    assert calc["status"] == "completed"
    extra = calc["output"]["extra"]
    stop = extra["resumed_from_step"]
    assert extra["resumed"] == 1 and 0 < stop < 122000
    assert extra["segments"][0]["ended"] == "deadline"
    assert calc["output"]["n_steps"] == 122000 and extra["n_samples"] == 120000 // 100 + 1
    assert calc["provenance"]["work_dir"] == str(workdirs[0])
    assert [c["handler"] for c in calc["output"]["corrections"]] == ["CheckpointResume"]
    # and one pre-screen result per candidate: nothing lost, nothing duplicated
    unique = db.campaign_materials.count_documents({"campaign": "md-walltime"})
    assert unique == 3  # fcc, bcc, hcp
    assert db.calculations.count_documents({"campaign": "md-walltime"}) == unique + 1
