"""Run pw.x and lmp as a Fugaku job would start them, and record what the engines read.

``python tests/pjm_engine_tasks.py <out.json> <mode>`` computes a Si cell with QE and a Cu
cell with LAMMPS, each in ``<mode>-<engine>/`` of the current directory, and writes their
energies and the heads of their standard-output files to ``out.json``. Modes:

- ``profile``: inside a PJM job, with the engine command made of ``fugaku.yaml``'s launcher
  command and the program (``MATDX_QE_COMMAND``, ``MATDX_LAMMPS_COMMAND``);
- ``direct``: anywhere, the programs started without a launcher.

Used by tests/test_slots.py inside a job of the PJM stand-in (tests/pjm_standin), whose
``mpiexec`` writes every rank's output to per-rank files, as Fujitsu MPI does. (The slot
farm's launches are tested by a campaign in a stand-in job, in the same test module.)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from matdx.engines.registry import get_engine
from matdx.sites.models import load_profile

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
        launcher = fugaku.launcher.command if mode == "profile" else ""
        os.environ[variable] = f"{launcher} {program}".strip()
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
