"""Fault injection with real processes and a real server: nothing lost, nothing duplicated.

Each test ends by checking that every candidate of the campaign has exactly one completed
calculation (0 lost, 0 duplicated). Lost-run detection time is bounded by ``stale_after``
(the heartbeat beats every 10 s): a killed worker is detected at most ``stale_after``
seconds after its death.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pytest

from matdx.store import query as q
from matdx.store.access import Caller
from matdx.workflows.campaign import LoadedCampaign, validate_campaign
from matdx.workflows.runner import submit_campaign

pytestmark = pytest.mark.ferretdb
MPIEXEC = str(Path(sys.executable).parent / "mpiexec")

SLOW = {
    "name": "faulty",
    "chemical_space": {"elements": ["Cu", "Au"], "max_components": 2},
    "prescreen": {"engine": "emt", "optimizer": "FIRE", "fmax": 0.002, "steps": 3000},
    "batch_size": 10,
}


def slow_campaign(**data) -> LoadedCampaign:
    raw = {**SLOW, **data}
    return LoadedCampaign(validate_campaign(raw, {}, "faulty"), Path("faulty.yaml"), raw)


def db_of(uri: str):
    base, name = uri.rsplit("/", 1)
    return pymongo.MongoClient(base + "/", serverSelectionTimeoutMS=20000)[name]


def assert_exactly_once(db, campaign: str) -> int:
    unique = db.campaign_materials.count_documents({"campaign": campaign})
    per_material = list(
        db.calculations.aggregate(
            [
                {"$match": {"campaign": campaign}},
                {"$group": {"_id": "$material_id", "n": {"$sum": 1}}},
            ]
        )
    )
    assert len(per_material) == unique, "lost results"
    assert all(d["n"] == 1 for d in per_material), "duplicated results"
    assert db.calculations.count_documents({"campaign": campaign, "status": "completed"}) == unique
    assert {d["state"] for d in db.fireworks.find({"spec._matdx.campaign": campaign})} == {
        "COMPLETED"
    }
    return unique


def farm_cmd(uri: str, *extra: str, n: int = 2) -> list[str]:
    return [
        MPIEXEC,
        "-n",
        str(n),
        sys.executable,
        "-m",
        "matdx.cli.main",
        "farm",
        "faulty",
        "--db",
        uri,
        "--task-estimate",
        "1",
        *extra,
    ]


def wait_for(predicate, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(step)


def test_kill_9_of_a_worker_is_detected_rerun_and_nothing_is_lost(db_uri, tmp_path):
    from matdx.execution.lostruns import lost_fireworks
    from matdx.workflows import fireworks_adapter as fwa
    from matdx.workflows.context import open_store

    submit_campaign(slow_campaign(), launch=False, db_uri=db_uri)
    db = db_of(db_uri)
    proc = subprocess.Popen(
        farm_cmd(db_uri),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: db.calculations.count_documents({}) >= 10, 180, "first results")
    # kill in the middle of a batch: one that has been running for a while
    wait_for(lambda: db.fireworks.find_one({"state": "RUNNING"}), 60, "a running batch")
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.monotonic()
    # what the dead worker left RUNNING (a batch may have completed just before the kill)
    killed = {d["fw_id"] for d in db.fireworks.find({"state": "RUNNING"}, {"fw_id": 1})}
    assert killed, "the kill landed between two batches"
    running = db.fireworks.find_one({"fw_id": min(killed)})
    _, backend = open_store(db_uri)
    lp = fwa.get_launchpad(backend)
    stale_after = 15.0
    wait_for(
        lambda: killed <= set(lost_fireworks(lp, "faulty", stale_after)),
        60,
        "lost-run detection",
        step=0.25,
    )
    detected_after = time.monotonic() - killed_at
    assert detected_after <= stale_after + 1.0
    print(f"lost run detected {detected_after:.1f} s after kill -9 (stale_after {stale_after})")
    before = db.calculations.count_documents({})
    rerun = subprocess.run(
        farm_cmd(db_uri, "--stale-after", str(stale_after)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    unique = assert_exactly_once(db, "faulty")
    assert before < unique
    fw = db.fireworks.find_one({"fw_id": running["fw_id"]})
    assert len(fw["archived_launches"]) == 1  # rerun once


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateFerret:
    """A FerretDB of the test's own, to stop and restart."""

    def __init__(self, directory: Path) -> None:
        self.bin = os.environ.get("MATDX_FERRETDB_BIN") or str(
            Path.home() / ".cache" / "matdx" / "bin" / "ferretdb"
        )
        self.dir = directory
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        (directory / "data").mkdir(parents=True)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.bin,
                "--handler=sqlite",
                f"--sqlite-url=file:{self.dir}/data/",
                f"--listen-addr=127.0.0.1:{self.port}",
                "--telemetry=disable",
                "--log-level=error",
                "--debug-addr=-",
                f"--state-dir={self.dir}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=300).admin.command("ping")
                return True
            except pymongo.errors.PyMongoError:
                return False

        wait_for(up, 20, "FerretDB to start", step=0.2)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=20)


@pytest.fixture
def ferret(tmp_path):
    f = PrivateFerret(tmp_path / "ferret")
    f.start()
    yield f
    if f.proc and f.proc.poll() is None:
        f.stop()


def test_database_restart_during_a_campaign(ferret, tmp_path):
    uri = ferret.uri + "restart"
    submit_campaign(
        slow_campaign(data={"tier": "closed", "owner": "projX"}), launch=False, db_uri=uri
    )
    db = db_of(uri)
    log = tmp_path / "farm.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            farm_cmd(uri, "--stale-after", "15"),
            start_new_session=True,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: db.calculations.count_documents({}) >= 5, 180, "first results")
        ferret.stop()
        # while it is down, readers get an error, never somebody else's closed records
        from matdx.workflows.context import open_store

        time.sleep(8)
        ferret.start()
        open_store(uri)
        outsider = q.run_query(q.MaterialQuery(), Caller("dave", ("other",)))
        assert outsider == []
        proc.wait(timeout=900)
    text = log.read_text()
    assert "is unreachable" in text and "retrying" in text
    # a Firework whose end could not be recorded while the server was down is rerun
    time.sleep(16)
    subprocess.run(
        farm_cmd(uri, "--stale-after", "15"), check=True, capture_output=True, timeout=600
    )
    assert_exactly_once(db, "faulty")


def test_two_runs_of_one_campaign_at_once_do_no_double_work(db_uri, tmp_path):
    path = tmp_path / "faulty.yaml"
    import yaml

    path.write_text(yaml.safe_dump(SLOW))
    cmd = [sys.executable, "-m", "matdx.cli.main", "run", str(path), "--db", db_uri]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    db = db_of(db_uri)
    assert db.workflows.count_documents({}) == 1  # one plan, one workflow
    launches = list(db.launches.find({}, {"fw_id": 1}))
    assert len(launches) == len({d["fw_id"] for d in launches})  # each Firework ran once
    assert_exactly_once(db, "faulty")


def test_unwritable_scratch_fails_with_a_reason_and_loses_nothing(db_uri, tmp_path):
    if os.geteuid() == 0:
        # root ignores permissions: make the scratch path a file, which nobody can write into
        blocker = tmp_path / "scratch"
        blocker.write_text("not a directory")
        data_dir = tmp_path / "blocked"
        data_dir.mkdir()
        (data_dir / "runs").symlink_to(blocker)
    else:
        data_dir = tmp_path / "blocked"
        (data_dir / "runs").mkdir(parents=True)
        (data_dir / "runs").chmod(0o555)
    submit_campaign(slow_campaign(batch_size=40), launch=False, db_uri=db_uri)
    env = {**os.environ, "MATDX_DATA_DIR": str(data_dir)}
    out = subprocess.run(farm_cmd(db_uri), capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-1000:]
    assert "ERROR" in out.stderr and (
        "Not a directory" in out.stderr or "Permission denied" in out.stderr
    )
    db = db_of(db_uri)
    assert db.calculations.count_documents({}) == 0
    assert db.fireworks.count_documents({"state": "READY"}) >= 1  # nothing lost: still to do
    ok = subprocess.run(
        farm_cmd(db_uri),
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "MATDX_DATA_DIR": str(tmp_path / "good")},
    )
    assert ok.returncode == 0, ok.stderr[-1000:]
    assert_exactly_once(db, "faulty")


ENGINE_CHAIN = {
    "name": "faulty",
    "chemical_space": {
        "elements": ["Al", "Cu"],
        "prototypes": ["L1_2"],
        "orderings": None,
    },
    "batch_size": 20,
    "steps": [
        {
            "name": "md",
            "engine": "lammps",
            "task": "md",
            "select": {"top": 1, "references": False},
            "settings": {"potential": "AlCu.eam.alloy", "steps": 40000, "supercell": [4, 4, 4],
                         "dump_interval": 0},  # the best of the pre-screen: Al
        },
        {
            "name": "dft",
            "engine": "qe",
            "task": "static",
            "input": "prescreen",
            "select": {"top": 1},
            "settings": {"kspacing": 0.3},
        },
    ],
}


def _tree(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _tree_has(pid: int, name: str) -> bool:
    import psutil

    for p in _tree(pid):
        try:
            if p.name() == name:
                return True
        except psutil.Error:
            continue
    return False


def _kill_tree(pid: int) -> None:
    """kill -9 of the farm and everything it started (MPI proxies, workers, lmp, pw.x)."""
    import psutil

    for p in reversed(_tree(pid)):
        try:
            p.kill()
        except psutil.Error:
            continue


@pytest.mark.slow
def test_kill_9_during_md_and_dft_runs_loses_and_duplicates_nothing(db_uri, tmp_path):
    """A worker killed while lmp runs, then while pw.x runs: each rerun, each result once."""
    from matdx.execution.lostruns import lost_fireworks
    from matdx.workflows import fireworks_adapter as fwa
    from matdx.workflows.context import open_store

    raw = dict(ENGINE_CHAIN)
    loaded = LoadedCampaign(validate_campaign(raw, {}, "faulty"), Path("faulty.yaml"), raw)
    submit_campaign(loaded, launch=False, db_uri=db_uri)
    db = db_of(db_uri)
    _, backend = open_store(db_uri)
    lp = fwa.get_launchpad(backend)
    stale_after = 15.0
    detection = []
    for program in ("lmp", "pw.x"):
        proc = subprocess.Popen(farm_cmd(db_uri, "--stale-after", str(stale_after)),
                                start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for(lambda p=program, pid=proc.pid: _tree_has(pid, p), 300, f"{program} to run",
                 step=0.2)
        time.sleep(2)  # in the middle of the run
        running = db.fireworks.find_one({"state": "RUNNING", "spec._matdx.kind": "compute",
                                       "spec._matdx.step": {"$ne": "prescreen"}})
        assert running is not None
        _kill_tree(proc.pid)
        proc.wait()
        killed_at = time.monotonic()
        wait_for(lambda f=running["fw_id"]: f in lost_fireworks(lp, "faulty", stale_after),
                 60, "lost-run detection", step=0.25)
        detection.append(time.monotonic() - killed_at)
    out = subprocess.run(farm_cmd(db_uri, "--stale-after", str(stale_after)),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    print(f"lost runs detected {', '.join(f'{d:.1f}' for d in detection)} s after kill -9")
    assert all(d <= stale_after + 1.0 for d in detection)
    # every material of every step: exactly one completed calculation
    per_step: dict[str, dict[str, int]] = {}
    for c in db.calculations.find({"campaign": "faulty"}):
        step = c["settings"].get("step", "prescreen")
        per_step.setdefault(step, {})
        per_step[step][c["material_id"]] = per_step[step].get(c["material_id"], 0) + 1
        assert c["status"] == "completed", c.get("error")
    assert {k: len(v) for k, v in per_step.items()} == {
        "prescreen": db.campaign_materials.count_documents({"campaign": "faulty"}),
        "md": 1,
        "dft": 7,  # the best compound and fcc, bcc and hcp Al and Cu
    }
    assert all(n == 1 for v in per_step.values() for n in v.values())
    assert {d["state"] for d in db.fireworks.find({})} == {"COMPLETED"}
