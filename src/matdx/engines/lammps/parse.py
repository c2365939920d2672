"""Reading LAMMPS output: the thermo tables of ``log.lammps`` and dump files.

:func:`scan_log` reads whatever is there (for error handlers looking at a failed run);
:func:`read_log` and :func:`read_final_structure` are strict: a missing, empty, corrupt or
truncated file raises :class:`EngineError` with the reason, never a partial result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.lammps.coordinatetransform import Prism
from ase.io.lammpsrun import read_lammps_dump_text

from matdx.core.errors import EngineError

COLUMNS: dict[str, str] = {
    "Step": "step",
    "Time": "time_ps",
    "Temp": "temperature_K",
    "Press": "pressure_bar",
    "PotEng": "potential_energy_eV",
    "KinEng": "kinetic_energy_eV",
    "TotEng": "total_energy_eV",
    "Econserve": "conserved_energy_eV",
    "Volume": "volume_A3",
    "Density": "density_g_cm3",
    "Pxx": "pxx_bar",
    "Pyy": "pyy_bar",
    "Pzz": "pzz_bar",
    "Pyz": "pyz_bar",
    "Pxz": "pxz_bar",
    "Pxy": "pxy_bar",
}
"""LAMMPS thermo header → column name shared by the MD engines (units in the name)."""


@dataclass
class ThermoBlock:
    """The thermo output of one ``run`` or ``minimize`` command."""

    columns: list[str]
    rows: list[list[float]] = field(default_factory=list)
    complete: bool = False

    def table(self) -> dict[str, np.ndarray]:
        """Columns as arrays, by name."""
        data = np.array(self.rows, dtype=float).reshape(len(self.rows), len(self.columns))
        return {name: data[:, i] for i, name in enumerate(self.columns)}


@dataclass
class LammpsLog:
    """What a LAMMPS log says."""

    version: str | None = None
    blocks: list[ThermoBlock] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    finished: bool = False
    stopping_criterion: str | None = None
    bad_rows: int = 0

    def non_finite(self) -> bool:
        """Whether a thermo value is NaN or infinite."""
        return any(not np.all(np.isfinite(b.rows)) for b in self.blocks if b.rows)


def scan_log(text: str) -> LammpsLog:
    """Read a (possibly partial) LAMMPS log or screen output without judging it."""
    log = LammpsLog()
    block: ThermoBlock | None = None
    for line in text.splitlines():
        s = line.strip()
        tokens = s.split()
        if log.version is None and s.startswith("LAMMPS ("):
            log.version = s[len("LAMMPS (") :].rstrip(")")
        elif s.startswith("ERROR"):
            log.errors.append(s)
        elif s.startswith("Total wall time"):
            log.finished = True
        elif s.startswith("Stopping criterion"):
            log.stopping_criterion = s.split("=", 1)[1].strip()
        if tokens and tokens[0] == "Step":
            block = ThermoBlock([COLUMNS.get(t, t.lower()) for t in tokens])
            log.blocks.append(block)
            continue
        if block is None:
            continue
        if s.startswith("Loop time"):
            block.complete, block = True, None
            continue
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            if not s.startswith("WARNING"):
                block = None  # the table ended without "Loop time" (error or junk)
            continue
        if len(values) == len(block.columns):
            block.rows.append(values)
        elif values:
            log.bad_rows += 1
    return log


def read_text(path: Path) -> str:
    """Text of an output file, ``""`` if it is missing."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def read_log(path: Path) -> LammpsLog:
    """Read the log of a finished run.

    Raises
    ------
    EngineError
        If the log is missing, empty, not a LAMMPS log, reports an error, has corrupt,
        truncated or non-finite thermo output, or the run did not finish.
    """
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"LAMMPS wrote no {path.name} in {path.parent}")
    text = read_text(path)
    if not text.strip():
        raise EngineError(f"{path.name} is empty")
    log = scan_log(text)
    if log.errors:
        raise EngineError(f"LAMMPS failed: {log.errors[0]}")
    if log.version is None and not log.blocks:
        raise EngineError(f"{path.name} is not a LAMMPS log")
    if not any(b.rows for b in log.blocks):
        raise EngineError(f"{path.name} has no thermo output")
    if not log.finished or not all(b.complete for b in log.blocks):
        raise EngineError(f"{path.name} is truncated (the run did not finish)")
    if log.bad_rows:
        raise EngineError(f"{path.name} has {log.bad_rows} corrupt thermo line(s)")
    if log.non_finite():
        raise EngineError(f"{path.name} has non-finite thermo values")
    return log


def read_final_structure(
    path: Path, ase_cell: np.ndarray, n_atoms: int
) -> tuple[Atoms, np.ndarray]:
    """Read the one-frame dump written at the end of a run (positions and forces).

    Parameters
    ----------
    path
        Dump with columns ``id element x y z fx fy fz``.
    ase_cell
        Cell of the input structure: positions, cell and forces are rotated back from
        the LAMMPS frame to the frame of the input.
    n_atoms
        Expected number of atoms.

    Returns
    -------
    tuple
        Final atoms (wrapped into the cell) and forces (eV/Å), in the input frame.

    Raises
    ------
    EngineError
        If the dump is missing, empty, corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"LAMMPS wrote no {path.name} in {path.parent}")
    if path.stat().st_size == 0:
        raise EngineError(f"{path.name} is empty")
    try:
        with open(path) as fd:
            frame = read_lammps_dump_text(fd, index=-1)  # LAMMPS frame
        forces = frame.get_forces()
    except Exception:  # ASE raises ValueError/IndexError/KeyError/... on bad dumps
        raise EngineError(f"cannot read {path.name}: corrupt or truncated dump") from None
    # back to the input frame (ASE's reader would also "wrap" forces with a reduced prism)
    prism = Prism(np.asarray(ase_cell), reduce_cell=True)
    cell = prism.update_cell(np.asarray(frame.cell))
    positions = frame.positions - np.reshape(frame.get_celldisp(), 3)  # box origin at 0
    atoms = Atoms(frame.numbers, positions=prism.vector_to_ase(positions, wrap=True), cell=cell)
    forces = forces @ prism.rot_mat.T
    if len(atoms) != n_atoms:
        raise EngineError(f"{path.name} has {len(atoms)} atoms, expected {n_atoms}")
    if not (np.all(np.isfinite(atoms.positions)) and np.all(np.isfinite(forces))):
        raise EngineError(f"{path.name} has non-finite positions or forces")
    atoms.pbc = True
    return atoms, forces
