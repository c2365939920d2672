"""EMT relaxations with ASE (positions and, optionally, the cell).

:class:`EmtEngine` is the engine; :func:`relax` is its implementation, also used directly
where a relaxation is all that is needed.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import ase
import numpy as np
from ase import Atoms
from ase.calculators.emt import EMT, parameters
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE
from pymatgen.core import Lattice, Structure

from matdx.core.errors import EngineError
from matdx.core.symmetry import spacegroup
from matdx.engines.base import Engine, check_structure
from matdx.schemas.results import CalcResult

SUPPORTED_ELEMENTS = frozenset(parameters)
"""Elements with EMT parameters in ASE (Al, Cu, Ag, Au, Ni, Pd, Pt, and H, C, N, O)."""

OPTIMIZERS = {"BFGS": BFGS, "FIRE": FIRE}


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


class EmtEngine(Engine):
    """EMT: ``relax`` (positions), ``vc-relax`` (and cell) or ``static``.

    Settings: ``optimizer``, ``fmax``, ``steps`` (see :func:`relax`); other keys are
    ignored. EMT writes no files (``workdir`` unused) and runs in well under a second, so
    a deadline only keeps it from starting once passed.
    """

    key = "emt"

    def supported_elements(self) -> frozenset[str]:
        """Elements with EMT parameters in ASE."""
        return SUPPORTED_ELEMENTS

    def run(
        self,
        structure: Structure,
        task: str,
        settings: dict[str, Any],
        workdir: Any,
        deadline: float | None,
    ) -> CalcResult:
        """Relax with :func:`relax` (``relax_cell`` for ``vc-relax``; no step for ``static``)."""
        options = {k: v for k, v in settings.items() if k in ("optimizer", "fmax", "steps")}
        if task == "static":
            options["steps"] = 0
        result = relax(structure, relax_cell=task == "vc-relax", **options)
        update: dict[str, Any] = {"task": task}
        if task == "static":
            update.update(converged=True, n_steps=0)
        return result.model_copy(update=update)
