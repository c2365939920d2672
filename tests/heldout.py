"""Independent pw.x calculations for held-out checks: input files written here by hand.

Nothing of matdx writes or reads these runs: the input is composed below from the
structure, the Monkhorst–Pack mesh is worked out here from the reciprocal lattice, the
energy and lattice are read from pw.x's text output with regular expressions.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np

PW = ["/usr/bin/mpirun", "--allow-run-as-root", "-np", "2", "pw.x", "-nk", "2"]
PSEUDO_DIR = "/usr/share/espresso/pseudo"
RY_EV = 13.605693122994  # CODATA 2018
BOHR_A = 0.529177210903
MASSES = {"Al": 26.9815, "Cu": 63.546, "Ni": 58.6934}


def mesh(cell: np.ndarray, spacing: float) -> list[int]:
    """Divisions with at most ``spacing`` Å⁻¹ (2π included) between k-points."""
    reciprocal = 2 * math.pi * np.linalg.inv(np.asarray(cell)).T
    return [max(1, math.ceil(np.linalg.norm(b) / spacing - 1e-9)) for b in reciprocal]


def pw_input(
    cell: np.ndarray,
    symbols: list[str],
    frac: np.ndarray,
    pseudos: dict[str, str],
    kpts: list[int],
    calculation: str = "scf",
    system: str = "",
) -> str:
    """A pw.x input: 40/320 Ry, Marzari–Vanderbilt smearing of 0.02 Ry."""
    species = sorted(set(symbols))
    lines = [
        "&control",
        f"  calculation = '{calculation}'",
        f"  pseudo_dir = '{PSEUDO_DIR}'",
        "  outdir = './tmp'",
        "  tstress = .true.",
        "/",
        "&system",
        f"  ibrav = 0, nat = {len(symbols)}, ntyp = {len(species)}",
        "  ecutwfc = 40, ecutrho = 320",
        "  occupations = 'smearing', smearing = 'mv', degauss = 0.02",
        system,
        "/",
        "&electrons",
        "  conv_thr = 1.0d-10",
        "/",
        "&ions",
        "/",
        "&cell",
        "  press_conv_thr = 0.2",
        "/",
        "ATOMIC_SPECIES",
        *(f"  {el} {MASSES[el]} {pseudos[el]}" for el in species),
        "CELL_PARAMETERS angstrom",
        *("  " + " ".join(f"{x:.10f}" for x in row) for row in np.asarray(cell)),
        "ATOMIC_POSITIONS crystal",
        *(f"  {el} " + " ".join(f"{x:.10f}" for x in xyz) for el, xyz in zip(symbols, frac, strict=True)),
        "K_POINTS automatic",
        "  " + " ".join(map(str, kpts)) + " 0 0 0",
    ]
    return "\n".join(lines) + "\n"


def run_pw(text: str, workdir: Path) -> str:
    """Run pw.x on ``text`` in ``workdir``; return its output."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "pw.in").write_text(text)
    run = subprocess.run(
        [*PW, "-in", "pw.in"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=True,
    )
    (workdir / "pw.out").write_text(run.stdout)
    return run.stdout


def total_energy_ev(output: str) -> float:
    """The last converged total energy (eV) of a pw.x output."""
    found = re.findall(r"^!\s+total energy\s+=\s+(-?\d+\.\d+) Ry", output, re.M)
    assert found, output[-2000:]
    return float(found[-1]) * RY_EV


def final_cell(output: str) -> np.ndarray:
    """The last CELL_PARAMETERS (Å) of a pw.x vc-relax output."""
    blocks = re.findall(
        r"CELL_PARAMETERS \((alat=\s*[\d.]+|angstrom|bohr)\)\s*\n(.*\n.*\n.*\n)", output
    )
    assert blocks, output[-2000:]
    unit, rows = blocks[-1]
    cell = np.array([[float(x) for x in row.split()] for row in rows.strip().splitlines()])
    if unit.startswith("alat"):
        return cell * float(unit.split("=")[1]) * BOHR_A
    return cell * (BOHR_A if unit == "bohr" else 1.0)
