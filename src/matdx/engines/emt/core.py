"""EMT relaxations with ASE (positions and, optionally, the cell)."""

from __future__ import annotations

import time
from typing import Any, Literal

import ase
import numpy as np
import spglib
from ase import Atoms
from ase.calculators.emt import EMT, parameters
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE
from pymatgen.core import Lattice, Structure

from matdx.core.errors import EngineError
from matdx.engines.base import check_structure
from matdx.schemas.results import CalcResult

SUPPORTED_ELEMENTS = frozenset(parameters)
"""Elements with EMT parameters in ASE (Al, Cu, Ag, Au, Ni, Pd, Pt, and H, C, N, O)."""

OPTIMIZERS = {"BFGS": BFGS, "FIRE": FIRE}

_SPACEGROUP_SYMPREC = 0.01


def to_atoms(structure: Structure) -> Atoms:
    """Convert a pymatgen structure to periodic ASE atoms (no calculator)."""
    return Atoms(
        numbers=[site.specie.Z for site in structure],
        positions=structure.cart_coords,
        cell=structure.lattice.matrix,
        pbc=True,
    )


def to_structure(atoms: Atoms) -> Structure:
    """Convert ASE atoms to a pymatgen structure."""
    return Structure(
        Lattice(np.asarray(atoms.cell)),
        atoms.get_chemical_symbols(),
        atoms.positions,
        coords_are_cartesian=True,
    )


def spacegroup(atoms: Atoms, symprec: float = _SPACEGROUP_SYMPREC) -> tuple[str | None, int | None]:
    """International symbol and number of the space group of ``atoms`` (spglib)."""
    cell = (np.asarray(atoms.cell), atoms.get_scaled_positions(), atoms.numbers)
    text = spglib.get_spacegroup(cell, symprec=symprec)
    if not text:
        return None, None
    symbol, number = text.rsplit(" ", 1)
    return symbol, int(number.strip("()"))


def relax(
    structure: Structure,
    *,
    relax_cell: bool = True,
    optimizer: Literal["BFGS", "FIRE"] = "BFGS",
    fmax: float = 0.05,
    steps: int = 300,
) -> CalcResult:
    """Relax a structure with EMT.

    Parameters
    ----------
    structure
        Starting structure.
    relax_cell
        Relax the cell with :class:`ase.filters.FrechetCellFilter` as well as the positions.
    optimizer
        ``"BFGS"`` or ``"FIRE"``.
    fmax
        Force threshold in eV/Å (on the generalised forces when the cell relaxes).
    steps
        Maximum number of optimizer steps.

    Returns
    -------
    CalcResult
        Energies, final structure, forces, stress, space group and convergence flag.

    Raises
    ------
    InputError
        If atoms overlap or the cell is singular.
    EngineError
        If an element has no EMT parameters or the calculation fails numerically.
    """
    check_structure(structure)
    missing = sorted({site.specie.symbol for site in structure} - SUPPORTED_ELEMENTS)
    if missing:
        raise EngineError(f"EMT has no parameters for {', '.join(missing)}")
    start = time.perf_counter()
    atoms = to_atoms(structure)
    atoms.calc = EMT()
    target = FrechetCellFilter(atoms) if relax_cell else atoms
    opt = OPTIMIZERS[optimizer](target, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    energy = float(atoms.get_potential_energy())
    if not np.isfinite(energy):
        raise EngineError("EMT energy is not finite")
    n = len(atoms)
    symbol, number = spacegroup(atoms)
    return CalcResult(
        engine="emt",
        code_version=ase.__version__,
        task="relax",
        parameters={"relax_cell": relax_cell, "optimizer": optimizer, "fmax": fmax, "steps": steps},
        energy=energy,
        energy_per_atom=energy / n,
        volume_per_atom=float(atoms.get_volume()) / n,
        forces=atoms.get_forces().tolist(),
        stress=atoms.get_stress(voigt=True).tolist(),
        structure=to_structure(atoms).as_dict(),
        spacegroup_symbol=symbol,
        spacegroup_number=number,
        converged=converged,
        n_steps=int(opt.nsteps),
        wall_time_s=time.perf_counter() - start,
    )


def calculate(
    structure: Structure,
    task: str = "relax",
    settings: dict[str, Any] | None = None,
    workdir: Any = None,
) -> CalcResult:
    """Run ``task`` with EMT: ``"relax"`` (positions), ``"vc-relax"`` (and cell) or ``"static"``.

    Parameters
    ----------
    structure
        Starting structure.
    task
        Task name.
    settings
        ``optimizer``, ``fmax``, ``steps`` (see :func:`relax`).
    workdir
        Unused: EMT writes no files.

    Returns
    -------
    CalcResult
        As :func:`relax`, with ``task`` set.
    """
    options = {k: v for k, v in (settings or {}).items() if k in ("optimizer", "fmax", "steps")}
    if task == "static":
        options["steps"] = 0
    elif task not in ("relax", "vc-relax"):
        raise EngineError(f"EMT has no task {task!r} (relax, vc-relax, static)")
    result = relax(structure, relax_cell=task == "vc-relax", **options)
    update: dict[str, Any] = {"task": task}
    if task == "static":
        update.update(converged=True, n_steps=0)
    return result.model_copy(update=update)
