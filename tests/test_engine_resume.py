"""Deadlines and resumption with the real codes: pw.x (Si) and LAMMPS (EAM Cu).

A call given ``deadline=`` must stop cleanly before it with :class:`DeadlineReachedError`
and leave what the next call in the same work directory continues from: pw.x's restart
files, LAMMPS checkpoints. A run killed with ``kill -9`` starts again from scratch (pw.x,
which writes no usable restart then) or from its last periodic checkpoint (LAMMPS). Every
continued run is compared with an uninterrupted one. pw.x runs on one MPI rank, LAMMPS on
one process, to keep the timings steady on two shared cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.io.espresso import units as qe_units
from pymatgen.core import Lattice, Structure

from matdx.core.errors import DeadlineReachedError, EngineError
from matdx.engines.base import EngineProfile
from matdx.engines.lammps import checkpoint
from matdx.engines.lammps.core import LammpsEngine
from matdx.engines.lammps.inputs import CHECKPOINT_FILES, DEFAULT_POTENTIALS_DIR, STOP_FILE
from matdx.engines.lammps.parse import read_log
from matdx.engines.qe.core import QeEngine, default_profile
from matdx.engines.qe.resume import STATE_FILE


def calculate(structure, task, settings=None, workdir=None, profile=None, deadline=None):
    """The pw.x engine's ``calculate`` with ``profile`` (default: this machine's)."""
    return QeEngine(profile).calculate(structure, task, settings, workdir, deadline)


def lammps_md(structure, settings, workdir, profile, deadline=None):
    """An MD run of the LAMMPS engine with ``profile``."""
    return LammpsEngine(profile).calculate(structure, "md", settings, workdir, deadline)


RY = qe_units["Ry"]
SLOW = {
    "ecutwfc": 30,
    "kpts": [12, 12, 12],
    "conv_thr": 1e-12,
    "mixing_beta": 0.1,
    "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"},
}
"""Si SCF of about ten seconds on one rank, many SCF iterations."""
FAST = {"ecutwfc": 16, "kpts": [4, 4, 4], "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}}
RELAX = {**FAST, "kpts": [6, 6, 6], "conv_thr": 1e-11}
"""Si relaxation of about five seconds on one rank, a few ionic steps."""

LMP = EngineProfile.from_text("lmp", data={"potentials_dir": DEFAULT_POTENTIALS_DIR})
CU = bulk("Cu", "fcc", a=3.615, cubic=True)
NVT = {
    "supercell": 4,
    "ensemble": "nvt",
    "temperature": 300.0,
    "timestep": 2.0,
    "equilibration": 2000,
    "steps": 30000,
    "thermo_interval": 50,
    "dump_interval": 1000,
    "checkpoint_interval": 5000,
}
NPT = {
    "supercell": 4,
    "ensemble": "npt",
    "temperature": 300.0,
    "timestep": 2.0,
    "equilibration": 1000,
    "steps": 20000,
    "thermo_interval": 50,
    "dump_interval": 500,
    "checkpoint_interval": 2000,
}


@pytest.fixture(scope="module", autouse=True)
def _codes() -> None:
    for program in ("pw.x", "lmp", "/usr/bin/mpirun"):
        if shutil.which(program) is None:
            pytest.fail(f"{program} is needed (Debian: quantum-espresso, lammps, openmpi-bin)")
    os.environ["OMP_NUM_THREADS"] = "1"


def one_rank() -> EngineProfile:
    return dataclasses.replace(
        default_profile(), command=("/usr/bin/mpirun", "--allow-run-as-root", "-np", "1", "pw.x")
    )


def silicon(second: tuple[float, float, float] = (0.25, 0.25, 0.25)) -> Structure:
    a = 5.47
    lattice = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    return Structure(lattice, ["Si", "Si"], [[0, 0, 0], list(second)])


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text and text
    return text


def processes(name: str, workdir: Path) -> list[int]:
    """Our processes called ``name``: those running in ``workdir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == name and os.readlink(proc / "cwd") == str(
                    workdir
                ):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def slow_reference() -> object:
    """The SLOW Si SCF, uninterrupted."""
    return calculate(silicon(), "static", SLOW, profile=one_rank())


# --- pw.x -----------------------------------------------------------------------------


def test_qe_scf_stops_before_deadline_and_resumes(tmp_path: Path, slow_reference) -> None:
    workdir = tmp_path / "run"
    deadline = time.time() + 10
    with pytest.raises(DeadlineReachedError) as exc:
        calculate(silicon(), "static", SLOW, workdir=workdir, profile=one_rank(), deadline=deadline)
    assert time.time() < deadline
    assert one_line(exc).endswith(f"resumable in {workdir}")
    stopped = (workdir / "pw.out").read_text()
    assert "Maximum CPU time exceeded" in stopped and "convergence has been achieved" not in stopped
    limit = float(re.search(r"max_seconds\s*=\s*([\d.]+)", (workdir / "pw.in").read_text())[1])
    assert 2.0 <= limit <= 5.0  # 10 s left, minus a margin of at least 5 s
    assert (workdir / "out" / "matdx.save").is_dir()
    assert json.loads((workdir / STATE_FILE).read_text())["status"] == "stopped"
    before = sorted(p.name for p in workdir.iterdir())
    with pytest.raises(DeadlineReachedError, match=r"no time to start pw\.x"):
        calculate(silicon(), "static", SLOW, workdir=workdir, deadline=time.time() + 3)
    assert sorted(p.name for p in workdir.iterdir()) == before  # nothing started

    # another calculation in a copy of that directory does not continue the stopped one
    other = tmp_path / "other"
    shutil.copytree(workdir, other)
    fast = calculate(silicon(), "static", FAST, workdir=other, profile=one_rank())
    assert fast.extra["resumed"] == 0 and fast.corrections == []
    assert "restarted from" not in (other / "pw.out").read_text()

    result = calculate(
        silicon(), "static", SLOW, workdir=workdir, profile=one_rank(), deadline=time.time() + 600
    )
    assert result.extra["resumed"] == 1
    assert [c["handler"] for c in result.corrections] == ["DeadlineResume"]
    assert result.parameters["input_data"]["control"]["restart_mode"] == "restart"
    assert result.parameters["input_data_initial"]["control"]["restart_mode"] == "from_scratch"
    assert "Calculation restarted from" in (workdir / "pw.out").read_text()
    assert (workdir / "pw.out.1").read_text() == stopped
    assert result.converged
    assert abs(result.energy - slow_reference.energy) / RY / len(silicon()) < 1e-5
    assert not (workdir / "out").exists()  # removed after success, as without a deadline
    assert json.loads((workdir / STATE_FILE).read_text())["status"] == "done"


def test_qe_relax_stops_before_deadline_and_resumes(tmp_path: Path) -> None:
    start = silicon(second=(0.29, 0.25, 0.22))
    reference = calculate(start, "relax", RELAX, profile=one_rank())
    assert reference.converged and reference.n_steps > 2
    deadline = time.time() + 8
    with pytest.raises(DeadlineReachedError):
        calculate(start, "relax", RELAX, workdir=tmp_path, profile=one_rank(), deadline=deadline)
    assert time.time() < deadline
    stopped = (tmp_path / "pw.out").read_text()
    assert "Maximum CPU time exceeded" in stopped and "bfgs converged" not in stopped

    result = calculate(start, "relax", RELAX, workdir=tmp_path, profile=one_rank())
    assert result.extra["resumed"] == 1
    assert [c["handler"] for c in result.corrections] == ["DeadlineResume"]
    text = (tmp_path / "pw.out").read_text()
    # pw.x says "Calculation restarted from" when it stopped inside an SCF cycle, and
    # reads the stopped run's positions and cell when it stopped between ionic steps
    restarted = ("Calculation restarted from", "Atomic positions and unit cell read from directory")
    assert any(m in text for m in restarted) and "bfgs converged" in text
    assert result.converged and result.n_steps == reference.n_steps
    assert abs(result.energy - reference.energy) / RY / len(start) < 1e-5
    final = Structure.from_dict(result.structure)
    assert np.allclose(
        final.cart_coords, Structure.from_dict(reference.structure).cart_coords, atol=1e-4
    )


_CALCULATE = """
import json, sys
from pymatgen.core import Structure
from matdx.engines.base import EngineProfile
from matdx.engines.qe.core import QeEngine, default_profile
structure, settings, command, workdir = json.loads(sys.argv[1])
profile = EngineProfile(tuple(command), default_profile().env, default_profile().data)
QeEngine(profile).calculate(Structure.from_dict(structure), "static", settings, workdir)
"""


def test_qe_run_killed_by_signal_9_starts_again_from_scratch(
    tmp_path: Path, slow_reference
) -> None:
    workdir = (tmp_path / "run").resolve()
    args = json.dumps([silicon().as_dict(), SLOW, list(one_rank().command), str(workdir)])
    job = subprocess.Popen(
        [sys.executable, "-c", _CALCULATE, args],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out = workdir / "pw.out"
    try:
        wait_for(
            lambda: out.exists() and "iteration #  3" in out.read_text(errors="replace"),
            what="pw.x's third SCF iteration",
        )
    finally:  # the batch job ends at once: Python, mpirun and pw.x
        os.killpg(job.pid, signal.SIGKILL)
        for pid in processes("pw.x", workdir):
            os.kill(pid, signal.SIGKILL)
        job.wait(timeout=30)
    wait_for(lambda: not processes("pw.x", workdir), 30, "pw.x to end")
    assert "JOB DONE" not in out.read_text()
    assert json.loads((workdir / STATE_FILE).read_text())["status"] == "running"
    assert (workdir / "out").is_dir()  # the leftovers

    result = calculate(
        silicon(), "static", SLOW, workdir=workdir, profile=one_rank(), deadline=time.time() + 600
    )
    assert result.extra["resumed"] == 0 and result.corrections == []
    text = (workdir / "pw.out").read_text()
    assert "restarted from" not in text and "Starting wfcs are" in text
    assert "JOB DONE" not in (workdir / "pw.out.1").read_text()  # the killed run, kept
    assert result.converged
    assert abs(result.energy - slow_reference.energy) / RY / len(silicon()) < 1e-5


class Interrupted(BaseException):
    """Raised from a signal handler, as a test timeout or Ctrl-C interrupts a run."""


def test_an_interrupted_run_leaves_no_program_running(tmp_path: Path) -> None:
    workdir = (tmp_path / "run").resolve()
    out = workdir / "pw.out"

    def interrupt(signum, frame):
        if out.exists() and "iteration #  2" in out.read_text(errors="replace"):
            raise Interrupted
        signal.setitimer(signal.ITIMER_REAL, 0.05)

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(Interrupted):  # not swallowed, not turned into an engine error
            calculate(silicon(), "static", SLOW, workdir=workdir, profile=one_rank())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # mpirun and pw.x ended before the exception left the engine
    assert processes("pw.x", workdir) == [] and processes("mpirun", workdir) == []
    assert "JOB DONE" not in out.read_text()


# --- LAMMPS ---------------------------------------------------------------------------


def dump_steps(path: Path) -> list[int]:
    lines = path.read_text().splitlines()
    return [int(lines[i + 1]) for i, line in enumerate(lines) if line == "ITEM: TIMESTEP"]


def first_step(log: Path) -> int:
    return int(read_log(log).blocks[0].table()["step"][0])


def test_lammps_md_stops_before_deadline_and_resumes(tmp_path: Path) -> None:
    end = NVT["equilibration"] + NVT["steps"]
    reference = lammps_md(CU, NVT, tmp_path / "reference", LMP)
    workdir = tmp_path / "run"
    deadline = time.time() + 8
    with pytest.raises(DeadlineReachedError) as exc:
        lammps_md(CU, NVT, workdir, LMP, deadline=deadline)
    assert time.time() < deadline
    match = re.fullmatch(
        rf"LAMMPS md stopped at step (\d+) of {end} .*; resumable in (.+)", one_line(exc)
    )
    assert match and match[2] == str(workdir)
    stop = int(match[1])
    assert 0 < stop < end and checkpoint.restart_step(workdir / STOP_FILE) == stop
    assert json.loads((workdir / "parameters.json").read_text())["run"]["state"] == "stopped"
    with pytest.raises(DeadlineReachedError, match="no time to start LAMMPS"):
        lammps_md(CU, NVT, workdir, LMP, deadline=time.time() + 3)

    result = lammps_md(CU, NVT, workdir, LMP, deadline=time.time() + 600)
    extra = result.extra
    assert extra["resumed"] == 1 and extra["resumed_from_step"] == stop
    assert extra["segments"] == [
        {"dir": "attempt.1", "first_step": 0, "last_step": stop, "ended": "deadline"}
    ]
    assert [c["handler"] for c in result.corrections] == ["CheckpointResume"]
    # the continued run starts where the first one stopped and follows the same trajectory
    continued = read_log(workdir / "log.lammps").blocks[0].table()
    assert continued["step"][0] == stop
    uninterrupted = read_log(tmp_path / "reference" / "log.lammps").blocks[-1].table()
    step = continued["step"][1]  # the next printed step: on the thermo grid
    assert step % 50 == 0 and stop < step <= stop + 50
    i = int(np.flatnonzero(uninterrupted["step"] == step)[0])
    for column in ("potential_energy_eV", "kinetic_energy_eV", "pressure_bar"):
        assert continued[column][1] == pytest.approx(uninterrupted[column][i], rel=1e-6), column
    # the whole production run, once: as many samples and frames as without the stop
    assert result.n_steps == reference.n_steps == end
    assert extra["n_samples"] == reference.extra["n_samples"] == NVT["steps"] // 50 + 1
    frames = dump_steps(Path(extra["trajectory"]))
    assert (
        frames
        == dump_steps(Path(reference.extra["trajectory"]))
        == list(range(2000, end + 1, 1000))
    )
    for key, mean in reference.extra["averages"].items():
        error = reference.extra["standard_errors"][key]
        assert extra["averages"][key] == pytest.approx(mean, abs=3 * error + 1e-9), key
    pieces = [workdir / "attempt.1" / "log.lammps", workdir / "log.lammps"]
    table = checkpoint.production_table(pieces, NVT["equilibration"], NVT["steps"], 50, 2.0)
    assert table["step"].tolist() == uninterrupted["step"].tolist()
    assert np.allclose(table["time_ps"], uninterrupted["time_ps"], rtol=0, atol=1e-9)
    assert not any((workdir / name).exists() for name in (STOP_FILE, *CHECKPOINT_FILES))
    # an uninterrupted run: the production table is the production run's thermo block
    log = tmp_path / "reference" / "log.lammps"
    joined = checkpoint.production_table([log], NVT["equilibration"], NVT["steps"], 50, 2.0)
    block = read_log(log).blocks[-1].table()
    assert joined.keys() == block.keys()
    assert all(np.array_equal(joined[k], block[k]) for k in block)


def test_lammps_md_killed_by_signal_9_resumes_from_checkpoint(tmp_path: Path) -> None:
    end = NPT["equilibration"] + NPT["steps"]
    workdir = (tmp_path / "run").resolve()
    errors: list[str] = []

    def run() -> None:
        try:
            lammps_md(CU, NPT, workdir, LMP)
        except EngineError as exc:
            errors.append(str(exc))

    def past(step: int) -> bool:
        log = workdir / "log.lammps"
        text = log.read_text(errors="replace") if log.exists() else ""
        return any(int(s) >= step for s in re.findall(r"^\s+(\d+) \d", text, re.M))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for(lambda: past(5000), what="step 5000")
    killed = processes("lmp", workdir)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout=60)
    assert killed and errors and "truncated" in errors[0]
    killed_at = max(
        int(s) for s in re.findall(r"^\s+(\d+) \d", (workdir / "log.lammps").read_text(), re.M)
    )
    assert killed_at < end
    assert json.loads((workdir / "parameters.json").read_text())["run"]["state"] == "running"

    result = lammps_md(CU, NPT, workdir, LMP)
    start = result.extra["resumed_from_step"]
    assert 0 < start <= killed_at and start % NPT["checkpoint_interval"] == 0
    assert first_step(workdir / "log.lammps") == start
    assert result.extra["segments"] == [
        {"dir": "attempt.1", "first_step": 0, "last_step": killed_at, "ended": "interrupted"}
    ]
    assert result.n_steps == end and result.extra["production_steps"] == NPT["steps"]
    assert result.extra["n_samples"] == NPT["steps"] // 50 + 1
    assert dump_steps(Path(result.extra["trajectory"])) == list(range(1000, end + 1, 500))
    assert result.extra["averages"]["temperature_K"] == pytest.approx(300, rel=0.05)


def test_lammps_unreadable_checkpoint_falls_back_to_the_other(tmp_path: Path) -> None:
    settings = {**NVT, "checkpoint_interval": 1000}
    with pytest.raises(DeadlineReachedError):
        lammps_md(CU, settings, tmp_path, LMP, deadline=time.time() + 8)
    stop = checkpoint.restart_step(tmp_path / STOP_FILE)
    older = max(checkpoint.restart_step(tmp_path / name) for name in CHECKPOINT_FILES)
    assert 0 < older < stop
    data = (tmp_path / STOP_FILE).read_bytes()
    (tmp_path / STOP_FILE).write_bytes(data[: len(data) // 2])  # killed while writing it

    result = lammps_md(CU, settings, tmp_path, LMP)
    assert [c["handler"] for c in result.corrections] == ["CheckpointResume", "CheckpointHandler"]
    assert result.corrections[1]["errors"] == [f"cannot read checkpoint {STOP_FILE} (deleted)"]
    assert result.extra["resumed_from_step"] == older
    assert result.n_steps == 32000 and result.extra["n_samples"] == NVT["steps"] // 50 + 1
    assert dump_steps(Path(result.extra["trajectory"])) == list(range(2000, 32001, 1000))
