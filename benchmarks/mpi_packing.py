"""mpi_packing: 16 small pw.x SCF tasks packed into slots vs a plain ``xargs -P 2`` loop.

The tasks: static SCF of Al and Cu (fcc) and Si (diamond) at 16 lattice constants, a few
seconds of pw.x each. They run

* through the slot farm's scheduler (:func:`matdx.execution.slots.run_slots`) on this
  machine's two cores: a :class:`~matdx.sites.slots.CorePool` of one node hands each task
  a slot, and a worker process runs the QE engine (input, pw.x through the slot's launch
  prefix from ``hpc_profiles/local.yaml``: ``mpirun -np 1 taskset -c <core>``, parsing),
  with 1-rank slots (two tasks at once) and, for comparison, 2-rank slots (one task on
  both cores); and
* as the same pw.x runs (the inputs the engine wrote) started by
  ``xargs -P 2`` (``mpirun -np 1 pw.x -in pw.in``), nothing else.

Loop and farm runs alternate (``--rounds`` each; this shared machine's speed drifts).
Reported: time to solution of each (median and spread), the farm/loop ratio (goal
<= 1.05), and core efficiency = sum of the pw.x runs' CPU time (``PWSCF ... CPU`` in each
pw.out) / (2 cores × wall) (goal >= 90 % on an idle machine; with other work on the cores
the loop's efficiency is the reference), and occupancy = the same with pw.x's own wall time
(``PWSCF ... WALL``): how full the slots were kept, whatever pw.x does inside (its own
CPU/wall is below 90 % here: MPI start-up and file I/O).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mpi_packing.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from matdx.engines.base import TaskLaunch, task_launch
from matdx.execution.slots import run_slots
from matdx.sites.models import load_profile
from matdx.sites.slots import CorePool, Slot, SlotRequest, launch_prefix, slot_env

ROOT = Path(__file__).resolve().parents[1]
MPIRUN = "/usr/bin/mpirun --allow-run-as-root -np 1 {bind} pw.x -in pw.in > pw.out 2> pw.err"
"""The loop's command. Open MPI binds a 1-rank run to core 0 by default, so two runs of the
loop share one core unless ``--loop-bind none`` (the default here) lets the kernel place them."""
SETTINGS = {
    "Al": ({"ecutwfc": 30, "kpts": [12, 12, 12], "pseudopotentials": {"Al": "Al.pz-vbc.UPF"}},
           "fcc", np.linspace(3.95, 4.10, 6)),
    "Cu": ({"ecutwfc": 30, "ecutrho": 240, "kpts": [8, 8, 8],
            "pseudopotentials": {"Cu": "Cu.pz-d-rrkjus.UPF"}}, "fcc", np.linspace(3.55, 3.65, 5)),
    "Si": ({"ecutwfc": 30, "kpts": [8, 8, 8], "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}},
           "diamond", np.linspace(5.35, 5.50, 5)),
}
TASKS = [(el, kind, float(a)) for el, (_, kind, lattice) in SETTINGS.items() for a in lattice]


def settings(el: str, kscale: int) -> dict:
    """The engine settings of element ``el``'s tasks, each k-mesh dimension times ``kscale``
    (``--kscale``: tasks about ``kscale**3`` times longer)."""
    base = SETTINGS[el][0]
    return {**base, "kpts": [kscale * k for k in base["kpts"]]}


def compute(index: int, workdir: str, launch: TaskLaunch, kscale: int) -> tuple[int, str]:
    """One SCF on the slot's launch (worker side)."""
    from matdx.engines.qe.core import QeEngine

    el, kind, a = TASKS[index]
    structure = AseAtomsAdaptor.get_structure(bulk(el, kind, a=a))
    with task_launch(launch):
        result = QeEngine().calculate(structure, "static", settings(el, kscale), workdir)
    return index, f"{result.energy:.6f}"


def pw_seconds(dirs: list[Path]) -> tuple[float, float]:
    """Sums of pw.x's own CPU and wall time over the runs (``PWSCF : ... CPU ... WALL``)."""
    cpu = wall = 0.0
    for d in dirs:
        m = re.search(r"PWSCF\s*:\s*([\d.]+)s CPU\s+([\d.]+)s WALL", (d / "pw.out").read_text())
        assert m, d
        cpu, wall = cpu + float(m.group(1)), wall + float(m.group(2))
    return cpu, wall


def farm_run(
    workers: ProcessPoolExecutor, root: Path, ranks: int, kscale: int
) -> tuple[float, list[Path]]:
    profile = load_profile(ROOT / "hpc_profiles" / "local.yaml")
    pool = CorePool(1, profile.node)
    todo = list(range(len(TASKS)))
    dirs = [root / f"t{i:02d}" for i in todo]

    def start(i: int, slot: Slot) -> Future[tuple[int, str]]:
        launch = TaskLaunch(launch_prefix(profile, slot), slot_env(slot))
        return workers.submit(compute, i, str(dirs[i]), launch, kscale)

    t0 = time.perf_counter()
    ran = run_slots(pool, lambda: todo.pop(0) if todo else None,
                    lambda i: SlotRequest(1, ranks, 1), start, lambda: 1e9, 0.0)
    wall = time.perf_counter() - t0
    assert len(ran.states) == len(TASKS), ran
    return wall, dirs


def loop_run(inputs: list[Path], root: Path, bind: str) -> tuple[float, list[Path]]:
    dirs = []
    for src in inputs:
        d = root / src.name
        d.mkdir(parents=True)
        shutil.copy(src / "pw.in", d / "pw.in")
        dirs.append(d)
    listing = "\n".join(str(d) for d in dirs) + "\n"
    t0 = time.perf_counter()
    command = MPIRUN.format(bind=f"--bind-to {bind}" if bind else "")
    subprocess.run(["xargs", "-P", "2", "-I{}", "sh", "-c", f"cd {{}} && {command}"],
                   input=listing, text=True, check=True)
    return time.perf_counter() - t0, dirs


def spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):.1f} s "
            f"(min {min(values):.1f}, max {max(values):.1f}, n={len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop-bind", default="none",
                        help="Open MPI --bind-to of the loop's runs ('' for Open MPI's default)")
    parser.add_argument("--layouts", default="1,2", help="slot sizes (ranks) to run")
    parser.add_argument("--kscale", type=int, default=1,
                        help="k-mesh scale: 2 makes each task about 8 times longer")
    args = parser.parse_args()
    names = ["loop", *(f"farm{r}" for r in args.layouts.split(","))]
    import matdx.engines.qe.core  # noqa: F401  (imported before the workers fork)

    base = Path(tempfile.mkdtemp(prefix="matdx-mpi-packing-"))
    results: dict[str, list[float]] = {"loop": [], "farm1": [], "farm2": []}
    eff: dict[str, list[float]] = {"loop": [], "farm1": [], "farm2": []}
    occupancy: dict[str, list[float]] = {"loop": [], "farm1": [], "farm2": []}
    with ProcessPoolExecutor(2) as workers:
        # warm-up (untimed): starts the workers and writes the inputs the loop runs
        _, inputs = farm_run(workers, base / "warmup", 1, args.kscale)
        for r in range(args.rounds):
            for name in names:
                root = base / f"{name}-{r}"
                if name == "loop":
                    wall, dirs = loop_run(inputs, root, args.loop_bind)
                else:
                    wall, dirs = farm_run(workers, root, int(name[-1]), args.kscale)
                results[name].append(wall)
                cpu, busy = pw_seconds(dirs)
                eff[name].append(cpu / (2 * wall))
                occupancy[name].append(busy / (2 * wall))
                print(f"round {r} {name}: {wall:.1f} s, core efficiency "
                      f"{100 * eff[name][-1]:.0f} %, occupancy {100 * occupancy[name][-1]:.0f} %",
                      flush=True)
    summary: dict[str, object] = {"tasks": len(TASKS), "kscale": args.kscale,
                                  "loop bind": args.loop_bind}
    for name in names:
        summary[name] = spread(results[name])
        summary[f"efficiency {name} %"] = [round(100 * x, 1) for x in eff[name]]
        summary[f"occupancy {name} %"] = [round(100 * x, 1) for x in occupancy[name]]
        if name != "loop":
            summary[f"{name}/loop per round"] = [
                round(f / lp, 3) for f, lp in zip(results[name], results["loop"], strict=True)]
    print(json.dumps(summary, indent=1))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
