"""Run small pw.x and lmp tasks through the slot scheduler and watch where they run.

``python tests/slot_tasks.py <profile.yaml> <out.json> <engine>:<ranks> ...`` runs the tasks
on the cores of one node through :func:`matdx.execution.slots.run_slots` (each in a worker
process, its program started by the profile's task launcher) while a thread samples every
pw.x and lmp process of these tasks: its ``Cpus_allowed_list`` (``/proc/<pid>/status``)
and when it was seen, and, inside a Slurm job, the job's steps (``squeue -s``). Used by
tests/test_slots.py directly and inside a Slurm batch job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from matdx.engines.base import TaskLaunch, task_launch
from matdx.execution.slots import run_slots
from matdx.sites.models import load_profile
from matdx.sites.slots import CorePool, Slot, SlotRequest, launch_prefix, slot_env

PROGRAMS = {"qe": "pw.x", "lammps": "lmp"}
QE = {"ecutwfc": 16, "kpts": [4, 4, 4], "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}}
LAMMPS = {"supercell": 3, "ensemble": "nve", "initial_temperature": 300.0, "timestep": 1.0,
          "steps": 800, "thermo_interval": 100, "dump_interval": 0}
MARK = "MATDX_SLOT_TEST"


def compute(engine: str, workdir: str, launch: TaskLaunch) -> float:
    """One calculation on the slot's launch; returns its energy."""
    from matdx.engines.registry import get_engine

    if engine == "qe":
        structure = AseAtomsAdaptor.get_structure(bulk("Si", "diamond", a=5.43))
        task, settings = "static", QE
    else:
        structure = AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=3.615, cubic=True))
        task, settings = "md", LAMMPS
    with task_launch(launch):
        result = get_engine(engine).calculate(structure, task, settings, workdir)
    return float(result.energy)


def _cpus(pid: str) -> tuple[str, dict[str, str]] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    env = dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)
    line = next(ln for ln in status.splitlines() if ln.startswith("Cpus_allowed_list"))
    return line.split(":", 1)[1].strip(), env


def sample(run_id: str, seen: dict[str, dict], steps: list[int], stop: threading.Event) -> None:
    """Record this run's pw.x/lmp processes (and Slurm steps) until ``stop`` is set."""
    job = os.environ.get("SLURM_JOB_ID")
    last_squeue = 0.0
    while not stop.is_set():
        now = time.monotonic()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if name not in PROGRAMS.values():
                continue
            got = _cpus(pid)
            if got is None or got[1].get(MARK) is None or not got[1][MARK].startswith(run_id):
                continue
            # the time of this read, not of the scan's start: a task that ends during a scan
            # and the one started on its cores then must not seem to overlap
            at = time.monotonic()
            rec = seen.setdefault(pid, {"name": name, "task": got[1][MARK], "cpus": got[0],
                                        "first": at})
            rec["last"], rec["cpus"] = at, got[0]
        if job and now - last_squeue > 0.5:
            last_squeue = now
            out = subprocess.run(["squeue", "-h", "-s", "-j", job, "-o", "%i %j"],
                                 capture_output=True, text=True).stdout.split("\n")
            steps.append(sum(1 for ln in out if ln.split(" ")[0].split(".")[-1].isdigit()))
        time.sleep(0.05)


def main(profile_path: str, out: str, tasks: list[str]) -> None:
    import matdx.engines.lammps.core
    import matdx.engines.qe.core  # noqa: F401  (imported once, before the workers fork)

    profile = load_profile(profile_path)
    pool = CorePool(1, profile.node)
    hosts = [os.environ.get("SLURMD_NODENAME", "localhost")]
    todo = list(enumerate(t.split(":") for t in tasks))
    run_id = uuid.uuid4().hex[:8]
    work = Path(out).parent / f"slots-{run_id}"
    seen: dict[str, dict] = {}
    steps: list[int] = []
    starts: dict[int, dict] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=sample, args=(run_id, seen, steps, stop), daemon=True)
    watcher.start()
    t0 = time.monotonic()
    with ProcessPoolExecutor(profile.node.cores_per_node) as workers:

        def claim() -> int | None:
            return todo.pop(0)[0] if todo else None

        def request_of(i: int) -> SlotRequest:
            return SlotRequest(1, int(tasks[i].split(":")[1]), 1)

        def start(i: int, slot: Slot) -> Future:
            engine = tasks[i].split(":")[0]
            env = {**slot_env(slot), MARK: f"{run_id}-{i}"}
            launch = TaskLaunch(launch_prefix(profile, slot, hosts), env)
            starts[i] = {"cores": list(slot.cores), "at": time.monotonic() - t0,
                         "prefix": list(launch.prefix)}
            fut = workers.submit(compute, engine, str(work / str(i)), launch)
            done: Future = Future()
            fut.add_done_callback(lambda f: done.set_result((i, f"{f.result():.6f}")))
            return done

        ran = run_slots(pool, claim, request_of, start, lambda: 1e9, 0.0)
    stop.set()
    watcher.join()
    Path(out).write_text(json.dumps({"states": ran.states, "starts": starts, "seen": seen,
                                     "steps": steps, "wall": time.monotonic() - t0}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
