"""Run pw.x and lmp as a Fugaku job would start them, and record what the engines read.

``python tests/pjm_engine_tasks.py <out.json> <mode>`` computes a Si cell with QE and a Cu
cell with LAMMPS, each in ``<mode>-<engine>/`` of the current directory, and writes their
energies and the heads of their standard-output files to ``out.json``. Modes:

- ``slot``: inside a PJM job, on a one-rank slot of ``hpc_profiles/fugaku.yaml`` launched as
  the slot farm launches it (``mpiexec --vcoordfile ... -stdout-proc ...``);
- ``profile``: inside a PJM job, with the engine command made of ``fugaku.yaml``'s launcher
  command and the program (``MATDX_QE_COMMAND``, ``MATDX_LAMMPS_COMMAND``);
- ``direct``: anywhere, the programs started without a launcher.

Used by tests/test_slots.py inside a job of the PJM stand-in (tests/pjm_standin), whose
``mpiexec`` writes every rank's output to per-rank files, as Fujitsu MPI does.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from matdx.engines.base import task_launch
from matdx.engines.registry import get_engine
from matdx.execution.slots import job_nodes, slot_launch
from matdx.sites.models import load_profile
from matdx.sites.slots import WHOLE_NODES, CorePool, resolve_request

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = {"qe": ("MATDX_QE_COMMAND", "pw.x", "pw.out"),
            "lammps": ("MATDX_LAMMPS_COMMAND", "lmp", "lammps.out")}
QE = {"ecutwfc": 12, "kpts": [2, 2, 2], "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"}}


def structure(engine: str):
    """Si (diamond) for QE, Cu (fcc, cubic cell) for LAMMPS."""
    atoms = bulk("Si", "diamond", a=5.43) if engine == "qe" else bulk("Cu", "fcc", a=3.6,
                                                                        cubic=True)
    return AseAtomsAdaptor.get_structure(atoms)


def run(mode: str) -> dict[str, dict[str, object]]:
    fugaku = load_profile(ROOT / "hpc_profiles" / "fugaku.yaml")
    out: dict[str, dict[str, object]] = {}
    for engine, (variable, program, stdout) in PROGRAMS.items():
        workdir = Path.cwd() / f"{mode}-{engine}"
        launch = None
        if mode == "slot":
            pool = CorePool(job_nodes(), fugaku.node, WHOLE_NODES[fugaku.scheduler])
            slot = pool.take(resolve_request(fugaku, {"ranks": 1}))
            launch = slot_launch(fugaku, slot, [], Path.cwd() / f"vcoord.{engine}")
        elif mode == "profile":
            os.environ[variable] = f"{fugaku.launcher.command} {program}"
        else:
            os.environ[variable] = program
        with task_launch(launch) if launch is not None else nullcontext():
            result = get_engine(engine).calculate(
                structure(engine), "static", QE if engine == "qe" else {}, workdir)
        out[engine] = {
            "energy": result.energy,
            "command": result.parameters.get("command"),
            "stdout": (workdir / stdout).read_text(errors="replace")[:2000],
            "rank_files": sorted(str(p.relative_to(workdir))
                                 for p in workdir.glob("output.*/**/*") if p.is_file()),
        }
    return out


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(run(sys.argv[2])))
