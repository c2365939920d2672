"""Secrets never leak; user-controlled strings never reach a shell unquoted."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymongo
import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET = "S3cr3t-pw-4711"
pytestmark = pytest.mark.ferretdb

CAMPAIGN = """\
name: secret-check
chemical_space: {elements: [Cu, Au], max_components: 2, orderings: null}
batch_size: 10
"""


def matdx(*args, env, check=True):
    return subprocess.run([sys.executable, "-m", "matdx.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=900, check=check)


@pytest.fixture
def secret_db(ferret_base, tmp_path):
    """A database name, dropped afterwards once the test's local jobs have ended."""
    name = f"t_secret_{uuid.uuid4().hex[:8]}"
    yield name
    # a job may still write (its farm's last claims and heartbeats) after its Fireworks
    # are COMPLETED, and a write after the drop would create the database again
    from matdx.schedulers.local import LocalScheduler

    jobs = LocalScheduler(state_dir=tmp_path / "data" / "local-jobs")
    deadline = time.time() + 120
    while jobs.count_jobs() and time.time() < deadline:
        time.sleep(0.5)
    pymongo.MongoClient(ferret_base).drop_database(name)


def test_database_password_appears_nowhere(ferret_base, secret_db, tmp_path):
    name = secret_db
    host = ferret_base.split("://", 1)[1].rstrip("/")
    uri = f"mongodb://alice:{SECRET}@{host}/{name}?authMechanism=PLAIN"
    data = tmp_path / "data"
    env = {**os.environ, "MATDX_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    env.pop("MATDX_DB_URI", None)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    outputs = []
    # a batch job (local scheduler): rendered script, job output, launch directories
    sub = matdx("submit", str(tmp_path / "c.yaml"), "--profile",
                str(ROOT / "hpc_profiles" / "local.yaml"), "--db", uri, env=env)
    outputs += [sub.stdout, sub.stderr]
    db = pymongo.MongoClient(ferret_base)[name]
    deadline = time.time() + 300
    while db.fireworks.count_documents({"state": {"$ne": "COMPLETED"}}) and time.time() < deadline:
        time.sleep(2)
    assert db.fireworks.count_documents({}) > 0
    assert db.fireworks.count_documents({"state": {"$ne": "COMPLETED"}}) == 0
    run = matdx("run", str(tmp_path / "c.yaml"), "--db", uri, env=env)
    outputs += [run.stdout, run.stderr]
    outputs.append(matdx("status", "secret-check", "--db", uri, env=env).stdout)
    outputs.append(matdx("results", "secret-check", "--db", uri, env=env).stdout)
    outputs.append(matdx("doctor", "--db", uri, env=env, check=False).stdout)
    # an error message that shows the URI
    bad = matdx("status", "secret-check", "--db", uri.replace(host, "127.0.0.1:9"), env=env,
                check=False)
    assert bad.returncode == 3 and "alice:***@" in bad.stderr
    outputs += [bad.stdout, bad.stderr]
    job_dirs = list((data / "runs" / "secret-check").glob("submit-*"))
    assert job_dirs
    env_file = job_dirs[0] / "matdx.env"
    assert SECRET in env_file.read_text()  # the one place it is meant to be
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    for text in outputs:
        assert SECRET not in text
    files = [p for p in data.rglob("*") if p.is_file() and p != env_file]
    assert any(p.name == "job.sh" for p in files)
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), p
    # nor in anything stored: provenance, launches, campaign documents
    for coll in db.list_collection_names():
        for doc in db[coll].find({}):
            assert SECRET not in json.dumps(doc, default=str), coll


@pytest.mark.parametrize("evil", ["x; touch pwned", "$(touch pwned)", "`touch pwned`",
                                  "a\ntouch pwned", "' ; touch pwned ; '"])
def test_metacharacters_in_paths_stay_inert_in_job_scripts(evil, tmp_path, db_uri):
    """A data directory full of metacharacters becomes a quoted word in the script."""
    from matdx.execution.submit import submit
    from matdx.workflows.campaign import load_campaign

    data = tmp_path / f"data {evil}"
    os.environ["MATDX_DATA_DIR"] = str(data)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    report = submit(load_campaign(tmp_path / "c.yaml"), ROOT / "hpc_profiles" / "local.yaml",
                    db_uri=db_uri, dry_run=True)
    assert report.script is None and not data.exists()  # a dry run writes nothing
    script = report.script_text
    (tmp_path / "job.sh").write_text(script)
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sh")]).returncode == 0
    # run the script's environment and cd lines only: no file is created by the payload
    report.job_dir.mkdir(parents=True)
    lines = [ln for ln in script.splitlines() if ln.startswith(("export ", "cd "))]
    subprocess.run(["bash", "-c", "\n".join(lines)], cwd=tmp_path, check=True)
    assert not list(tmp_path.rglob("pwned"))
    assert not list(Path.cwd().glob("pwned"))
