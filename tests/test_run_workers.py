"""``matdx run`` on several worker processes stores what a one-process run stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CAMPAIGN = """\
name: workers
seed: 5
chemical_space:
  elements: [Cu, Au, Pd]
  max_components: 2
  orderings: {parents: [fcc], sizes: [2, 3]}
prescreen: {engine: emt, relax_cell: true, optimizer: BFGS, fmax: 0.05, steps: 300}
batch_size: 4
max_candidates: 22
"""

DUMP = """\
import json, sys
from matdx.core.settings import get_settings
from matdx.store.access import Caller
from matdx.store.codec import unpack
from matdx.store.documents import CalculationDoc, MaterialDoc
from matdx.store.export import results_frame
from matdx.workflows.context import open_store

store, _ = open_store(sys.argv[1] if len(sys.argv) > 1 else None)
calcs, pids = [], set()
for doc in CalculationDoc._get_collection().find({}):
    doc = unpack(doc)
    doc["output"].pop("wall_time_s", None)
    pids.add(doc["provenance"]["pid"])
    calcs.append({k: doc.get(k) for k in ("_id", "material_id", "settings_hash", "status",
                                          "error", "output", "campaign", "tier", "owner")})
ranked = results_frame(store, "workers", Caller(get_settings().user, ()),
                       sort="energy_above_hull")
print(json.dumps({
    "materials": sorted(d["_id"] for d in MaterialDoc._get_collection().find({}, {"_id": 1})),
    "calculations": sorted(calcs, key=lambda c: c["_id"]),
    "pids": len(pids),
    "ranking": ranked[["material_id", "energy_above_hull", "formation_energy_per_atom",
                       "spacegroup_number"]].values.tolist(),
}))
"""


def campaign_file(directory: Path) -> Path:
    path = directory / "workers.yaml"
    path.write_text(CAMPAIGN)
    return path


def run_and_dump(path: Path, data: Path, workers: int, db: str | None = None) -> dict:
    env = {**os.environ, "MATDX_DATA_DIR": str(data)}
    db_args = ["--db", db] if db else []
    proc = subprocess.run(
        [sys.executable, "-m", "matdx.cli.main", "run", str(path), "--workers", str(workers),
         *db_args],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "candidates by state: COMPLETED 22" in proc.stdout
    dump = subprocess.run([sys.executable, "-c", DUMP, *([db] if db else [])], env=env,
                          capture_output=True, text=True, timeout=120)
    assert dump.returncode == 0, dump.stderr[-3000:]
    return json.loads(dump.stdout)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    return run_and_dump(campaign_file(tmp), tmp / "data", workers=1)


def check_same(got: dict, want: dict) -> None:
    assert len(want["materials"]) == 22
    assert got["materials"] == want["materials"]
    assert [c["_id"] for c in got["calculations"]] == [c["_id"] for c in want["calculations"]]
    assert {c["status"] for c in want["calculations"]} == {"completed"}
    assert got["calculations"] == want["calculations"]
    assert len(want["ranking"]) == 22
    assert got["ranking"] == want["ranking"]
    assert want["pids"] == 1
    assert got["pids"] == 2  # computed by two worker processes


def test_two_workers_on_the_embedded_store_store_what_one_process_stores(one_process, tmp_path):
    got = run_and_dump(campaign_file(tmp_path), tmp_path / "data", workers=2)
    check_same(got, one_process)


@pytest.mark.ferretdb
def test_two_workers_on_a_server_store_what_one_process_stores(one_process, db_uri, tmp_path):
    got = run_and_dump(campaign_file(tmp_path), tmp_path / "data", workers=2,
                       db=db_uri)
    check_same(got, one_process)


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_an_interrupted_run_stops_and_the_next_run_completes_it(one_process, tmp_path, how):
    """Ctrl-C (SIGINT to the process group) or ``kill`` (SIGTERM to the process) ends
    ``matdx run`` with one line, code 130, no failed Firework and no process left; running
    the campaign again stores what an uninterrupted run does."""
    import signal
    import time

    path, data = campaign_file(tmp_path), tmp_path / "data"
    err = tmp_path / "stderr.txt"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "matdx.cli.main", "run", str(path), "--workers", "2"],
            env={**os.environ, "MATDX_DATA_DIR": str(data), "PYTHONFAULTHANDLER": "1"},
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )
        try:
            end = time.monotonic() + 300
            launches = data / "runs" / "workers"
            # the second of the six batch Fireworks has started: the first one is done
            while (
                len(list(launches.glob("launcher_*"))) < 2
                and proc.poll() is None
                and time.monotonic() < end
            ):
                time.sleep(0.02)
            assert proc.poll() is None, err.read_text()[-2000:]
            if how == "ctrl-c":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                os.kill(proc.pid, signal.SIGTERM)
            try:
                assert proc.wait(timeout=120) == 130
            except subprocess.TimeoutExpired:  # show where it hangs: every thread's stack
                os.kill(proc.pid, signal.SIGABRT)
                proc.wait(timeout=30)
                pytest.fail(f"still running 120 s after the signal:\n{err.read_text()[-6000:]}")
            # its worker processes end with it
            end = time.monotonic() + 10
            while _session_members(proc.pid) and time.monotonic() < end:
                time.sleep(0.1)
            assert _session_members(proc.pid) == []
        finally:  # a failed check leaves nothing running
            if _session_members(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
    text = err.read_text()
    assert text.splitlines()[-1] == "error: interrupted" and "Traceback" not in text
    states = subprocess.run(
        [sys.executable, "-m", "matdx.cli.main", "status", "workers", "--format", "json"],
        env={**os.environ, "MATDX_DATA_DIR": str(data)}, capture_output=True, text=True,
        check=True,
    ).stdout
    assert '"FIZZLED"' not in states or '"FIZZLED": 0' in states, states
    got = run_and_dump(path, data, workers=2)
    got["pids"] = 2  # computed by the processes of both runs
    check_same(got, one_process)


def _session_members(session: int) -> list[int]:
    """Running processes (zombies aside) of ``session``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[3]) == session:  # state, ..., session id
                members.append(int(entry.name))
    return members


def test_a_heartbeat_never_outlives_an_interrupted_launch(tmp_path, monkeypatch):
    """FireWorks' heartbeat started within :func:`serial_heartbeat` stops when the block
    ends by an interruption, even one that comes right after the thread started; it is a
    daemon thread, so that it cannot keep the process alive either."""
    import threading

    from fireworks.core import rocket

    from matdx.workflows.fireworks_adapter import serial_heartbeat

    monkeypatch.chdir(tmp_path)
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt), serial_heartbeat():
        rocket.start_ping_launch(None, 7)
        raise KeyboardInterrupt
    started = [t for t in threading.enumerate() if t not in before]
    assert [t.name for t in started] in ([], ["matdx-fw-ping-7"])
    for thread in started:
        assert thread.daemon
        thread.join(5)
        assert not thread.is_alive()
    assert rocket.start_ping_launch.__name__ == "start_ping_launch"
